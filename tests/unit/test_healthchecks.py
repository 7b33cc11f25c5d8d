"""The heartbeat ping never raises and never repeats its URL, which is the credential."""

from __future__ import annotations

import asyncio

import httpx
from pydantic import SecretStr

from runbook.clients import healthchecks


def test_a_malformed_ping_url_is_a_failed_ping_that_does_not_quote_the_url():
    async def ping() -> healthchecks.Delivery:
        async with httpx.AsyncClient() as client:
            return await healthchecks.ping(client, SecretStr("http://[::1:secret-check-uuid/ping"), failed=True,
                                           timeout_s=2)

    delivery = asyncio.run(ping())
    assert not delivery.ok
    assert delivery.detail == ("healthchecks: InvalidURL for the configured ping URL (not shown); "
                               "the fail ping was not recorded")
    assert "secret-check-uuid" not in delivery.detail


def test_the_failure_signal_goes_to_the_fail_endpoint():
    assert healthchecks.signal_url("https://hc-ping.com/abc", failed=True) == "https://hc-ping.com/abc/fail"
    assert healthchecks.signal_url("https://hc-ping.com/abc", failed=False) == "https://hc-ping.com/abc"
