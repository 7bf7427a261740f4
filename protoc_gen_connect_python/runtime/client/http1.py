"""HTTP/1.1 for the client, without I/O: request heads out, response bytes in.

:func:`request_head` serializes a request head (RFC 9112 section 3 and 6);
:func:`encode_chunk` and :data:`LAST_CHUNK` frame a streamed request body with
the chunked transfer coding; :func:`writes` says how both shells write a body
with what precedes it. :class:`ResponseParser` takes response bytes as
they arrive and hands back the head, then the body piece by piece, following
the message-length rules of RFC 9112 section 6.3: no body after ``HEAD`` and
for ``1xx``/``204``/``304``; chunked when it is the final transfer coding;
otherwise ``Content-Length``; otherwise the body runs until the connection
closes. Informational (``1xx``) responses are skipped.

The parser never holds more than what was fed and not yet taken; a body is
handed out as soon as its bytes are in, whatever the chunk boundaries. The
asyncio and socket shells in ``http1_transport.py`` drive it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "JOIN_MAX",
    "LAST_CHUNK",
    "MAX_CHUNK_LINE",
    "MAX_HEAD_BYTES",
    "Limits",
    "ProtocolError",
    "ResponseHead",
    "ResponseParser",
    "encode_chunk",
    "request_end",
    "request_head",
    "request_start",
    "writes",
]

MAX_HEAD_BYTES = 64 * 1024
"""Largest response head (status line and fields), and largest trailer section."""
MAX_CHUNK_LINE = 4096
"""Longest chunk-size line, extensions included."""


@dataclass(frozen=True)
class Limits:
    """What a response may not exceed; beyond it, :class:`ProtocolError`.

    ``max_head_bytes`` bounds the response head (status line and fields) and
    the trailer section, each; ``max_chunk_line`` a chunk-size line, extensions
    included. Nothing else is held: body bytes are handed out as they come.
    """

    max_head_bytes: int = MAX_HEAD_BYTES
    max_chunk_line: int = MAX_CHUNK_LINE


LAST_CHUNK = b"0\r\n\r\n"
"""The end of a chunked request body (no trailers)."""

_HEX = frozenset(b"0123456789abcdefABCDEF")


class ProtocolError(Exception):
    """The peer sent something that is not a valid HTTP/1.1 response."""


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (``data`` must not be empty)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


JOIN_MAX = 64 * 1024
"""Largest payload copied into one write with what goes before it."""


def writes(prefix: bytes, data: bytes, *, chunk: bool = False) -> tuple[bytes, ...]:
    """``prefix`` then ``data`` (as one chunk if ``chunk``), as the writes to make.

    Up to ``JOIN_MAX`` one write, which costs a copy; a bigger ``data`` goes
    in a write of its own, uncopied.
    """
    if chunk:
        if len(data) <= JOIN_MAX:
            return (prefix + encode_chunk(data),)
        return (prefix + b"%x\r\n" % len(data), data, b"\r\n")
    if len(data) <= JOIN_MAX:
        return (prefix + data,)
    return (prefix, data) if prefix else (data,)


def request_head(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]],
    content_length: int | None,
) -> bytes:
    """The head of a request; ``content_length`` None means a chunked body.

    ``headers`` must not carry framing or ``host`` fields: this function adds
    them. Names and values with CR, LF or NUL raise ``ValueError`` (they would
    split the head).
    """
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers])
    framing = _framing(method, content_length)
    text = f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n{fields}{framing}\r\n"
    return _checked(text, len(headers) + (4 if framing else 3), " " in target)


def request_start(
    method: str, target: str, host: str, headers: list[tuple[str, str]]
) -> bytes:
    """The request line, ``host`` and ``headers``: the start of a request head.

    :func:`request_end` adds the rest; ``request_start(...) + request_end(...)``
    is :func:`request_head`. Raises ``ValueError`` as that does.
    """
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers])
    text = f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n{fields}"
    return _checked(text, len(headers) + 2, " " in target)


def request_end(
    method: str, headers: list[tuple[str, str]], content_length: int | None
) -> bytes:
    """More ``headers``, the framing field and the empty line that ends a head."""
    framing = _framing(method, content_length)
    if not headers:
        return (framing + "\r\n").encode("latin-1")
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers])
    return _checked(f"{fields}{framing}\r\n", len(headers) + (2 if framing else 1))


def _framing(method: str, content_length: int | None) -> str:
    if content_length is None:
        return "transfer-encoding: chunked\r\n"
    if content_length or method not in ("GET", "HEAD"):
        return f"content-length: {content_length}\r\n"
    return ""


def _checked(text: str, lines: int, bad_target: bool = False) -> bytes:
    # Every line contributes exactly one CRLF; anything more is injection.
    if (
        text.count("\n") != lines
        or text.count("\r") != lines
        or "\x00" in text
        or bad_target
    ):
        raise ValueError("CR, LF or NUL in a header, or a space in the target")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as e:
        raise ValueError(f"header values must be Latin-1 text: {e}") from None


class ResponseHead:
    """Status, reason and fields of a final response, names in lower case."""

    __slots__ = ("headers", "keep_alive", "reason", "status", "version")

    def __init__(
        self,
        version: str,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
    ) -> None:
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.keep_alive = True

    def __repr__(self) -> str:
        return f"ResponseHead({self.status} {self.reason!r})"


def _parse_fields(lines: list[str]) -> list[tuple[str, str]]:
    """Field lines (Latin-1 text, no line ends) to (lower-case name, value) pairs."""
    out: list[tuple[str, str]] = []
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name or "\t" in name:
            if line[:1] in (" ", "\t"):
                # obs-fold: a user agent replaces it with a space (RFC 9112 5.2).
                if not out:
                    raise ProtocolError("a header section starts with a folded line")
                prev_name, prev_value = out[-1]
                out[-1] = (prev_name, prev_value + " " + line.strip(" \t"))
                continue
            # Whitespace before the colon is tolerated in responses (RFC 9112 5.1).
            name = name.rstrip(" \t")
            if not colon or not name or " " in name or "\t" in name:
                raise ProtocolError(f"malformed header line {line[:100]!r}")
        out.append((name.lower(), value.strip(" \t")))
    return out


def _split_lines(block: bytes) -> list[str]:
    """CRLF-terminated lines as text (a bare LF is accepted too, RFC 9112 2.2)."""
    text = block.decode("latin-1")
    if text.count("\n") == text.count("\r\n"):
        return text.split("\r\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def _find_blank_line(buf: bytes, pos: int) -> tuple[int, int]:
    """Where the block ending at the first empty line ends: (block end, next pos)."""
    i = buf.find(b"\r\n\r\n", pos)
    if i != -1 and buf.count(b"\n", pos, i) == buf.count(b"\r\n", pos, i):
        # The usual case: no bare LF before it, so no earlier empty line.
        return i, i + 4
    # Bare LFs: the earliest of the three ways a line may end an empty one
    # ends the block ("\n\r\n" may start just before a "\r\n\r\n").
    best = (i, i + 4) if i != -1 else (-1, -1)
    for sep in (b"\n\n", b"\n\r\n"):
        k = buf.find(sep, pos)
        if k != -1 and (best[0] == -1 or k < best[0]):
            best = (k, k + len(sep))
    return best


_DEFAULT_LIMITS = Limits()
# Every way a line can be empty contains one of these (see _find_blank_line).
_BLANK_LINE = (b"\n\n", b"\n\r\n")

# Body framings.
_NONE = 0
_LENGTH = 1
_CHUNKED = 2
_UNTIL_CLOSE = 3

# Chunked states.
_SIZE = 0
_DATA = 1
_DATA_END = 2
_TRAILERS = 3


class ResponseParser:
    """Parses one response from bytes fed as they come.

    ``feed`` appends bytes and ``feed_eof`` notes that the peer closed.
    :meth:`head` returns the final response head once it is complete (None
    until then). :meth:`body` then returns the body bytes available so far
    (``b""`` when none); :attr:`complete` turns True at the end of the message,
    after which :attr:`trailers` holds the chunked trailer fields, if any, and
    :attr:`reusable` says whether the connection may carry another request.
    Malformed input, input beyond ``limits``, and a connection closed early,
    raise :class:`ProtocolError`.

    Bytes fed in small pieces cost time in proportion to their number, never
    to the square of it: while the end of a head, of a chunk-size line or of
    the trailers is awaited, only the newly fed bytes are searched for it.
    """

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_chunk_state",
        "_eof",
        "_framing",
        "_head",
        "_left",
        "_max_head",
        "_max_line",
        "_method",
        "_more",
        "_more_size",
        "_pos",
        "_searched",
        "_seen",
        "_tail",
        "complete",
        "trailers",
    )

    def __init__(self, method: str = "POST", limits: Limits | None = None) -> None:
        self._method = method
        limits = limits or _DEFAULT_LIMITS
        self._max_head = limits.max_head_bytes
        self._max_line = limits.max_chunk_line
        self._buf = b""
        self._pos = 0
        # Reads fed while unparsed bytes remain, joined when next parsed:
        # adding each to the buffer would copy it whole on every read.
        self._more: list[bytes] = []
        self._more_size = 0
        # The unparsed bytes were searched for what ends the awaited part, up
        # to ``_seen`` reads of ``_more``; ``_tail`` is their last two bytes.
        self._searched = False
        self._seen = 0
        self._tail = b""
        self._eof = False
        self._head: ResponseHead | None = None
        self._framing = _NONE
        self._left = 0
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self.complete = False
        self.trailers: list[tuple[str, str]] = []

    # -- input ------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if self._pos >= len(self._buf) and not self._more:
            self._buf = data
            self._pos = 0
            self._searched = False
        else:
            self._more.append(data)
            self._more_size += len(data)

    def _gather(self) -> None:
        """Join the reads fed since the last parse onto the buffer, once."""
        rest = memoryview(self._buf)[self._pos :]
        self._buf = b"".join([rest, *self._more])
        self._pos = 0
        self._more = []
        self._more_size = 0
        self._searched = False
        self._seen = 0

    def _nothing_new(self, needles: tuple[bytes, ...], lead: bytes) -> bool:
        """Whether the reads fed since the last search cannot end the awaited part.

        Only those reads are searched for ``needles`` (up to 3 bytes long),
        with the two bytes before them; ``lead`` stands before the unparsed
        bytes. False when the unparsed bytes were not searched yet.
        """
        if not self._searched or self._eof:
            return False
        more = self._more
        if self._seen:
            tail = self._tail
        else:
            buf = self._buf
            tail = lead + buf[max(self._pos, len(buf) - 2) :]
        for piece in more[self._seen :]:
            joint = tail[-2:] + piece[:2]
            for needle in needles:
                if needle in joint or needle in piece:
                    return False
            tail = tail[-2:] + piece[-2:]
        self._seen = len(more)
        self._tail = tail[-2:]
        return True

    def feed_eof(self) -> None:
        """The peer closed its side: a body delimited by the close ends here."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet parsed or handed out."""
        return len(self._buf) - self._pos + self._more_size

    # -- head -------------------------------------------------------------------

    def head(self) -> ResponseHead | None:
        """The final response head, or None while it is incomplete."""
        if self._head is not None:
            return self._head
        if self._more:
            if self._nothing_new(_BLANK_LINE, b""):
                if self.buffered > self._max_head:
                    raise ProtocolError("response head too large")
                return None
            self._gather()
        buf = self._buf
        pos = self._pos
        if pos >= len(buf) and not self._eof:
            return None
        if buf.startswith(b"HTTP/1.1 ", pos):
            head = self._quick_head(buf, pos)
            if head is not None:
                return head
        while True:
            buf = self._buf
            pos = self._pos
            end, nxt = _find_blank_line(buf, pos)
            if end == -1:
                if len(buf) - pos > self._max_head:
                    raise ProtocolError("response head too large")
                if self._eof:
                    if pos == len(buf):
                        raise ProtocolError("connection closed without a response")
                    raise ProtocolError("connection closed inside the response head")
                self._searched = True
                return None
            if end - pos > self._max_head:
                raise ProtocolError("response head too large")
            head = self._parse_head(buf[pos:end])
            self._pos = nxt
            if head.status >= 200:
                self._start_body(head)
                return head
            if head.status == 101:
                raise ProtocolError("unexpected 101 Switching Protocols")
            # 1xx informational: skipped, the final response follows.

    def _quick_head(self, buf: bytes, pos: int) -> ResponseHead | None:
        """The usual final HTTP/1.1 head, CRLF only; None for anything else.

        Gives what the general path would, only faster; that path handles (and
        rejects) everything this one leaves to it.
        """
        end = buf.find(b"\r\n\r\n", pos)
        if (
            end == -1
            or end - pos > self._max_head
            or buf.count(b"\n", pos, end) != buf.count(b"\r\n", pos, end)
        ):
            return None
        lines = buf[pos:end].decode("latin-1").split("\r\n")
        line = lines[0]
        code = line[9:12]
        if (
            len(code) != 3
            or not code.isdigit()
            or not code.isascii()
            or code[0] in "01"
            or (len(line) > 12 and line[12] != " ")
        ):
            return None
        del lines[0]
        head = ResponseHead("1.1", int(code), line[13:], _parse_fields(lines))
        self._pos = end + 4
        self._start_body(head)
        return head

    def _parse_head(self, block: bytes) -> ResponseHead:
        # Empty lines before the status line are tolerated (RFC 9112 2.2).
        if block[:1] in b"\r\n":
            block = block.lstrip(b"\r\n")
        lines = _split_lines(block)
        parts = lines[0].split(" ", 2)
        if len(parts) < 2:
            raise ProtocolError(f"malformed status line {lines[0][:100]!r}")
        version = parts[0]
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            raise ProtocolError(f"unsupported HTTP version {version[:20]!r}")
        code = parts[1]
        if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] == "0":
            raise ProtocolError(f"malformed status code {code[:20]!r}")
        reason = parts[2] if len(parts) > 2 else ""
        del lines[0]
        return ResponseHead(version[5:], int(code), reason, _parse_fields(lines))

    def _start_body(self, head: ResponseHead) -> None:
        self._head = head
        status = head.status
        te: list[str] = []
        cl: list[str] = []
        conn: list[str] = []
        for name, value in head.headers:
            if name == "content-length":
                cl.append(value)
            elif name == "transfer-encoding":
                te.append(value)
            elif name == "connection":
                conn.append(value)
        if conn:
            tokens = {t.strip().lower() for v in conn for t in v.split(",")}
            if head.version == "1.0":
                keep_alive = "keep-alive" in tokens
            else:
                keep_alive = "close" not in tokens
        else:
            keep_alive = head.version != "1.0"
        if self._method == "HEAD" or status in (204, 304):
            self._framing = _NONE
        elif te:
            codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                self._framing = _CHUNKED
            else:
                self._framing = _UNTIL_CLOSE
            if cl:
                # Both present: Transfer-Encoding wins and the connection
                # must not be reused (RFC 9112 6.1).
                keep_alive = False
        elif len(cl) == 1 and cl[0].isdigit() and cl[0].isascii() and len(cl[0]) <= 18:
            self._framing = _LENGTH
            self._left = int(cl[0])
        elif cl:
            values = {v.strip() for v in cl for v in v.split(",")}
            if len(values) != 1:
                raise ProtocolError(f"conflicting Content-Length values {cl!r}")
            value = values.pop()
            if not value.isdigit() or not value.isascii() or len(value) > 18:
                raise ProtocolError(f"invalid Content-Length {value[:30]!r}")
            self._framing = _LENGTH
            self._left = int(value)
        else:
            self._framing = _UNTIL_CLOSE
        if self._framing == _UNTIL_CLOSE:
            keep_alive = False
        head.keep_alive = keep_alive
        if self._framing == _NONE or (self._framing == _LENGTH and not self._left):
            self._finish()

    def _finish(self) -> None:
        self.complete = True

    @property
    def reusable(self) -> bool:
        """Whether the connection may carry another request after this response.

        True only once the message is complete, the peer allows persistence,
        has not closed, and sent nothing beyond the message.
        """
        head = self._head
        return (
            self.complete
            and head is not None
            and head.keep_alive
            and not self._eof
            and self._pos >= len(self._buf)
            and not self._more
        )

    # -- body -------------------------------------------------------------------

    def body(self) -> bytes:
        """Body bytes received since the last call; ``b""`` if none (yet)."""
        if self.complete:
            return b""
        framing = self._framing
        if self._more and framing != _CHUNKED:
            self._gather()
        if framing == _LENGTH:
            buf = self._buf
            pos = self._pos
            avail = len(buf) - pos
            if avail == 0:
                if self._eof:
                    raise ProtocolError(
                        f"connection closed with {self._left} body bytes missing"
                    )
                return b""
            left = self._left
            if avail <= left:
                data = buf[pos:] if pos else buf
                self._buf = b""
                self._pos = 0
                self._left = left - avail
            else:
                data = buf[pos : pos + left]
                self._pos = pos + left
                self._left = 0
            if not self._left:
                self._finish()
            return data
        if framing == _CHUNKED:
            if self._more:
                state = self._chunk_state
                if state == _SIZE and self._nothing_new((b"\n",), b""):
                    if self.buffered >= self._max_line:
                        raise ProtocolError("chunk size line too long")
                    return b""
                if state == _TRAILERS and self._nothing_new(_BLANK_LINE, b"\n"):
                    if self.buffered > self._max_head:
                        raise ProtocolError("trailer section too large")
                    return b""
                self._gather()
            return self._chunked()
        if framing == _UNTIL_CLOSE:
            buf = self._buf
            data = buf[self._pos :] if self._pos else buf
            self._buf = b""
            self._pos = 0
            if self._eof:
                self._finish()
            return data
        return b""

    def _chunked(self) -> bytes:
        out: list[bytes] = []
        buf = self._buf
        pos = self._pos
        end = len(buf)
        while True:
            state = self._chunk_state
            if state == _DATA:
                avail = end - pos
                if not avail:
                    break
                n = self._chunk_left
                if avail < n:
                    out.append(buf[pos:] if pos else buf)
                    self._chunk_left = n - avail
                    pos = end
                    break
                out.append(buf[pos : pos + n])
                pos += n
                self._chunk_left = 0
                self._chunk_state = _DATA_END
            elif state == _SIZE:
                nl = buf.find(b"\n", pos, pos + self._max_line)
                if nl == -1:
                    if end - pos >= self._max_line:
                        raise ProtocolError("chunk size line too long")
                    self._searched = True
                    break
                size = _chunk_size(buf[pos:nl])
                pos = nl + 1
                if size:
                    self._chunk_left = size
                    self._chunk_state = _DATA
                else:
                    self._chunk_state = _TRAILERS
            elif state == _DATA_END:
                if end - pos < 2:
                    if end - pos == 1 and buf[pos] == 10:  # a bare LF
                        pos += 1
                        self._chunk_state = _SIZE
                        continue
                    break
                if buf[pos] == 13 and buf[pos + 1] == 10:
                    pos += 2
                elif buf[pos] == 10:
                    pos += 1
                else:
                    raise ProtocolError("chunk data not followed by CRLF")
                self._chunk_state = _SIZE
            else:  # _TRAILERS
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                elif buf.startswith(b"\n", pos):
                    pos += 1
                else:
                    blk, nxt = _find_blank_line(buf, pos)
                    if blk == -1:
                        if end - pos > self._max_head:
                            raise ProtocolError("trailer section too large")
                        self._searched = True
                        break
                    self.trailers = _parse_fields(_split_lines(buf[pos:blk]))
                    pos = nxt
                self._pos = pos
                self._finish()
                if pos == end:
                    self._buf = b""
                    self._pos = 0
                return b"".join(out)
        if pos >= end:
            self._buf = b""
            self._pos = 0
        else:
            self._pos = pos
        if self._eof and not self.complete:
            raise ProtocolError("connection closed inside a chunked body")
        if len(out) == 1:
            return out[0]
        return b"".join(out)


def _chunk_size(line: bytes) -> int:
    """The size in a chunk-size line; extensions after ``;`` are ignored."""
    semi = line.find(b";")
    digits = (line if semi == -1 else line[:semi]).rstrip(b"\r").strip(b" \t")
    if not digits or len(digits) > 15 or not _HEX.issuperset(digits):
        raise ProtocolError(f"invalid chunk size {line[:40]!r}")
    return int(digits, 16)
