"""Servers: ``ASGIApp`` and ``WSGIApp`` over one sans-IO core."""

from protoc_gen_connect_python.runtime.server.asgi import ASGIApp
from protoc_gen_connect_python.runtime.server.core import ServerOptions
from protoc_gen_connect_python.runtime.server.wsgi import WSGIApp

__all__ = ["ASGIApp", "ServerOptions", "WSGIApp"]
