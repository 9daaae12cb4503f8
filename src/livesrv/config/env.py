"""Environment overrides, as SRS does them.

Rule: the directive path, joined with ``_``, upper-cased, prefixed ``SRS_``::

    listen                        -> SRS_LISTEN
    http_api.listen               -> SRS_HTTP_API_LISTEN
    http_api.raw_api.enabled      -> SRS_HTTP_API_RAW_API_ENABLED
    vhost.hls.hls_path            -> SRS_VHOST_HLS_HLS_PATH   (applies to __defaultVhost__)
    rtmp_limits.idle_timeout      -> SRS_RTMP_LIMITS_IDLE_TIMEOUT

The table is generated from the model (:func:`env_table`), so every directive
of the model has a variable; :data:`ALIASES` adds the few names SRS also
accepts.  A variable replaces the directive in the tree before the tree is
mapped, so its value is validated exactly like a file value (errors read
``$SRS_LISTEN: invalid value ...``).  List directives (``listen``, hooks) take
space-separated values; the others take the whole (stripped) value.  Empty
values are ignored, as in SRS.  Unknown ``SRS_*`` variables are ignored
(logged at debug level).  Security rules (``allow``/``deny``) cannot be set
from the environment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cache
from typing import Mapping

from pydantic import BaseModel

from .mapping import directive_specs
from .model import DEFAULT_VHOST, Config, VhostConfig
from .parser import Directive

__all__ = ["EnvVar", "env_table", "env_name", "apply_env", "ALIASES", "PREFIX"]

log = logging.getLogger("livesrv.config")

PREFIX = "SRS_"

#: Extra names SRS accepts for the same directive (the canonical name wins if both are set).
ALIASES: dict[str, str] = {
    "SRS_LOG_TANK": "SRS_SRS_LOG_TANK",
    "SRS_LOG_LEVEL": "SRS_SRS_LOG_LEVEL",
    "SRS_LOG_FILE": "SRS_SRS_LOG_FILE",
    # SRS reads these two with a typo (three Ts) and its docs use them: accept both spellings.
    "SRS_HTTP_SERVER_HTTTPS_ENABLED": "SRS_HTTP_SERVER_HTTPS_ENABLED",
    "SRS_HTTP_SERVER_HTTTPS_LISTEN": "SRS_HTTP_SERVER_HTTPS_LISTEN",
}


@dataclass(frozen=True)
class EnvVar:
    """One overridable directive: ``path`` of directive names from the root
    (``("vhost", ...)`` means inside ``vhost __defaultVhost__``)."""

    name: str
    path: tuple[str, ...]
    multi: bool


def env_name(path: tuple[str, ...]) -> str:
    """``("http_api", "listen")`` -> ``SRS_HTTP_API_LISTEN``."""
    return PREFIX + "_".join(path).upper()


def _walk(model: type[BaseModel], prefix: tuple[str, ...]):
    for directive, spec in directive_specs(model).items():
        path = prefix + (directive,)
        if spec.kind == "block":
            assert spec.model is not None
            yield from _walk(spec.model, path)
        else:
            yield EnvVar(env_name(path), path, spec.kind == "multi")


@cache
def env_table() -> dict[str, EnvVar]:
    """Every ``SRS_*`` variable livesrv understands (aliases included)."""
    table: dict[str, EnvVar] = {}
    for var in [*_walk(Config, ()), *_walk(VhostConfig, ("vhost",))]:
        if var.name in table:  # pragma: no cover - guarded by a test
            raise RuntimeError(
                f"{var.name} is ambiguous: {table[var.name].path} and {var.path}; "
                "add an explicit entry to livesrv.config.env.ALIASES"
            )
        table[var.name] = var
    for alias, canonical in ALIASES.items():
        table[alias] = replace(table[canonical], name=alias)
    return table


def _find_block(children: list[Directive], name: str, *, vhost: bool, src: str) -> Directive:
    for d in children:
        if d.name == name and d.block and (not vhost or d.args[:1] == [DEFAULT_VHOST]):
            return d
    made = Directive(name, [DEFAULT_VHOST] if vhost else [], [], src, 0, True)
    children.append(made)
    return made


def _set(tree: list[Directive], var: EnvVar, value: str, src: str) -> None:
    children = tree
    for i, name in enumerate(var.path[:-1]):
        children = _find_block(children, name, vhost=(i == 0 and name == "vhost"), src=src).children
    leaf = var.path[-1]
    args = value.split() if var.multi else [value.strip()]
    children[:] = [d for d in children if d.name != leaf]
    children.append(Directive(leaf, args, [], src, 0, False))


def _copy(tree: list[Directive]) -> list[Directive]:
    return [replace(d, args=list(d.args), children=_copy(d.children)) for d in tree]


def apply_env(
    tree: list[Directive], environ: Mapping[str, str]
) -> tuple[list[Directive], list[str]]:
    """Return a copy of ``tree`` with the ``SRS_*`` overrides of ``environ``
    applied, and the names of the variables that were applied."""
    table = env_table()
    out = _copy(tree)
    applied: list[str] = []
    # Aliases first so that the canonical names win.
    names = sorted(
        (k for k in environ if k.startswith(PREFIX)), key=lambda k: (k not in ALIASES, k)
    )
    for name in names:
        var = table.get(name)
        if var is None:
            log.debug("ignoring unknown environment variable %s", name)
            continue
        value = environ[name]
        if not value.strip():
            continue
        _set(out, var, value, f"${name}")
        applied.append(name)
    return out, applied
