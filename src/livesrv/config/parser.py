"""Parser for the SRS/nginx-like configuration syntax.

Grammar (as SRS reads it)::

    directive   := NAME ARG* ";"
                 | NAME ARG* "{" directive* "}"
    comment     := "#" ... end of line      (only where a word could start)
    word        := bare word | "double quoted" | 'single quoted'

* Words are separated by white space; ``;``, ``{`` and ``}`` also end a bare word.
* ``#`` starts a comment only at the start of a word, so ``http://h/#x`` stays one word.
* Inside quotes, a backslash escapes the quote character or a backslash; any
  other backslash is kept as is (Windows paths survive).
* A newline is white space: a directive may span lines, as in SRS and nginx.
* ``include a.conf b.conf;`` splices the directives of those files in place,
  at any level.  A relative path is resolved against the directory of the
  including file; if nothing is there but the path exists relative to the
  working directory, that one is used (SRS resolves includes against the
  working directory, so SRS configs keep working).  Include loops are errors.

:func:`parse_tree` returns a list of :class:`Directive` (the children of the
implicit root); ``livesrv.config.parse_text`` builds the typed config from text.
Syntax errors raise :class:`ConfigError` with ``FILE:LINE: what is wrong``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

from .errors import ConfigError, format_location

__all__ = ["Directive", "parse_tree", "parse_file", "MAX_INCLUDE_DEPTH"]

#: How deep ``include`` may nest, loops aside.
MAX_INCLUDE_DEPTH = 16

_WORD, _SEMI, _LBRACE, _RBRACE = "word", ";", "{", "}"


@dataclass
class Directive:
    """One directive of the configuration tree.

    ``block`` tells ``name args { ... }`` (True, even when empty) from
    ``name args;`` (False).  ``end_line`` is the line of the ``;`` or ``{`` that
    ended the directive's words (0 when made up, e.g. from the environment).
    """

    name: str
    args: list[str] = field(default_factory=list)
    children: list["Directive"] = field(default_factory=list)
    file: str = "<string>"
    line: int = 0
    block: bool = False
    end_line: int = 0

    @property
    def where(self) -> str:
        """``FILE:LINE`` of this directive."""
        return format_location(self.file, self.line)

    def get(self, name: str) -> "Directive | None":
        """The first child called ``name``, if any."""
        for child in self.children:
            if child.name == name:
                return child
        return None

    def get_all(self, name: str) -> list["Directive"]:
        """All children called ``name``, in order."""
        return [child for child in self.children if child.name == name]


# --------------------------------------------------------------------------- tokens


def _tokens(text: str, filename: str) -> Iterator[tuple[str, str, int]]:
    """Yield ``(kind, value, line)``; kind is a word or one of ``; { }``."""
    i = 0
    n = len(text)
    line = 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
            continue
        if ch.isspace():
            i += 1
            continue
        if ch == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if ch in ";{}":
            yield ch, ch, line
            i += 1
            continue
        if ch in "\"'":
            quote = ch
            start_line = line
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise ConfigError("unterminated quoted string", filename, start_line)
                c = text[i]
                if c == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
                    buf.append(text[i + 1])
                    i += 2
                    continue
                if c == quote:
                    i += 1
                    break
                if c == "\n":
                    line += 1
                buf.append(c)
                i += 1
            if i < n and not (text[i].isspace() or text[i] in ";{}"):
                raise ConfigError(
                    f"unexpected {text[i]!r} after quoted string", filename, line
                )
            yield _WORD, "".join(buf), start_line
            continue
        start = i
        while i < n and not (text[i].isspace() or text[i] in ";{}"):
            i += 1
        yield _WORD, text[start:i], line


# --------------------------------------------------------------------------- parser


def _show(words: list[str], limit: int = 48) -> str:
    s = " ".join(words)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def parse_tree(
    text: str,
    filename: str = "<string>",
    *,
    base_dir: str | None = None,
    _chain: tuple[str, ...] = (),
) -> list[Directive]:
    """Parse configuration text into a directive tree; return the top-level directives.

    ``base_dir`` is where relative includes are looked up (default: the
    directory of ``filename``, or the working directory for ``"<string>"``-like
    names that are not files).
    """
    if base_dir is None:
        base_dir = os.path.dirname(filename) if os.path.isfile(filename) else os.getcwd()

    root: list[Directive] = []
    # Each frame: (children list being filled, open block directive or None).
    stack: list[tuple[list[Directive], Directive | None]] = [(root, None)]
    words: list[str] = []
    first_line = 0
    last_line = 0

    for kind, value, line in _tokens(text, filename):
        children, _opened = stack[-1]
        if kind == _WORD:
            if not words:
                first_line = line
            words.append(value)
            last_line = line
            continue
        if kind == _SEMI:
            if not words:
                raise ConfigError("unexpected ';'", filename, line)
            d = Directive(words[0], words[1:], [], filename, first_line, False, line)
            words = []
            if d.name == "include":
                children.extend(_include(d, base_dir, _chain))
            else:
                children.append(d)
            continue
        if kind == _LBRACE:
            if not words:
                raise ConfigError("unexpected '{'", filename, line)
            d = Directive(words[0], words[1:], [], filename, first_line, True, line)
            words = []
            if d.name == "include":
                raise ConfigError("'include' cannot open a block", filename, d.line)
            children.append(d)
            stack.append((d.children, d))
            continue
        # kind == _RBRACE
        if words:
            raise ConfigError(f"missing ';' after '{_show(words)}'", filename, last_line)
        if len(stack) == 1:
            raise ConfigError("unexpected '}'", filename, line)
        stack.pop()

    if words:
        raise ConfigError(
            f"missing ';' after '{_show(words)}' (unexpected end of file)", filename, last_line
        )
    if len(stack) > 1:
        opened = stack[-1][1]
        assert opened is not None
        raise ConfigError(
            f"missing '}}' to close '{_show([opened.name, *opened.args])}' block "
            "(unexpected end of file)",
            filename,
            opened.line,
        )
    return root


def parse_file(path: str, *, _chain: tuple[str, ...] = ()) -> list[Directive]:
    """Read and parse a configuration file (with its includes)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("file is not valid UTF-8", path, line) from None
    real = os.path.realpath(path)
    return parse_tree(
        text,
        path,
        base_dir=os.path.dirname(os.path.abspath(path)),
        _chain=_chain + (real,),
    )


def _include(d: Directive, base_dir: str, chain: tuple[str, ...]) -> list[Directive]:
    if not d.args:
        raise ConfigError("'include' needs at least one file", d.file, d.line)
    out: list[Directive] = []
    for name in d.args:
        if not name:
            raise ConfigError("'include' of an empty file name", d.file, d.line)
        path = name if os.path.isabs(name) else os.path.join(base_dir, name)
        if not os.path.exists(path) and os.path.exists(name):
            path = name  # SRS habit: relative to the working directory
        real = os.path.realpath(path)
        if real in chain:
            loop = " -> ".join([*chain[chain.index(real):], real])
            raise ConfigError(f"include loop: {loop}", d.file, d.line)
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise ConfigError(f"includes nested deeper than {MAX_INCLUDE_DEPTH}", d.file, d.line)
        if not os.path.isfile(path):
            raise ConfigError(f"cannot include {name!r}: no such file", d.file, d.line)
        try:
            out.extend(parse_file(path, _chain=chain))
        except ConfigError as exc:
            if exc.file == path and exc.line is None:
                # Unreadable include: report it where it is included.
                raise ConfigError(f"cannot include {name!r}: {exc.reason}", d.file, d.line) from None
            raise
    return out
