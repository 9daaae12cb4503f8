"""SRS-compatible configuration for livesrv.

    from livesrv.config import load_config
    result = load_config("conf/livesrv.conf")      # or None for the defaults
    cfg = result.config
    cfg.listen_endpoints()                         # [("0.0.0.0", 1935)]
    listen_addresses(cfg.http_api.listen)          # [("0.0.0.0", 1985)]
    cfg.http_api.listen.port                       # 1985
    cfg.vhost("example.com").play.gop_cache        # falls back to __defaultVhost__

``parse_text(text, filename)`` does the same for text (no environment).
Parsing is in :mod:`.parser`, the typed model in :mod:`.model`, the one
tree-to-model mapping in :mod:`.mapping`, ``SRS_*`` overrides in :mod:`.env`.
"""

from .env import ALIASES as ENV_ALIASES
from .env import apply_env, env_name, env_table
from .errors import ConfigError
from .loader import (
    DEFAULT_CONF_TEXT,
    LoadResult,
    default_config,
    default_hls_path,
    load_config,
    parse_text,
)
from .model import (
    ANY_HOST,
    DEFAULT_VHOST,
    Config,
    DvrConfig,
    ForwardConfig,
    ClusterConfig,
    RegistryConfig,
    ForwardDestination,
    Endpoint,
    ExporterConfig,
    HlsConfig,
    HttpApiAuthConfig,
    HttpApiConfig,
    HttpHooksConfig,
    HttpLimitsConfig,
    HttpRemuxConfig,
    HttpServerConfig,
    PlayConfig,
    PublishConfig,
    RawApiConfig,
    RtmpLimitsConfig,
    SecurityConfig,
    SecurityRule,
    VhostConfig,
    listen_addresses,
    parse_bool,
    parse_endpoint,
)
from .parser import Directive, parse_file, parse_tree

__all__ = [
    "ANY_HOST",
    "Config",
    "ConfigError",
    "DEFAULT_CONF_TEXT",
    "DEFAULT_VHOST",
    "default_hls_path",
    "Directive",
    "DvrConfig",
    "ForwardConfig",
    "ClusterConfig",
    "RegistryConfig",
    "ForwardDestination",
    "ENV_ALIASES",
    "Endpoint",
    "ExporterConfig",
    "HlsConfig",
    "HttpApiAuthConfig",
    "HttpApiConfig",
    "HttpHooksConfig",
    "HttpLimitsConfig",
    "HttpRemuxConfig",
    "HttpServerConfig",
    "LoadResult",
    "PlayConfig",
    "PublishConfig",
    "RawApiConfig",
    "RtmpLimitsConfig",
    "SecurityConfig",
    "SecurityRule",
    "VhostConfig",
    "apply_env",
    "default_config",
    "env_name",
    "env_table",
    "load_config",
    "listen_addresses",
    "parse_bool",
    "parse_endpoint",
    "parse_file",
    "parse_text",
    "parse_tree",
]
