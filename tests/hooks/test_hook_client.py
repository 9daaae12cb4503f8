"""HookClient against a real aiohttp hook server: SRS's accept rule, URL order, bounds, reuse, cancellation."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from livesrv.config.model import HttpHooksConfig
from livesrv.hooks import HookClient, hook_urls, judge_response, mask_url
from tests.helpers import wait_until
from tests.hooks.hook_server import (
    REJECT_CODE1,
    STATUS_500,
    Answer,
    HookServer,
    unused_port,
)

PAYLOAD: dict[str, Any] = {
    "server_id": "vid-test",
    "service_id": "svc12345",
    "action": "on_publish",
    "client_id": "abcd1234",
    "ip": "127.0.0.1",
    "vhost": "__defaultVhost__",
    "app": "live",
    "tcUrl": "rtmp://127.0.0.1/live",
    "stream": "s",
    "param": "?token=t",
    "stream_url": "/live/s",
}

TIMEOUT = 0.3


@pytest.fixture
async def client() -> AsyncIterator[HookClient]:
    c = HookClient(timeout=TIMEOUT)
    try:
        yield c
    finally:
        await c.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def hook_log() -> Iterator[_Records]:
    """Lines logged by the hooks client (attached directly: livesrv's logger may not propagate)."""
    logger = logging.getLogger("livesrv.hooks")
    handler = _Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# ------------------------------------------------------------------------------------- accept rule


@pytest.mark.parametrize("answer", ["zero", "code0", "created"])
async def test_accepted_answers(client: HookClient, hook_server: HookServer, answer: str) -> None:
    result = await client.call("on_publish", [hook_server.url("on_publish", answer)], PAYLOAD)
    assert result.accepted and bool(result)
    assert result.reason == "" and result.failures == () and result.calls == 1


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ("code1", "code 1"),
        ("status500", "status 500"),
        ("empty", "empty body"),
        ("notjson", "body is not JSON: 'ok'"),
        ("redirect", "status 302"),
        ("zero_newline", "body is neither 0 nor an object: '0\\n'"),
        ("json_string_zero", "body is neither 0 nor an object: '\"0\"'"),
        ("json_array", "body is neither 0 nor an object: '[0]'"),
        ("code_string", "no integer code in"),
        ("code_float", "no integer code in"),
        ("code_bool", "no integer code in"),
        ("no_code", "no integer code in"),
        ("json_nan", "body is not JSON"),
        ("huge", "answer larger than 65536 bytes"),
    ],
)
async def test_rejected_answers(client: HookClient, hook_server: HookServer, answer: str, detail: str) -> None:
    url = hook_server.url("on_publish", answer)
    result = await client.call("on_publish", [url], PAYLOAD)
    assert not result.accepted and not result
    assert result.reason.startswith(f"on_publish {url}: {detail}"), result.reason
    assert result.failures == (result.reason,)
    assert len(hook_server.calls) == 1  # a redirect is not followed


async def test_timeout_rejects(client: HookClient, hook_server: HookServer) -> None:
    url = hook_server.url("on_play", "hang")
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await client.call("on_play", [url], PAYLOAD)
    elapsed = loop.time() - start
    assert result.reason == f"on_play {url}: timeout after 0.3s"
    assert TIMEOUT - 0.05 <= elapsed < TIMEOUT + 2
    assert client.in_flight == 0


async def test_connection_refused_rejects(client: HookClient) -> None:
    port = unused_port()
    url = f"http://127.0.0.1:{port}/on_connect"
    result = await client.call("on_connect", [url], PAYLOAD)
    assert result.reason == f"on_connect {url}: cannot connect to 127.0.0.1:{port}: connection refused"


class _NoSuchHost(AbstractResolver):
    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        pass


async def test_dns_failure_rejects() -> None:
    client = HookClient(timeout=5, resolver=_NoSuchHost())
    try:
        result = await client.call("on_play", ["http://hooks.example/on_play"], PAYLOAD)
    finally:
        await client.close()
    assert result.reason == (
        "on_play http://hooks.example/on_play: DNS lookup failed for hooks.example: Name or service not known"
    )


# ------------------------------------------------------------------------------------- URLs and payload


async def test_posts_the_payload_as_json(client: HookClient, hook_server: HookServer) -> None:
    await client.call("on_publish", [hook_server.url("on_publish")], PAYLOAD)
    (call,) = hook_server.calls
    assert call.payload == PAYLOAD
    assert call.body == json.dumps(PAYLOAD, separators=(",", ":")).encode()
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["User-Agent"].startswith("livesrv/")


@pytest.mark.parametrize("hook", ["on_connect", "on_publish", "on_play", "on_dvr", "on_hls"])
async def test_stops_at_first_failure(client: HookClient, hook_server: HookServer, hook: str) -> None:
    urls = [hook_server.url(hook, "zero"), hook_server.url(hook, "code1"), hook_server.url(hook, "code0")]
    result = await client.call(hook, urls, PAYLOAD)
    assert not result.accepted
    assert result.calls == 2
    assert [c.path for c in hook_server.calls] == [f"/zero/{hook}", f"/code1/{hook}"]
    assert result.reason == f"{hook} {urls[1]}: code 1"


