"""The example server: ``app`` (ASGI) and ``wsgi_app`` (WSGI) answer the same RPCs.

Run with any server, for example::

    uvicorn server:app --port 8080          # ASGI, HTTP/1.1
    hypercorn server:app -b 127.0.0.1:8080  # ASGI, HTTP/1.1 and HTTP/2
    gunicorn server:wsgi_app -b 127.0.0.1:8080

with ``examples/`` and ``examples/gen/`` on PYTHONPATH.
"""

from __future__ import annotations

from greet_service import Greeter, GreeterSync

from protoc_gen_connect_python.runtime import ASGIApp, WSGIApp

app = ASGIApp(Greeter())
wsgi_app = WSGIApp(GreeterSync())
