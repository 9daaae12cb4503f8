"""The one exception type of the config package."""

from __future__ import annotations

__all__ = ["ConfigError", "format_location"]


def format_location(file: str | None, line: int | None) -> str:
    """``FILE:LINE``, or just ``FILE`` when there is no line (values from the environment)."""
    if not file:
        return ""
    if line:
        return f"{file}:{line}"
    return file


class ConfigError(ValueError):
    """A configuration that cannot be used.

    ``str(err)`` is ``FILE:LINE: what is wrong`` (``$SRS_X: what is wrong`` for a
    value coming from the environment).  ``file``, ``line`` and ``reason`` are kept
    as attributes for callers that want to present them differently.
    """

    def __init__(self, reason: str, file: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        where = format_location(file, line)
        super().__init__(f"{where}: {reason}" if where else reason)
