"""gRPC server reflection, versions v1 and v1alpha, built from what the app serves.

``reflection()`` (ASGI) and ``reflection_sync()`` (WSGI) return the two
reflection services; add them to the app and it describes every service it
serves, with each one's proto file and every file that file imports::

    app = ASGIApp(Greeter(), *reflection())

``buf curl``, grpcurl and grpcio's reflection client then need no schema.
The app hands the services its service list as it is built (see
``AsyncService.served_with``); nothing has to be listed twice.

A service is described from the descriptor pool its message classes live in,
so its ``_pb2`` module must be imported (generated code imports it whenever
the service's own file defines one of its messages). A service that cannot be
found there is still listed, and logged once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, TypeVar

from google.protobuf import descriptor_pool
from google.protobuf.descriptor import (
    Descriptor,
    FileDescriptor,
    ServiceDescriptor,
)
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message import Message

from protoc_gen_connect_python.batteries import (
    reflection_v1_pb2 as v1,
)
from protoc_gen_connect_python.batteries import (
    reflection_v1alpha_pb2 as v1alpha,
)
from protoc_gen_connect_python.runtime import (
    AsyncService,
    Code,
    MethodSpec,
    RequestContext,
    ServiceSpec,
    StreamType,
    SyncService,
)

__all__ = [
    "REFLECTION_V1",
    "REFLECTION_V1ALPHA",
    "Catalog",
    "ReflectionService",
    "ReflectionServiceSync",
    "ReflectionServiceV1Alpha",
    "ReflectionServiceV1AlphaSync",
    "reflection",
    "reflection_sync",
]

logger = logging.getLogger("protoc_gen_connect_python.batteries.reflection")

M = TypeVar("M", bound=Message)


def _spec(package: str, module: Any) -> tuple[MethodSpec[Any, Any], ServiceSpec]:
    name = f"{package}.ServerReflection"
    method = MethodSpec(
        service=name,
        name="ServerReflectionInfo",
        python_name="server_reflection_info",
        stream_type=StreamType.BIDI_STREAM,
        input=module.ServerReflectionRequest,
        output=module.ServerReflectionResponse,
    )
    return method, ServiceSpec(name=name, methods=(method,))


REFLECTION_V1_INFO, REFLECTION_V1 = _spec("grpc.reflection.v1", v1)
REFLECTION_V1ALPHA_INFO, REFLECTION_V1ALPHA = _spec("grpc.reflection.v1alpha", v1alpha)


class Catalog:
    """The services an app serves and the proto files that describe them.

    Built from service specs (``add``); answers reflection requests
    (``answer``). One catalog may back both reflection versions and several
    apps: it describes everything any of them serves.
    """

    def __init__(self) -> None:
        self._services: dict[str, None] = {}
        self._files: dict[str, FileDescriptor] = {}
        self._pools: list[DescriptorPool] = []
        self._missing: set[str] = set()

    @property
    def services(self) -> list[str]:
        """Fully qualified names of the services, in the order they were added."""
        return list(self._services)

    @property
    def files(self) -> list[str]:
        """Names of the proto files described: the services' and their imports."""
        return list(self._files)

    def add(self, services: tuple[ServiceSpec, ...]) -> None:
        """Describe these services (again: adding one twice changes nothing)."""
        for spec in services:
            self._services.setdefault(spec.name)
            service = _find_service(spec)
            if service is not None:
                self._add_file(service.file)
            elif spec.name not in self._missing:
                self._missing.add(spec.name)
                logger.warning(
                    "reflection cannot describe %s: its descriptor is not in the "
                    "pool of its messages (import its _pb2 module)",
                    spec.name,
                )

    def _add_file(self, file: FileDescriptor) -> None:
        if file.name in self._files:
            return
        self._files[file.name] = file
        if all(p is not file.pool for p in self._pools):
            self._pools.append(file.pool)
        for dep in file.dependencies:
            self._add_file(dep)

    def answer(
        self, request: v1.ServerReflectionRequest, sent: set[str]
    ) -> v1.ServerReflectionResponse:
        """The response to one request of a stream.

        ``sent`` names the files this stream has already been sent; each file
        response carries the requested file and those of its imports not yet
        sent, and adds them to ``sent``.
        """
        reply = v1.ServerReflectionResponse(
            valid_host=request.host, original_request=request
        )
        kind = request.WhichOneof("message_request")
        if kind == "list_services":
            reply.list_services_response.service.extend(
                v1.ServiceResponse(name=n) for n in self._services
            )
        elif kind == "file_by_filename":
            name = request.file_by_filename
            self._reply_file(reply, self._files.get(name), sent, f"file {name!r}")
        elif kind == "file_containing_symbol":
            symbol = request.file_containing_symbol
            file = self._file_of_symbol(symbol)
            self._reply_file(reply, file, sent, f"symbol {symbol!r}")
        elif kind == "file_containing_extension":
            ext = request.file_containing_extension
            found = self._extension(ext.containing_type, ext.extension_number)
            what = f"extension {ext.extension_number} of {ext.containing_type!r}"
            self._reply_file(reply, found, sent, what)
        elif kind == "all_extension_numbers_of_type":
            name = request.all_extension_numbers_of_type
            numbers = self._extension_numbers(name)
            if numbers is None:
                _error(reply, Code.NOT_FOUND, f"unknown message type {name!r}")
            else:
                out = reply.all_extension_numbers_response
                out.base_type_name = name
                out.extension_number.extend(numbers)
        else:
            _error(reply, Code.INVALID_ARGUMENT, "the request asks for nothing")
        return reply

    def _reply_file(
        self,
        reply: v1.ServerReflectionResponse,
        file: FileDescriptor | None,
        sent: set[str],
        what: str,
    ) -> None:
        if file is None:
            _error(reply, Code.NOT_FOUND, f"the server does not describe {what}")
            return
        out = reply.file_descriptor_response.file_descriptor_proto
        out.append(file.serialized_pb)
        sent.add(file.name)
        pending = list(file.dependencies)
        while pending:
            dep = pending.pop()
            if dep.name not in sent:
                sent.add(dep.name)
                out.append(dep.serialized_pb)
                pending.extend(dep.dependencies)

    def _file_of_symbol(self, symbol: str) -> FileDescriptor | None:
        # A method, field or enum value is in its parent's file; the pools
        # find methods only that way.
        for name in (symbol, symbol.rpartition(".")[0]):
            for pool in self._pools:
                try:
                    file = pool.FindFileContainingSymbol(name)
                except KeyError:
                    continue
                if self._files.get(file.name) is not None:
                    return file
        return None

    def _message(self, name: str) -> tuple[DescriptorPool, Descriptor] | None:
        for pool in self._pools:
            try:
                message = pool.FindMessageTypeByName(name)
            except KeyError:
                continue
            if message.file.name in self._files:
                return pool, message
        return None

    def _extension(self, containing_type: str, number: int) -> FileDescriptor | None:
        found = self._message(containing_type)
        if found is None:
            return None
        pool, message = found
        try:
            ext = pool.FindExtensionByNumber(message, number)
            file = pool.FindFileContainingSymbol(ext.full_name)
        except KeyError:
            return None
        # The extension may live in a file none of the services imports.
        self._add_file(file)
        return file

    def _extension_numbers(self, name: str) -> list[int] | None:
        found = self._message(name)
        if found is None:
            return None
        pool, message = found
        return sorted(e.number for e in pool.FindAllExtensions(message))