@pytest.mark.parametrize("hook", ["on_close", "on_unpublish", "on_stop"])
async def test_notifications_reach_every_url(client: HookClient, hook_server: HookServer, hook: str) -> None:
    urls = [hook_server.url(hook, "status500"), hook_server.url(hook, "code1"), hook_server.url(hook, "zero")]
    result = await client.call(hook, urls, PAYLOAD)
    assert not result.accepted and result.calls == 3
    assert [c.path for c in hook_server.calls] == [f"/status500/{hook}", f"/code1/{hook}", f"/zero/{hook}"]
    assert result.failures == (f"{hook} {urls[0]}: status 500", f"{hook} {urls[1]}: code 1")
    assert result.reason == result.failures[0]


async def test_all_urls_must_accept(client: HookClient, hook_server: HookServer) -> None:
    urls = [hook_server.url("on_play", "zero"), hook_server.url("on_play", "created")]
    result = await client.call("on_play", urls, PAYLOAD)
    assert result.accepted and result.calls == 2 and len(hook_server.calls) == 2


async def test_no_url_accepts(client: HookClient) -> None:
    result = await client.call("on_publish", [], PAYLOAD)
    assert result.accepted and result.calls == 0


async def test_unknown_hook_is_a_bug(client: HookClient) -> None:
    with pytest.raises(ValueError):
        await client.call("on_publsh", [], PAYLOAD)


async def test_answer_chosen_per_stream(client: HookClient, hook_server: HookServer) -> None:
    hook_server.set_answer(REJECT_CODE1, stream="secret")
    hook_server.set_answer(STATUS_500, stream="secret", hook="on_play")
    url_pub, url_play = hook_server.url("on_publish"), hook_server.url("on_play")
    assert (await client.call("on_publish", [url_pub], PAYLOAD)).accepted
    assert (await client.call("on_publish", [url_pub], {**PAYLOAD, "stream": "secret"})).reason.endswith("code 1")
    assert (await client.call("on_play", [url_play], {**PAYLOAD, "stream": "secret"})).reason.endswith("status 500")
    assert (await client.call("on_play", [url_play], PAYLOAD)).accepted
    assert [c.payload["stream"] for c in hook_server.calls] == ["s", "secret", "secret", "s"]


# ------------------------------------------------------------------------------------- logs


async def test_logs_mask_tokens(client: HookClient, hook_server: HookServer, hook_log: _Records) -> None:
    url = hook_server.url("on_publish", "code1", query="token=supersecret&app=x")
    result = await client.call("on_publish", [url], PAYLOAD)
    assert "supersecret" not in result.reason
    assert "/code1/on_publish?token=***&app=***: code 1" in result.reason
    ((level, line),) = hook_log.lines
    assert level == logging.WARNING
    assert "supersecret" not in line
    assert line.startswith("event=hook client=abcd1234 ip=127.0.0.1 stream=/live/s ")
    assert "hook=on_publish" in line and "result=reject" in line and 'reason="on_publish' not in line


async def test_notification_failures_are_logged_as_ignored(
    client: HookClient, hook_server: HookServer, hook_log: _Records
) -> None:
    await client.call("on_stop", [hook_server.url("on_stop", "status500"), hook_server.url("on_stop")], PAYLOAD)
    assert [(lvl, "result=ignored" in l, "result=accept" in l) for lvl, l in hook_log.lines] == [
        (logging.WARNING, True, False),
        (logging.INFO, False, True),
    ]


def test_mask_url() -> None:
    assert mask_url("http://u:pw@h:8085/api/v1/streams?token=abc&x") == "http://u:***@h:8085/api/v1/streams?token=***&x=***"
    assert mask_url("https://h/p") == "https://h/p"


def test_hook_urls() -> None:
    cfg = HttpHooksConfig(enabled=True, on_publish=("http://a/p", "http://b/p"))
    assert hook_urls(cfg, "on_publish") == ("http://a/p", "http://b/p")
    assert hook_urls(cfg, "on_play") == ()
    assert hook_urls(cfg.model_copy(update={"enabled": False}), "on_publish") == ()
    with pytest.raises(ValueError):
        hook_urls(cfg, "publish")


# ------------------------------------------------------------------------------------- resources


async def test_concurrency_is_bounded(hook_server: HookServer) -> None:
    client = HookClient(timeout=10, max_concurrent=2)
    try:
        url = hook_server.url("on_play", "held")
        tasks = [asyncio.create_task(client.call("on_play", [url], PAYLOAD)) for _ in range(5)]
        await hook_server.wait_in_flight(2)
        await _wait(lambda: client.waiting == 3)
        assert client.in_flight == 2 and len(hook_server.calls) == 2  # the others wait in the client
        hook_server.release()
        results = await asyncio.gather(*tasks)
    finally:
        await client.close()
    assert all(r.accepted for r in results)
    assert len(hook_server.calls) == 5 and hook_server.max_in_flight == 2
    assert client.in_flight == 0 and client.waiting == 0


