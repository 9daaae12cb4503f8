"""POSTing SRS's HTTP callbacks and judging the answers exactly as SRS does.

SRS's rule (``SrsHttpHooks::do_post``), kept to the letter because hook receivers were written against it:
status 200 or 201; a non-empty body; the body parses as JSON; if it is not an object the body must be exactly
``0``; if it is an object its ``code`` must be an integer equal to 0. Anything else, and any transport
failure, is a failure. Redirects are not followed (SRS's client does not follow them either).

Gate hooks (``on_connect``, ``on_publish``, ``on_play``) stop at the first URL that fails and the caller
refuses the client. ``on_dvr`` and ``on_hls`` also stop at the first failure but are only logged; SRS calls
every URL of ``on_unpublish``, ``on_stop`` and ``on_close`` whatever each answers. One ``aiohttp`` session
keeps connections to hook servers alive across calls; a semaphore bounds how many requests are in flight so
a slow hook server cannot pile up sockets without limit.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

from livesrv import __version__
from livesrv.config.model import HttpHooksConfig
from livesrv.hub.keys import mask_url
from livesrv.log import client_event

__all__ = [
    "GATE_HOOKS",
    "NOTIFY_HOOKS",
    "HOOKS",
    "SRS_HOOK_TIMEOUT",
    "HookResult",
    "HookClient",
    "judge_response",
    "hook_urls",
    "mask_url",
]

log = logging.getLogger("livesrv.hooks")

#: Hooks whose failure refuses the client.
GATE_HOOKS = frozenset({"on_connect", "on_publish", "on_play"})
#: Hooks whose result is only logged.
NOTIFY_HOOKS = frozenset({"on_close", "on_unpublish", "on_stop", "on_dvr", "on_hls"})
HOOKS = GATE_HOOKS | NOTIFY_HOOKS
#: Hooks for which SRS stops at the first failing URL (the others call every URL).
_STOP_AT_FIRST_FAILURE = GATE_HOOKS | {"on_dvr", "on_hls"}

#: SRS's HTTP client timeout for hooks (``SRS_HTTP_CLIENT_TIMEOUT``, 30 s; SRS applies it to the connect and
#: to each read, livesrv to the whole exchange with one URL).
SRS_HOOK_TIMEOUT = 30.0
DEFAULT_MAX_CONCURRENT = 64
#: A larger answer is a failure: no hook answer needs it, and it must not cost the server memory.
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class HookResult:
    """The outcome of one event: ``accepted`` when every URL called accepted (vacuously with no URL).

    ``reason`` is the first failure, ready for a log line (``on_publish http://h/p?token=***: status 500``);
    ``failures`` holds every failure when SRS calls all URLs despite one failing.
    """

    hook: str
    accepted: bool
    reason: str = ""
    failures: tuple[str, ...] = ()
    calls: int = 0

    def __bool__(self) -> bool:
        return self.accepted


def judge_response(status: int, body: bytes) -> str | None:
    """SRS's accept rule: None if accepted, else why not."""
    if status not in (200, 201):
        return f"status {status}"
    if not body:
        return "empty body"
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError):
        return f"body is not JSON: {_snippet(body)}"
    if not isinstance(value, dict):
        # SRS compares the raw body with "0": "0\n", " 0" or 0.0 are refused.
        return None if body == b"0" else f"body is neither 0 nor an object: {_snippet(body)}"
    code = value.get("code")
    if type(code) is not int:  # JSON true/false and 0.0 are not integers for SRS's parser either
        return f"no integer code in {_snippet(body)}"
    if code != 0:
        return f"code {code}"
    return None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _snippet(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return repr(text) + ("..." if len(body) > limit else "")


def hook_urls(hooks: HttpHooksConfig, hook: str) -> tuple[str, ...]:
    """The URLs configured for ``hook``, or none when the vhost's ``http_hooks`` is disabled."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}")
    if not hooks.enabled:
        return ()
    urls: tuple[str, ...] = getattr(hooks, hook)
    return urls


class HookClient:
    """Posts hook events; one per server process (owned by the composition root, closed at shutdown).

    ``timeout`` (seconds) bounds the exchange with one URL, connect included; time spent waiting for one of
    the ``max_concurrent`` slots is not counted. ``resolver`` replaces aiohttp's DNS resolver (tests).
    """

    def __init__(
        self,
        *,
        timeout: float = SRS_HOOK_TIMEOUT,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.timeout = float(timeout)
        self.max_concurrent = max_concurrent
        self._resolver = resolver
        self._slots = asyncio.Semaphore(max_concurrent)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._in_flight = 0
        self._waiting = 0

    @property
    def in_flight(self) -> int:
        """Requests being exchanged with hook servers now."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests waiting for a free slot."""
        return self._waiting

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: an aiohttp session belongs to the running loop.
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.max_concurrent, resolver=self._resolver)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"livesrv/{__version__}"},
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        """Close the kept-alive connections; later calls fail with "hook client closed"."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(self, hook: str, urls: Sequence[str], payload: Mapping[str, Any]) -> HookResult:
        """Post ``payload`` to ``urls`` in order, with SRS's semantics (see the module docstring).

        Never raises for a hook server's behaviour; cancelling the calling task cancels the request in
        flight and frees its slot.
        """
        if hook not in HOOKS:
            raise ValueError(f"unknown hook {hook!r}")
        if not urls:
            return HookResult(hook=hook, accepted=True)
        body = json.dumps(payload, separators=(",", ":")).encode()
        failures: list[str] = []
        calls = 0
        for url in urls:
            calls += 1
            why = await self._post(url, body)
            self._log(hook, url, payload, why)
            if why is not None:
                failures.append(f"{hook} {mask_url(url)}: {why}")
                if hook in _STOP_AT_FIRST_FAILURE:
                    break
        return HookResult(
            hook=hook,
            accepted=not failures,
            reason=failures[0] if failures else "",
            failures=tuple(failures),
            calls=calls,
        )

    async def fetch(self, hook: str, url: str, payload: Mapping[str, Any]) -> tuple[str | None, Any]:
        """POST ``payload`` to one URL and judge the answer by SRS's rule, for a hook whose answer carries
        data (``on_forward``'s ``data.urls``): ``(None, parsed JSON)`` when accepted, else ``(why, None)``.

        The body is bounded by :data:`MAX_BODY` and the exchange by ``timeout``, like every hook; never raises
        for a hook server's behaviour. Logged as one ``event=hook`` line, as :meth:`call`.
        """
        data: list[bytes] = []
        why = await self._post(url, json.dumps(payload, separators=(",", ":")).encode(), data)
        self._log(hook, url, payload, why, gate=True)
        if why is not None:
            return why, None
        if data[0] == b"0":
            return None, 0
        return None, json.loads(data[0].decode("utf-8"), parse_constant=_reject_constant)

    async def _post(self, url: str, body: bytes, keep: list[bytes] | None = None) -> str | None:
        """One exchange; ``keep`` receives the answer's body when given."""
        if self._closed:
            return "hook client closed"
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._in_flight += 1
        try:
            if self._closed:  # closed while this request waited for a slot
                return "hook client closed"
            session = self._get_session()
            async with session.post(
                url, data=body, headers={"Content-Type": "application/json"}, allow_redirects=False
            ) as resp:
                data = await _read_limited(resp, MAX_BODY)
                if data is None:
                    return f"answer larger than {MAX_BODY} bytes"
                if keep is not None:
                    keep.append(data)
                return judge_response(resp.status, data)
        except TimeoutError:
            return f"timeout after {self.timeout:g}s"
        except aiohttp.ClientConnectorDNSError as exc:
            return f"DNS lookup failed for {exc.host}: {_os_reason(exc.os_error)}"
        except aiohttp.ClientConnectorError as exc:
            return f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {_client_error_text(exc)}"
        except ValueError:  # a malformed URL that slipped past config validation (its text may hold a token)
            return "invalid URL"
        finally:
            self._in_flight -= 1
            self._slots.release()

    def _log(self, hook: str, url: str, payload: Mapping[str, Any], why: str | None, gate: bool = False) -> None:
        if why is None:
            result, level = "accept", logging.INFO
        elif gate or hook in GATE_HOOKS:
            result, level = "reject", logging.WARNING
        else:
            result, level = "ignored", logging.WARNING
        client_event(
            log, "hook", str(payload.get("client_id", "")), str(payload.get("ip", "")),
            stream=payload.get("stream_url", ""), reason=why or "", level=level,
            hook=hook, url=mask_url(url), result=result,
        )


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None if it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await resp.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ECONNREFUSED:
        return "connection refused"
    return err.strerror or str(err) or type(err).__name__


def _client_error_text(exc: aiohttp.ClientError) -> str:
    # Some aiohttp errors carry the URL (with its query) in their text: never log it.
    text = str(exc)
    url = getattr(exc, "url", None) or getattr(getattr(exc, "request_info", None), "url", None)
    if url is not None:
        text = text.replace(str(url), mask_url(str(url)))
    return text or "error"
