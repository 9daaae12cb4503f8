"""Tests for livesrv.config: parser, typed model, env overrides, defaults."""

from __future__ import annotations

import logging
import os
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from livesrv.config import (
    DEFAULT_VHOST,
    Config,
    ConfigError,
    Endpoint,
    LoadResult,
    default_config,
    default_hls_path,
    env_table,
    load_config,
    listen_addresses,
    parse_bool,
    parse_endpoint,
    parse_text,
    parse_tree,
)
from livesrv.config.mapping import directive_specs
from livesrv.config.model import VhostConfig

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "conf"


def load(text: str, **kw) -> LoadResult:
    return parse_text(text, "t.conf", **kw)


# --------------------------------------------------------------------------- full sample

FULL = """
# a full sample
listen              1935 127.0.0.1:19350 [::]:1936;
max_connections     300;
daemon              off;
pid                 /run/livesrv.pid;
chunk_size          4096;
srs_log_tank        console;
srs_log_level       WARN;
srs_log_file        /var/log/livesrv.log;
ff_log_dir          /tmp/ff;
server_id           "node 1";
rtmp_limits {
    max_message_size    1048576;
    handshake_timeout   2.5;
    idle_timeout        60;
}
http_limits {
    header_timeout      5;
    idle_timeout        30.5;
    body_timeout        7;
    max_body_size       65536;
}
http_api {
    enabled         yes;
    listen          127.0.0.1:1986;
    crossdomain     off;
    raw_api { enabled on; allow_reload true; }
    auth { enabled on; username admin; password 's3cret #1'; }
}
http_server {
    enabled         1;
    listen          8081;
    dir             ./html;
    crossdomain     no;
}
exporter { enabled on; listen 9973; label cn-north; tag edge; }
vhost __defaultVhost__ {
    min_latency     on;
    tcp_nodelay     on;
    chunk_size      128;
    play {
        gop_cache               off;
        gop_cache_max_frames    100;
        queue_length            10;
        time_jitter             zero;
        atc                     on;
        mix_correct             on;
        mw_latency              100;
        mw_msgs                 2;
    }
    publish { firstpkt_timeout 1000; normal_timeout 2000; }
    http_remux { enabled on; mount [vhost]/[app]/[stream].flv; }
    hls {
        enabled             on;
        hls_fragment        2;
        hls_window          20;
        hls_td_ratio        2.0;
        hls_cleanup         off;
        hls_dispose         0;
        hls_wait_keyframe   off;
        hls_path            /data/hls;
        hls_m3u8_file       [app]/[stream]/index.m3u8;
        hls_ts_file         [app]/[stream]/[seq].ts;
    }
    http_hooks {
        enabled         on;
        on_connect      http://127.0.0.1:8085/api/v1/clients;
        on_close        http://127.0.0.1:8085/api/v1/clients;
        on_publish      http://a/streams https://b/streams;
        on_unpublish    http://a/streams;
        on_play         http://a/sessions;
        on_stop         http://a/sessions;
        on_dvr          http://a/dvrs;
        on_hls          http://a/hls;
    }
    security {
        enabled         on;
        allow           publish     127.0.0.1;
        deny            publish     all;
        allow           play        10.0.0.0/8;
        deny            play        10.1.2.3;
    }
    dvr { enabled on; dvr_plan segment; dvr_duration 60; }
}
vhost live.example.com {
    enabled off;
    hls { enabled on; }
}
"""


