"""The example server: ``app`` (ASGI) and ``wsgi_app`` (WSGI) answer the same RPCs.

Run with any server, for example::

    uvicorn server:app --port 8080          # ASGI, HTTP/1.1
    hypercorn server:app -b 127.0.0.1:8080  # ASGI, HTTP/1.1 and HTTP/2
    gunicorn server:wsgi_app -b 127.0.0.1:8080

with ``examples/`` and ``examples/gen/`` on PYTHONPATH. Both apps allow
cross-origin calls from the origins in ``CONNECT_CORS_ORIGINS`` (comma-separated,
default ``*``), so the page in ``browser/`` can call them from another origin.

Both also serve gRPC health checking (``grpc.health.v1.Health``, plus a plain
``GET /healthz`` for HTTP probes) and server reflection (v1 and v1alpha), so
``buf curl`` and grpcurl need no schema. ``health`` holds the statuses.
"""

from __future__ import annotations

import os

from greet_service import Greeter, GreeterSync

from protoc_gen_connect_python.batteries import (
    Health,
    HealthProbe,
    HealthService,
    HealthServiceSync,
    WSGIHealthProbe,
    reflection,
    reflection_sync,
)
from protoc_gen_connect_python.runtime import (
    ASGIApp,
    CORSMiddleware,
    WSGIApp,
    WSGICORSMiddleware,
)

ORIGINS = os.environ.get("CONNECT_CORS_ORIGINS", "*").split(",")
# Pages may read the handler's own header too.
EXPOSE = ["Greet-Version"]

# Every service an app serves starts SERVING; health.shutdown() reports
# NOT_SERVING everywhere while the process stops.
health = Health()

app = HealthProbe(
    CORSMiddleware(
        ASGIApp(Greeter(), HealthService(health), *reflection()),
        allow_origins=ORIGINS,
        expose_headers=EXPOSE,
    ),
    health,
)
wsgi_app = WSGIHealthProbe(
    WSGICORSMiddleware(
        WSGIApp(GreeterSync(), HealthServiceSync(health), *reflection_sync()),
        allow_origins=ORIGINS,
        expose_headers=EXPOSE,
    ),
    health,
)
