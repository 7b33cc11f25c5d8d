"""Incident Response, common incident 4, "API Rate Limit Hit": a circuit breaker per external API.

The runbook's answer to a rate limit is to stop asking for a while: cache-only mode, queued
non-critical requests, a notice to users, and a request to the provider for a higher limit. The
breaker decides when "a while" starts and ends:

- closed: calls go through; each answer that counts as a failure (HTTP 429, optionally 5xx and
  no answer at all) is remembered for `window_s`; `failures_to_open` of them inside the window open it;
- open: no call goes through until `open_s` has passed since it opened (longer when the API said
  when to come back: Retry-After and its kin, capped at `max_open_s`);
- half-open: calls go through again as probes; `successes_to_close` successes close it, one
  failure opens it again.

Pure: time is a number of seconds passed in by the caller (an injectable clock), and the state
is a small JSON-safe value so that it can be kept where every flow run sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, model_validator

from runbook.config_types import Strict


class Phase(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half-open"


class Verdict(StrEnum):
    """What one answer means to the breaker."""

    success = "success"
    failure = "failure"  # counts towards opening: the API is limiting (or failing, when 5xx count)
    neutral = "neutral"  # an answer that says nothing about the API's limits (e.g. 401, 404)


class BreakerConfig(Strict):
    """One API's thresholds, `[breakers.apis.<name>]`."""

    title: str | None = Field(default=None, max_length=80, description="how reports name the API (default: its key)")
    failures_to_open: Annotated[int, Field(ge=1, le=1000)] = 3
    window_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=60, description="failures older than this no longer count")
    open_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=60, description="how long the breaker stays open before probing (half-open)")
    max_open_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=900, description="cap on the open period when the API asks for a longer wait")
    successes_to_close: Annotated[int, Field(ge=1, le=100)] = 2
    statuses: list[Annotated[int, Field(ge=400, le=599)]] = Field(
        default_factory=lambda: [429],
        description="HTTP statuses that count as failures (add 420 for Statuspage's rate limit)")
    count_5xx: bool = Field(default=False, description="also count 5xx answers and calls that got no answer")
    limit_increase: str | None = Field(
        default=None, max_length=300, description="where to ask the provider for a higher limit (URL or contact)")

    @model_validator(mode="after")
    def _valid(self) -> BreakerConfig:
        if self.max_open_s < self.open_s:
            raise ValueError("max_open_s must be at least open_s")
        return self


@dataclass(frozen=True)
class Outcome:
    """One call's answer as the breaker sees it."""

    verdict: Verdict
    status: int | None = None
    reason: str = ""
    retry_after_s: float | None = None  # the API's own hint, seconds from now


def classify(cfg: BreakerConfig, status: int | None) -> Verdict:
    """`status` None means no answer (timeout, refused connection)."""
    if status is None:
        return Verdict.failure if cfg.count_5xx else Verdict.neutral
    if status in cfg.statuses or (cfg.count_5xx and 500 <= status <= 599):
        return Verdict.failure
    if 200 <= status < 300:
        return Verdict.success
    return Verdict.neutral


def open_period(cfg: BreakerConfig, retry_after_s: float | None) -> float:
    """How long to stay open: `open_s`, or the API's hint when longer, never beyond `max_open_s`."""
    if retry_after_s is None or retry_after_s <= cfg.open_s:
        return cfg.open_s
    return min(retry_after_s, cfg.max_open_s)


