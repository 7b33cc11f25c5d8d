"""The circuit breaker of "API Rate Limit Hit": every transition of the state machine, and the
guarded call's cache-only mode, queue and replay over the in-memory store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import ValidationError

from runbook.clients import coingecko
from runbook.clients.guarded import (
    MAX_RECORD_CHARS,
    Answer,
    BreakerRecord,
    CircuitOpen,
    Guard,
    Guarded,
    MemoryStore,
    Operation,
    QueuedCall,
    breaker_key,
    fit,
    retry_after_s,
    size_of,
)
from runbook.procedures import rate_limit
from runbook.procedures.circuit_breaker import (
    BreakerConfig,
    BreakerState,
    Outcome,
    Phase,
    Verdict,
    advance,
    allows_call,
    classify,
    describe,
    open_period,
    record,
    reset,
)
from runbook.procedures.emergency import Effect
from runbook.settings import ConfigError, parse

CFG = BreakerConfig(failures_to_open=3, window_s=60, open_s=30, max_open_s=300, successes_to_close=2)
T0 = 1_700_000_000.0
LIMITED = Outcome(Verdict.failure, 429, "CoinGecko: rate limited (HTTP 429 Too Many Requests)")
OK = Outcome(Verdict.success, 200)


def opened(at: float = T0) -> BreakerState:
    state = BreakerState()
    for i in range(3):
        state = record(state, CFG, at - 2 + i, LIMITED)
    return state


# --- the state machine ------------------------------------------------------------------------------


def test_closed_counts_failures_and_opens_at_the_threshold():
    state = record(BreakerState(), CFG, T0, LIMITED)
    state = record(state, CFG, T0 + 1, LIMITED)
    assert state.phase is Phase.closed and len(state.failures) == 2
    state = record(state, CFG, T0 + 2, LIMITED)
    assert state.phase is Phase.open
    assert state.opened_at == T0 + 2 and state.open_until == T0 + 2 + 30 and state.trips == 1
    assert "HTTP 429" in state.last_failure and state.failures == ()


def test_failures_outside_the_window_do_not_count():
    state = record(BreakerState(), CFG, T0, LIMITED)
    state = record(state, CFG, T0 + 1, LIMITED)
    state = record(state, CFG, T0 + 61, LIMITED)  # the first two are older than window_s
    assert state.phase is Phase.closed and state.failures == (T0 + 61,)


def test_successes_and_neutral_answers_leave_a_closed_breaker_alone():
    state = record(BreakerState(), CFG, T0, LIMITED)
    state = record(state, CFG, T0 + 1, OK)
    state = record(state, CFG, T0 + 2, Outcome(Verdict.neutral, 401))
    assert state.phase is Phase.closed and state.failures == (T0,)


def test_open_stays_open_before_the_cool_down():
    state = opened()
    for later in (0, 1, 29.9):
        assert advance(state, CFG, state.opened_at + later).phase is Phase.open
        assert not allows_call(state, CFG, state.opened_at + later)
    assert state.open_for_s(state.opened_at + 10) == pytest.approx(20)


def test_open_becomes_half_open_after_the_cool_down():
    state = opened()
    later = advance(state, CFG, state.open_until)
    assert later.phase is Phase.half_open and later.successes == 0
    assert allows_call(state, CFG, state.open_until)


def test_half_open_closes_after_enough_successes():
    state = advance(opened(), CFG, T0 + 100)
    state = record(state, CFG, T0 + 101, OK)
    assert state.phase is Phase.half_open and state.successes == 1
    state = record(state, CFG, T0 + 102, OK)
    assert state.phase is Phase.closed and state.failures == () and state.open_until is None
    assert state.trips == 1  # remembered for the provider flag until reset


def test_half_open_reopens_on_one_failure():
    state = record(advance(opened(), CFG, T0 + 100), CFG, T0 + 101, OK)
    state = record(state, CFG, T0 + 102, LIMITED)
    assert state.phase is Phase.open and state.opened_at == T0 + 102 and state.trips == 2
    assert state.open_until == T0 + 102 + 30


def test_half_open_ignores_neutral_answers():
    state = advance(opened(), CFG, T0 + 100)
    assert record(state, CFG, T0 + 101, Outcome(Verdict.neutral, 404)).phase is Phase.half_open


def test_reset_closes_and_forgets():
    state = reset(T0 + 5)
    assert state == BreakerState(changed_at=T0 + 5)
    assert allows_call(state, CFG, T0 + 5)


def test_a_retry_hint_lengthens_the_open_period_up_to_the_cap():
    assert open_period(CFG, None) == 30
    assert open_period(CFG, 10) == 30  # never shorter than open_s
    assert open_period(CFG, 120) == 120
    assert open_period(CFG, 10_000) == 300
    state = BreakerState()
    for i in range(3):
        state = record(state, CFG, T0 + i, Outcome(Verdict.failure, 429, retry_after_s=90))
    assert state.open_until == T0 + 2 + 90


def test_a_late_failure_while_open_pushes_the_probe_back_never_forward():
    state = opened()
    later = record(state, CFG, T0 + 5, Outcome(Verdict.failure, 429, retry_after_s=200))
    assert later.open_until == T0 + 5 + 200
    assert record(later, CFG, T0 + 6, LIMITED).open_until == later.open_until
    assert record(state, CFG, T0 + 6, OK) == state  # a success from before it opened proves nothing


def test_which_statuses_count():
    assert classify(CFG, 429) is Verdict.failure
    assert classify(CFG, 503) is Verdict.neutral and classify(CFG, None) is Verdict.neutral
    assert classify(CFG, 200) is Verdict.success and classify(CFG, 401) is Verdict.neutral
    with_5xx = CFG.model_copy(update={"count_5xx": True, "statuses": [420, 429]})
    assert classify(with_5xx, 503) is Verdict.failure and classify(with_5xx, None) is Verdict.failure
    assert classify(with_5xx, 420) is Verdict.failure


def test_the_state_round_trips_through_json_and_rejects_damage():
    state = record(advance(opened(), CFG, T0 + 100), CFG, T0 + 101, OK)
    assert BreakerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert BreakerState.from_dict(None) == BreakerState()
    with pytest.raises(ValueError, match="phase 'ajar'"):
        BreakerState.from_dict({"phase": "ajar"})
    with pytest.raises(ValueError, match="open breaker needs open_until"):
        BreakerState.from_dict({"phase": "open"})
    with pytest.raises(ValueError, match="failures"):
        BreakerState.from_dict({"failures": ["yesterday"]})


def test_describe_reads_like_a_report_line():
    assert describe(BreakerState(), CFG, T0) == "closed"
    assert "2 of 3 failures" in describe(record(record(BreakerState(), CFG, T0, LIMITED), CFG, T0, LIMITED), CFG, T0)
    state = opened()
    assert describe(state, CFG, state.opened_at + 10).startswith("open (cache-only) for another 20 s; tripped by")
    assert describe(state, CFG, state.open_until).startswith("half-open")


def test_bad_thresholds_are_named():
    with pytest.raises(ValidationError, match="max_open_s must be at least open_s"):
        BreakerConfig(open_s=100, max_open_s=10)
    with pytest.raises(ValidationError, match="failures_to_open"):
        BreakerConfig(failures_to_open=0)


# --- retry hints: the three 429 styles -----------------------------------------------------------------


def test_retry_hints_from_headers_bodies_and_none():
    assert retry_after_s({"Retry-After": "65"}, None, T0) == 65
    when = format_datetime(datetime.fromtimestamp(T0 + 120, UTC), usegmt=True)
    assert retry_after_s({"Retry-After": when}, None, T0) == pytest.approx(120)
    assert retry_after_s({"x-rate-limit-reset": str(int(T0 + 900))}, None, T0) == 900  # X
    assert retry_after_s({"X-RateLimit-Reset-After": "64.57", "X-RateLimit-Reset": str(T0 + 999)}, None, T0) == 64.57
    assert retry_after_s({"X-Sentry-Rate-Limit-Reset": str(T0 + 30)}, None, T0) == 30
    assert retry_after_s({}, {"ok": False, "parameters": {"retry_after": 5}}, T0) == 5  # Telegram
    assert retry_after_s({}, {"message": "You are being rate limited.", "retry_after": 64.57}, T0) == 64.57  # Discord
    assert retry_after_s({}, {"error": {"code": "rate_limited", "limit": {"reset": T0 + 40}}}, T0) == 40  # Vercel
    bare = {"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}}  # CoinGecko
    assert retry_after_s({}, bare, T0) is None
    assert retry_after_s({"Retry-After": "soon"}, None, T0) is None


# --- the guarded call ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Price:
    """A stand-in API: answers with `status` and a price; counts the requests it was sent."""

    def __init__(self) -> None:
        self.status = 200
        self.price = 3012.45
        self.calls: list[dict[str, Any]] = []

    def op(self, name: str = "price") -> Operation[dict[str, Any]]:
        async def run(params: Mapping[str, Any]) -> dict[str, Any]:
            self.calls.append(dict(params))
            return {"status": self.status, "usd": self.price if self.status == 200 else None}

        return Operation(name, run, lambda r: Answer(r["status"], "" if r["status"] == 200 else f"HTTP {r['status']}"),
                         lambda r: {"usd": r["usd"]} if r["status"] == 200 else None,
                         lambda v: {"status": 200, "usd": v["usd"]})


def make(cfg: BreakerConfig = CFG, **limits: int) -> tuple[Guard, MemoryStore, Clock, Price]:
    store, clock = MemoryStore(), Clock()
    return Guard(store, breaker_key("Sand Box", "coingecko"), "coingecko", cfg, clock=clock, **limits), store, clock, \
        Price()


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


def trip(guard: Guard, api: Price, params: Mapping[str, Any] | None = None, name: str = "price") -> None:
    """Three 429s in a row: the breaker opens (CFG.failures_to_open is 3)."""
    api.status = 429
    for _ in range(CFG.failures_to_open):
        run(guard.call(api.op(name), params))


def test_the_key_names_the_environment_and_api():
    assert breaker_key("Sand Box", "coingecko") == "tfops-breaker-sand-box-coingecko"


def test_closed_calls_go_through_unchanged_and_keep_the_last_good_value():
    guard, store, clock, api = make()
    result = run(guard.call(api.op(), {"ids": "ethereum"}))
    assert result.source == "live" and result.fresh and result.value == {"status": 200, "usd": 3012.45}
    assert api.calls == [{"ids": "ethereum"}]
    saved = json.loads(store.values[guard.key])
    assert saved["cache"]['price{"ids":"ethereum"}'] == {"at": T0, "value": {"usd": 3012.45}}


def test_429s_open_it_then_cache_only_serves_the_stale_value_with_its_age_and_queues():
    guard, store, clock, api = make()
    run(guard.call(api.op(), {"ids": "ethereum"}))
    api.status = 429
    for _ in range(3):
        clock.now += 1
        limited = run(guard.call(api.op(), {"ids": "ethereum"}))
        assert limited.source == "live" and limited.value["status"] == 429  # what the API said, unchanged
    assert limited.phase is Phase.open
    sent = len(api.calls)
    clock.now += 12
    result = run(guard.call(api.op(), {"ids": "ethereum"}))
    assert len(api.calls) == sent  # no request while open
    assert result.source == "stale" and not result.fresh and result.value == {"status": 200, "usd": 3012.45}
    assert result.age_s == pytest.approx(15) and result.summary() == "stale, 15 s old"
    assert "circuit open (cache-only mode)" in result.reason and "stale, 15 s old" in result.reason
    assert result.queued
    run(guard.call(api.op(), {"ids": "ethereum"}))  # asked again: still one queued call
    assert [q.op for q in run(guard.read()).queue] == ["price"]


def test_open_without_a_cached_value_is_unknown_with_the_reason():
    guard, store, clock, api = make()
    trip(guard, api, {"ids": "solana"})
    result = run(guard.call(api.op(), {"ids": "solana"}))
    assert result.source == "unknown" and result.value is None and result.age_s is None
    assert result.reason.endswith("no cached value") and "circuit open" in result.reason


def test_critical_calls_fail_fast_while_open():
    guard, store, clock, api = make()
    run(guard.call(api.op()))
    trip(guard, api)
    sent = len(api.calls)
    with pytest.raises(CircuitOpen, match=r"coingecko: circuit open since .* critical call price refused") as err:
        run(guard.call(api.op(), critical=True))
    assert len(api.calls) == sent and run(guard.read()).queue == []
    assert err.value.stale is not None and err.value.stale.source == "stale"


def test_queued_calls_replay_when_the_breaker_lets_calls_through_and_it_closes():
    guard, store, clock, api = make()
    trip(guard, api, {"ids": "ethereum"})
    run(guard.call(api.op(), {"ids": "ethereum"}))
    run(guard.call(api.op("volume"), {"ids": "bsc"}))
    assert len(run(guard.read()).queue) == 2
    replay_open = run(guard.replay({"price": api.op(), "volume": api.op("volume")}))
    assert [r.outcome for r in replay_open] == ["kept", "kept"] and len(api.calls) == 3
    clock.now += 31  # cool-down over: half-open
    api.status = 200
    assert run(guard.read()).state.phase is Phase.half_open
    replayed = run(guard.replay({"price": api.op(), "volume": api.op("volume")}))
    assert [(r.op, r.outcome, r.detail) for r in replayed] == [("price", "done", "HTTP 200"),
                                                               ("volume", "done", "HTTP 200")]
    rec = run(guard.read())
    assert rec.state.phase is Phase.closed and rec.queue == []
    assert set(rec.cache) == {'price{"ids":"ethereum"}', 'volume{"ids":"bsc"}'}


def test_a_replay_refused_again_reopens_and_keeps_the_rest():
    guard, store, clock, api = make()
    trip(guard, api, {"ids": "a"})
    run(guard.call(api.op(), {"ids": "a"}))
    run(guard.call(api.op(), {"ids": "b"}))
    clock.now += 31
    replayed = run(guard.replay({"price": api.op()}))
    assert [r.outcome for r in replayed] == ["failed", "kept"]
    rec = run(guard.read())
    assert rec.state.phase is Phase.open and rec.state.trips == 2 and len(rec.queue) == 2


def test_a_queued_call_with_no_operation_is_dropped_and_said():
    guard, store, clock, api = make()
    trip(guard, api, name="gone")
    run(guard.call(api.op("gone")))
    clock.now += 31
    [replayed] = run(guard.replay({}))
    assert replayed.outcome == "dropped" and "no operation 'gone'" in replayed.detail
    assert run(guard.read()).queue == []


def test_the_queue_is_bounded_and_says_so():
    guard, store, clock, api = make(max_queue=1)
    trip(guard, api, {"n": 0})
    assert run(guard.call(api.op(), {"n": 1})).queued
    refused = run(guard.call(api.op(), {"n": 2}))
    assert not refused.queued and "not queued (queue full: 1 calls)" in refused.reason


def test_the_stored_record_stays_under_a_prefect_variable_limit():
    guard, store, clock, api = make(max_cache=50)
    big = "x" * 900
    for i in range(10):
        api.price = big + str(i)  # type: ignore[assignment]
        clock.now += 1
        run(guard.call(api.op(), {"n": i}))
    saved = store.values[guard.key]
    assert size_of(json.loads(saved)) <= MAX_RECORD_CHARS
    rec = run(guard.read())
    assert '{"n":9}' in "".join(rec.cache) and '{"n":0}' not in "".join(rec.cache)  # the newest kept
    assert any("left out" in n for n in rec.notes)


def test_fit_drops_oldest_cache_then_newest_queue():
    rec = BreakerRecord()
    rec.cache = {"old": (1.0, "a" * 3000), "new": (2.0, "b" * 2000)}
    dropped = fit(rec, 5000)
    assert list(rec.cache) == ["new"] and len(dropped) == 1 and size_of(rec.to_dict()) <= 5000
    rec.queue = [QueuedCall("first", {"p": "q" * 1500}, 1.0), QueuedCall("second", {"p": "q" * 1500}, 2.0)]
    dropped = fit(rec, 5000)
    assert rec.cache == {} and [q.op for q in rec.queue] == ["first", "second"]
    rec.queue.append(QueuedCall("third", {"p": "q" * 2000}, 3.0))
    dropped = fit(rec, 5000)
    assert [q.op for q in rec.queue] == ["first", "second"] and "queued call third" in dropped[0]


def test_a_damaged_record_starts_closed_and_is_noted():
    guard, store, clock, api = make()
    store.values[guard.key] = json.dumps({"state": {"phase": "ajar"}})
    result = run(guard.call(api.op()))
    assert result.source == "live"
    assert "damaged record replaced" in run(guard.read()).notes[0]


def test_reset_closes_an_open_breaker_and_keeps_cache_and_queue():
    guard, store, clock, api = make()
    run(guard.call(api.op()))
    trip(guard, api)
    run(guard.call(api.op()))
    rec = run(guard.reset())
    assert rec.state.phase is Phase.closed and len(rec.queue) == 1 and rec.cache


# --- the CoinGecko credit read through the breaker --------------------------------------------------


def test_a_live_credit_reading_passes_unchanged_and_a_stale_one_is_unknown_with_its_age():
    usage = coingecko.KeyUsage(500_000, 12_000, 488_000, plan="Analyst")
    live = coingecko.CreditReading(usage, latency_s=0.1, http_status=200)
    assert rate_limit.as_credit_reading(Guarded("live", live, Phase.closed)) is live
    stale = Guarded("stale", coingecko.CreditReading(usage, http_status=200), Phase.open,
                    "CoinGecko: circuit open (cache-only mode) until X; stale, 312 s old", 312, T0, queued=True)
    reading = rate_limit.as_credit_reading(stale)
    assert reading.usage is None  # never judged as today's figures
    assert reading.error == ("CoinGecko: circuit open (cache-only mode) until X; stale, 312 s old; it said 12,000 of "
                             "500,000 credits used; the read is queued for when the breaker closes")


# --- the [breakers] section -----------------------------------------------------------------------------


def test_breakers_section_loads_with_defaults_and_names_bad_fields():
    settings = parse({"environment": "t", "breakers": {"apis": {"coingecko": {}}}})
    assert settings.breakers is not None
    cfg = settings.breakers.apis["coingecko"]
    assert (cfg.failures_to_open, cfg.window_s, cfg.open_s, cfg.successes_to_close, cfg.statuses) == (
        3, 60, 60, 2, [429])
    with pytest.raises(ConfigError, match=r"breakers\.apis\.coingecko\.open_s"):
        parse({"environment": "t", "breakers": {"apis": {"coingecko": {"open_s": -1}}}})
    with pytest.raises(ConfigError, match=r"breakers\.apis\.coingecko\.retries: unknown key"):
        parse({"environment": "t", "breakers": {"apis": {"coingecko": {"retries": 3}}}})
    with pytest.raises(ConfigError, match=r"breakers\.apis"):
        parse({"environment": "t", "breakers": {"apis": {}}})


# --- the remediation, on the in-memory store ------------------------------------------------------------


def test_handle_api_announces_once_per_open_period_and_withdraws_after_closing():
    guard, store, clock, api = make()
    trip(guard, api)
    run(guard.call(api.op()))
    told: list[str] = []

    async def announce(report: rate_limit.ApiBreakerReport) -> list[Effect]:
        told.append("announce")
        return [Effect("status page", "done", "posted", verified=True)]

    async def withdraw(report: rate_limit.ApiBreakerReport) -> list[Effect]:
        told.append("withdraw")
        return [Effect("status page", "done", "resolved", verified=True)]

    def handle() -> rate_limit.ApiBreakerReport:
        return run(rate_limit.handle_api("coingecko", CFG, guard, {"price": api.op()}, api.op(), announce=announce,
                                         withdraw=withdraw))

    first = handle()
    assert first.phase == "open" and first.provider_flag and first.queue_after == 1 and told == ["announce"]
    assert first.provider_flag.startswith("ACTION: contact coingecko for a higher rate limit")
    again = handle()
    assert told == ["announce"] and again.effects[0].status == "already"
    clock.now += 31
    api.status = 200
    closed = handle()
    assert closed.phase == "closed" and [r.outcome for r in closed.replayed] == ["done"]
    assert closed.probes == ["price: HTTP 200, breaker now closed"]  # the replay was the first success
    assert told == ["announce", "withdraw"] and closed.provider_flag is None
    assert handle().effects == [] and told == ["announce", "withdraw"]
    report = rate_limit.RateLimitReport("sandbox", T0, T0 + 1, [first])
    assert report.markdown().startswith("## API Rate Limit Hit: DEGRADED")
    assert "**Contact the API provider:**" in report.markdown()


def test_a_dry_run_reports_and_sends_nothing():
    guard, store, clock, api = make()
    trip(guard, api)
    run(guard.call(api.op()))
    clock.now += 31
    api.status = 200
    sent = len(api.calls)

    async def told(report: rate_limit.ApiBreakerReport) -> list[Effect]:
        raise AssertionError("a half-open breaker is not announced")

    report = run(rate_limit.handle_api("coingecko", CFG, guard, {"price": api.op()}, api.op(), announce=told,
                                       withdraw=told, dry_run=True))
    assert report.phase == "half-open" and report.replayed == [] and report.probes == []
    assert len(api.calls) == sent and len(run(guard.read()).queue) == 1