def test_full_sample_typed_values():
    res = load(FULL)
    assert res.warnings == []
    c = res.config
    assert c.listen == (
        Endpoint("0.0.0.0", 1935),
        Endpoint("127.0.0.1", 19350),
        Endpoint("::", 1936),
    )
    assert c.listen_endpoints() == [("0.0.0.0", 1935), ("127.0.0.1", 19350), ("::", 1936)]
    assert listen_addresses(c.listen) == c.listen_endpoints()
    assert listen_addresses(c.http_api.listen) == [("127.0.0.1", 1986)]
    assert (c.max_connections, c.daemon, c.pid, c.chunk_size) == (300, False, "/run/livesrv.pid", 4096)
    assert (c.srs_log_tank, c.srs_log_level, c.srs_log_file) == ("console", "warn", "/var/log/livesrv.log")
    assert (c.ff_log_dir, c.server_id) == ("/tmp/ff", "node 1")
    assert c.rtmp_limits.max_message_size == 1048576
    assert c.rtmp_limits.handshake_timeout == 2.5
    assert c.rtmp_limits.idle_timeout == 60
    assert c.http_limits.model_dump() == {
        "header_timeout": 5, "idle_timeout": 30.5, "body_timeout": 7, "max_body_size": 65536,
    }

    api = c.http_api
    assert api.enabled is True and api.listen == Endpoint("127.0.0.1", 1986)
    assert api.listen.port == 1986 and str(api.listen) == "127.0.0.1:1986"
    assert api.crossdomain is False
    assert api.raw_api.enabled and api.raw_api.allow_reload
    assert (api.auth.enabled, api.auth.username, api.auth.password) == (True, "admin", "s3cret #1")
    srv = c.http_server
    assert (srv.enabled, srv.listen.port, srv.dir, srv.crossdomain) == (True, 8081, "./html", False)
    assert (c.exporter.enabled, c.exporter.listen.port, c.exporter.label, c.exporter.tag) == (
        True, 9973, "cn-north", "edge",
    )

    v = c.vhost(DEFAULT_VHOST)
    assert (v.name, v.enabled, v.min_latency, v.tcp_nodelay, v.chunk_size) == (
        DEFAULT_VHOST, True, True, True, 128,
    )
    p = v.play
    assert (p.gop_cache, p.gop_cache_max_frames, p.queue_length, p.time_jitter) == (False, 100, 10, "zero")
    assert (p.atc, p.mix_correct, p.mw_latency, p.mw_msgs) == (True, True, 100, 2)
    assert (v.publish.firstpkt_timeout, v.publish.normal_timeout) == (1000, 2000)
    assert v.http_remux.enabled and v.http_remux.mount == "[vhost]/[app]/[stream].flv"
    h = v.hls
    assert (h.enabled, h.hls_fragment, h.hls_window, h.hls_td_ratio) == (True, 2, 20, 2.0)
    assert (h.hls_cleanup, h.hls_dispose, h.hls_wait_keyframe) == (False, 0, False)
    assert (h.hls_path, h.hls_m3u8_file, h.hls_ts_file) == (
        "/data/hls", "[app]/[stream]/index.m3u8", "[app]/[stream]/[seq].ts",
    )
    hk = v.http_hooks
    assert hk.enabled and hk.on_publish == ("http://a/streams", "https://b/streams")
    assert hk.on_connect == hk.on_close == ("http://127.0.0.1:8085/api/v1/clients",)
    assert (hk.on_unpublish, hk.on_play, hk.on_stop, hk.on_dvr, hk.on_hls) == (
        ("http://a/streams",), ("http://a/sessions",), ("http://a/sessions",),
        ("http://a/dvrs",), ("http://a/hls",),
    )
    sec = v.security
    assert sec.enabled
    assert [(r.action, r.method, r.target) for r in sec.rules] == [
        ("allow", "publish", "127.0.0.1"),
        ("deny", "publish", "all"),
        ("allow", "play", "10.0.0.0/8"),
        ("deny", "play", "10.1.2.3"),
    ]
    assert (v.dvr.enabled, v.dvr.dvr_plan, v.dvr.dvr_duration) == (True, "segment", 60)

    other = c.vhost("live.example.com")
    assert other.name == "live.example.com" and other.enabled is False
    assert other.hls.enabled is True and other.hls.hls_fragment == 10  # rest: defaults
    assert other.play.gop_cache is True and other.http_remux.enabled is False
    # Unknown vhosts fall back to __defaultVhost__.
    assert c.vhost("nope.example.com") is v
    assert c.vhost(None) is v
    assert c.has_vhost("live.example.com") and not c.has_vhost("nope.example.com")
    assert c.vhost_chunk_size("live.example.com") == 4096
    assert c.vhost_chunk_size("anything") == 128


def test_security_semantics_are_srs():
    sec = load(FULL).config.vhost(DEFAULT_VHOST).security
    # Must match an allow and no deny.
    assert sec.allows("publish", "127.0.0.1") is False  # "deny publish all" also matches
    assert sec.allows("play", "10.9.9.9") is True
    assert sec.allows("play", "10.1.2.3") is False
    assert sec.allows("play", "192.168.0.1") is False  # no allow matches
    assert sec.allows("play", "::ffff:10.0.0.7") is True
    open_ = load("vhost a { security { enabled off; deny play all; } }").config.vhost("a").security
    assert open_.allows("play", "1.2.3.4") is True
    # Only deny rules: a deny list, everyone else allowed (SRS 5+).
    deny_only = load("vhost a { security { enabled on; deny publish 1.2.3.4; } }").config.vhost("a").security
    assert deny_only.allows("publish", "1.2.3.4") is False
    assert deny_only.allows("publish", "5.6.7.8") is True and deny_only.allows("play", "1.2.3.4") is True


def test_vhost_always_has_default_and_is_created_with_defaults():
    c = load("vhost only.example.com { }").config
    assert set(c.vhosts) == {"only.example.com", DEFAULT_VHOST}
    assert c.vhost("x") == VhostConfig(name=DEFAULT_VHOST)
    assert Config().vhosts[DEFAULT_VHOST].name == DEFAULT_VHOST


def test_model_is_frozen():
    c = default_config()
    with pytest.raises(ValidationError):
        c.max_connections = 5  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.http_api.enabled = False  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("on", True), ("off", False), ("ON", True), ("true", True), ("false", False),
        ("yes", True), ("no", False), ("1", True), ("0", False), (True, True),
    ],
)
def test_booleans(text, expected):
    assert parse_bool(text) is expected
    if isinstance(text, str):
        assert load(f"http_api {{ enabled {text}; }}").config.http_api.enabled is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1935", ("0.0.0.0", 1935)),
        ("0.0.0.0:1935", ("0.0.0.0", 1935)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::]:1935", ("::", 1935)),
        ("[::1]:8080", ("::1", 8080)),
        ("localhost:1935", ("localhost", 1935)),
        (1935, ("0.0.0.0", 1935)),
    ],
)
def test_listen_forms(text, expected):
    assert parse_endpoint(text) == expected
    assert load(f"listen {text};").config.listen_endpoints() == [expected]


