"""The example's GreetService mounted under ``/api`` in web frameworks, as
docs/server.md shows it.

Each app is what one snippet of the docs' "Mounting under a prefix" (marked
``<!-- check: mount-NAME -->``) defines, run exactly as written, so the docs
cannot drift from what is tested. Django's settings, which a project keeps in
its own module, are the minimum here: one ordinary view at ``/hello``.

Loaded by name inside the server process (``framework_apps:fastapi``), with
the generated greet code and ``examples/`` on ``sys.path``
(``example_env.serve`` arranges it).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path
from example_env import ROOT, checked_blocks

SNIPPETS = checked_blocks(ROOT / "docs" / "server.md", "python")


def from_docs(name: str, attribute: str) -> Any:
    """Run the snippet ``mount-<name>`` in a namespace of its own; one of its names."""
    namespace: dict[str, Any] = {"__name__": __name__}
    exec(SNIPPETS[f"mount-{name}"], namespace)
    return namespace[attribute]


def hello(request: HttpRequest) -> HttpResponse:
    """The Django project's own page."""
    return HttpResponse("hello", content_type="text/plain")


urlpatterns = [path("hello", hello)]

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests only",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
)

starlette = from_docs("starlette", "app")
fastapi = from_docs("fastapi", "app")
flask = from_docs("flask", "app")
django_asgi = from_docs("django-asgi", "application")
django_wsgi = from_docs("django-wsgi", "application")
