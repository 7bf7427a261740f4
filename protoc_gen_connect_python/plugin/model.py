"""From descriptors to the view model the templates render.

Everything naming-related lives here: Python method names, module-level
constants, class names and import aliases. Names are chosen so that nothing the
generated module defines or imports can shadow anything else it uses, and so that
the same input always yields the same names.
"""

from __future__ import annotations

import dis
import inspect
import keyword
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pb2

from protoc_gen_connect_python.plugin.options import Options

RUNTIME_ALIAS = "_rt"
"""How generated modules import ``protoc_gen_connect_python.runtime``."""

# Soft keywords are listed explicitly: ``keyword.softkwlist`` differs between
# Python versions and the output must not.
_KEYWORDS = frozenset(keyword.kwlist) | {"_", "case", "match", "type"}

# Builtins the generated class bodies refer to in annotations: a method with
# one of these names would shadow it there (mypy resolves annotations in class scope).
_CLASS_SCOPE_BUILTINS = frozenset({"float"})

# Names a module-level definition must not take: the future import binds
# ``annotations``; ``super`` and ``float`` are used by generated code.
_MODULE_RESERVED = _KEYWORDS | {"annotations", "super", "float", RUNTIME_ALIAS}

_STREAM_TYPES = {
    (False, False): "UNARY",
    (True, False): "CLIENT_STREAM",
    (False, True): "SERVER_STREAM",
    (True, True): "BIDI_STREAM",
}
_IDEMPOTENCY = {0: "UNKNOWN", 1: "NO_SIDE_EFFECTS", 2: "IDEMPOTENT"}

# FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2: the paths of
# services and methods in SourceCodeInfo.
_SERVICE_FIELD = 6
_METHOD_FIELD = 2

