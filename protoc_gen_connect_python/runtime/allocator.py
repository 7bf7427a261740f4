"""Priming glibc's malloc for the large, short-lived buffers of HTTP bodies."""

from __future__ import annotations

__all__ = ["prime_allocator"]

_PRIME_BYTES = 4 * 1024 * 1024
_primed = False


def prime_allocator() -> None:
    """Have glibc's malloc reuse large blocks instead of returning them at once.

    Servers and clients read HTTP bodies into fresh buffers (often 64-256 KiB)
    and free them soon after. glibc serves blocks that large from the top of
    the heap, or maps them, and gives the memory back to the kernel whenever
    the free top passes a threshold, then faults it in again, page by page,
    for the next read: on uvicorn half of a client stream's CPU went to those
    faults. glibc raises the threshold by itself once a block of 4 MiB (the
    default ``read_max_bytes``) has been freed, which any process that buffers
    one large message does; this does it up front, once per process.
    Elsewhere than glibc it costs one short-lived allocation.
    """
    global _primed
    if not _primed:
        _primed = True
        bytearray(_PRIME_BYTES)  # made and freed at once
