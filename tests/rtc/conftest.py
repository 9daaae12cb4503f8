"""Fixtures of the WebRTC tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.rtc.helpers import RTC_EXTRA, RTC_VHOST, RtcClient


@pytest.fixture
async def rtc_server(make_server):  # type: ignore[no-untyped-def]
    return await make_server(RTC_EXTRA, RTC_VHOST)


@pytest.fixture
async def rtc_clients() -> AsyncIterator[list[RtcClient]]:
    clients: list[RtcClient] = []
    yield clients
    for c in clients:
        await c.close()
