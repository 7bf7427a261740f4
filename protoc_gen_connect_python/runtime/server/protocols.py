"""The server's default protocols: the one place that lists them.

``ServerCore`` asks for them unless an app passes its own; each protocol module
builds on ``call.py`` alone, so none of them imports the core.
"""

from __future__ import annotations

from protoc_gen_connect_python.runtime.server import connect, grpc
from protoc_gen_connect_python.runtime.server.call import CoreView, ServerProtocol

__all__ = ["default_protocols"]


def default_protocols(
    core: CoreView, connect_unary: connect.ConnectUnaryProtocol
) -> tuple[ServerProtocol, ...]:
    """gRPC-Web, gRPC, Connect streaming and ``connect_unary``, in the order
    requests are matched against them."""
    return (
        grpc.GRPCProtocol(core, web=True),
        grpc.GRPCProtocol(core, web=False),
        connect.ConnectStreamProtocol(core),
        connect_unary,
    )