@pytest.mark.parametrize("bad", ["abc", "70000", "::1:1935", "[::1]", "1.2.3.999:1", "-1", ":1935"])
def test_listen_rejects(bad):
    with pytest.raises(ValueError):
        parse_endpoint(bad)
    with pytest.raises(ConfigError, match=r"^t\.conf:1: invalid value"):
        load(f"listen {bad};")


# --------------------------------------------------------------------------- lexical details


def test_comments_quotes_and_multiline():
    text = (
        "# leading comment\n"
        "pid    '/tmp/with space.pid';   # trailing comment\n"
        'srs_log_file "/a \\"q\\" b";\n'
        "vhost v {http_hooks{enabled on;on_publish http://h/p#frag\n"
        "   http://h/q;}}\n"
        "http_api { auth { username \"\"; password 'C:\\dir'; } }\n"
    )
    res = load(text)
    assert res.warnings == []
    c = res.config
    assert c.pid == "/tmp/with space.pid"
    assert c.srs_log_file == '/a "q" b'
    assert c.vhost("v").http_hooks.on_publish == ("http://h/p#frag", "http://h/q")
    assert c.http_api.auth.username == ""
    assert c.http_api.auth.password == "C:\\dir"


def test_parse_tree_shape_and_lines():
    tree = parse_tree("a 1 2;\nb {\n  c 'x y';\n}\nd;", "f.conf")
    assert [(d.name, d.args, d.line, d.block) for d in tree] == [
        ("a", ["1", "2"], 1, False),
        ("b", [], 2, True),
        ("d", [], 5, False),
    ]
    c = tree[1].children[0]
    assert (c.name, c.args, c.file, c.line, c.where) == ("c", ["x y"], "f.conf", 3, "f.conf:3")


def test_includes_relative_nested_and_in_blocks(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "main.conf").write_text(
        "include sub/global.conf;\nvhost v {\n    include sub/v.conf;\n}\n"
    )
    (tmp_path / "sub" / "global.conf").write_text("listen 1940;\ninclude more.conf;\n")
    (tmp_path / "sub" / "more.conf").write_text("max_connections 7;\n")
    (tmp_path / "sub" / "v.conf").write_text("play { gop_cache off; }\nbogus 1;\n")
    res = load_config(tmp_path / "main.conf", environ={})
    c = res.config
    assert c.listen_endpoints() == [("0.0.0.0", 1940)]
    assert c.max_connections == 7
    assert c.vhost("v").play.gop_cache is False
    # Warnings name the included file and its line.
    assert res.warnings == [f"{tmp_path / 'sub' / 'v.conf'}:2: unknown directive 'bogus' in 'vhost' ignored"]


def test_include_loop_and_missing(tmp_path):
    a, b = tmp_path / "a.conf", tmp_path / "b.conf"
    a.write_text("listen 1935;\ninclude b.conf;\n")
    b.write_text("\n\ninclude a.conf;\n")
    with pytest.raises(ConfigError) as ei:
        load_config(a, environ={})
    assert str(ei.value).startswith(f"{b}:3: include loop: ")
    (tmp_path / "self.conf").write_text("include self.conf;")
    with pytest.raises(ConfigError, match=r"self\.conf:1: include loop"):
        load_config(tmp_path / "self.conf", environ={})
    (tmp_path / "m.conf").write_text("listen 1;\n\ninclude nothere.conf;")
    with pytest.raises(ConfigError, match=r"m\.conf:3: cannot include 'nothere\.conf'"):
        load_config(tmp_path / "m.conf", environ={})
    with pytest.raises(ConfigError, match=r"does-not-exist\.conf: cannot read config file"):
        load_config(tmp_path / "does-not-exist.conf", environ={})


def test_syntax_error_in_include_names_included_file(tmp_path):
    (tmp_path / "main.conf").write_text("listen 1935;\ninclude inc.conf;\n")
    (tmp_path / "inc.conf").write_text("vhost a {\n  play {\n")
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "main.conf", environ={})
    assert str(ei.value) == f"{tmp_path / 'inc.conf'}:2: missing '}}' to close 'play' block (unexpected end of file)"
    assert (ei.value.file, ei.value.line) == (str(tmp_path / "inc.conf"), 2)


# --------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    "text, message",
    [
        ("listen 1935", "t.conf:1: missing ';' after 'listen 1935' (unexpected end of file)"),
        ("http_api {\n    enabled on\n}\n", "t.conf:2: missing ';' after 'enabled on'"),
        ("vhost a {\n  hls {\n  }\n", "t.conf:1: missing '}' to close 'vhost a' block (unexpected end of file)"),
        ("listen 1935;\n\n}\n", "t.conf:3: unexpected '}'"),
        ("vhost a { }\n}", "t.conf:2: unexpected '}'"),
        ("pid \"/tmp/x;\n\nlisten 1;\n", "t.conf:1: unterminated quoted string"),
        ("listen 1;\npid '/tmp/x;", "t.conf:2: unterminated quoted string"),
        ("listen 1;\n;", "t.conf:2: unexpected ';'"),
        ("\n{ }", "t.conf:2: unexpected '{'"),
        ('pid "a"b;', "t.conf:1: unexpected 'b' after quoted string"),
        ("include;", "t.conf:1: 'include' needs at least one file"),
        ("include a {}", "t.conf:1: 'include' cannot open a block"),
    ],
)
def test_syntax_errors(text, message):
    with pytest.raises(ConfigError) as ei:
        parse_tree(text, "t.conf")
    assert str(ei.value) == message
    with pytest.raises(ConfigError):
        parse_text(text, "t.conf")


