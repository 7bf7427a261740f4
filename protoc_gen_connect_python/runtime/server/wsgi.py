"""The WSGI app: the sync twin of the ASGI shell over the same core.

WSGI cannot interrupt a running handler, so deadlines are checked before the
handler runs, between streamed messages and after the handler returns; a
handler that blocks past its deadline finishes its work, and the client then
gets ``deadline_exceeded`` instead of the result. WSGI also has no HTTP
trailers: gRPC, which needs them, is served only where the server offers the
``wsgi.ext.http.send_trailers`` extension (pyvoy), and refused with a clear
error elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import (
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from typing import IO, TYPE_CHECKING, Any

from google.protobuf.message import Message

from protoc_gen_connect_python.runtime.code import Code
from protoc_gen_connect_python.runtime.context import SENT
from protoc_gen_connect_python.runtime.envelope import JOIN_MAX
from protoc_gen_connect_python.runtime.errors import ConnectError
from protoc_gen_connect_python.runtime.headers import Headers
from protoc_gen_connect_python.runtime.interceptors import SyncServerInterceptor
from protoc_gen_connect_python.runtime.method import StreamType
from protoc_gen_connect_python.runtime.server.core import (
    DRAIN_MAX_BYTES,
    DRAIN_SECONDS,
    HEAD_NAMES,
    NOT_FOUND,
    Endpoint,
    Head,
    HTTPReject,
    RawHeaders,
    Reply,
    ServerCall,
    ServerCore,
    ServerOptions,
    answer_first,
    body_cut_short,
    check_deadline,
    check_drain,
    client_gone,
    close_iterator,
    declared_over,
    drain_first,
    escaped_route,
    logger,
    read_failed,
    shutting_down,
    status_line,
)
from protoc_gen_connect_python.runtime.service import SyncService
from protoc_gen_connect_python.runtime.shutdown import DRAIN, install_signal_hooks

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from protoc_gen_connect_python.runtime.server.core import ServerOptionsKwargs

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
SendTrailers = Callable[[list[tuple[str, str]]], Any]

SEND_TRAILERS = "wsgi.ext.http.send_trailers"
"""The environ key of the trailers extension (pyvoy): ``send([(name, value)])``.

It ends the response: body bytes the app yields after the call are dropped, so
the shell calls it from its response iterator once the last bytes were yielded.
"""

_READ_CHUNK = 65536


def _environ_headers(environ: Environ) -> Headers:
    h = Headers()
    d = h._d  # built in one pass; names from CGI variables are already unique
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            d[k[5:].replace("_", "-").lower()] = [v]
    ct = environ.get("CONTENT_TYPE")
    if ct:
        d["content-type"] = [ct]
    cl = environ.get("CONTENT_LENGTH")
    if cl:
        d["content-length"] = [cl]
    return h


_CGI_NAMES = {"HTTP_" + n.upper().replace("-", "_"): n for n in HEAD_NAMES}
_CGI_KEYS = frozenset(_CGI_NAMES)


def _head(environ: Environ) -> Head:
    """The headers the protocols read, as ``_environ_headers`` would give them."""
    # One set operation in C finds the few present among the eleven names.
    head = {_CGI_NAMES[k]: environ[k] for k in environ.keys() & _CGI_KEYS}
    ct = environ.get("CONTENT_TYPE")
    if ct:
        head["content-type"] = ct
    cl = environ.get("CONTENT_LENGTH")
    if cl:
        head["content-length"] = cl
    return head


class _EnvironSource:
    """Reads what the protocols did not need from the environ, when asked."""

    __slots__ = ()

    def headers(self, environ: Environ) -> Headers:
        return _environ_headers(environ)

    def peer(self, environ: Environ) -> str | None:
        addr = environ.get("REMOTE_ADDR")
        port = environ.get("REMOTE_PORT")
        return (f"{addr}:{port}" if port else addr) if addr else None

    def query(self, environ: Environ) -> str:
        qs: str = environ.get("QUERY_STRING", "")
        return qs


_ENVIRON = _EnvironSource()


_STR_PAIRS: dict[tuple[bytes, bytes], tuple[str, str]] = {}


def _str_pair(pair: tuple[bytes, bytes]) -> tuple[str, str]:
    found = (pair[0].decode("latin-1"), pair[1].decode("latin-1"))
    if len(pair[0]) + len(pair[1]) <= 128 and len(_STR_PAIRS) < 1024:  # bounded
        _STR_PAIRS[pair] = found
    return found


def _str_headers(raw: RawHeaders) -> list[tuple[str, str]]:
    # Most pairs repeat from call to call (content type, accepted encodings,
    # common lengths): decode each once.
    get = _STR_PAIRS.get
    return [get(p) or _str_pair(p) for p in raw]


def _raw_path(environ: Environ) -> bytes | None:
    """The request target as sent, where the server gives it (gunicorn:
    ``RAW_URI``; others: ``REQUEST_URI``); granian and pyvoy give none."""
    raw: str | None = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None or "%" not in raw:  # the usual case: nothing escaped
        return None
    return raw.encode("latin-1", "replace")


def _trailer_sender(environ: Environ) -> SendTrailers | None:
    """The server's trailers extension, if trailers reach the client with it."""
    if environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1"):
        # pyvoy (Envoy) offers the extension on HTTP/1.1 too but drops the
        # trailers there; gRPC needs HTTP/2 anyway.
        return None
    send: SendTrailers | None = environ.get(SEND_TRAILERS)
    return send


