"""The fast layout path of the renderer produces exactly what black produces.

Names and comments of random lengths and content go through the real model and
templates; whenever the renderer claims its output needs no black pass, black
must agree byte for byte.
"""

from __future__ import annotations

import string

import black
import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protoc_gen_connect_python.plugin import model
from protoc_gen_connect_python.plugin.options import Options
from protoc_gen_connect_python.plugin.render import Renderer, docstring_lines

MODE = black.Mode()

ident = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters),
    st.text(string.ascii_letters + string.digits + "_", max_size=40),
)
comment = st.text(
    st.sampled_from([*"ab \t\"'\\\n`", "\x0c", "\u00e9", "\u4e2d", "\u2028", "\xa0"]),
    max_size=60,
)


@st.composite
def proto_files(draw: st.DrawFn) -> descriptor_pb2.FileDescriptorProto:
    pkg = ".".join(draw(st.lists(ident, min_size=0, max_size=3)))
    f = descriptor_pb2.FileDescriptorProto(
        name=draw(st.sampled_from(["a/b", "x", "very/long/path/name"])) + "/f.proto",
        package=pkg,
    )
    messages = draw(st.lists(ident, min_size=1, max_size=3, unique=True))
    for m in messages:
        f.message_type.add(name=m)
    prefix = f".{pkg}." if pkg else "."
    for si, sname in enumerate(
        draw(st.lists(ident, min_size=1, max_size=2, unique=True))
    ):
        svc = f.service.add(name=sname)
        svc.options.deprecated = draw(st.booleans())
        if draw(st.booleans()):
            loc = f.source_code_info.location.add(path=[6, si])
            loc.leading_comments = draw(comment)
        for mi in range(draw(st.integers(0, 3))):
            meth = svc.method.add(
                name=draw(ident),
                input_type=prefix + draw(st.sampled_from(messages)),
                output_type=prefix + draw(st.sampled_from(messages)),
                client_streaming=draw(st.booleans()),
                server_streaming=draw(st.booleans()),
            )
            meth.options.deprecated = draw(st.booleans())
            if draw(st.booleans()):
                loc = f.source_code_info.location.add(path=[6, si, 2, mi])
                loc.leading_comments = draw(comment)
                loc.trailing_comments = draw(comment)
    return f


RENDERER = Renderer()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proto_files())
def test_fast_layout_equals_black(f: descriptor_pb2.FileDescriptorProto) -> None:
    """Wherever the renderer skips black, black would not change a byte."""
    file = model.build_file(f, model.TypeIndex([f]), Options())
    raw, formatted = RENDERER.render_raw(file)
    compile(raw, "generated.py", "exec")
    if formatted:
        assert black.format_str(raw, mode=MODE) == raw
    else:
        out = RENDERER.render(file)
        assert black.format_str(out, mode=MODE) == out


@settings(max_examples=200, deadline=None)
@given(st.lists(comment, min_size=1, max_size=4), st.sampled_from([0, 4, 8]))
def test_docstrings_are_black_stable(lines: list[str], indent: int) -> None:
    """Docstrings of arbitrary text are valid, black-stable and keep their words."""
    text = "\n".join(docstring_lines(lines, indent))
    src = (
        f"class C:\n    def f(self) -> None:\n{text}\n        pass\n"
        if indent == 8
        else (f"class C:\n{text}\n" if indent == 4 else f"{text}\n")
    )
    assert black.format_str(src, mode=MODE) == src


@pytest.mark.parametrize("n", range(1, 90))
def test_lengths_sweep(n: int) -> None:
    """Every name length from 1 to 89 in every position, deterministically."""
    name = ("A" + "b" * 90)[:n]
    f = descriptor_pb2.FileDescriptorProto(name="p/f.proto", package="p")
    f.message_type.add(name=name)
    svc = f.service.add(name=name)
    for cs in (False, True):
        for ss in (False, True):
            svc.method.add(
                name=f"{name}{int(cs)}{int(ss)}",
                input_type=f".p.{name}",
                output_type=f".p.{name}",
                client_streaming=cs,
                server_streaming=ss,
            )
    svc.options.deprecated = True
    file = model.build_file(f, model.TypeIndex([f]), Options())
    raw, formatted = RENDERER.render_raw(file)
    if formatted:
        assert black.format_str(raw, mode=MODE) == raw
