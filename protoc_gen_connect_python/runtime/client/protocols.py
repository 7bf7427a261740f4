"""The client protocols by name: the one place that knows them all."""

from __future__ import annotations

from protoc_gen_connect_python.runtime.client import grpc
from protoc_gen_connect_python.runtime.client.config import ClientConfig
from protoc_gen_connect_python.runtime.client.connect import ConnectProtocol
from protoc_gen_connect_python.runtime.client.core import ClientProtocol

__all__ = ["make_protocol"]


def make_protocol(config: ClientConfig) -> ClientProtocol:
    """The protocol implementation a config asks for."""
    if config.protocol == "connect":
        return ConnectProtocol(config)
    if config.protocol == "grpc":
        return grpc.GRPCProtocol(config)
    if config.protocol == "grpc-web":
        return grpc.GRPCWebProtocol(config)
    raise ValueError(f"unsupported protocol {config.protocol!r}")
