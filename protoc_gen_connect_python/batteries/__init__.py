"""Batteries: health checking and server reflection, each one line to turn on.

Built on the public runtime API only; the messages live in a descriptor pool
of their own, so grpcio's health and reflection packages work beside them::

    from protoc_gen_connect_python.batteries import Health, HealthService, reflection

    health = Health()
    app = ASGIApp(Greeter(), HealthService(health), *reflection())

See docs/production.md.
"""

from protoc_gen_connect_python.batteries.health import (
    Health,
    HealthClient,
    HealthClientSync,
    HealthService,
    HealthServiceSync,
    ServingStatus,
)
from protoc_gen_connect_python.batteries.probe import HealthProbe, WSGIHealthProbe
from protoc_gen_connect_python.batteries.reflection import (
    Catalog,
    ReflectionService,
    ReflectionServiceSync,
    ReflectionServiceV1Alpha,
    ReflectionServiceV1AlphaSync,
    reflection,
    reflection_sync,
)

__all__ = [
    "Catalog",
    "Health",
    "HealthClient",
    "HealthClientSync",
    "HealthProbe",
    "HealthService",
    "HealthServiceSync",
    "ReflectionService",
    "ReflectionServiceSync",
    "ReflectionServiceV1Alpha",
    "ReflectionServiceV1AlphaSync",
    "ServingStatus",
    "WSGIHealthProbe",
    "reflection",
    "reflection_sync",
]