# --------------------------------------------------------------------------- unknown / bad values


def test_unknown_directives_warn_and_never_crash(caplog):
    text = (
        "listen 1935;\n"
        "srt_server {\n    enabled on;\n    nested { deep 1; }\n}\n"
        "vhost __defaultVhost__ {\n"
        "    x 1;\n"
        "    play { foo bar; gop_cache off; }\n"
        "    srt { enabled on; }\n"
        "}\n"
        "mystery;\n"
    )
    with caplog.at_level(logging.WARNING, logger="livesrv.config"):
        res = load(text)
    assert res.warnings == [
        "t.conf:2: unknown directive 'srt_server' in 'root' ignored",
        "t.conf:7: unknown directive 'x' in 'vhost' ignored",
        "t.conf:8: unknown directive 'foo' in 'vhost.play' ignored",
        "t.conf:9: unknown directive 'srt' in 'vhost' ignored",
        "t.conf:11: unknown directive 'mystery' in 'root' ignored",
    ]
    assert res.config.vhost("").play.gop_cache is False
    logged = [r.getMessage() for r in caplog.records if r.name == "livesrv.config"]
    assert logged == res.warnings
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "livesrv.config")


def test_duplicates_warn_first_wins():
    res = load("listen 1935;\nlisten 1936;\nvhost a { }\nvhost a { enabled off; }\n")
    assert res.config.listen_endpoints() == [("0.0.0.0", 1935)]
    assert res.config.vhost("a").enabled is True
    assert res.warnings == [
        "t.conf:2: duplicate directive 'listen' in 'root' ignored (first at t.conf:1)",
        "t.conf:4: duplicate vhost 'a' ignored (first at t.conf:3)",
    ]


def test_legacy_srs_spellings_are_accepted():
    text = (
        "http_stream { enabled on; listen 8088; }\n"
        "vhost a { gop_cache off; queue_length 5; mw_latency 100; time_jitter off;\n"
        "          publish_1stpkt_timeout 3000; publish_normal_timeout 4000; }\n"
        "vhost b { gop_cache off; play { gop_cache on; } }\n"
    )
    res = load(text)
    assert res.warnings == []
    c = res.config
    assert c.http_server.enabled and c.http_server.listen.port == 8088
    a = c.vhost("a")
    assert (a.play.gop_cache, a.play.queue_length, a.play.mw_latency, a.play.time_jitter) == (
        False, 5, 100, "off",
    )
    assert (a.publish.firstpkt_timeout, a.publish.normal_timeout) == (3000, 4000)
    assert c.vhost("b").play.gop_cache is True  # the explicit play block wins


@pytest.mark.parametrize(
    "text, prefix",
    [
        ("listen abc;", "t.conf:1: invalid value 'abc' for 'listen'"),
        ("\nmax_connections lots;", "t.conf:2: invalid value 'lots' for 'max_connections'"),
        ("max_connections 0;", "t.conf:1: invalid value '0' for 'max_connections'"),
        ("chunk_size 64;", "t.conf:1: invalid value '64' for 'chunk_size'"),
        ("srs_log_tank syslog;", "t.conf:1: invalid value 'syslog' for 'srs_log_tank'"),
        ("srs_log_level loud;", "t.conf:1: invalid value 'loud' for 'srs_log_level'"),
        ("http_api {\n  enabled maybe;\n}", "t.conf:2: invalid value 'maybe' for 'enabled'"),
        ("http_api { listen 99999; }", "t.conf:1: invalid value '99999' for 'listen'"),
        ("rtmp_limits { idle_timeout 0; }", "t.conf:1: invalid value '0' for 'idle_timeout'"),
        ("http_limits {\n header_timeout 0;\n}", "t.conf:2: invalid value '0' for 'header_timeout'"),
        ("http_limits { body_timeout -1; }", "t.conf:1: invalid value '-1' for 'body_timeout'"),
        ("http_limits { max_body_size 1m; }", "t.conf:1: invalid value '1m' for 'max_body_size'"),
        ("vhost a {\n hls {\n  hls_fragment -1;\n }\n}", "t.conf:3: invalid value '-1' for 'hls_fragment'"),
        ("vhost a { play { time_jitter fast; } }", "t.conf:1: invalid value 'fast' for 'time_jitter'"),
        ("vhost a { play { mw_latency 1.5; } }", "t.conf:1: invalid value '1.5' for 'mw_latency'"),
        ("vhost a { http_hooks { on_play ftp://x; } }", "t.conf:1: invalid value 'ftp://x' for 'on_play'"),
        ("vhost a {\n security {\n  allow play 300.1.1.1;\n } }", "t.conf:3: invalid value 'play 300.1.1.1' for 'allow'"),
        ("vhost a { security { deny watch all; } }", "t.conf:1: invalid value 'watch all' for 'deny'"),
        ("vhost a { security { allow play; } }", "t.conf:1: expected 'allow publish|play all|IP|CIDR;'"),
        ("pid a b;", "t.conf:1: 'pid' takes one value, got 2"),
        ("pid;", "t.conf:1: 'pid' needs a value"),
        ("listen { }", "t.conf:1: 'listen' is not a block"),
        ("http_api on;", "t.conf:1: 'http_api' must be a block"),
        ("http_api x { }", "t.conf:1: block 'http_api' takes no arguments"),
        ("vhost { }", "t.conf:1: 'vhost' takes exactly one name"),
        ("vhost a;", "t.conf:1: 'vhost' must be a block"),
        # A forgotten ';' shows up as a bad value, with a hint.
        (
            "listen 1935\nmax_connections 10;",
            "t.conf:1: invalid value '1935 max_connections 10' for 'listen': expected PORT, "
            "IP:PORT or [IPV6]:PORT (missing ';' at the end of line 1?)",
        ),
        ("pid /a\nchunk_size 4096;", "t.conf:1: 'pid' takes one value, got 3 (missing ';' at the end of line 1?)"),
    ],
)
def test_bad_values_raise_with_file_and_line(text, prefix):
    with pytest.raises(ConfigError) as ei:
        load(text)
    assert str(ei.value).startswith(prefix), str(ei.value)
    assert ei.value.file == "t.conf"


