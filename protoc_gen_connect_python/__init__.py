"""Connect RPC for Python: a protoc/buf plugin and the runtime its code targets."""

__version__ = "0.1.0"
