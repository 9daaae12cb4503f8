"""HTTP callbacks (SRS's ``http_hooks``) and access rules (SRS's ``security``).

Protocol servers build a :class:`HookContext` for a client, a body with one of the :mod:`payloads` builders,
and ``await client.call(hook, hook_urls(vhost.http_hooks, hook), body)``; for ``on_connect``, ``on_publish``
and ``on_play`` a result that is not ``accepted`` refuses the client. :func:`security.check` decides the
``security`` block before any hook is called.
"""

from livesrv.hooks import payloads, security
from livesrv.hooks.client import (
    GATE_HOOKS,
    HOOKS,
    NOTIFY_HOOKS,
    SRS_HOOK_TIMEOUT,
    HookClient,
    HookResult,
    hook_urls,
    judge_response,
    mask_url,
)
from livesrv.hooks.payloads import ServerIdentity
from livesrv.hub.clients import HookContext

__all__ = [
    "GATE_HOOKS",
    "HOOKS",
    "NOTIFY_HOOKS",
    "SRS_HOOK_TIMEOUT",
    "HookClient",
    "HookContext",
    "HookResult",
    "ServerIdentity",
    "hook_urls",
    "judge_response",
    "mask_url",
    "payloads",
    "security",
]