# --------------------------------------------------------------------------- environment

BASE = """
listen 1935;
max_connections 1000;
http_api { enabled on; listen 1985; }
http_server { enabled on; listen 8080; dir ./objs/nginx/html; }
vhost __defaultVhost__ {
    http_remux { enabled on; }
    play { gop_cache on; }
}
vhost other { hls { enabled off; } }
"""


def _get(cfg: Config, path: str):
    obj = cfg
    for part in path.split("."):
        obj = obj.vhost(DEFAULT_VHOST) if part == "vhost()" else getattr(obj, part)
    return obj


@pytest.mark.parametrize(
    "var, value, path, expected",
    [
        ("SRS_LISTEN", "1936", "listen", (Endpoint("0.0.0.0", 1936),)),
        ("SRS_LISTEN", "1936 [::]:1937", "listen", (Endpoint("0.0.0.0", 1936), Endpoint("::", 1937))),
        ("SRS_MAX_CONNECTIONS", "42", "max_connections", 42),
        ("SRS_CHUNK_SIZE", "8192", "chunk_size", 8192),
        ("SRS_DAEMON", "off", "daemon", False),
        ("SRS_SERVER_ID", "abc", "server_id", "abc"),
        ("SRS_SRS_LOG_LEVEL", "error", "srs_log_level", "error"),
        ("SRS_LOG_TANK", "file", "srs_log_tank", "file"),
        ("SRS_HTTP_API_LISTEN", "127.0.0.1:1995", "http_api.listen", Endpoint("127.0.0.1", 1995)),
        ("SRS_HTTP_API_ENABLED", "off", "http_api.enabled", False),
        ("SRS_HTTP_API_AUTH_USERNAME", "root", "http_api.auth.username", "root"),
        ("SRS_HTTP_API_RAW_API_ENABLED", "on", "http_api.raw_api.enabled", True),
        ("SRS_HTTP_SERVER_LISTEN", "8088", "http_server.listen", Endpoint("0.0.0.0", 8088)),
        ("SRS_HTTP_SERVER_DIR", "/srv/my html", "http_server.dir", "/srv/my html"),
        ("SRS_VHOST_HTTP_REMUX_ENABLED", "off", "vhost().http_remux.enabled", False),
        ("SRS_VHOST_HTTP_REMUX_MOUNT", "[vhost]/[app]/[stream].flv", "vhost().http_remux.mount", "[vhost]/[app]/[stream].flv"),
        ("SRS_VHOST_HLS_ENABLED", "on", "vhost().hls.enabled", True),
        ("SRS_VHOST_HLS_HLS_PATH", "/tmp/hls", "vhost().hls.hls_path", "/tmp/hls"),
        ("SRS_VHOST_HLS_HLS_FRAGMENT", "2.5", "vhost().hls.hls_fragment", 2.5),
        ("SRS_VHOST_PLAY_GOP_CACHE", "off", "vhost().play.gop_cache", False),
        ("SRS_VHOST_PLAY_MW_LATENCY", "0", "vhost().play.mw_latency", 0),
        ("SRS_VHOST_HTTP_HOOKS_ENABLED", "on", "vhost().http_hooks.enabled", True),
        ("SRS_VHOST_HTTP_HOOKS_ON_PUBLISH", "http://a/p  http://b/p", "vhost().http_hooks.on_publish", ("http://a/p", "http://b/p")),
        ("SRS_VHOST_SECURITY_ENABLED", "on", "vhost().security.enabled", True),
        ("SRS_VHOST_MIN_LATENCY", "on", "vhost().min_latency", True),
        ("SRS_EXPORTER_ENABLED", "on", "exporter.enabled", True),
        ("SRS_EXPORTER_LISTEN", "9100", "exporter.listen", Endpoint("0.0.0.0", 9100)),
        ("SRS_RTMP_LIMITS_IDLE_TIMEOUT", "5", "rtmp_limits.idle_timeout", 5.0),
        ("SRS_RTMP_LIMITS_MAX_MESSAGE_SIZE", "65536", "rtmp_limits.max_message_size", 65536),
        ("SRS_HTTP_LIMITS_HEADER_TIMEOUT", "2.5", "http_limits.header_timeout", 2.5),
        ("SRS_HTTP_LIMITS_IDLE_TIMEOUT", "15", "http_limits.idle_timeout", 15.0),
        ("SRS_HTTP_LIMITS_BODY_TIMEOUT", "3", "http_limits.body_timeout", 3.0),
        ("SRS_HTTP_LIMITS_MAX_BODY_SIZE", "4096", "http_limits.max_body_size", 4096),
    ],
)
def test_env_overrides_beat_file(var, value, path, expected):
    res = load(BASE, environ={var: value})
    assert _get(res.config, path) == expected
    assert res.env_applied == [var]
    assert res.warnings == []


