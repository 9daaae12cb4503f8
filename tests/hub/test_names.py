"""The name rule (livesrv.names, hub.keys) and the log-line format (livesrv.log), as pure functions, over arbitrary text.

Names: what SRS users use stays accepted; anything with a control character, invalid UTF-8 or over the limits
is refused with a printable one-line reason; what is accepted makes HLS files inside hls_path only. Log lines:
whatever the values, one record is one line whose fields parse back to exactly the values given.
"""

from __future__ import annotations

import io
import logging
import os
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from livesrv.config import HlsConfig
from livesrv.hub.keys import StreamKey, StreamRequest, mask_url, parse_http_path, parse_rtmp_request, request_problem
from livesrv.names import MAX_NAME_BYTES, MAX_URL_BYTES, name_problem, path_problem
from livesrv.log import FORMAT, LineFormatter, client_event, event, quote
from livesrv.remux.hls import HlsSegmenter, render_template
from livesrv.servers.hls.files import write_atomic
from tests.helpers import LOG_LINE, parse_event

#: Every code point, surrogates included (what a decoder with surrogateescape, or a bug, could produce).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
FORBIDDEN = ["\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\ufffd", "\udcff"]
#: What SRS users name streams and apps with.
SRS_NAME = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", min_size=1, max_size=40)
FORGED = "cam\n[2026-11-30 00:00:00,000][INFO][livesrv.rtmp] event=publish client=FORGED ip=6.6.6.6 stream=/live/forged"


def _forbidden(ch: str) -> bool:
    """The rule, said independently of its implementation: Unicode categories, not a regex."""
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") or ch == "\ufffd"


# ------------------------------------------------------------------------------------------------ names


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.sampled_from([10, MAX_NAME_BYTES]))
def test_name_rule_refuses_exactly_control_characters_invalid_utf8_and_long_names(value: str, limit: int) -> None:
    problem = name_problem(value, "stream name", limit)
    bad = any(_forbidden(c) for c in value)
    too_long = not bad and len(value.encode("utf-8")) > limit
    assert (problem is not None) == (bad or too_long), (value, problem)
    if problem is not None:
        assert problem.isprintable() and problem.startswith("invalid stream name "), problem
        assert ("bytes long" in problem) == too_long


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.sampled_from(FORBIDDEN), ANY_TEXT)
def test_any_forbidden_character_is_refused_wherever_it_is(before: str, bad: str, after: str) -> None:
    value = before + bad + after
    problem = name_problem(value, "app", MAX_URL_BYTES)
    assert problem is not None and problem.isprintable()
    assert "control character" in problem or "invalid UTF-8" in problem


@settings(max_examples=200, deadline=None)
@given(SRS_NAME, st.lists(SRS_NAME, min_size=1, max_size=3), st.text("abcdef0123456789", max_size=64))
def test_names_srs_users_use_are_accepted(stream: str, app_levels: list[str], token: str) -> None:
    app = "/".join(app_levels)
    rtmp = parse_rtmp_request(f"rtmp://127.0.0.1:1935/{app}", app, f"{stream}?token={token}&vhost=x")
    assert request_problem(rtmp) is None
    http = parse_http_path("127.0.0.1:8080", f"/{app}/{stream}.flv?token={token}", ".flv")
    assert http is not None and http.key == rtmp.key and request_problem(http) is None


def test_limits_are_in_utf8_bytes_and_non_ascii_names_are_fine() -> None:
    assert request_problem(StreamRequest(StreamKey("__defaultVhost__", "直播", "频道一 (HD)"), "", "")) is None
    assert name_problem("é" * 100, "stream name", MAX_NAME_BYTES) is None  # 200 bytes
    assert "201 bytes long" in (name_problem("é" * 100 + "x", "stream name", MAX_NAME_BYTES) or "")
    assert name_problem("x" * 3000, "stream name", MAX_NAME_BYTES) == (
        "invalid stream name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...: 3000 bytes long, at most 200 allowed")


def test_the_forging_name_is_refused_with_a_clear_reason() -> None:
    req = parse_rtmp_request("rtmp://127.0.0.1:1935/live", "live", FORGED)
    # The "/" in the forged text makes it part of the app, as any "a/b" stream name would.
    assert req.key.stream == "forged"
    assert request_problem(req) == (
        "invalid app 'live/cam\\n[2026-11-30 00:00:00,000][INFO]'...: control character U+000A at position 8")


def test_http_paths_are_percent_decoded_then_checked() -> None:
    def key(target: str) -> StreamRequest:
        req = parse_http_path("127.0.0.1", target, ".flv")
        assert req is not None
        return req

    assert key("/live/a%20b.flv?token=a%0a").key.stream == "a b"  # the query stays raw: tokens go to hooks
    assert key("/live/a%20b.flv?token=a%0a").param == "?token=a%0a"
    assert "control character U+000A" in (request_problem(key("/live/cam%0aforged.flv")) or "")
    assert "control character U+0000" in (request_problem(key("/li%00ve/cam.flv")) or "")
    assert "invalid UTF-8" in (request_problem(key("/live/%ff%fe.flv")) or "")
    assert request_problem(key("/live/%E7%9B%B4%E6%92%AD.flv")) is None  # UTF-8, percent-encoded
    assert key("/live/%E7%9B%B4%E6%92%AD.flv").key.stream == "直播"
    assert "bytes long" in (path_problem("/live/" + "x" * 256 + ".m3u8") or "")
    assert path_problem("/live/" + "x" * 250 + ".m3u8") is None
    assert "control character" in (path_problem("/live/a\rb.m3u8") or "")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(exclude_categories=()), max_size=80), st.text(st.characters(exclude_categories=()), max_size=30))