async def test_connections_are_reused(client: HookClient, hook_server: HookServer) -> None:
    for _ in range(10):
        assert (await client.call("on_hls", [hook_server.url("on_hls")], PAYLOAD)).accepted
    assert len(hook_server.calls) == 10
    assert hook_server.connections == 1


async def test_cancelled_call_frees_its_slot(hook_server: HookServer) -> None:
    client = HookClient(timeout=10, max_concurrent=1)
    try:
        running = asyncio.create_task(client.call("on_publish", [hook_server.url("on_publish", "hang")], PAYLOAD))
        await hook_server.wait_in_flight(1)
        queued = asyncio.create_task(client.call("on_publish", [hook_server.url("on_publish")], PAYLOAD))
        await _wait(lambda: client.waiting == 1)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert client.waiting == 0 and client.in_flight == 1
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert client.waiting == 0 and client.in_flight == 0
        # the single slot is free again: a new call goes straight through
        result = await asyncio.wait_for(client.call("on_play", [hook_server.url("on_play")], PAYLOAD), 5)
        assert result.accepted
        assert [c.hook for c in hook_server.calls] == ["on_publish", "on_play"]
    finally:
        await client.close()


async def test_closed_client_rejects(hook_server: HookServer) -> None:
    client = HookClient(timeout=5)
    assert (await client.call("on_play", [hook_server.url("on_play")], PAYLOAD)).accepted
    await client.close()
    await client.close()
    result = await client.call("on_play", [hook_server.url("on_play")], PAYLOAD)
    assert not result.accepted and result.reason.endswith(": hook client closed")
    assert len(hook_server.calls) == 1


async def test_hook_server_hold_release_rearm(client: HookClient, hook_server: HookServer) -> None:
    url = hook_server.url("on_play", "held")
    first = asyncio.create_task(client.call("on_play", [url], PAYLOAD))
    await hook_server.wait_in_flight(1)
    hook_server.release()
    assert (await first).accepted
    hook_server.rearm()
    second = asyncio.create_task(client.call("on_play", [url], PAYLOAD))
    assert (await second).reason.endswith("timeout after 0.3s")  # held again, past the client's timeout


def test_bad_settings() -> None:
    with pytest.raises(ValueError):
        HookClient(timeout=0)
    with pytest.raises(ValueError):
        HookClient(max_concurrent=0)


async def _wait(cond: Any) -> None:
    await wait_until(cond, 5)


# ------------------------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(
    ("status", "body", "accepted"),
    [
        (200, b"0", True),
        (201, b"0", True),
        (200, b'{"code":0}', True),
        (200, b'{"code": 0, "data": {"x": [1, 2]}}', True),
        (200, b' {"code":0}\n', True),
        (204, b"0", False),
        (202, b'{"code":0}', False),
        (200, b"1", False),
        (200, b"00", False),
        (200, b"0 ", False),
        (200, b"-0", False),
        (200, b"null", False),
        (200, b'{"code":-1}', False),
        (200, b'{"code":null}', False),
        (200, b'{"Code":0}', False),
        (200, b"\xff\xfe", False),
    ],
)
def test_judge_response_table(status: int, body: bytes, accepted: bool) -> None:
    assert (judge_response(status, body) is None) is accepted


@given(st.integers(100, 599), st.one_of(st.binary(max_size=64), st.from_regex(rb'\{"code":-?[0-9]{1,3}\}', fullmatch=True)))
def test_judge_response_never_raises(status: int, body: bytes) -> None:
    why = judge_response(status, body)
    if why is None:
        assert status in (200, 201)
        assert body == b"0" or json.loads(body)["code"] == 0
    else:
        assert isinstance(why, str) and why


# ------------------------------------------------------------------------------------- answers with data


async def test_fetch_returns_the_parsed_answer_or_why_not(client: HookClient, hook_server: HookServer) -> None:
    """``fetch`` (the forward backend's ``on_forward``): SRS's accept rule, the body parsed, bounded in size
    and time, one failure reason; the payload goes out as given."""
    hook_server.answers["urls"] = Answer(200, b'{"code":0,"data":{"urls":["rtmp://h/a/b"]}}')
    url = hook_server.url("on_forward", answer="urls")
    why, answer = await client.fetch("on_forward", url, {"action": "on_forward"})
    assert why is None and answer == {"code": 0, "data": {"urls": ["rtmp://h/a/b"]}}
    assert hook_server.calls[-1].payload == {"action": "on_forward"}
    assert await client.fetch("on_forward", hook_server.url("on_forward", answer="zero"), {}) == (None, 0)
    for name, reason in (("code1", "code 1"), ("status500", "status 500"), ("huge", "larger than"),
                         ("notjson", "not JSON"), ("hang", "timeout")):
        why, answer = await client.fetch("on_forward", hook_server.url("on_forward", answer=name), {})
        assert answer is None and why is not None and reason in why, (name, why)
    hook_server.release()