def test_env_vhost_vars_apply_to_default_vhost_only():
    env = {"SRS_VHOST_HLS_ENABLED": "on", "SRS_VHOST_PLAY_GOP_CACHE": "off"}
    c = load(BASE, environ=env).config
    assert c.vhost(DEFAULT_VHOST).hls.enabled is True
    assert c.vhost(DEFAULT_VHOST).http_remux.enabled is True  # untouched file value
    assert c.vhost("other").hls.enabled is False
    assert c.vhost("other").play.gop_cache is True
    # No __defaultVhost__ block in the file: it is created for the override.
    c = load("vhost other { }", environ=env).config
    assert c.vhost(DEFAULT_VHOST).hls.enabled is True
    assert c.vhost("other").hls.enabled is False


def test_env_beats_legacy_spelling_and_legacy_block_name():
    text = "http_stream { listen 8080; }\nvhost __defaultVhost__ { gop_cache on; }\n"
    env = {"SRS_HTTP_SERVER_LISTEN": "9090", "SRS_VHOST_PLAY_GOP_CACHE": "off"}
    res = load(text, environ=env)
    assert res.warnings == []
    assert res.config.http_server.listen.port == 9090
    assert res.config.vhost("").play.gop_cache is False


def test_env_ignores_unknown_and_empty_and_prefers_canonical(caplog):
    env = {
        "SRS_NOT_A_THING": "1",
        "SRS_LISTEN": "",
        "HOME": "/root",
        "SRS_LOG_TANK": "console",
        "SRS_SRS_LOG_TANK": "file",
    }
    with caplog.at_level(logging.DEBUG, logger="livesrv.config"):
        res = load(BASE, environ=env)
    assert res.config.listen_endpoints() == [("0.0.0.0", 1935)]
    assert res.config.srs_log_tank == "file"
    assert res.warnings == []
    assert any("SRS_NOT_A_THING" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "var, value, message",
    [
        ("SRS_LISTEN", "abc", "$SRS_LISTEN: invalid value 'abc' for 'listen'"),
        ("SRS_HTTP_API_ENABLED", "perhaps", "$SRS_HTTP_API_ENABLED: invalid value 'perhaps' for 'enabled'"),
        ("SRS_VHOST_PLAY_QUEUE_LENGTH", "x", "$SRS_VHOST_PLAY_QUEUE_LENGTH: invalid value 'x' for 'queue_length'"),
    ],
)
def test_env_bad_values_name_the_variable(var, value, message):
    with pytest.raises(ConfigError) as ei:
        load(BASE, environ={var: value})
    assert str(ei.value).startswith(message)


def test_env_table_is_generated_from_the_model():
    table = env_table()
    for name in [
        "SRS_LISTEN", "SRS_MAX_CONNECTIONS", "SRS_HTTP_API_LISTEN", "SRS_HTTP_API_ENABLED",
        "SRS_HTTP_SERVER_LISTEN", "SRS_HTTP_SERVER_DIR", "SRS_VHOST_HTTP_REMUX_ENABLED",
        "SRS_VHOST_HLS_ENABLED", "SRS_VHOST_HLS_HLS_PATH", "SRS_VHOST_PLAY_GOP_CACHE",
        "SRS_VHOST_HTTP_HOOKS_ON_PUBLISH", "SRS_EXPORTER_ENABLED", "SRS_RTMP_LIMITS_IDLE_TIMEOUT",
    ]:
        assert name in table, name

    def leaves(model, prefix):
        for directive, spec in directive_specs(model).items():
            if spec.kind == "block":
                yield from leaves(spec.model, prefix + (directive,))
            else:
                yield prefix + (directive,)

    expected = {"SRS_" + "_".join(p).upper() for p in leaves(Config, ())}
    expected |= {"SRS_" + "_".join(p).upper() for p in leaves(VhostConfig, ("vhost",))}
    assert expected <= set(table)
    assert set(table) - expected == {"SRS_LOG_TANK", "SRS_LOG_LEVEL", "SRS_LOG_FILE",
                                     "SRS_HTTP_SERVER_HTTTPS_ENABLED", "SRS_HTTP_SERVER_HTTTPS_LISTEN"}


