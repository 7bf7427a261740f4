"""What the batteries' stream wrappers share: closing the iterators they wrap."""

from __future__ import annotations


async def aclose(it: object) -> None:
    """Close an async generator (or anything with ``aclose``)."""
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


def close(it: object) -> None:
    """Close a generator (or anything with ``close``)."""
    end = getattr(it, "close", None)
    if end is not None:
        end()