@example(FORGED, "live")
@example("../../evil", "live")
@example("x" * 200, "live")
@example("x" * 201, "live")
@example("é" * 100, "a" * 200)
def test_accepted_names_make_files_inside_hls_path_without_control_characters(
    tmp_path: Path, name: str, app: str
) -> None:
    req = parse_rtmp_request("rtmp://127.0.0.1/" + app, app, name)
    if request_problem(req) is not None or not req.key.app or not req.key.stream:
        return  # refused where it enters: nothing is made for it (the servers' tests check that)
    key = req.key
    cfg = HlsConfig(enabled=True, hls_ts_file="[app]/[stream]-[timestamp]-[seq].ts")  # type: ignore[arg-type]
    try:
        seg = HlsSegmenter(cfg, key.vhost, key.app, key.stream)
    except ValueError:
        return  # a name HLS refuses ("..") - the stream plays, it just gets no HLS
    root = tmp_path / "hls"
    worst = render_template(cfg.hls_ts_file, vhost=key.vhost, app=key.app, stream=key.stream,
                            seq=2**31, timestamp=10**13)
    for name in (seg.playlist_name, worst):
        path = os.path.join(root, name)
        write_atomic(path, b"x")  # a name within the limits fits the file system, temp name included
        real = os.path.realpath(path)
        assert real.startswith(str(root.resolve()) + os.sep), (name, real)
        assert not any(_forbidden(c) for c in os.path.relpath(real, root)), name


def test_mask_url_keeps_scheme_host_and_path_of_a_tc_url() -> None:
    assert mask_url("rtmp://127.0.0.1:1935/live") == "rtmp://127.0.0.1:1935/live"
    assert mask_url("rtmp://h/live?vhost=v&token=secret") == "rtmp://h/live?vhost=***&token=***"
    assert mask_url("rtmp://u:pw@h/live/sub") == "rtmp://u:***@h/live/sub"
    assert mask_url("rtmp://h/li\nve?token=a\nb") == "rtmp://h/li\nve?token=***"  # (urlsplit drops \n)
    assert mask_url("http://h/p?k=1#frag") == "http://h/p?k=***"


# -------------------------------------------------------------------------------------------- log lines


def _formatted(emit: object) -> str:
    """What a log file would hold after ``emit(logger)``: livesrv.log's formatter, a fresh logger."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(LineFormatter(FORMAT))
    logger = logging.Logger("livesrv.test")  # not in the manager: no other handler sees it
    logger.addHandler(handler)
    emit(logger)  # type: ignore[operator]
    return buf.getvalue()


def test_ordinary_values_keep_the_greppable_format() -> None:
    out = _formatted(lambda lg: client_event(lg, "publish", "abc12345", "10.0.0.1", StreamKey("__defaultVhost__", "live", "test"),
                                             param="?token=***", type="live"))
    assert out.endswith("] event=publish client=abc12345 ip=10.0.0.1 stream=/live/test param=\"?token=***\" type=live\n")
    out = _formatted(lambda lg: client_event(lg, "close", "abc12345", "10.0.0.1", reason='said "bye"'))
    assert out.endswith('] event=close client=abc12345 ip=10.0.0.1 reason="said \\"bye\\""\n')
    assert quote("") == '""' and quote("a=b") == '"a=b"' and quote("a\\b") == '"a\\\\b"'


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][A-Za-z_]{0,8}", fullmatch=True).filter(
    lambda k: k not in ("event", "client", "ip", "stream", "reason")), ANY_TEXT, max_size=4),
    ANY_TEXT, ANY_TEXT, ANY_TEXT, ANY_TEXT)
@example({}, "FORGED", "6.6.6.6", FORGED, FORGED)
def test_client_event_is_one_line_whose_fields_parse_back(
    fields: dict[str, str], cid: str, ip: str, stream: str, reason: str
) -> None:
    out = _formatted(lambda lg: client_event(lg, "play", cid, ip, stream, reason, **fields))
    out.encode("utf-8")  # surrogates were escaped: a UTF-8 log file can take the line
    assert out.endswith("\n") and len(out.splitlines()) == 1, out
    record = LOG_LINE.fullmatch(out[:-1])
    assert record is not None, out
    expected = {"event": "play", "client": cid, "ip": ip, **({"stream": stream} if stream else {}), **fields,
                **({"reason": reason} if reason else {})}
    assert parse_event(record["message"]) == expected


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT)
@example(FORGED)
def test_the_formatter_keeps_any_message_on_one_line(value: str) -> None:
    """The second layer: a client value interpolated with %s, outside client_event."""
    out = _formatted(lambda lg: lg.warning("event=legacy path=%s", value))
    out.encode("utf-8")
    assert out.endswith("\n") and len(out.splitlines()) == 1, out
    assert LOG_LINE.fullmatch(out[:-1]) is not None
    if value.isprintable():
        assert out.endswith(f" event=legacy path={value}\n")  # nothing changes for ordinary text


def test_tracebacks_keep_their_lines() -> None:
    def emit(lg: logging.Logger) -> None:
        try:
            raise RuntimeError("boom\nsecond line")
        except RuntimeError:
            event(lg, "internal-error", logging.ERROR, exc_info=True, path="/live/a\nb")

    out = _formatted(emit)
    first, *rest = out.splitlines()
    assert first.endswith('] event=internal-error path="/live/a\\nb"')
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "second line"


def test_the_log_setup_installs_the_formatter(restore_livesrv_logging: None, tmp_path: Path) -> None:
    from livesrv import log as logsetup

    path = tmp_path / "srs.log"
    logsetup.setup("trace", "file", str(path))
    logging.getLogger("livesrv.test").info("event=x value=%s", FORGED)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and not lines[0].startswith("[2026-11-30 00:00:00,000]"), lines
    assert "value=cam\\n[2026-11-30" in lines[0]