_ACRONYM_RE = re.compile(r"([A-Z]+)([A-Z][a-z])")
_WORD_RE = re.compile(r"([a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``SayHello`` -> ``say_hello``, ``HTTPGet`` -> ``http_get``, ``GetV2`` -> ``get_v2``."""
    return _WORD_RE.sub(r"\1_\2", _ACRONYM_RE.sub(r"\1_\2", name)).lower()


@cache
def runtime_attributes() -> frozenset[str]:
    """Every attribute of the runtime's client and service base classes.

    Generated methods must not override these. Read from the classes themselves,
    so new runtime methods are avoided without touching the generator: class
    attributes and annotations plus attributes that methods assign on ``self``.
    Only the runtime's own classes count, and no dunder names: what ``object``,
    ``Generic`` and ``ABC`` define differs between Python versions, and the
    output must not (:func:`method_python_name` keeps clear of dunder names).
    """
    from protoc_gen_connect_python import runtime

    names: set[str] = set()
    for base in (
        runtime.AsyncClient,
        runtime.SyncClient,
        runtime.AsyncService,
        runtime.SyncService,
    ):
        for cls in base.__mro__:
            if not cls.__module__.startswith("protoc_gen_connect_python."):
                continue
            names.update(cls.__dict__)
            names.update(inspect.get_annotations(cls))
            names.update(getattr(cls, "__slots__", ()))
            for value in cls.__dict__.values():
                names.update(_stored_attributes(value))
    return frozenset(n for n in names if not _is_dunder(n))


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _stored_attributes(value: object) -> Iterator[str]:
    func = getattr(value, "__func__", getattr(value, "fget", value))
    code = getattr(func, "__code__", None)
    if code is None:
        return
    for ins in dis.get_instructions(code):
        if ins.opname == "STORE_ATTR":
            yield str(ins.argval)


class _Namespace:
    """Hands out unique identifiers: a taken name gets ``_`` appended until free."""

    def __init__(self, reserved: Iterable[str]) -> None:
        self.taken = set(reserved)

    def take(self, name: str) -> str:
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name


def method_python_name(rpc_name: str) -> str:
    """The PEP 8 name of an RPC before clash handling."""
    name = snake_case(rpc_name)
    if _is_dunder(name):
        # Python's own names, and which exist depends on the Python version.
        name += "_"
    elif name.startswith("__") and not name.endswith("__"):
        # A class-private name would be mangled and no longer match the spec.
        name = "_" + name.lstrip("_")
    return name


def pb2_module(proto_file: str) -> str:
    """The module protoc's Python generator writes for a ``.proto`` file."""
    base = proto_file[: -len(".proto")] if proto_file.endswith(".proto") else proto_file
    return base.replace("-", "_").replace("/", ".") + "_pb2"


def connect_path(proto_file: str) -> str:
    """``greet/v1/greet.proto`` -> ``greet/v1/greet_connect.py``, next to ``greet_pb2.py``."""
    return pb2_module(proto_file)[: -len("_pb2")].replace(".", "/") + "_connect.py"


def comment_lines(text: str) -> list[str]:
    """A proto comment as lines: common indentation and blank edges removed."""
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    indent = min((len(x) - len(x.lstrip()) for x in lines if x), default=0)
    return [line[indent:] for line in lines]


@dataclass(frozen=True)
class Import:
    """One imported ``_pb2`` module."""

    package: str
    """The parent package (``greet.v1``), empty for a top-level module."""
    module: str
    """The module's own name, e.g. ``greet_pb2``."""
    alias: str
    """The name generated code uses for it."""
    third_party: bool
    """Whether it belongs in the third-party import block (``google.protobuf``)."""


@dataclass(frozen=True)
class Method:
    """One RPC."""

    name: str
    python_name: str
    spec: str
    """The module-level ``MethodSpec`` constant."""
    stream_type: str
    """A ``StreamType`` member name."""
    input: str
    output: str
    idempotency: str
    """An ``Idempotency`` member name."""
    doc: tuple[str, ...]
    deprecated: bool
    full_name: str

    @property
    def client_streams(self) -> bool:
        """Whether the client sends a stream."""
        return self.stream_type in ("CLIENT_STREAM", "BIDI_STREAM")

    @property
    def server_streams(self) -> bool:
        """Whether the server sends a stream."""
        return self.stream_type in ("SERVER_STREAM", "BIDI_STREAM")


@dataclass(frozen=True)
class Service:
    """One service and the names of everything generated for it."""

    name: str
    full_name: str
    spec: str
    """The module-level ``ServiceSpec`` constant."""
    handler: str
    handler_sync: str
    client: str
    client_sync: str
    methods: tuple[Method, ...]
    doc: tuple[str, ...]
    deprecated: bool


@dataclass(frozen=True)
class File:
    """One generated module."""

    proto: str
    """The ``.proto`` path, as protoc names it."""
    output: str
    """The path of the generated module."""
    services: tuple[Service, ...]
    imports: tuple[Import, ...]
    names: dict[str, str]
    """Local names of ``typing``/``collections.abc``/``warnings`` imports."""
    runtime: str
    options: Options

    def need(self, name: str) -> bool:
        """Whether generated code uses the helper import ``name``."""
        return name in self.names

    @property
    def deprecations(self) -> bool:
        """Whether any client warns about deprecation."""
        return any(
            s.deprecated or any(m.deprecated for m in s.methods) for s in self.services
        )


class TypeIndex:
    """Where each message type lives: its ``_pb2`` module and its Python path."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self._types: dict[str, tuple[str, str]] = {}
        for f in files:
            prefix = f".{f.package}." if f.package else "."
            self._add(f.name, prefix, "", f.message_type)

    def _add(
        self,
        file: str,
        prefix: str,
        outer: str,
        messages: Iterable[descriptor_pb2.DescriptorProto],
    ) -> None:
        for m in messages:
            path = f"{outer}{m.name}"
            self._types[f"{prefix}{path}"] = (file, path)
            self._add(file, prefix, f"{path}.", m.nested_type)

    def lookup(self, full_name: str) -> tuple[str, str]:
        """``.greet.v1.Req`` -> (``greet/v1/greet.proto``, ``Req``)."""
        try:
            return self._types[full_name]
        except KeyError:
            raise ValueError(f"unknown message type {full_name}") from None


def _doc(*paragraphs: list[str]) -> tuple[str, ...]:
    lines: list[str] = []
    for p in paragraphs:
        if p:
            if lines:
                lines.append("")
            lines.extend(p)
    return tuple(lines)


def _comments(
    file: descriptor_pb2.FileDescriptorProto,
) -> dict[tuple[int, ...], list[str]]:
    """Leading and trailing comments by SourceCodeInfo path, as docstring lines."""
    out = {}
    for loc in file.source_code_info.location:
        if loc.path[:1] != [_SERVICE_FIELD] or not (
            loc.leading_comments or loc.trailing_comments
        ):
            continue
        lines = list(
            _doc(
                comment_lines(loc.leading_comments),
                comment_lines(loc.trailing_comments),
            )
        )
        if lines:
            out[tuple(loc.path)] = lines
    return out


def build_file(
    file: descriptor_pb2.FileDescriptorProto, types: TypeIndex, options: Options
) -> File:
    """The view model of one ``.proto`` file that has services."""
    comments = _comments(file)
    module_names = _Namespace(_MODULE_RESERVED)

    # User-facing names first, so that they never change because of an import.
    service_names = []
    for s in file.service:
        cls = s.name if s.name not in _MODULE_RESERVED else s.name + "_"
        classes = [
            module_names.take(n)
            for n in (cls, f"{cls}Sync", f"{cls}Client", f"{cls}ClientSync")
        ]
        upper = snake_case(s.name).upper()
        spec = module_names.take(upper)
        method_specs = [
            module_names.take(f"{upper}_{snake_case(m.name).upper()}") for m in s.method
        ]
        service_names.append((classes, spec, method_specs))

    # Message modules: the short name unless two modules share it.
    used: dict[str, tuple[str, str]] = {}
    for s in file.service:
        for m in s.method:
            for t in (m.input_type, m.output_type):
                proto, _ = types.lookup(t)
                used[proto] = (proto, pb2_module(proto))
    short_count: dict[str, int] = {}
    for _, mod in used.values():
        short = mod.rpartition(".")[2]
        short_count[short] = short_count.get(short, 0) + 1
    aliases: dict[str, str] = {}
    imports = []
    for proto in sorted(used):
        mod = used[proto][1]
        package, _, short = mod.rpartition(".")
        wanted = (
            short
            if short_count[short] == 1
            else mod.replace("_", "__").replace(".", "_dot_")
        )
        alias = module_names.take(wanted)
        aliases[proto] = alias
        imports.append(
            Import(
                package=package,
                module=short,
                alias=alias,
                third_party=mod.startswith("google.protobuf."),
            )
        )

    # Helpers from the standard library, aliased only if a service took the name.
    helpers = _helpers_needed(file, options)
    names = {
        h: module_names.take(h)
        if h not in module_names.taken
        else module_names.take(f"_{h}")
        for h in helpers
    }

    class_reserved = (
        _KEYWORDS
        | _CLASS_SCOPE_BUILTINS
        | runtime_attributes()
        | {RUNTIME_ALIAS}
        | set(aliases.values())
        | set(names.values())
    )

    services = []
    for si, s in enumerate(file.service):
        classes, spec, method_specs = service_names[si]
        attrs = _Namespace(class_reserved)
        pkg = f"{file.package}." if file.package else ""
        methods = []
        for mi, m in enumerate(s.method):
            in_file, in_path = types.lookup(m.input_type)
            out_file, out_path = types.lookup(m.output_type)
            deprecated = m.options.deprecated
            methods.append(
                Method(
                    name=m.name,
                    python_name=attrs.take(method_python_name(m.name)),
                    spec=method_specs[mi],
                    stream_type=_STREAM_TYPES[m.client_streaming, m.server_streaming],
                    input=f"{aliases[in_file]}.{in_path}",
                    output=f"{aliases[out_file]}.{out_path}",
                    idempotency=_IDEMPOTENCY.get(
                        m.options.idempotency_level, "UNKNOWN"
                    ),
                    doc=_doc(
                        comments.get((_SERVICE_FIELD, si, _METHOD_FIELD, mi), []),
                        ["Deprecated."] if deprecated else [],
                    ),
                    deprecated=deprecated,
                    full_name=f"{pkg}{s.name}.{m.name}",
                )
            )
        deprecated = s.options.deprecated
        services.append(
            Service(
                name=s.name,
                full_name=f"{pkg}{s.name}",
                spec=spec,
                handler=classes[0],
                handler_sync=classes[1],
                client=classes[2],
                client_sync=classes[3],
                methods=tuple(methods),
                doc=_doc(
                    comments.get((_SERVICE_FIELD, si), []),
                    ["Deprecated: this service is deprecated."] if deprecated else [],
                ),
                deprecated=deprecated,
            )
        )

    return File(
        proto=file.name,
        output=connect_path(file.name),
        services=tuple(services),
        imports=tuple(imports),
        names=names,
        runtime=RUNTIME_ALIAS,
        options=options,
    )


def _helpers_needed(
    file: descriptor_pb2.FileDescriptorProto, options: Options
) -> list[str]:
    """The standard-library names the module will use, in a fixed order."""
    kinds = {
        (m.client_streaming, m.server_streaming) for s in file.service for m in s.method
    }
    client_streams = any(c for c, _ in kinds)
    server_streams = any(s for _, s in kinds)
    any_streams = client_streams or server_streams
    need = []
    if any(
        s.options.deprecated or any(m.options.deprecated for m in s.method)
        for s in file.service
    ):
        need.append("warnings")
    if options.async_:
        if client_streams:
            need.append("AsyncIterable")
        if any_streams:
            need.append("AsyncIterator")
    if client_streams:
        need.append("Iterable")
    if options.sync and any_streams:
        need.append("Iterator")
    if any(s.options.deprecated for s in file.service):
        need.append("Any")
    need.append("ClassVar")
    return need