@dataclass(frozen=True)
class BreakerState:
    phase: Phase = Phase.closed
    failures: tuple[float, ...] = ()  # when each counted failure happened, inside the window
    opened_at: float | None = None
    open_until: float | None = None
    successes: int = 0  # in half-open
    trips: int = 0  # how many times it opened since the last reset
    last_failure: str = ""
    changed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Terse on purpose: it shares a Prefect Variable (5,000 characters) with the cache and queue.
        return {"phase": self.phase.value, "failures": [round(t, 3) for t in self.failures],
                "opened_at": self.opened_at, "open_until": self.open_until, "successes": self.successes,
                "trips": self.trips, "last_failure": self.last_failure[:200], "changed_at": self.changed_at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BreakerState:
        """None (never stored) is a closed breaker. A damaged value raises ValueError naming the field."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError("breaker state: not an object")
        try:
            phase = Phase(data.get("phase", "closed"))
        except ValueError:
            raise ValueError(f"breaker state: phase {data.get('phase')!r} is not one of "
                             f"{', '.join(p.value for p in Phase)}") from None
        failures = data.get("failures", [])
        if not isinstance(failures, list) or not all(_number(t) for t in failures):
            raise ValueError("breaker state: failures must be a list of times")
        for name in ("opened_at", "open_until", "changed_at"):
            if data.get(name) is not None and not _number(data[name]):
                raise ValueError(f"breaker state: {name} must be a time or null")
        for name in ("successes", "trips"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"breaker state: {name} must be a whole number >= 0")
        if phase is Phase.open and data.get("open_until") is None:
            raise ValueError("breaker state: an open breaker needs open_until")
        return cls(phase, tuple(float(t) for t in failures), _opt(data.get("opened_at")), _opt(data.get("open_until")),
                   data.get("successes", 0), data.get("trips", 0), str(data.get("last_failure") or ""),
                   _opt(data.get("changed_at")))

    def open_for_s(self, now: float) -> float:
        """Seconds until an open breaker starts probing; 0 when it is not open."""
        if self.phase is not Phase.open or self.open_until is None:
            return 0.0
        return max(0.0, self.open_until - now)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def advance(state: BreakerState, cfg: BreakerConfig, now: float) -> BreakerState:
    """The state as of `now`: an open breaker whose time is up is half-open; old failures are forgotten."""
    if state.phase is Phase.open and state.open_until is not None and now >= state.open_until:
        return replace(state, phase=Phase.half_open, successes=0, failures=(), changed_at=now)
    if state.phase is Phase.closed and state.failures:
        recent = tuple(t for t in state.failures if now - t < cfg.window_s)
        if recent != state.failures:
            return replace(state, failures=recent)
    return state


def allows_call(state: BreakerState, cfg: BreakerConfig, now: float) -> bool:
    return advance(state, cfg, now).phase is not Phase.open


def _open(state: BreakerState, cfg: BreakerConfig, now: float, outcome: Outcome) -> BreakerState:
    return BreakerState(Phase.open, (), now, now + open_period(cfg, outcome.retry_after_s), 0, state.trips + 1,
                        outcome.reason or _describe(outcome), now)


def _describe(outcome: Outcome) -> str:
    return f"HTTP {outcome.status}" if outcome.status is not None else "no answer"


def record(state: BreakerState, cfg: BreakerConfig, now: float, outcome: Outcome) -> BreakerState:
    """The state after one call's answer."""
    state = advance(state, cfg, now)
    if outcome.verdict is Verdict.neutral:
        return state
    if state.phase is Phase.closed:
        if outcome.verdict is Verdict.success:
            return state
        failures = (*state.failures, now)
        if len(failures) >= cfg.failures_to_open:
            return _open(state, cfg, now, outcome)
        return replace(state, failures=failures, last_failure=outcome.reason or _describe(outcome))
    if state.phase is Phase.half_open:
        if outcome.verdict is Verdict.failure:
            return _open(state, cfg, now, outcome)
        if state.successes + 1 >= cfg.successes_to_close:
            return BreakerState(Phase.closed, (), None, None, 0, state.trips, state.last_failure, now)
        return replace(state, successes=state.successes + 1)
    # Open: an answer to a call that started before the breaker opened. A success proves nothing
    # about the limit being lifted; a failure with a later retry hint pushes the probe time back.
    if outcome.verdict is Verdict.failure and state.open_until is not None:
        until = now + open_period(cfg, outcome.retry_after_s)
        if until > state.open_until:
            return replace(state, open_until=until)
    return state


def reset(now: float) -> BreakerState:
    """Closed, with nothing remembered: what an operator does after the provider raised the limit."""
    return BreakerState(changed_at=now)


def describe(state: BreakerState, cfg: BreakerConfig, now: float) -> str:
    """One line for a report: the phase and what it means now."""
    state = advance(state, cfg, now)
    if state.phase is Phase.open:
        return (f"open (cache-only) for another {state.open_for_s(now):.0f} s; tripped by {state.last_failure or '?'}")
    if state.phase is Phase.half_open:
        return f"half-open: probing, {state.successes} of {cfg.successes_to_close} successes to close"
    counted = len(state.failures)
    if counted:
        return f"closed; {counted} of {cfg.failures_to_open} failures in the last {cfg.window_s:g} s"
    return "closed"
