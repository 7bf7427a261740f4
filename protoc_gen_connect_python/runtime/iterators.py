"""Closing iterators a wrapper takes over: the servers' stream handling and the
batteries' stream interceptors close what they wrap the same way."""

from __future__ import annotations


async def aclose_iterator(it: object) -> None:
    """Close an async generator (or anything with ``aclose``); others are left be."""
    aclose = getattr(it, "aclose", None)
    if aclose is not None:
        await aclose()


def close_iterator(it: object) -> None:
    """Close a generator (or anything with ``close``)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()
