"""The one place where the directive tree becomes the typed :class:`Config`.

The model *is* the schema: a directive maps to the model field of the same
name.  A field whose type is a model is a block; a ``tuple[...]`` field takes
all the directive's arguments; any other field takes exactly one.  Three
things are not plain fields and are handled explicitly here:

* ``vhost NAME { }`` at top level fills ``Config.vhosts``;
* ``allow|deny publish|play TARGET;`` inside ``security`` fills ``SecurityConfig.rules``;
* ``VhostConfig.name`` comes from the vhost's argument.

SRS's old vhost-level spellings (``gop_cache`` directly in the vhost, etc.) are
moved into their blocks first, as SRS does (:data:`LEGACY_VHOST`).

Unknown directives give a warning, never an error.  Bad values raise
:class:`ConfigError` with the directive's ``FILE:LINE``.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .model import DEFAULT_VHOST, Config, SecurityConfig, VhostConfig
from .parser import Directive

__all__ = ["FieldSpec", "directive_specs", "build_config", "rewrite_legacy", "LEGACY_VHOST", "LEGACY_ROOT"]

#: Fields that are not directives of their block (handled explicitly above).
_NOT_DIRECTIVES: dict[type[BaseModel], frozenset[str]] = {
    Config: frozenset({"vhosts"}),
    VhostConfig: frozenset({"name"}),
    SecurityConfig: frozenset({"rules"}),
}

#: SRS's pre-3.0 vhost-level directives -> (block, directive) they now live in.
LEGACY_VHOST: dict[str, tuple[str, str]] = {
    "gop_cache": ("play", "gop_cache"),
    "queue_length": ("play", "queue_length"),
    "time_jitter": ("play", "time_jitter"),
    "mix_correct": ("play", "mix_correct"),
    "atc": ("play", "atc"),
    "mw_latency": ("play", "mw_latency"),
    "publish_1stpkt_timeout": ("publish", "firstpkt_timeout"),
    "publish_normal_timeout": ("publish", "normal_timeout"),
    "mode": ("cluster", "mode"),  # SRS 1/2 edges: ``vhost { mode remote; origin host; }``
    "origin": ("cluster", "origin"),
}
#: SRS's old top-level block names -> current names.
LEGACY_ROOT: dict[str, str] = {"http_stream": "http_server"}


@dataclass(frozen=True)
class FieldSpec:
    """How one directive maps onto a model field."""

    field: str
    kind: str  # "block" | "multi" | "scalar"
    model: type[BaseModel] | None = None  # for blocks


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


@cache
def directive_specs(model: type[BaseModel]) -> dict[str, FieldSpec]:
    """Directive name -> :class:`FieldSpec` for the plain fields of ``model``."""
    skip = _NOT_DIRECTIVES.get(model, frozenset())
    specs: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann = _unwrap(info.annotation)
        origin = typing.get_origin(ann)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            specs[name] = FieldSpec(name, "block", ann)
        elif origin in (tuple, list):
            specs[name] = FieldSpec(name, "multi")
        elif origin in (typing.Union, types.UnionType) or origin is None or origin is typing.Literal:
            specs[name] = FieldSpec(name, "scalar")
        else:  # pragma: no cover - a new field type this module does not know
            raise TypeError(f"{model.__name__}.{name}: unsupported field type {ann!r}")
    return specs


# --------------------------------------------------------------------------- legacy rewrite


def rewrite_legacy(tree: list[Directive]) -> list[Directive]:
    out: list[Directive] = []
    for d in tree:
        if d.name in LEGACY_ROOT and d.block:
            d = replace(d, name=LEGACY_ROOT[d.name])
        if d.name == "vhost" and d.block:
            d = replace(d, children=_rewrite_vhost(d.children))
        out.append(d)
    return out


def _rewrite_vhost(children: list[Directive]) -> list[Directive]:
    if not any(c.name in LEGACY_VHOST and not c.block for c in children):
        return children
    kept: list[Directive] = []
    moved: list[tuple[Directive, str, str]] = []
    for c in children:
        if c.name in LEGACY_VHOST and not c.block:
            block, name = LEGACY_VHOST[c.name]
            moved.append((c, block, name))
        else:
            kept.append(c)
    for c, block_name, name in moved:
        idx = next((i for i, k in enumerate(kept) if k.name == block_name and k.block), None)
        if idx is None:
            kept.append(Directive(block_name, [], [], c.file, c.line, True, c.end_line))
            idx = len(kept) - 1
        block = kept[idx]
        if block.get(name) is None:  # the explicit new-style spelling wins
            kept[idx] = replace(block, children=[*block.children, replace(c, name=name)])
    return kept


# --------------------------------------------------------------------------- mapping


class _Mapper:
    def __init__(self) -> None:
        self.warnings: list[str] = []
        self.locs: dict[tuple[Any, ...], Directive] = {}

    def warn(self, d: Directive, what: str) -> None:
        self.warnings.append(f"{d.where}: {what}")

    @staticmethod
    def _hint(d: Directive) -> str:
        if d.end_line and d.end_line != d.line:
            return f" (missing ';' at the end of line {d.line}?)"
        return ""

    def block(
        self,
        model: type[BaseModel],
        children: list[Directive],
        ctx: str,
        loc: tuple[Any, ...],
    ) -> dict[str, Any]:
        specs = directive_specs(model)
        data: dict[str, Any] = {}
        seen: dict[str, Directive] = {}
        vhosts: dict[str, Any] = {}
        rules: list[dict[str, Any]] = []

        for d in children:
            if model is Config and d.name == "vhost":
                self.vhost(d, vhosts, seen)
                continue
            if model is SecurityConfig and d.name in ("allow", "deny"):
                self.rule(d, rules, loc)
                continue
            spec = specs.get(d.name)
            if spec is None:
                self.warn(d, f"unknown directive '{d.name}' in '{ctx}' ignored")
                continue
            if d.name in seen:
                self.warn(
                    d,
                    f"duplicate directive '{d.name}' in '{ctx}' ignored "
                    f"(first at {seen[d.name].where})",
                )
                continue
            seen[d.name] = d
            here = loc + (spec.field,)
            self.locs[here] = d
            if spec.kind == "block":
                if not d.block:
                    raise ConfigError(
                        f"'{d.name}' must be a block: {d.name} {{ ... }}", d.file, d.line
                    )
                if d.args:
                    raise ConfigError(f"block '{d.name}' takes no arguments", d.file, d.line)
                assert spec.model is not None
                sub = d.name if ctx == "root" else f"{ctx}.{d.name}"
                data[spec.field] = self.block(spec.model, d.children, sub, here)
                continue
            if d.block:
                raise ConfigError(f"'{d.name}' is not a block{self._hint(d)}", d.file, d.line)
            if not d.args:
                raise ConfigError(f"'{d.name}' needs a value", d.file, d.line)
            if spec.kind == "multi":
                data[spec.field] = list(d.args)
            else:
                if len(d.args) != 1:
                    raise ConfigError(
                        f"'{d.name}' takes one value, got {len(d.args)}{self._hint(d)}",
                        d.file,
                        d.line,
                    )
                data[spec.field] = d.args[0]

        if model is Config:
            data["vhosts"] = vhosts
        if model is SecurityConfig:
            data["rules"] = rules
        return data

    def vhost(self, d: Directive, vhosts: dict[str, Any], seen: dict[str, Directive]) -> None:
        if not d.block:
            raise ConfigError(
                f"'vhost' must be a block: vhost NAME {{ ... }}{self._hint(d)}", d.file, d.line
            )
        if len(d.args) != 1 or not d.args[0]:
            raise ConfigError("'vhost' takes exactly one name: vhost NAME { ... }", d.file, d.line)
        name = d.args[0]
        key = f"vhost {name}"
        if key in seen:
            self.warn(d, f"duplicate vhost '{name}' ignored (first at {seen[key].where})")
            return
        seen[key] = d
        loc = ("vhosts", name)
        self.locs[loc] = d
        data = self.block(VhostConfig, d.children, "vhost", loc)
        data["name"] = name
        vhosts[name] = data

    def rule(self, d: Directive, rules: list[dict[str, Any]], loc: tuple[Any, ...]) -> None:
        if d.block or len(d.args) != 2:
            raise ConfigError(
                f"expected '{d.name} publish|play all|IP|CIDR;'{self._hint(d)}", d.file, d.line
            )
        self.locs[loc + ("rules", len(rules))] = d
        rules.append({"action": d.name, "method": d.args[0], "target": d.args[1]})


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def build_config(tree: list[Directive], *, source: str = "<config>") -> tuple[Config, list[str]]:
    """Map a directive tree to a :class:`Config`; return it with the warnings."""
    mapper = _Mapper()
    data = mapper.block(Config, rewrite_legacy(tree), "root", ())
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        while loc and loc not in mapper.locs:
            loc = loc[:-1]
        d = mapper.locs.get(loc)
        msg = _clean(err["msg"])
        if d is None:
            raise ConfigError(f"invalid configuration: {msg}", source) from None
        value = " ".join(d.args) if d.name != "vhost" else None
        hint = mapper._hint(d) if not d.block else ""
        if err.get("type") in ("missing", "extra_forbidden") or value is None:
            raise ConfigError(f"invalid '{d.name}': {msg}{hint}", d.file, d.line) from None
        raise ConfigError(
            f"invalid value '{value}' for '{d.name}': {msg}{hint}", d.file, d.line
        ) from None
    # Keep the default vhost in the model even if the file has none (validator adds it).
    assert DEFAULT_VHOST in config.vhosts
    return config, mapper.warnings