def test_env_only_ignores_file_and_starts_from_defaults(tmp_path):
    conf = tmp_path / "x.conf"
    conf.write_text("listen 9999;\nhttp_api { enabled off; }\n")
    res = load_config(conf, environ={"SRS_HTTP_API_LISTEN": "1999"}, env_only=True)
    c = res.config
    assert c.listen_endpoints() == [("0.0.0.0", 1935)]
    assert c.http_api.enabled is True and c.http_api.listen.port == 1999
    assert c.vhost("").http_remux.enabled is True
    # As SRS -e: no daemon, console log unless the environment says otherwise.
    assert c.daemon is False and c.srs_log_tank == "console"
    assert load_config(None, environ={"SRS_LOG_TANK": "file"}, env_only=True).config.srs_log_tank == "file"
    # The file (without env_only) does apply, and the environment still beats it.
    c = load_config(conf, environ={"SRS_LISTEN": "1940"}).config
    assert c.listen_endpoints() == [("0.0.0.0", 1940)] and c.http_api.enabled is False


# --------------------------------------------------------------------------- defaults


def test_defaults_match_srs_minimal_default():
    c = default_config()
    assert load_config(None, environ={}).warnings == []
    assert c.listen_endpoints() == [("0.0.0.0", 1935)]
    assert c.max_connections == 1000
    assert c.chunk_size == 60000
    # SRS defaults the tank to file (console in docker); livesrv never daemonizes: console.
    assert (c.srs_log_tank, c.srs_log_level, c.srs_log_file) == ("console", "trace", "./objs/srs.log")
    assert (c.http_api.enabled, c.http_api.listen.port, c.http_api.crossdomain) == (True, 1985, True)
    assert c.http_api.raw_api.enabled is False and c.http_api.auth.enabled is False
    assert (c.http_server.enabled, c.http_server.listen.port, c.http_server.dir) == (
        True, 8080, "./objs/nginx/html",
    )
    assert c.exporter.enabled is False and c.exporter.listen.port == 9972
    assert c.rtmp_limits.model_dump() == {
        "max_message_size": 8388608, "handshake_timeout": 10, "idle_timeout": 30,
        "max_write_buffer": 4194304,
    }
    assert c.http_limits.model_dump() == {  # livesrv's own (see conf/livesrv.conf)
        "header_timeout": 10, "idle_timeout": 60, "body_timeout": 10, "max_body_size": 1048576,
    }
    assert list(c.vhosts) == [DEFAULT_VHOST]
    v = c.vhost(DEFAULT_VHOST)
    assert v.http_remux.enabled is True and v.http_remux.mount == "[vhost]/[app]/[stream].flv"
    assert v.hls.enabled is True  # as SRS's conf/srs.conf: Safari and iOS play only HLS
    assert v.play.model_dump() == {
        "gop_cache": True, "gop_cache_max_frames": 2500, "queue_length": 30, "time_jitter": "full",
        "atc": False, "mix_correct": False, "mw_latency": 100, "mw_msgs": 8,  # (100: SRS's 350 in a file)
        "republish_grace": 30, "wait_timeout": 30,  # livesrv's own
    }
    assert (v.publish.firstpkt_timeout, v.publish.normal_timeout, v.publish.takeover) == (20000, 5000, True)
    assert v.hls.model_dump() == {
        "enabled": True, "hls_fragment": 2, "hls_window": 60, "hls_td_ratio": 1.5,
        "hls_cleanup": True, "hls_dispose": 120, "hls_wait_keyframe": True,
        # a per-user cache directory, not the working directory
        "hls_path": default_hls_path(), "hls_m3u8_file": "[app]/[stream].m3u8",
        "hls_ts_file": "[app]/[stream]-[seq].ts",
    }
    assert v.http_hooks.enabled is False and v.security.enabled is False and v.dvr.enabled is False


def test_srs_minimal_conf_equals_defaults_but_hls_path_and_fragment():
    res = load_config(CONF_DIR / "srs-minimal.conf", environ={})
    assert res.warnings == []
    c = res.config
    assert c.vhost("").hls.enabled is True
    d = default_config().model_dump()
    d["vhosts"][DEFAULT_VHOST]["hls"].update(hls_path="./objs/nginx/html", hls_fragment=10)
    d["vhosts"][DEFAULT_VHOST]["play"].update(mw_latency=350)
    assert c.model_dump() == d


@pytest.mark.parametrize("env, expected", [
    ({"XDG_CACHE_HOME": "/var/cache/u", "HOME": "/home/u"}, "/var/cache/u/livesrv/hls"),
    ({"XDG_CACHE_HOME": "relative/ignored", "HOME": "/home/u"}, "/home/u/.cache/livesrv/hls"),
    ({"HOME": "/home/u"}, "/home/u/.cache/livesrv/hls"),
    ({"HOME": "/"}, None),  # a service account without a home: the temporary directory
])
def test_default_hls_path_is_a_per_user_cache(env, expected):
    path = default_hls_path(env)
    if expected is None:
        assert path == os.path.join(tempfile.gettempdir(), f"livesrv-{os.getuid()}", "hls")
    else:
        assert path == expected
    assert load_config(None, environ=env).config.vhost("").hls.hls_path == path
    # The environment still chooses another place, as for any directive.
    assert load_config(None, environ={**env, "SRS_VHOST_HLS_HLS_PATH": "/srv/hls"}).config.vhost("").hls.hls_path == "/srv/hls"


