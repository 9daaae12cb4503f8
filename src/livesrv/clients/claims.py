"""What the cluster needs of a stream registry, whichever it is: Redis (clients/registry.py) for many hosts,
the master's embedded one (clients/registry_local.py) for the workers of one. Kept apart from both so that a
process imports only the one it uses (redis-py alone is ~20 MiB of every process's memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Claimed", "Owner", "RegistryClient", "RegistryError", "Subscription"]


class RegistryError(Exception):
    """A registry answered with an error. A registry's own library may raise others: each client names them in
    its ``errors``; a lost connection is an ``OSError``, a slow answer a ``TimeoutError``."""


@dataclass(frozen=True, slots=True)
class Owner:
    """A stream's owner as the registry has it; ``record`` is the node's record (empty: its TTL ran out)."""

    node: str
    generation: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Claimed:
    """The result of a claim: ``ok``, and the generation (ours, or the owner's that refused it)."""

    ok: bool
    node: str
    generation: int


class Subscription(Protocol):
    """The claims' messages: :meth:`get` returns one's bytes, or None on a quiet ``timeout``."""

    async def get(self, timeout: float) -> bytes | None: ...
    async def aclose(self) -> None: ...


class RegistryClient(Protocol):
    """A node's connection to the registry (the calls and their meaning: clients/registry.py's module doc)."""

    node: str
    #: What a call may raise besides RegistryError, OSError and TimeoutError (its library's own errors).
    errors: tuple[type[Exception], ...]

    async def close(self) -> None: ...
    async def subscribe(self) -> Subscription: ...
    async def register(self, record: dict[str, Any]) -> None: ...
    async def unregister(self) -> None: ...
    async def nodes(self) -> dict[str, dict[str, Any]]: ...
    async def claim(self, stream: str, takeover: bool) -> Claimed: ...
    async def renew(self, stream: str, generation: int) -> bool: ...
    async def release(self, stream: str, generation: int) -> bool: ...
    async def owner(self, stream: str) -> Owner | None: ...
    async def streams(self) -> dict[str, tuple[str, int]]: ...