def _find_service(spec: ServiceSpec) -> ServiceDescriptor | None:
    pools: list[DescriptorPool] = []
    for method in spec.methods:
        for cls in (method.input, method.output):
            pool = cls.DESCRIPTOR.file.pool
            if all(p is not pool for p in pools):
                pools.append(pool)
    pools.append(descriptor_pool.Default())
    for pool in pools:
        try:
            service: ServiceDescriptor = pool.FindServiceByName(spec.name)
        except KeyError:
            continue
        return service
    return None


def _error(reply: v1.ServerReflectionResponse, code: Code, message: str) -> None:
    reply.error_response.error_code = code.value
    reply.error_response.error_message = message


def _convert(message: Message, into: type[M]) -> M:
    """A message of the other reflection version: the same bytes on the wire."""
    return into.FromString(message.SerializeToString())


class _Reflection:
    """The catalog the reflection services of either kind answer from."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else Catalog()

    def served_with(self, services: tuple[ServiceSpec, ...]) -> None:
        """Describe every service the app serves."""
        self.catalog.add(services)


class ReflectionService(_Reflection, AsyncService):
    """``grpc.reflection.v1.ServerReflection`` for ``ASGIApp``."""

    service_spec: ClassVar[ServiceSpec] = REFLECTION_V1

    async def server_reflection_info(
        self, requests: AsyncIterator[v1.ServerReflectionRequest], ctx: RequestContext
    ) -> AsyncIterator[v1.ServerReflectionResponse]:
        """One response per request, in order."""
        sent: set[str] = set()
        async for request in requests:
            yield self.catalog.answer(request, sent)


class ReflectionServiceV1Alpha(_Reflection, AsyncService):
    """``grpc.reflection.v1alpha.ServerReflection`` for ``ASGIApp``."""

    service_spec: ClassVar[ServiceSpec] = REFLECTION_V1ALPHA

    async def server_reflection_info(
        self,
        requests: AsyncIterator[v1alpha.ServerReflectionRequest],
        ctx: RequestContext,
    ) -> AsyncIterator[v1alpha.ServerReflectionResponse]:
        """One response per request, in order."""
        sent: set[str] = set()
        async for request in requests:
            reply = self.catalog.answer(
                _convert(request, v1.ServerReflectionRequest), sent
            )
            yield _convert(reply, v1alpha.ServerReflectionResponse)


class ReflectionServiceSync(_Reflection, SyncService):
    """``grpc.reflection.v1.ServerReflection`` for ``WSGIApp``."""

    service_spec: ClassVar[ServiceSpec] = REFLECTION_V1

    def server_reflection_info(
        self, requests: Iterator[v1.ServerReflectionRequest], ctx: RequestContext
    ) -> Iterator[v1.ServerReflectionResponse]:
        """One response per request, in order."""
        sent: set[str] = set()
        for request in requests:
            yield self.catalog.answer(request, sent)


class ReflectionServiceV1AlphaSync(_Reflection, SyncService):
    """``grpc.reflection.v1alpha.ServerReflection`` for ``WSGIApp``."""

    service_spec: ClassVar[ServiceSpec] = REFLECTION_V1ALPHA

    def server_reflection_info(
        self,
        requests: Iterator[v1alpha.ServerReflectionRequest],
        ctx: RequestContext,
    ) -> Iterator[v1alpha.ServerReflectionResponse]:
        """One response per request, in order."""
        sent: set[str] = set()
        for request in requests:
            reply = self.catalog.answer(
                _convert(request, v1.ServerReflectionRequest), sent
            )
            yield _convert(reply, v1alpha.ServerReflectionResponse)


def reflection() -> tuple[ReflectionService, ReflectionServiceV1Alpha]:
    """Both reflection versions for ``ASGIApp``, sharing one catalog."""
    catalog = Catalog()
    return ReflectionService(catalog), ReflectionServiceV1Alpha(catalog)


def reflection_sync() -> tuple[ReflectionServiceSync, ReflectionServiceV1AlphaSync]:
    """Both reflection versions for ``WSGIApp``, sharing one catalog."""
    catalog = Catalog()
    return ReflectionServiceSync(catalog), ReflectionServiceV1AlphaSync(catalog)
