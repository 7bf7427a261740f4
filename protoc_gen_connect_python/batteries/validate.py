"""Validation of messages by their ``buf.validate`` rules, with protovalidate.

Needs the ``validate`` extra (PyPI ``protovalidate``, Python 3.11 or newer)::

    app = ASGIApp(Users(), interceptors=[ValidateInterceptor()])
    wsgi_app = WSGIApp(UsersSync(), interceptors=[ValidateInterceptorSync()])
    client = UserServiceClient(url, interceptors=[ValidateClientInterceptor()])

On a server, a request message that breaks its rules is answered with
``invalid_argument`` before the handler sees it (for streams: as the handler
reads it), and the error carries one ``buf.validate.Violations`` detail that
lists every violation. With ``validate_responses=True`` the handler's response
messages are checked too, and one that breaks its rules fails the call with
``internal`` instead of reaching the client.

On a client, a request that breaks its rules fails the call with
``invalid_argument`` and the same detail, and is never sent; with
``validate_responses=True`` an invalid response fails it with ``internal``.

Rules that cannot be compiled or evaluated (a broken CEL expression) fail the
call with ``internal``; the message says which message type it was.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import protovalidate
from google.protobuf.message import Message

from protoc_gen_connect_python.runtime import (
    AsyncServerInterceptor,
    AsyncStreamFunc,
    AsyncUnaryFunc,
    ClientCall,
    ClientInterceptor,
    Code,
    ConnectError,
    ErrorDetail,
    RequestContext,
    SyncServerInterceptor,
    SyncStreamFunc,
    SyncUnaryFunc,
)
from protoc_gen_connect_python.runtime.iterators import aclose_iterator, close_iterator

__all__ = [
    "VIOLATIONS_TYPE",
    "ValidateClientInterceptor",
    "ValidateInterceptor",
    "ValidateInterceptorSync",
    "Validation",
]

VIOLATIONS_TYPE = "buf.validate.Violations"
"""The full name of the error detail that lists the violations."""

MESSAGES_SHOWN = 3
"""How many violations the error message spells out (the detail has them all)."""


def _path(violation: Any) -> str:
    """A violation's field path, as ``items[2].name``."""
    out = ""
    for e in violation.field.elements:
        if e.field_name:
            out += ("." if out else "") + e.field_name
        sub = e.subscript
        if sub is not None:
            out += f"[{sub.value!r}]"
    return out


class Validation:
    """Checks messages against their rules and builds the errors to raise.

    ``validator`` defaults to a new ``protovalidate.Validator``; share one to
    share its cache of compiled rules.
    """

    def __init__(self, validator: protovalidate.Validator | None = None) -> None:
        self.validator = validator or protovalidate.Validator()

    def check(self, message: Message, code: Code, what: str) -> None:
        """Raise ConnectError with ``code`` if ``message`` breaks its rules."""
        try:
            found = self.validator.collect_violations(message)
        except (protovalidate.CompilationError, protovalidate.EvaluationError):
            raise ConnectError(
                Code.INTERNAL,
                f"the validation rules of {message.DESCRIPTOR.full_name} "
                "could not be evaluated",
            ) from None
        if not found:
            return
        protos = [v.proto for v in found]
        shown = "; ".join(
            f"{_path(p)}: {p.message}" if _path(p) else p.message
            for p in protos[:MESSAGES_SHOWN]
        )
        more = len(protos) - MESSAGES_SHOWN
        if more > 0:
            shown += f" (and {more} more)"
        detail = ErrorDetail.from_wire(
            VIOLATIONS_TYPE, protovalidate.ViolationsPb(violations=protos).to_binary()
        )
        raise ConnectError(code, f"invalid {what}: {shown}", details=[detail])

    def request(self, message: Message) -> Message:
        """``message`` if valid; else invalid_argument."""
        self.check(message, Code.INVALID_ARGUMENT, "request")
        return message

    def response(self, message: Message) -> Message:
        """``message`` if valid; else internal."""
        self.check(message, Code.INTERNAL, "response")
        return message


class _Options:
    """``validate_responses``: check responses too; ``validator``: see ``Validation``."""

    def __init__(
        self,
        *,
        validate_responses: bool = False,
        validator: protovalidate.Validator | None = None,
    ) -> None:
        self._v = Validation(validator)
        self._responses = validate_responses


class ValidateInterceptor(_Options, AsyncServerInterceptor):
    """Validates the requests (and optionally the responses) of an ``ASGIApp``."""

    def wrap_unary(self, next: AsyncUnaryFunc) -> AsyncUnaryFunc:
        """Check the request before the handler runs, and its response."""
        v, responses = self._v, self._responses

        async def unary(request: Message, ctx: RequestContext) -> Message:
            response = await next(v.request(request), ctx)
            return v.response(response) if responses else response

        return unary

    def wrap_stream(self, next: AsyncStreamFunc) -> AsyncStreamFunc:
        """Check each request as the handler reads it, and each response."""
        v, responses = self._v, self._responses

        async def checked(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
            async for m in requests:
                yield v.request(m)

        async def stream(
            requests: AsyncIterator[Message], ctx: RequestContext
        ) -> AsyncIterator[Message]:
            out = next(checked(requests), ctx)
            try:
                async for m in out:
                    yield v.response(m) if responses else m
            finally:
                await aclose_iterator(out)

        return stream


class ValidateInterceptorSync(_Options, SyncServerInterceptor):
    """Validates the requests (and optionally the responses) of a ``WSGIApp``."""

    def wrap_unary(self, next: SyncUnaryFunc) -> SyncUnaryFunc:
        """Check the request before the handler runs, and its response."""
        v, responses = self._v, self._responses

        def unary(request: Message, ctx: RequestContext) -> Message:
            response = next(v.request(request), ctx)
            return v.response(response) if responses else response

        return unary

    def wrap_stream(self, next: SyncStreamFunc) -> SyncStreamFunc:
        """Check each request as the handler reads it, and each response."""
        v, responses = self._v, self._responses

        def stream(
            requests: Iterator[Message], ctx: RequestContext
        ) -> Iterator[Message]:
            out = next(map(v.request, requests), ctx)
            try:
                for m in out:
                    yield v.response(m) if responses else m
            finally:
                close_iterator(out)

        return stream


class ValidateClientInterceptor(_Options, ClientInterceptor):
    """Validates what an async or sync client sends (and optionally receives)."""

    def on_send(self, call: ClientCall, message: Message) -> None:
        """Fail the call with invalid_argument instead of sending a bad request."""
        self._v.request(message)

    def on_receive(self, call: ClientCall, message: Message) -> None:
        """Fail the call with internal on a bad response, when asked to check."""
        if self._responses:
            self._v.response(message)
