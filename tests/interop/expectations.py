"""What every interop scenario must have observed, whoever the client was.

``node/client.mjs`` and ``py_scenarios`` print the same observation dicts; the
servers (``node/server.mjs`` and ``py_service``) behave the same. ``check``
raises AssertionError with the whole observation when something differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Observation = dict[str, Any]

SCENARIOS = (
    "unary",
    "unary_large",
    "unary_metadata",
    "unary_error",
    "unary_deadline",
    "get",
    "server_stream",
    "server_stream_error",
    "client_stream",
    "client_stream_error",
    "bidi",
    "bidi_error",
)
"""Every scenario, in the order both clients run them (see node/client.mjs)."""

SENT_TEST_HEADERS = [["x-test-alpha", "one"], ["x-test-beta", "two words"]]
LARGE_LENGTH = 16 * 4096


@dataclass(frozen=True)
class Call:
    """How a scenario ran: the protocol, HTTP version and options, and the client."""

    protocol: str
    http2: bool
    gzip: bool
    client: str
    """``"node"`` (connect-node) or ``"python"``."""
    server: str
    """``"node"`` (connect-node) or ``"python"``."""


def values(pairs: list[list[str]], name: str) -> list[str]:
    """Every value of header ``name`` in a list of [name, value] pairs."""
    return [v for k, v in pairs if k.lower() == name]


def _fmt(obs: Observation) -> str:
    return json.dumps(obs, indent=1, ensure_ascii=False)


def _no_error(obs: Observation) -> None:
    assert "error" not in obs, f"unexpected error:\n{_fmt(obs)}"


def _check_metadata(headers: list[list[str]], trailers: list[list[str]]) -> None:
    assert values(headers, "x-test-header") == ["header value"], headers
    assert values(headers, "x-test-header-two") == ["second"], headers
    assert values(trailers, "x-test-trailer") == ["trailer value"], trailers


def _check_error(
    obs: Observation, code: str, message: str, *, detail: bool, metadata: bool
) -> None:
    assert "error" in obs, f"expected a {code} error:\n{_fmt(obs)}"
    err = obs["error"]
    assert err["code"] == code, _fmt(obs)
    assert err["message"] == message, _fmt(obs)
    if detail:
        assert err["details"] == ["interop.v1.ErrorInfo"], _fmt(obs)
        want_code = {"not_found": 5, "failed_precondition": 9, "aborted": 10}[code]
        assert err["error_info"] == [{"reason": message, "code": want_code}], _fmt(obs)
    else:
        assert err["details"] == [], _fmt(obs)
    if metadata:
        # Headers and trailers both reach the error's metadata.
        _check_metadata(err["metadata"], err["metadata"])


def _encoding_header(call: Call, streaming: bool) -> str:
    if call.protocol != "connect":
        return "grpc-encoding"
    return "connect-content-encoding" if streaming else "content-encoding"


def _bidi_over_http1(obs: Observation, call: Call) -> bool:
    """Check a bidi scenario over HTTP/1.1 with connect-node on one side.

    connect-node does bidi streams only over HTTP/2: its client will not start
    one over HTTP/1.1 (client.mjs reports the scenario as skipped, saying so),
    and its server answers such a request with HTTP 505 and closes the
    connection. Returns True when that is what happened and nothing else needs
    checking.
    """
    if "skipped" in obs:
        assert call.client == "node" and not call.http2, (
            f"only connect-node's client over HTTP/1.1 may skip bidi:\n{_fmt(obs)}"
        )
        assert "HTTP/1.1" in obs["skipped"], _fmt(obs)
        return True
    if call.server == "node" and not call.http2:
        err = obs.get("error", {})
        if err.get("code") == "unavailable":
            # The server closes right after its 505; when the client's next
            # chunk meets the closed socket, the peer's reset can discard the
            # 505 before it is read (a TCP race a loaded machine exposes).
            return True
        # No Connect error body: the code follows from the HTTP status.
        assert err.get("code") == "unknown", _fmt(obs)
        assert "505" in err.get("message", ""), _fmt(obs)
        return True
    return False


def check(obs: Observation, call: Call) -> None:
    """Assert that one scenario's observation is what the protocol promises."""
    name = obs["scenario"]
    headers: list[list[str]] = obs.get("response_headers", [])
    trailers: list[list[str]] = obs.get("response_trailers", [])

    if name == "unary":
        _no_error(obs)
        assert obs["text"] == "hello", _fmt(obs)
        assert obs["request_headers"] == SENT_TEST_HEADERS, _fmt(obs)
        assert obs["protocol"] == call.protocol, _fmt(obs)

    elif name == "unary_large":
        _no_error(obs)
        assert obs["length"] == LARGE_LENGTH and obs["same"] is True, _fmt(obs)
        encoding = values(headers, _encoding_header(call, streaming=False))
        if call.gzip:
            # 64 KiB is above every server's compression threshold.
            assert encoding == ["gzip"], _fmt(obs)
        else:
            assert encoding in ([], ["identity"]), _fmt(obs)

    elif name == "unary_metadata":
        _no_error(obs)
        assert obs["text"] == "with metadata", _fmt(obs)
        _check_metadata(headers, trailers)
        leaked = [k for k, _ in headers if k.lower().startswith("trailer-")]
        assert not leaked, f"Connect unary trailers left in headers: {leaked}"

    elif name == "unary_error":
        _check_error(
            obs, "not_found", "no such thing: ünïcödé", detail=True, metadata=True
        )

    elif name == "unary_deadline":
        # The server waits 2 s; the client gives up after 200 ms. Who noticed
        # first (client timer or server deadline) decides the message.
        assert obs.get("error", {}).get("code") == "deadline_exceeded", _fmt(obs)
        assert obs["elapsed_ms"] < 1500, _fmt(obs)

    elif name == "get":
        _no_error(obs)
        assert obs["text"] == "via get", _fmt(obs)
        assert obs["request_headers"] == SENT_TEST_HEADERS, _fmt(obs)
        # Connect sends NO_SIDE_EFFECTS methods as GET; gRPC always POSTs.
        method = "GET" if call.protocol == "connect" else "POST"
        assert values(headers, "x-http-method") == [method], _fmt(obs)

    elif name == "server_stream":
        _no_error(obs)
        assert obs["messages"] == [
            {"index": 0, "text": "s-0", "request_headers": SENT_TEST_HEADERS},
            {"index": 1, "text": "s-1", "request_headers": []},
            {"index": 2, "text": "s-2", "request_headers": []},
        ], _fmt(obs)
        _check_metadata(headers, trailers)

    elif name == "server_stream_error":
        assert obs["messages"] == [
            {"index": 0, "text": "e-0"},
            {"index": 1, "text": "e-1"},
        ], _fmt(obs)
        _check_error(
            obs, "failed_precondition", "stream broke", detail=True, metadata=True
        )

    elif name == "client_stream":
        _no_error(obs)
        assert obs["text"] == "abc" and obs["count"] == 3, _fmt(obs)
        assert obs["request_headers"] == SENT_TEST_HEADERS, _fmt(obs)
        if call.client == "node":
            # Our clients return only the message of a client stream.
            _check_metadata(headers, trailers)

    elif name == "client_stream_error":
        _check_error(
            obs, "resource_exhausted", "too many", detail=False, metadata=False
        )

    elif name == "bidi":
        if _bidi_over_http1(obs, call):
            return
        _no_error(obs)
        full = obs["mode"] == "full-duplex"
        assert full == call.http2, (
            f"full duplex expected over HTTP/2 only:\n{_fmt(obs)}"
        )
        texts = ["one", "two", "three"]
        assert obs["messages"] == [
            {
                "index": i,
                "text": f"echo: {t}",
                # Full duplex: each reply came before the next request was sent.
                "sent_before_reply": i + 1 if full else len(texts),
            }
            for i, t in enumerate(texts)
        ], _fmt(obs)
        _check_metadata(headers, trailers)

    elif name == "bidi_error":
        if _bidi_over_http1(obs, call):
            return
        assert obs["messages"] == [{"index": 0, "text": "echo: only"}], _fmt(obs)
        _check_error(obs, "aborted", "chat aborted", detail=True, metadata=False)

    else:
        raise AssertionError(f"no expectations for scenario {name!r}")
