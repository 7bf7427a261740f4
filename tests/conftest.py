"""Fixtures every test module shares."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """``pytest.mark.anyio`` tests run on asyncio only (the runtime is asyncio's)."""
    return "asyncio"
