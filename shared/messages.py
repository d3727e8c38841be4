"""How a user's value is quoted in an error message: every error names its file, row or key, and shows
what was there, escaped and bounded, so a hostile or huge value cannot swamp or corrupt the message."""

from __future__ import annotations

from typing import Any


def shown(value: Any, limit: int = 60) -> str:
    """repr(value) (control characters escaped), cut to `limit` characters."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits has no repr
        return f"an {type(value).__name__} too large to show"
    return text if len(text) <= limit else text[: limit - 3] + "..."
