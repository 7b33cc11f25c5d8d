"""The CoinGecko credit read through its circuit breaker, against the sandbox's CoinGecko double
answering 429 (its `throttle` knob): the breaker opens, cache-only mode serves the last good value
with its age and sends nothing, the queued read is replayed once the API recovers, and the breaker
closes through half-open. The clock is injected; the store is the in-memory one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from runbook.checks import Status
from runbook.clients import coingecko
from runbook.clients.guarded import Guard, MemoryStore, breaker_key
from runbook.clients.http_probe import make_client
from runbook.procedures import api_usage, rate_limit
from runbook.procedures.circuit_breaker import BreakerConfig, Phase
from runbook.secrets import SecretResolver
from sandbox import stack
from sandbox.vendors import coingecko as coingecko_double

pytestmark = pytest.mark.sandbox

KEY = SecretStr(coingecko_double.SANDBOX_KEY)
CFG = BreakerConfig(title="CoinGecko", failures_to_open=3, window_s=60, open_s=30, successes_to_close=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sb(sandbox: stack.Sandbox) -> Iterator[stack.Sandbox]:
    sandbox.vendor("coingecko", "DELETE", "usage")
    yield sandbox
    sandbox.vendor("coingecko", "DELETE", "usage")


def base_url(sb: stack.Sandbox) -> str:
    return sb.url("coingecko") + "/api/v3"


def sent(sb: stack.Sandbox) -> int:
    return sb.stats()["coingecko"]


def test_the_guarded_read_is_the_plain_read_while_closed(sb):
    async def both() -> tuple[coingecko.CreditReading, coingecko.CreditReading]:
        guard = Guard(MemoryStore(), breaker_key("sandbox", "coingecko"), "coingecko", CFG)
        async with make_client(4) as client:
            plain = await coingecko.read_key_usage(client, base_url(sb), KEY, timeout_s=3)
            guarded = await rate_limit.guarded_key_usage_reader(guard)(client, base_url(sb), KEY, timeout_s=3)
        return plain, guarded

    plain, guarded = asyncio.run(both())
    assert guarded.usage == plain.usage and guarded.error is None and guarded.http_status == 200
    assert plain.usage is not None and plain.usage.used == coingecko_double.DEFAULTS["used"]


def test_429s_open_the_breaker_then_cache_only_then_replay_closes_it_through_half_open(sb):
    clock, store = Clock(), MemoryStore()
    guard = Guard(store, breaker_key("sandbox", "coingecko"), "coingecko", CFG, clock=clock)
    read = rate_limit.guarded_key_usage_reader(guard)
    cfg = api_usage.ApiUsage.model_validate(
        {"coingecko": {"base_url": base_url(sb), "api_key": {"env": "CG_KEY"}}, "timeout_s": 3.0})
    resolver = SecretResolver(Path("."), environ={"CG_KEY": coingecko_double.SANDBOX_KEY})

    async def scenario() -> None:
        async with make_client(4) as client:
            sb.vendor("coingecko", "POST", "usage", {"used": 40_000, "limit": 100_000})
            good = await read(client, base_url(sb), KEY, timeout_s=3)
            assert good.usage is not None and good.usage.used == 40_000

            sb.vendor("coingecko", "POST", "usage", {"throttle": True})
            for _ in range(3):
                clock.now += 1
                limited = await read(client, base_url(sb), KEY, timeout_s=3)
                # each 429 is reported as the API answered it, unchanged
                assert limited.http_status == 429 and "rate limited (HTTP 429" in (limited.error or "")
            rec = await guard.read()
            assert rec.state.phase is Phase.open and rec.state.trips == 1

            before = sent(sb)
            clock.now += 20
            stale = await read(client, base_url(sb), KEY, timeout_s=3)
            assert sent(sb) == before  # cache-only: nothing was sent to CoinGecko
            assert stale.usage is None and stale.error is not None
            assert "circuit open (cache-only mode)" in stale.error and "stale, 23 s old" in stale.error
            assert "it said 40,000 of 100,000 credits used" in stale.error
            assert "queued for when the breaker closes" in stale.error

            # the checklist's line: unknown, with the stale figures and their age, never judged as today's
            [result] = await api_usage.review(cfg, client, resolver, datetime.now(UTC), read)
            assert result.status is Status.unknown and "stale, 23 s old" in result.observed
            assert sent(sb) == before
            assert [q.op for q in (await guard.read()).queue] == [rate_limit.COINGECKO_KEY_USAGE]

            # the API recovers (with new figures); the cool-down passes: half-open
            sb.vendor("coingecko", "POST", "usage", {"throttle": False, "used": 41_000})
            clock.now += 31
            assert (await guard.read()).state.phase is Phase.half_open
            op = rate_limit.coingecko_key_usage(client, base_url(sb), KEY, 3)
            replayed = await guard.replay({op.name: op})
            assert [(r.op, r.outcome, r.detail) for r in replayed] == [(op.name, "done", "HTTP 200")]
            rec = await guard.read()
            assert rec.state.phase is Phase.half_open and rec.state.successes == 1 and rec.queue == []
            probe = await guard.call(op)
            assert probe.source == "live" and probe.phase is Phase.closed
            rec = await guard.read()
            assert rec.state.phase is Phase.closed and rec.queue == []
            at, cached = rec.cache[rate_limit.COINGECKO_KEY_USAGE]
            assert cached["used"] == 41_000 and at == clock.now  # the replay refreshed the last good value

            fresh = await read(client, base_url(sb), KEY, timeout_s=3)
            assert fresh.error is None and fresh.usage is not None and fresh.usage.used == 41_000

    asyncio.run(scenario())


def test_a_429_in_half_open_opens_it_again(sb):
    clock = Clock()
    guard = Guard(MemoryStore(), breaker_key("sandbox", "coingecko"), "coingecko", CFG, clock=clock)

    async def scenario() -> None:
        async with make_client(4) as client:
            op = rate_limit.coingecko_key_usage(client, base_url(sb), KEY, 3)
            sb.vendor("coingecko", "POST", "usage", {"throttle": True})
            for _ in range(3):
                await guard.call(op)
            clock.now += 31
            result = await guard.call(op)  # the half-open probe, refused again
            assert result.source == "live" and result.value is not None and result.value.http_status == 429
            rec = await guard.read()
            assert rec.state.phase is Phase.open and rec.state.trips == 2 and rec.state.opened_at == clock.now

    asyncio.run(scenario())


def test_prices_are_served_from_cache_with_their_age_while_open_and_the_read_is_replayed(sb):
    clock, store = Clock(), MemoryStore()
    guard = Guard(store, breaker_key("sandbox", "coingecko"), "coingecko", CFG, clock=clock)
    read = rate_limit.guarded_price_reader(guard)
    ids = ["ethereum", "binancecoin"]

    async def scenario() -> None:
        async with make_client(4) as client:
            plain = await coingecko.read_simple_prices(client, base_url(sb), KEY, ids, timeout_s=3)
            good = await read(client, base_url(sb), KEY, ids, timeout_s=3)
            assert good.prices == plain.prices and good.note is None and good.http_status == 200
            assert good.prices["ethereum"] == coingecko_double.PRICES["ethereum"]["usd"]

            sb.vendor("coingecko", "POST", "usage", {"throttle": True})
            for _ in range(3):
                clock.now += 1
                limited = await read(client, base_url(sb), KEY, ids, timeout_s=3)
                assert limited.http_status == 429 and limited.prices == {}
            before = sent(sb)
            clock.now += 10
            cached = await read(client, base_url(sb), KEY, ids, timeout_s=3)
            assert sent(sb) == before  # cache-only
            assert cached.prices == good.prices and cached.error is None
            assert cached.note is not None and "stale, 13 s old" in cached.note
            unknown = await read(client, base_url(sb), KEY, ["solana"], timeout_s=3)  # never cached
            assert unknown.prices == {} and "no cached value" in (unknown.error or "")
            queued = [q.op for q in (await guard.read()).queue]
            assert queued == [rate_limit.COINGECKO_SIMPLE_PRICE, rate_limit.COINGECKO_SIMPLE_PRICE]

            sb.vendor("coingecko", "DELETE", "usage")
            sb.vendor("coingecko", "POST", "prices", {"ethereum": {"usd": 3100.0}})
            clock.now += 31
            op = rate_limit.coingecko_simple_prices(client, base_url(sb), KEY, 3)
            replayed = await guard.replay({op.name: op})
            assert [r.outcome for r in replayed] == ["done", "done"]
            fresh = await read(client, base_url(sb), KEY, ids, timeout_s=3)
            assert fresh.prices["ethereum"] == 3100.0 and fresh.note is None
            sb.vendor("coingecko", "DELETE", "prices")

    asyncio.run(scenario())
