"""The one rule for every name a client sends (vhost, app, stream, query, tcUrl, HTTP path): no control
characters, valid UTF-8, and short enough to become file names (see the README, "Stream names").

It sits below everything that takes names (hub keys, HLS file names), so they all apply the same rule.
"""

from __future__ import annotations

import re
from typing import Final

#: Longest vhost, in UTF-8 bytes: a DNS name.
MAX_VHOST_BYTES: Final = 253
#: Longest app (all its levels with their ``/``) and stream name, in UTF-8 bytes. HLS turns them into file
#: names (``[stream]-[seq].ts``, plus a temporary name while writing) that must fit a file system's 255 bytes.
MAX_NAME_BYTES: Final = 200
#: Longest query string (tokens) and tcUrl, in UTF-8 bytes.
MAX_URL_BYTES: Final = 4096
#: Longest component of an HTTP path for a file (HLS): what a file system allows (NAME_MAX).
MAX_FILE_NAME_BYTES: Final = 255

# C0 controls, DEL, C1 controls; line and paragraph separators (line breaks to some log viewers); U+FFFD and
# lone surrogates, which is what invalid UTF-8 decodes to (AMF0 strings and percent-decoded paths: "replace").
_BAD_CHAR: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufffd\ud800-\udfff]")


def has_bad_char(value: str) -> bool:
    """Does ``value`` hold a character no name may hold (a control character, invalid UTF-8)?"""
    return _BAD_CHAR.search(value) is not None


def _excerpt(value: str, limit: int = 40) -> str:
    """The start of a refused value, as a Python literal: printable, one line, whatever it holds."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


def name_problem(value: str, what: str, max_bytes: int) -> str | None:
    """Why ``value`` cannot name anything (None when it can): the one rule for every name a client sends."""
    bad = _BAD_CHAR.search(value)
    if bad is not None:
        ch = bad.group()
        kind = "invalid UTF-8" if ch == "\ufffd" or "\ud800" <= ch <= "\udfff" else f"control character U+{ord(ch):04X}"
        return f"invalid {what} {_excerpt(value)}: {kind} at position {bad.start()}"
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        return f"invalid {what} {_excerpt(value)}: {size} bytes long, at most {max_bytes} allowed"
    return None


def path_problem(path: str) -> str | None:
    """Why a (percent-decoded) HTTP path cannot name a file we serve: the name rule, per path component."""
    problem = name_problem(path, "path", MAX_URL_BYTES)
    if problem is not None:
        return problem
    for part in path.split("/"):
        problem = name_problem(part, "path component", MAX_FILE_NAME_BYTES)
        if problem is not None:
            return problem
    return None
