"""Who may connect, publish and play: SRS's security rules and HTTP callbacks, for every protocol server.

Protocol servers ask before admitting a client (``connect``, ``publish``, ``play``: a refusal reason or None)
and report what happened afterwards (``notify``). The lifecycle rule that matters here (SRS #4182, #4397): a
client is registered with the hub — a publisher holds its claim, a viewer is attached — *before* the server
awaits a gate hook, so nothing can be freed or created under it while the hook server thinks; the servers
do that, this module only answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from livesrv.config import Config
from livesrv.hooks import payloads
from livesrv.hooks.client import HookClient, hook_urls
from livesrv.hooks.payloads import ServerIdentity
from livesrv.hub.clients import HookContext
from livesrv.hooks.security import check
from livesrv.hub.hub import Hub
from livesrv.hub.keys import StreamRequest
from livesrv.hub.stream import StreamSettings, Viewer

log = logging.getLogger("livesrv.access")


class Access:
    def __init__(self, config: Callable[[], Config], identity: ServerIdentity) -> None:
        self._config = config  # read at each call: a reload applies to the next client
        self.identity = identity
        cfg = config()
        self.client = HookClient(timeout=cfg.hooks_timeout, max_concurrent=cfg.hooks_max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()
        # The cluster's claim of a stream in the shared registry (clients/cluster.py), asked before on_publish:
        # None, or a refusal reason. Set by the composition root when the node is part of a cluster.
        self.claim: Callable[[HookContext], Awaitable[str | None]] | None = None

    def urls(self, vhost: str, hook: str) -> tuple[str, ...]:
        """The URLs of ``hook`` for a vhost; empty when hooks are off. Cheap: lets servers skip the await."""
        return hook_urls(self._config().vhost(vhost).http_hooks, hook)

    def security(self, vhost: str, method: str, ip: str) -> str | None:
        """SRS's ``security`` rules; checked before the hook, as SRS does."""
        return check(self._config().vhost(vhost).security, method, ip)

    async def connect(self, ctx: HookContext) -> str | None:
        return await self._gate("on_connect", ctx, payloads.on_connect)

    def publish_gated(self, vhost: str) -> bool:
        """Whether a publish must await :meth:`publish` (a hook or the cluster's claim), or may go on at once."""
        return self.claim is not None or bool(self.urls(vhost, "on_publish"))

    async def publish(self, ctx: HookContext) -> str | None:
        """The cluster's claim first (a refused hook then releases it), then on_publish: so an on_publish that
        was accepted is never followed by a refusal that sends no on_unpublish."""
        if self.claim is not None:
            refused = await self.claim(ctx)
            if refused is not None:
                return refused
        return await self._gate("on_publish", ctx, payloads.on_publish)

    async def play(self, ctx: HookContext) -> str | None:
        return await self._gate("on_play", ctx, payloads.on_play)

    async def _gate(
        self, hook: str, ctx: HookContext, build: Callable[[ServerIdentity, HookContext], Mapping[str, Any]]
    ) -> str | None:
        """A gate hook: None when every URL accepts (or there is none), else the refusal reason."""
        urls = self.urls(ctx.vhost, hook)
        if not urls:
            return None
        result = await self.client.call(hook, urls, build(self.identity, ctx))
        return None if result else result.reason

    async def unpublish(self, ctx: HookContext) -> None:
        """Awaited by the stream's drain (the stream stays DRAINING until it returns)."""
        urls = self.urls(ctx.vhost, "on_unpublish")
        if urls:
            await self.client.call("on_unpublish", urls, payloads.on_unpublish(self.identity, ctx))

    async def forward_backend(self, url: str, ctx: HookContext) -> tuple[str | None, Any]:
        """The forward ``backend`` (``on_forward``): ``(None, parsed answer)`` when it accepted, else
        ``(why, None)``; bounded by ``hooks_timeout`` like every hook. Called regardless of ``http_hooks``."""
        return await self.client.fetch("on_forward", url, payloads.on_forward(self.identity, ctx))

    def stop(self, ctx: HookContext) -> None:
        self._notify("on_stop", ctx.vhost, lambda: payloads.on_stop(self.identity, ctx))

    def close(self, ctx: HookContext, send_bytes: int, recv_bytes: int) -> None:
        self._notify("on_close", ctx.vhost, lambda: payloads.on_close(self.identity, ctx, send_bytes, recv_bytes))

    def hls(self, vhost: str, make: Callable[[ServerIdentity], Mapping[str, Any]]) -> None:
        self._notify("on_hls", vhost, lambda: make(self.identity))

    def dvr(self, vhost: str, make: Callable[[ServerIdentity], Mapping[str, Any]]) -> None:
        """on_dvr: a DVR file is complete on disk."""
        self._notify("on_dvr", vhost, lambda: make(self.identity))

    def _notify(self, hook: str, vhost: str, payload: Callable[[], Mapping[str, Any]]) -> None:
        """Fire a notification hook in the background; the task is tracked and cancelled at shutdown."""
        urls = self.urls(vhost, hook)
        if not urls:
            return
        task = asyncio.get_running_loop().create_task(self.client.call(hook, urls, payload()), name=hook)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, grace: float = 0.0) -> None:
        """Close the hook client. Notifications still in flight get up to ``grace`` seconds to be delivered
        (the ``on_dvr`` and ``on_unpublish`` of a shutdown), then are cancelled."""
        if grace > 0 and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.close()


async def gate_http_viewer(
    access: Access, hub: Hub, viewer: Viewer, sreq: StreamRequest, req_referer: str, settings: StreamSettings
) -> tuple[HookContext, str | None]:
    """Security rules and on_play for an HTTP viewer (FLV, WS-FLV, TS), with the viewer registered with the hub
    before the hook is awaited (SRS #4397). Returns its hook context and None when it may play (it is then
    attached but not admitted), or a refusal reason (nothing is left attached)."""
    key = sreq.key
    ctx = HookContext.from_request(viewer.cid, viewer.ip, sreq, req_referer)
    denied = access.security(key.vhost, "play", viewer.ip)
    if denied is not None:
        return ctx, denied
    hub.attach(key, viewer, settings)
    if access.urls(key.vhost, "on_play"):
        try:
            refused = await access.play(ctx)
        except BaseException:  # the viewer left (cancelled) or anything else: nothing stays registered
            hub.detach(viewer)
            raise
        if refused is not None:
            hub.detach(viewer)
            return ctx, f"on_play refused: {refused}"
    return ctx, None


def default_identity(server_id: str, service_id: str) -> ServerIdentity:
    return ServerIdentity(server_id, service_id, os.getcwd())
