"""The cluster's shared stream registry in Redis: who owns which stream, under which generation.

Every change is one atomic step in Redis (a Lua script), never "read, then write": the same rule as the hub's
synchronous transitions, across processes and hosts.

Keys (``P`` is the configured prefix, ``K`` a stream's ``vhost/app/stream``):

* ``P:node:ID`` -- a node's record (JSON: its addresses), with a TTL its heartbeat refreshes;
* ``P:stream:K`` -- ``"NODE GEN"``: the owner and the generation of its claim, with the same TTL, refreshed by
  the owner's heartbeat only while it still holds that exact value (compare-and-set);
* ``P:gen:K`` -- the stream's generation counter (INCR on every claim: a fencing token; kept a day);
* channel ``P:claims`` -- ``{"stream": K, "node": ID, "gen": N}`` on every claim and ``"node": ""`` on a
  release: a hint (Pub/Sub is lossy), the heartbeat's compare-and-set is the proof.

A claim with takeover replaces any owner (the old one learns from the message or its next heartbeat that its
generation is stale, and closes its publisher). Without takeover it is refused while the owner's node record is
alive, and accepted once that node's TTL ran out (a dead node never keeps a stream). After Redis lost its data
(a restart without persistence) an owner's heartbeat claims its stream again with its own generation, and
raises the counter to it, so a later claim elsewhere still gets a larger generation.

The workers of one host share an embedded registry with the same calls and meaning instead
(clients/registry_local.py); clients/claims.py says what the cluster needs of either. This module (and
redis-py, ~20 MiB) is only imported when a Redis registry is configured.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from livesrv.clients.claims import Claimed, Owner

__all__ = ["Registry", "RedisSubscription"]

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur and ARGV[2] == '0' then
  local owner = string.match(cur, '^(%S+) ')
  if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[4] .. owner) == 1 then
    return {0, cur}
  end
end
local gen = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
local val = ARGV[1] .. ' ' .. gen
redis.call('SET', KEYS[1], val, 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[5], cjson.encode({stream = ARGV[6], node = ARGV[1], gen = gen}))
return {1, val}
"""

_RENEW = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if cur then
  return 0
end
local gen = tonumber(ARGV[3])
if tonumber(redis.call('GET', KEYS[2]) or '0') < gen then
  redis.call('SET', KEYS[2], gen, 'PX', 86400000)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 2
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], cjson.encode({stream = ARGV[3], node = '', gen = tonumber(ARGV[4])}))
  return 1
end
return 0
"""

_LOOKUP = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  return false
end
local owner = string.match(cur, '^(%S+) ')
return {cur, redis.call('GET', ARGV[1] .. owner) or ''}
"""


def _split(value: bytes | str) -> tuple[str, int]:
    text = value.decode() if isinstance(value, bytes) else value
    node, _, gen = text.rpartition(" ")
    return node, int(gen)


class Registry:
    """One node's connection to the registry. Every call is bounded by ``timeout`` seconds and raises
    one of :attr:`errors` (or ``OSError``, ``TimeoutError``) when Redis does not answer."""

    #: What a call raises when Redis cannot be reached or answers an error.
    errors: ClassVar[tuple[type[Exception], ...]] = (RedisError,)

    def __init__(self, url: str, node: str, ttl: float, prefix: str = "livesrv", timeout: float = 2.0) -> None:
        if " " in node:
            raise ValueError(f"a node id has no spaces: {node!r}")
        self.node = node
        self.ttl_ms = int(ttl * 1000)
        self.prefix = prefix
        self.channel = f"{prefix}:claims"
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._claim = self.redis.register_script(_CLAIM)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)
        self._lookup = self.redis.register_script(_LOOKUP)

    def _stream_key(self, stream: str) -> str:
        return f"{self.prefix}:stream:{stream}"

    def _gen_key(self, stream: str) -> str:
        return f"{self.prefix}:gen:{stream}"

    @property
    def _node_prefix(self) -> str:
        return f"{self.prefix}:node:"

    async def close(self) -> None:
        await self.redis.aclose()

    async def subscribe(self) -> RedisSubscription:
        """The claims' messages (see the module doc)."""
        pubsub = self.redis.pubsub()
        try:
            await pubsub.subscribe(self.channel)
        except BaseException:
            await pubsub.aclose()
            raise
        return RedisSubscription(pubsub)

    # ----------------------------------------------------------------------------------- nodes

    async def register(self, record: dict[str, Any]) -> None:
        """Write (or refresh) this node's record with the TTL: the heartbeat."""
        await self.redis.set(self._node_prefix + self.node, json.dumps(record), px=self.ttl_ms)

    async def unregister(self) -> None:
        await self.redis.delete(self._node_prefix + self.node)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every live node's record, by id (SCAN: for the API, not for the media path)."""
        keys = [k async for k in self.redis.scan_iter(match=self._node_prefix + "*", count=500)]
        values = await self.redis.mget(keys) if keys else []
        out = {}
        for key, value in zip(keys, values):
            if value is not None:
                out[key.decode()[len(self._node_prefix):]] = json.loads(value)
        return out

    # ----------------------------------------------------------------------------------- streams

    async def claim(self, stream: str, takeover: bool) -> Claimed:
        """Take ``stream`` for this node with a new generation (one atomic step), or learn who keeps it."""
        ok, value = await self._claim(
            keys=[self._stream_key(stream), self._gen_key(stream)],
            args=[self.node, "1" if takeover else "0", self.ttl_ms, self._node_prefix, self.channel, stream])
        node, gen = _split(value)
        return Claimed(bool(ok), node, gen)

    async def renew(self, stream: str, generation: int) -> bool:
        """Keep this node's claim of ``generation`` alive; False when another claim replaced it (stale). A claim
        lost with Redis's data is made again (with its generation)."""
        result = await self._renew(
            keys=[self._stream_key(stream), self._gen_key(stream)],
            args=[f"{self.node} {generation}", self.ttl_ms, generation])
        return bool(result)

    async def release(self, stream: str, generation: int) -> bool:
        """Let go of this node's claim of ``generation`` (nothing when it is not the current one)."""
        result = await self._release(
            keys=[self._stream_key(stream)], args=[f"{self.node} {generation}", self.channel, stream, generation])
        return bool(result)

    async def owner(self, stream: str) -> Owner | None:
        found = await self._lookup(keys=[self._stream_key(stream)], args=[self._node_prefix])
        if not found:
            return None
        node, gen = _split(found[0])
        return Owner(node, gen, json.loads(found[1]) if found[1] else {})

    async def streams(self) -> dict[str, tuple[str, int]]:
        """Every claimed stream: owner node and generation (SCAN: for the API)."""
        prefix = f"{self.prefix}:stream:"
        keys = [k async for k in self.redis.scan_iter(match=prefix + "*", count=500)]
        values = await self.redis.mget(keys) if keys else []
        return {k.decode()[len(prefix):]: _split(v) for k, v in zip(keys, values) if v is not None}


class RedisSubscription:
    """The claims' channel: :meth:`get` returns a message's bytes, or None on a quiet ``timeout``."""

    def __init__(self, pubsub: Any) -> None:
        self._pubsub = pubsub

    async def get(self, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:  # (the subscription's own confirmations come through here too: skipped)
            msg = await self._pubsub.get_message(ignore_subscribe_messages=True,
                                                 timeout=max(0.0, deadline - loop.time()))
            if msg is not None and msg.get("type") == "message":
                return bytes(msg["data"])
            if loop.time() >= deadline:
                return None

    async def aclose(self) -> None:
        await self._pubsub.aclose()