def test_default_hls_path_with_quotes_and_spaces_survives_the_parser():
    env = {"XDG_CACHE_HOME": '/tmp/a "b" \\c d;e'}
    assert load_config(None, environ=env).config.vhost("").hls.hls_path == '/tmp/a "b" \\c d;e/livesrv/hls'


def test_model_defaults_are_srs_getter_defaults():
    # A directive absent from a file means what it means in SRS.
    c = load("listen 1935;").config
    assert c.http_api.enabled is False and c.http_server.enabled is False
    assert c.vhost("").http_remux.enabled is False
    assert c == Config()


def test_livesrv_example_conf_parses_cleanly():
    res = load_config(CONF_DIR / "livesrv.conf", environ={})
    assert res.warnings == []
    assert res.config.rtmp_limits.idle_timeout == 30
    assert res.config.http_limits == default_config().http_limits  # the example shows the defaults
    assert res.config.vhost("live.example.com").hls.hls_fragment == 2


# --------------------------------------------------------------------------- robustness

_TOKENS = st.sampled_from(
    ["listen", "vhost", "hls", "enabled", "on", "1935", "a:b", "{", "}", ";", "#", "\n", " ",
     '"', "'", "\\", "include", "play", "security", "allow", "all", "x"]
)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=string.printable, max_size=300))
def test_random_text_raises_only_config_error(text):
    try:
        parse_tree(text, "<fuzz>")
    except ConfigError:
        pass
    try:
        parse_text(text, "<fuzz>")
    except ConfigError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.lists(_TOKENS, max_size=60).map(" ".join))
def test_random_token_soup_raises_only_config_error(text):
    try:
        parse_text(text, "<fuzz>")
    except ConfigError as exc:
        assert str(exc).startswith("<fuzz>")


# --------------------------------------------------------------------------- forward


def test_forward_block_srs_syntax_and_defaults():
    from livesrv.config import ForwardDestination

    off = load("vhost a { }").config.vhost("a").forward
    assert not off.enabled and off.destination == () and off.backend == ()
    fwd = load(
        "vhost a { forward { enabled on; destination 127.0.0.1:19350 origin.example.com [::1]:1936 "
        "h/live h:1940/live/other; backend http://127.0.0.1:8085/api/v1/forward; } }"
    ).config.vhost("a").forward
    assert fwd.enabled
    assert fwd.destination == (
        ForwardDestination("127.0.0.1", 19350),
        ForwardDestination("origin.example.com", 1935),  # SRS's default port
        ForwardDestination("::1", 1936),
        ForwardDestination("h", 1935, "live"),
        ForwardDestination("h", 1940, "live", "other"),
    )
    assert str(fwd.destination[2]) == "[::1]:1936" and str(fwd.destination[4]) == "h:1940/live/other"
    assert fwd.backend == ("http://127.0.0.1:8085/api/v1/forward",)


@pytest.mark.parametrize("bad", ["rtmp://h/live", "h:0", "h:70000", "h/a/b/c", "h/../x", "b@d", "h:x"])
def test_forward_destination_rejects(bad):
    with pytest.raises(ConfigError):
        load(f"vhost a {{ forward {{ enabled on; destination {bad}; }} }}")


def test_forward_backend_must_be_http():
    with pytest.raises(ConfigError):
        load("vhost a { forward { enabled on; backend ftp://x/y; } }")


def test_dvr_directives_and_srs_defaults():
    v = parse_text("vhost __defaultVhost__ { }", "<t>").config.vhost("")
    assert v.dvr.model_dump() == {
        "enabled": False, "dvr_apply": ("all",), "dvr_plan": "session",
        "dvr_path": "./objs/nginx/html/[app]/[stream].[timestamp].flv", "dvr_duration": 30.0,
        "dvr_wait_keyframe": True, "time_jitter": "full",
    }
    res = parse_text("""vhost __defaultVhost__ { dvr { enabled on; dvr_apply live/a live/b; dvr_plan SEGMENT;
        dvr_path /data/[app]/[stream]-[2006][01][02].mp4; dvr_duration 60; dvr_wait_keyframe off; time_jitter zero; } }""",
                     "<t>")
    assert res.warnings == []
    d = res.config.vhost("").dvr
    assert (d.enabled, d.dvr_apply, d.dvr_plan, d.dvr_path, d.dvr_duration, d.dvr_wait_keyframe, d.time_jitter) == (
        True, ("live/a", "live/b"), "segment", "/data/[app]/[stream]-[2006][01][02].mp4", 60, False, "zero")
    with pytest.raises(Exception):
        parse_text("vhost v { dvr { time_jitter sometimes; } }", "<t>")


def test_graceful_quit_directives_and_srs_defaults():
    c = parse_text("", "<t>").config
    assert (c.grace_start_wait, c.grace_final_wait, c.force_grace_quit) == (2300, 3200, False)
    res = parse_text("grace_start_wait 0; grace_final_wait 100; force_grace_quit on;", "<t>")
    assert res.warnings == []
    assert (res.config.grace_start_wait, res.config.grace_final_wait, res.config.force_grace_quit) == (0, 100, True)