def _read(stream: IO[bytes], n: int) -> bytes:
    """One read of the request body; a failed one means the client is gone.

    Servers report a reset or a body cut mid-chunk differently (OSError and
    gunicorn's NoMoreData, RuntimeError from pyvoy).
    """
    try:
        return stream.read(n)
    except Exception as e:
        raise read_failed(e) from None


def _read_body(environ: Environ, call: ServerCall) -> bytes:
    stream: IO[bytes] = environ["wsgi.input"]
    limit = call.unary_body_limit
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            n = int(length)
        except ValueError:
            raise ConnectError(
                Code.INVALID_ARGUMENT, "invalid Content-Length"
            ) from None
        return _read_exactly(stream, n)
    # Chunked request: read until the server reports the end, within the limit.
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = _read(stream, _READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if limit and size > limit:
            raise call.body_too_large()
        chunks.append(chunk)


def _read_exactly(stream: IO[bytes], n: int) -> bytes:
    """``n`` bytes; invalid_argument if the body ends first.

    A read may return less than asked before the end (pyvoy hands over what
    has arrived), so one read is not enough for a whole body.
    """
    if not n:
        return b""
    data = _read(stream, n)
    if len(data) == n:
        return data
    chunks = [data]
    size = len(data)
    while size < n:
        chunk = _read(stream, n - size)
        if not chunk:
            raise body_cut_short()
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _requests(environ: Environ, call: ServerCall, eof: list[bool]) -> Iterator[Message]:
    # Read exactly what the next message needs: a blocking read for more could
    # wait on bytes a client sends only after it sees our answer. ``eof[0]``
    # becomes True once the body was read to its end.
    stream: IO[bytes] = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    remaining = int(length) if length and length.isdigit() else -1
    ctx = call.ctx
    while remaining != 0:
        n = call.input_needed
        if remaining > 0:
            n = min(n, remaining)
        data = _read(stream, n)
        if not data:
            if remaining > 0:
                raise body_cut_short()
            break
        if remaining > 0:
            remaining -= len(data)
        for m in call.feed(data):
            check_deadline(ctx)
            yield m
    eof[0] = True
    call.close_input()


def _drain(environ: Environ) -> None:
    """Read and drop the rest of a request body after the response was sent.

    A server that finds request bytes unread when the response ends closes the
    connection (gunicorn), and a client still sending gets a broken pipe
    instead of reading the answer; Envoy resets an HTTP/3 stream whose request
    is still coming in when its response ends. Bounded by ``DRAIN_MAX_BYTES``
    and, between reads, ``DRAIN_SECONDS``.
    """
    stream: IO[bytes] = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    # With a declared length, never ask for more than is left: the server
    # may not stop a read at the end of the body.
    remaining = int(length) if length and length.isdigit() else -1
    until = time.monotonic() + DRAIN_SECONDS
    size = 0
    while remaining != 0 and size <= DRAIN_MAX_BYTES and time.monotonic() < until:
        n = _READ_CHUNK if remaining < 0 else min(_READ_CHUNK, remaining)
        try:
            data = stream.read(n)
        except Exception:
            # Best effort: the client may be gone, and servers report that
            # differently (OSError from gunicorn, RuntimeError from pyvoy).
            return
        if not data:
            return
        size += len(data)
        if remaining > 0:
            remaining -= len(data)


def _unread(environ: Environ, ep: Endpoint | None) -> Environ | None:
    """The request to drain after a reply that did not read all of it, if any.

    None for a bidi request (or an unrouted one) without a declared length
    over HTTP/2 and later: a full-duplex client may send nothing more until it
    sees the response end, and a blocking read would wait for that for good
    (WSGI cannot time a read out). These protocols let a response end before
    its request. Other clients send their whole request regardless.
    """
    if (
        (ep is None or ep.spec.stream_type is StreamType.BIDI_STREAM)
        and not environ.get("CONTENT_LENGTH")
        and not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1")
    ):
        return None
    return environ


class WSGIApp:
    """Serves sync service instances over WSGI (gunicorn, Flask, Django, ...).

    ``WSGIApp(*services, interceptors=(...), **options)``: ``services`` are
    instances of generated ``FooServiceSync`` subclasses; ``options`` are the
    fields of ``ServerOptions``. Routes match ``PATH_INFO``, so the app works
    mounted under a prefix (``SCRIPT_NAME``) by any WSGI dispatcher; where the
    server gives the raw path too, a procedure spelled with escapes is not
    found (``escaped_route``).
    """

    def __init__(
        self,
        *services: SyncService,
        interceptors: Sequence[SyncServerInterceptor] = (),
        **options: Unpack[ServerOptionsKwargs],
    ) -> None:
        for s in services:
            if not isinstance(s, SyncService):
                raise TypeError(
                    f"{type(s).__name__} is not a sync service; "
                    "serve async services with ASGIApp"
                )
        self.options = ServerOptions(**options)
        self._core = ServerCore(services, self.options, interceptors, is_async=False)
        self._routes = self._core.routes
        self._warned_trailers = False
        # Servers build WSGI apps in the process that serves them, after their
        # own signal handlers are in place (gunicorn's workers).
        install_signal_hooks()

    def __call__(
        self, environ: Environ, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The WSGI entry point."""
        ep = self._routes.get(environ.get("PATH_INFO", ""))
        if ep is not None and escaped_route(_raw_path(environ), ep):
            ep = None
        if ep is None:
            return _reply(start_response, NOT_FOUND, None, _unread(environ, ep))
        try:
            call = self._core.start(
                ep, environ["REQUEST_METHOD"], _head(environ), _ENVIRON, environ
            )
        except HTTPReject as r:
            return _reply(start_response, r.reply, None, _unread(environ, ep))
        send_trailers = None
        if call.needs_trailers:
            send_trailers = _trailer_sender(environ)
            if send_trailers is None:
                # Not drained: the refusal must stay a trailers-only response,
                # which a body iterator would turn into headers and empty data.
                return _reply(start_response, self._no_trailers(call))
        if ep.unary is not None:
            reply, read, refused = self._unary(ep, call, environ)
            unread = None if read else _unread(environ, ep)
            first = refused and answer_first(environ.get("SERVER_PROTOCOL", ""))
            return _reply(start_response, reply, send_trailers, unread, first)
        return _head_first(
            self._stream(ep, call, environ, start_response, send_trailers)
        )

    def _no_trailers(self, call: ServerCall) -> Reply:
        if not self._warned_trailers:
            self._warned_trailers = True
            logger.warning(
                "this WSGI server cannot send HTTP trailers (no %s extension, "
                "or HTTP/1.1); %s requests are refused",
                SEND_TRAILERS,
                call.ctx.protocol,
            )
        err = ConnectError(
            Code.UNIMPLEMENTED,
            f"this WSGI server cannot send HTTP trailers, which "
            f"{call.ctx.protocol} needs",
        )
        if call.endpoint.ends:
            call.end(err)
        return call.encode_refusal(err)

    def _unary(
        self, ep: Endpoint, call: ServerCall, environ: Environ
    ) -> tuple[Reply, bool, bool]:
        """The reply, whether the request body was read to its end, and
        whether it was refused unread for its declared length."""
        ctx = call.ctx
        read = refused = False
        try:
            call.parse_head()
            if DRAIN.started is not None:
                check_drain(self.options.shutdown_grace)
            for hook in ep.hooks:
                hook(ctx)
            body = call.preread
            if body is None:
                limit = call.unary_body_limit
                if declared_over(environ.get("CONTENT_LENGTH"), limit):
                    refused = True
                    raise call.body_too_large()
                body = _read_body(environ, call)
            read = True
            request = call.decode_unary(body)
            if ctx.deadline is not None:
                check_deadline(ctx)
            assert ep.unary is not None
            response = ep.unary(request, ctx)
            if ctx.deadline is not None:
                check_deadline(ctx)
            reply = call.encode_unary(response)
            if ep.ends:
                call.end(None)
            return reply, read, refused
        except HTTPReject as r:
            if ep.ends:
                call.end(r.error())
            return r.reply, read, refused
        except Exception as e:
            err = self._core.to_error(e, ep)
            if ep.ends:
                call.end(err)
            return _error_reply(call, err), read, refused

    def _stream(
        self,
        ep: Endpoint,
        call: ServerCall,
        environ: Environ,
        start_response: StartResponse,
        send_trailers: SendTrailers | None,
    ) -> Generator[bytes, None, None]:
        ctx = call.ctx
        started = False
        yielded = False
        err: ConnectError | None = None
        responses: Iterator[Message] | None = None
        eof = [False]
        # The pieces of the next write: one message, or those held under
        # ctx.buffer_hint.
        held: list[bytes] = []
        size = 0

        def send_head() -> Awaitable[None]:
            # ctx.send_headers(): PEP 3333 servers send the head on the first
            # call of start_response's write(), even with no data.
            nonlocal started
            if not started:
                started = True
                status, head = call.stream_head()
                write = start_response(status_line(status), _str_headers(head))
                if write is not None:  # granian's returns None (see _Started)
                    write(b"")
            return SENT

        try:
            try:
                call.parse_head()
                if DRAIN.started is not None:
                    raise shutting_down()
                check_deadline(ctx)
                for hook in ep.hooks:
                    hook(ctx)
                assert ep.stream is not None
                ctx._head_sender = send_head
                responses = ep.stream(_requests(environ, call, eof), ctx)
                frame = call.stream_framer()
                grace = self.options.shutdown_grace
                for msg in responses:
                    if ctx.deadline is not None:
                        check_deadline(ctx)
                    if DRAIN.started is not None:
                        check_drain(grace)
                    size += frame(msg, held)
                    if not started:
                        status, head = call.stream_head()
                        start_response(status_line(status), _str_headers(head))
                        started = True
                    if size < JOIN_MAX and ctx.buffer_hint:
                        continue
                    data = b"".join(held)
                    held.clear()
                    size = 0
                    yielded = True
                    yield data
                check_deadline(ctx)
            finally:
                ctx._head_sender = None
                if responses is not None:
                    close_iterator(responses)
        except HTTPReject as r:
            if ep.ends:
                call.end(r.error())
            yield from _reply(start_response, r.reply)
            return
        except GeneratorExit:
            # The server closed the response early: the client went away.
            if ep.ends:
                call.end(client_gone())
            raise
        except Exception as e:
            err = self._core.to_error(e, ep)
        if ep.ends:
            call.end(err)
        if not started and err is not None:
            reply = _error_reply(call, err)
            start_response(status_line(reply.status), _str_headers(reply.headers))
            body, trailers = reply.body, reply.trailers
        else:
            if not started:
                status, head = call.stream_head()
                start_response(status_line(status), _str_headers(head))
            body, trailers = call.encode_stream_end(err)
            if held:  # what the handler yielded before it ended goes first
                body = b"".join([*held, body])
        yield from _end(
            body,
            trailers,
            send_trailers,
            None if eof[0] else _unread(environ, ep),
            mark=not yielded,
        )


class _Started:
    """A streaming response whose head is set: its first piece, then the rest.

    granian reads the status and headers when the app returns and ignores a
    ``start_response`` made later from the response iterator, which PEP 3333
    allows; so the app runs a stream until its head is known (the first
    message, or the end) before it returns. ``close`` reaches the stream even
    when the server never iterated it.
    """

    __slots__ = ("_first", "_rest")

    def __init__(self, first: bytes, rest: Generator[bytes, None, None]) -> None:
        self._first = first
        self._rest = rest

    def __iter__(self) -> Iterator[bytes]:
        if self._first:
            yield self._first
        yield from self._rest

    def close(self) -> None:
        """Close the stream (the server calls it when the response is done)."""
        self._rest.close()


def _head_first(response: Generator[bytes, None, None]) -> Iterable[bytes]:
    """``response`` advanced until it has called ``start_response``."""
    first = next(response, None)
    if first is None:
        return []
    return _Started(first, response)


def _error_reply(call: ServerCall, err: ConnectError) -> Reply:
    """The response for an error before anything was sent.

    gRPC (served here only with the trailers extension) answers trailers-only,
    the status in the headers of a response the server ends with its HEADERS
    frame, unless the handler set response headers: those are sent apart from
    the trailers, as clients see them as headers only then.
    """
    if call.needs_trailers and not call.ctx._response_headers:
        return call.encode_refusal(err)
    return call.encode_error(err)


def _reply(
    start_response: StartResponse,
    reply: Reply,
    send_trailers: SendTrailers | None = None,
    unread: Environ | None = None,
    answer_first: bool = False,
) -> Iterable[bytes]:
    # An early reply drains the request itself: a server that drains less
    # (gunicorn: 64 KiB) closes the connection after a keep-alive response,
    # and a client reusing it meanwhile loses its next call.
    start_response(status_line(reply.status), _str_headers(reply.headers))
    if reply.trailers is None and unread is None:
        return [reply.body] if reply.body else []
    return _head_first(
        _end(reply.body, reply.trailers, send_trailers, unread, answer_first, mark=True)
    )


def _end(
    body: bytes,
    trailers: RawHeaders | None,
    send_trailers: SendTrailers | None,
    unread: Environ | None,
    answer_first: bool = False,
    *,
    mark: bool,
) -> Generator[bytes, None, None]:
    """The last body bytes and the drain of an ``unread`` request (in the order
    ``drain_first`` says, or after the bytes when ``answer_first``: a body
    refused for its declared length may never come), then the end.

    As on ASGI, gRPC's status comes last, with the trailers, which end the
    response. Nothing is yielded for an empty body: pyvoy sends the head at the
    first yield, and would then end a gRPC trailers-only response with an empty
    DATA frame instead of its HEADERS frame. ``mark``: nothing was yielded yet,
    and ``_head_first`` runs this up to its first yield; an empty body then
    yields ``b""`` there, which ``_Started`` keeps from the server.

    A drain that goes first is done before that yield, so before the app
    returns: granian sends the head then, and the Go HTTP/2 client ends a
    unary or server-stream request body at the response head, short of its
    declared length, which granian answers by resetting the stream.
    """
    if (
        unread is not None
        and not answer_first
        and drain_first(unread.get("CONTENT_LENGTH"))
    ):
        _drain(unread)
        unread = None
    if body:
        yield body
    elif mark:
        yield b""
    if unread is not None:
        _drain(unread)
    if trailers is not None:
        assert send_trailers is not None
        send_trailers(_str_headers(trailers))
