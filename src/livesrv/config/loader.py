"""Loading: file (or built-in defaults) -> environment overrides -> typed Config."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Mapping

from .env import apply_env
from .mapping import build_config, rewrite_legacy
from .model import Config
from .parser import Directive, parse_file, parse_tree

__all__ = [
    "DEFAULT_CONF_TEXT",
    "DEFAULT_CONF_NAME",
    "default_conf_text",
    "default_hls_path",
    "ENV_ONLY_DEFAULTS",
    "LoadResult",
    "load_config",
    "parse_text",
    "default_config",
]

log = logging.getLogger("livesrv.config")

DEFAULT_CONF_NAME = "<defaults>"

#: The configuration used when no file is given: SRS's shipped ``conf/srs.conf``
#: minus WebRTC (``rtc_server``, ``vhost.rtc``: off until ``candidate`` is set for
#: the machine; see ``conf/livesrv.conf``).
#: HLS is on, as in SRS's file (Safari and iOS play nothing else), with two
#: differences: its files go to a per-user cache directory (``@HLS_PATH@``, see
#: :func:`default_hls_path`) rather than ``./objs/nginx/html`` in whatever
#: directory the server was started from, and fragments are 2 s (SRS: 10), so
#: that a browser on HLS starts within seconds and lags about 8 s, not 40. Merged writes (and reads) wait
#: 100 ms, not SRS's 350: a browser on HTTP-FLV plays about 0.3 s behind the encoder instead of 0.55 s, for
#: about a third more CPU per viewer (docs/performance.md); a config file without mw_latency gets SRS's 350.
DEFAULT_CONF_TEXT = """\
listen              1935;
max_connections     1000;
daemon              on;
http_api {
    enabled         on;
    listen          1985;
}
http_server {
    enabled         on;
    listen          8080;
    dir             ./objs/nginx/html;
}
vhost __defaultVhost__ {
    hls {
        enabled         on;
        hls_fragment    2;
        hls_path        @HLS_PATH@;
    }
    http_remux {
        enabled     on;
        mount       [vhost]/[app]/[stream].flv;
    }
    play {
        gop_cache_max_frames 2500;
        mw_latency      100;
    }
}
"""

#: What ``-e`` (env only) sets before the environment, as SRS does: no daemon,
#: log to the console (unless the environment says otherwise).
ENV_ONLY_DEFAULTS: dict[str, str] = {"SRS_DAEMON": "off", "SRS_SRS_LOG_TANK": "console"}


@dataclass(frozen=True)
class LoadResult:
    """A loaded configuration, the warnings met on the way, and which
    ``SRS_*`` variables were applied."""

    config: Config
    warnings: list[str] = field(default_factory=list)
    env_applied: list[str] = field(default_factory=list)


def default_hls_path(environ: Mapping[str, str] | None = None) -> str:
    """Where the embedded defaults write HLS: ``$XDG_CACHE_HOME/livesrv/hls``, else ``~/.cache/livesrv/hls``
    (the per-user cache the XDG spec names for files that can be thrown away), else, with no home directory,
    ``<tmp>/livesrv-<uid>/hls``. ``hls_path`` in a file or ``SRS_VHOST_HLS_HLS_PATH`` chooses another place."""
    env = os.environ if environ is None else environ
    cache = env.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # the spec: a relative value is invalid and ignored
        home = env.get("HOME") or os.path.expanduser("~")
        cache = os.path.join(home, ".cache") if os.path.isabs(home) and home != "/" else ""
    if not cache:
        uid = os.getuid() if hasattr(os, "getuid") else 0
        cache = os.path.join(tempfile.gettempdir(), f"livesrv-{uid}")
        return os.path.join(cache, "hls")
    return os.path.join(cache, "livesrv", "hls")


def default_conf_text(environ: Mapping[str, str] | None = None) -> str:
    """:data:`DEFAULT_CONF_TEXT` with its HLS directory filled in."""
    path = default_hls_path(environ).replace("\\", "\\\\").replace('"', '\\"')
    return DEFAULT_CONF_TEXT.replace("@HLS_PATH@", f'"{path}"')


def _finish(tree: list[Directive], environ: Mapping[str, str], source: str) -> LoadResult:
    tree = rewrite_legacy(tree)
    tree, applied = apply_env(tree, environ)
    config, warnings = build_config(tree, source=source)
    for w in warnings:
        log.warning("%s", w)
    return LoadResult(config, warnings, applied)


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    environ: Mapping[str, str] | None = None,
    env_only: bool = False,
) -> LoadResult:
    """Load the configuration.

    * ``path``: an SRS-style config file; ``None`` uses :data:`DEFAULT_CONF_TEXT`.
    * ``environ``: where ``SRS_*`` overrides come from (default ``os.environ``);
      the environment beats the file.
    * ``env_only``: ``livesrv -e``: ignore ``path``, start from the defaults
      (plus :data:`ENV_ONLY_DEFAULTS`), apply the environment.

    Raises :class:`ConfigError` (``FILE:LINE: what is wrong``).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    if env_only or path is None:
        tree = parse_tree(default_conf_text(env), DEFAULT_CONF_NAME)
        if env_only:
            tree, _ = apply_env(tree, ENV_ONLY_DEFAULTS)
        return _finish(tree, env, DEFAULT_CONF_NAME)
    path = os.fspath(path)
    return _finish(parse_file(path), env, path)


def parse_text(
    text: str,
    filename: str = "<string>",
    *,
    environ: Mapping[str, str] | None = None,
) -> LoadResult:
    """Like :func:`load_config`, for configuration text (tests, tools).

    ``filename`` is used in messages and to resolve relative includes.
    ``environ`` defaults to *no* environment here, so results are reproducible.
    """
    return _finish(parse_tree(text, filename), environ or {}, filename)


def default_config() -> Config:
    """The built-in defaults (:data:`DEFAULT_CONF_TEXT`), without any environment."""
    return load_config(None, environ={}).config
