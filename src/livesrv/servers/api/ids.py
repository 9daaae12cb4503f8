"""The ids the API and the hooks report: SRS-style ``vid-xxxxxxx`` for this server, vhosts and streams."""

from __future__ import annotations

import os
import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_vid() -> str:
    """An SRS-style id for a vhost or a stream: ``vid-`` and 7 characters."""
    return "vid-" + "".join(secrets.choice(_ALPHABET) for _ in range(7))


#: This process's service id (changes at each start, as SRS's).
SERVICE_ID = os.urandom(4).hex()
#: The server id when the config sets none (``server_id``).
SERVER_ID = new_vid()
