"""Plugin parameters: ``--connect-python_opt=key=value,key=value``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class OptionsError(ValueError):
    """A parameter the plugin does not understand; the message is one line."""


@dataclass(frozen=True)
class Options:
    """What to generate, parsed from the plugin parameter string."""

    async_: bool = True
    """Generate the async handler base class and async client."""
    sync: bool = True
    """Generate the sync handler base class and sync client."""
    templates: Path | None = None
    """A directory whose ``*.j2`` files replace built-in templates of the same name."""


def _bool(key: str, value: str) -> bool:
    try:
        return _BOOLS[value.lower()]
    except KeyError:
        raise OptionsError(f"{key}={value!r}: expected true or false") from None


def parse(parameter: str) -> Options:
    """Parse protoc's comma-separated parameter string.

    Accepted keys: ``mode=both|async|sync``, ``async=true|false``,
    ``sync=true|false`` and ``templates=DIR``. Raises ``OptionsError`` for
    anything else, so a typo never silently changes the output.
    """
    async_ = sync = True
    templates: Path | None = None
    for item in parameter.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise OptionsError(f"malformed parameter {item!r}: expected key=value")
        if key == "mode":
            if value not in ("both", "async", "sync"):
                raise OptionsError(f"mode={value!r}: expected both, async or sync")
            async_, sync = value != "sync", value != "async"
        elif key == "async":
            async_ = _bool(key, value)
        elif key == "sync":
            sync = _bool(key, value)
        elif key == "templates":
            templates = Path(value)
            if not templates.is_dir():
                raise OptionsError(f"templates={value!r} is not a directory")
        else:
            raise OptionsError(
                f"unknown parameter {key!r} (known: mode, async, sync, templates)"
            )
    if not (async_ or sync):
        raise OptionsError("nothing to generate: both async and sync are disabled")
    return Options(async_=async_, sync=sync, templates=templates)
