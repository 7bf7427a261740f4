"""Rendering: Jinja templates in, black-formatted Python out.

Running black over every generated module would dominate the plugin's run time,
so the built-in templates lay code out the way black would, using the helpers
below for the few constructs whose layout depends on name lengths (signatures,
calls, sequences, imports, docstrings). Whenever a line still exceeds black's
limit outside a docstring, or templates come from the user, the module goes
through black after all. Tests assert the result always equals black's output.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from protoc_gen_connect_python.plugin.model import File

LINE_LENGTH = 88
"""Black's default line length."""

TEMPLATE_NAMES = (
    "module.py.j2",
    "handler.py.j2",
    "handler_sync.py.j2",
    "client.py.j2",
    "client_sync.py.j2",
)
"""The built-in templates; ``module.py.j2`` is the entry point."""

_QUOTE_RUN_RE = re.compile(r'"{3,}')
# Characters that would end a line, vanish or be invisible inside a docstring.
_ESCAPE_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_quotes(m: re.Match[str]) -> str:
    n = len(m.group())
    return '""\\"' * (n // 3) + '"' * (n % 3)


def docstring_lines(lines: Sequence[str], indent: int) -> list[str]:
    """A docstring's source lines, in the exact form black gives them.

    Backslashes, control characters and runs of three quotes are escaped;
    indentation is normalized like PEP 257 (and black) does.
    """
    text = [
        _QUOTE_RUN_RE.sub(
            _escape_quotes, _ESCAPE_RE.sub(_escape_char, line.replace("\\", "\\\\"))
        )
        for line in "\n".join(lines).split("\n")
    ]
    text = [_expand_leading_tabs(line) for line in text]
    first = text[0].strip() if text else ""
    rest = text[1:]
    margin = min((len(x) - len(x.lstrip()) for x in rest if x.strip()), default=0)
    rest = [x[margin:].rstrip() for x in rest]
    while rest and not rest[-1]:
        rest.pop()
    if first.startswith('"'):
        first = " " + first
    pad = " " * indent
    if not rest:
        if first.endswith('"'):
            first += " "
        return [f'{pad}"""{first}"""']
    out = [f'{pad}"""{first}']
    out.extend(f"{pad}{x}" if x else "" for x in rest)
    out.append(f'{pad}"""')
    return out


# Each method's docstring appears in up to four classes at the same indentation.
_cached_docstring = functools.lru_cache(maxsize=1024)(docstring_lines)


def _expand_leading_tabs(line: str) -> str:
    stripped = line.lstrip()
    if not stripped or stripped == line:
        return line
    prefix = line[: len(line) - len(stripped)]
    return prefix.expandtabs(4) + stripped


def _param_lines(pad: str, param: str) -> str:
    """One parameter of an exploded signature.

    A too-long union annotation goes in parentheses, split before ``|`` if needed.
    """
    line = f"{pad}{param},\n"
    if len(line) <= LINE_LENGTH + 1:
        return line
    name, sep, annotation = param.partition(": ")
    operands = annotation.split(" | ")
    if not sep or len(operands) < 2 or "=" in annotation:
        return line
    inner = pad + "    "
    if len(inner) + len(annotation) <= LINE_LENGTH:
        body = f"{inner}{annotation}\n"
    else:
        body = f"{inner}{operands[0]}\n" + "".join(
            f"{inner}| {o}\n" for o in operands[1:]
        )
    return f"{pad}{name}: (\n{body}{pad}),\n"


class _Layout:
    """Black-equivalent layout helpers, exposed to templates as globals."""

    def __init__(self) -> None:
        self.doc_lines: set[str] = set()

    def docstring(self, indent: int, *paragraphs: str | Sequence[str]) -> str:
        """A docstring at ``indent`` spaces from paragraphs (strings or lines)."""
        lines: list[str] = []
        for p in paragraphs:
            p_lines = [p] if isinstance(p, str) else list(p)
            if not p_lines:
                continue
            if lines:
                lines.append("")
            lines.extend(p_lines)
        out = _cached_docstring(tuple(lines), indent)
        self.doc_lines.update(out)
        return "\n".join(out)

    @staticmethod
    def signature(indent: int, head: str, params: Sequence[str], ret: str) -> str:
        """``def`` line(s): on one line, else parameters on one line, else one each."""
        pad = " " * indent
        body = ", ".join(params)
        line = f"{pad}{head}({body}) -> {ret}:"
        if len(line) <= LINE_LENGTH:
            return line
        inner = pad + "    "
        if len(inner) + len(body) <= LINE_LENGTH:
            return f"{pad}{head}(\n{inner}{body}\n{pad}) -> {ret}:"
        each = "".join(_param_lines(inner, p) for p in params)
        return f"{pad}{head}(\n{each}{pad}) -> {ret}:"

    @staticmethod
    def call(indent: int, head: str, args: Sequence[str]) -> str:
        """A call statement: on one line, else arguments on one line, else one each."""
        pad = " " * indent
        body = ", ".join(args)
        line = f"{pad}{head}({body})"
        if len(line) <= LINE_LENGTH:
            return line
        inner = pad + "    "
        if len(inner) + len(body) <= LINE_LENGTH:
            return f"{pad}{head}(\n{inner}{body}\n{pad})"
        each = "".join(f"{inner}{a},\n" for a in args)
        return f"{pad}{head}(\n{each}{pad})"

    @staticmethod
    def tuple_arg(indent: int, head: str, items: Sequence[str], tail: str) -> str:
        """``head(a, b)tail`` for a tuple literal: one line, else one item per line."""
        pad = " " * indent
        if len(items) == 1:
            line = f"{pad}{head}({items[0]},){tail}"
        else:
            line = f"{pad}{head}({', '.join(items)}){tail}"
        if len(line) <= LINE_LENGTH:
            return line
        each = "".join(f"{pad}    {x},\n" for x in items)
        return f"{pad}{head}(\n{each}{pad}){tail}"

    @staticmethod
    def from_import(package: str, names: Sequence[str]) -> str:
        """``from package import a, b``, parenthesized one per line if too long."""
        line = f"from {package} import {', '.join(names)}"
        if len(line) <= LINE_LENGTH:
            return line
        each = "".join(f"    {n},\n" for n in names)
        return f"from {package} import (\n{each})"


def _import_key(name: str) -> tuple[str, str]:
    return name.lower(), name


def import_lines(file: File) -> dict[str, list[str]]:
    """The module's import statements, grouped and ordered the way isort does.

    Keys: ``stdlib``, ``third_party`` (the runtime, ``google.protobuf``) and
    ``first_party`` (every other ``_pb2`` module).
    """
    layout = _Layout()
    stdlib: list[str] = []
    if "warnings" in file.names:
        alias = file.names["warnings"]
        stdlib.append(
            "import warnings" + ("" if alias == "warnings" else f" as {alias}")
        )
    for module, members in (
        ("collections.abc", ("AsyncIterable", "AsyncIterator", "Iterable", "Iterator")),
        ("typing", ("Any", "ClassVar")),
    ):
        plain = [m for m in members if file.names.get(m) == m]
        aliased = [m for m in members if file.names.get(m, m) != m]
        if plain:
            stdlib.append(layout.from_import(module, plain))
        stdlib.extend(
            layout.from_import(module, [f"{m} as {file.names[m]}"]) for m in aliased
        )

    groups: dict[bool, list[str]] = {True: [], False: []}
    runtime = f"from protoc_gen_connect_python import runtime as {file.runtime}"
    for third_party in (True, False):
        imps = [i for i in file.imports if i.third_party == third_party]
        lines = groups[third_party]
        # isort puts ``import x`` before ``from x import y`` in a section.
        for i in sorted(
            (i for i in imps if not i.package), key=lambda i: _import_key(i.module)
        ):
            lines.append(
                f"import {i.module}" + ("" if i.alias == i.module else f" as {i.alias}")
            )
        froms: list[tuple[tuple[str, str], str]] = []
        if third_party:
            froms.append((_import_key("protoc_gen_connect_python"), runtime))
        packages = sorted({i.package for i in imps if i.package}, key=_import_key)
        for pkg in packages:
            in_pkg = [i for i in imps if i.package == pkg]
            plain = sorted(
                (i.module for i in in_pkg if i.alias == i.module), key=_import_key
            )
            stmts = [layout.from_import(pkg, plain)] if plain else []
            stmts += [
                layout.from_import(pkg, [f"{i.module} as {i.alias}"])
                for i in sorted(in_pkg, key=lambda i: _import_key(i.module))
                if i.alias != i.module
            ]
            froms.extend((_import_key(pkg), s) for s in stmts)
        froms.sort(key=lambda x: x[0])
        lines.extend(s for _, s in froms)
    return {"stdlib": stdlib, "third_party": groups[True], "first_party": groups[False]}


def _builtin_templates() -> dict[str, str]:
    try:
        root: Any = resources.files("protoc_gen_connect_python.templates")
    except ModuleNotFoundError:
        # Running from a source checkout: templates/ sits next to the package.
        root = Path(__file__).resolve().parents[2] / "templates"
    return {name: (root / name).read_text(encoding="utf-8") for name in TEMPLATE_NAMES}


class Renderer:
    """Renders view-model files to source text; reuse one for many files."""

    def __init__(self, template_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = [jinja2.DictLoader(_builtin_templates())]
        if template_dir is not None:
            loaders.insert(0, jinja2.FileSystemLoader(str(template_dir)))
        self.custom = template_dir is not None
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            # Templates never change during a run: skip per-include freshness checks.
            auto_reload=False,
        )
        self.template = self.env.get_template("module.py.j2")
        self._black: Callable[[str], str] | None = None
        self.black_runs = 0
        """How many modules needed black (for tests and benchmarks)."""

    def render(self, file: File) -> str:
        """The generated module for ``file``, exactly as black would format it."""
        text, formatted = self.render_raw(file)
        if not formatted:
            self.black_runs += 1
            text = self.black(text)
        return text

    def render_raw(self, file: File) -> tuple[str, bool]:
        """The template output, and whether it is known to be black's layout already."""
        layout = _Layout()
        text = self.template.render(
            file=file,
            imports=import_lines(file),
            rt=file.runtime,
            names=file.names,
            docstring=layout.docstring,
            signature=layout.signature,
            call=layout.call,
            tuple_arg=layout.tuple_arg,
        )
        return text, not (self.custom or self._needs_black(text, layout.doc_lines))

    @staticmethod
    def _needs_black(text: str, doc_lines: set[str]) -> bool:
        return any(
            len(line) > LINE_LENGTH and line not in doc_lines
            for line in text.splitlines()
        )

    def black(self, text: str) -> str:
        """Format with black (imported on first use: it is slow to import)."""
        if self._black is None:
            import black

            mode = black.Mode()

            def fmt(src: str) -> str:
                return black.format_str(src, mode=mode)

            self._black = fmt
        return self._black(text)
