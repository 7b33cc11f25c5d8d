"""Calls to an external API through its circuit breaker, with the cache and queue of cache-only mode.

`Guard.call()` consults the breaker before the call and records the answer after it:
- closed or half-open: the call goes through and its answer is returned unchanged; a good answer
  is also kept as the operation's last good value;
- open: no request is sent. A critical call fails at once with `CircuitOpen`; any other call is
  queued (to be replayed when the breaker closes) and answered from the cache as an explicit
  `stale` result with its age, or `unknown` with the reason when nothing is cached.

The breaker state, cache and queue of one API are one JSON record in a `BreakerStore`, so that
every flow run, on any worker, sees the same breaker (the Prefect-facing store is in `tasks/`).
A queued call is data (operation name + JSON parameters), never a secret: replaying it rebuilds
the operation from configuration. Two runs updating one record at the same moment: the last
write wins; within a process one guard serialises its own updates.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from runbook.procedures.circuit_breaker import (
    BreakerConfig,
    BreakerState,
    Outcome,
    Phase,
    Verdict,
    advance,
    classify,
)
from runbook.procedures.circuit_breaker import record as record_outcome
from runbook.procedures.circuit_breaker import reset as reset_state

T = TypeVar("T")
Json = Any

# A Prefect Variable's value is at most 5,000 characters of JSON; the record stays under it.
MAX_RECORD_CHARS = 5000
MAX_CACHE_ENTRIES = 8
MAX_QUEUE = 20


def breaker_key(environment: str, api: str) -> str:
    """Where an API's breaker is kept: `tfops-breaker-<env>-<api>` (lowercase, digits, _ and -)."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"tfops-breaker-{environment}-{api}".lower())[:255]


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- what a rate-limited answer says about when to come back ------------------------------------


def _seconds(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None


def retry_after_s(headers: Mapping[str, str], body: Any, now: float) -> float | None:
    """Seconds until the API takes calls again, from whichever of the three 429 styles the answer
    uses (shared/vendors/README.md); None for a bare 429 (CoinGecko, Alchemy, PagerDuty).

    Headers: `Retry-After` (seconds or an HTTP date), `X-RateLimit-Reset-After` (seconds),
    `x-rate-limit-reset` / `X-RateLimit-Reset` / `X-Sentry-Rate-Limit-Reset` (epoch seconds).
    Bodies: Telegram `parameters.retry_after`, Discord `retry_after` (seconds), Vercel
    `error.limit.reset` (epoch seconds). The longest hint wins: waiting less would be refused again.
    """
    h = {k.lower(): v for k, v in headers.items()}
    hints: list[float] = []
    retry = h.get("retry-after")
    if retry is not None:
        seconds = _seconds(retry)
        if seconds is None:
            try:
                seconds = max(0.0, parsedate_to_datetime(retry).timestamp() - now)
            except (TypeError, ValueError, IndexError):
                seconds = None
        if seconds is not None:
            hints.append(seconds)
    after = _seconds(h.get("x-ratelimit-reset-after"))
    if after is not None:
        hints.append(after)
    for name in ("x-rate-limit-reset", "x-ratelimit-reset", "x-sentry-rate-limit-reset"):
        epoch = _seconds(h.get(name))
        if epoch is not None and after is None:
            hints.append(max(0.0, epoch - now))
    if isinstance(body, dict):
        params = body.get("parameters")
        if isinstance(params, dict) and _seconds(params.get("retry_after")) is not None:
            hints.append(float(params["retry_after"]))
        if _seconds(body.get("retry_after")) is not None:
            hints.append(float(body["retry_after"]))
        error = body.get("error")
        limit = error.get("limit") if isinstance(error, dict) else None
        if isinstance(limit, dict) and _seconds(limit.get("reset")) is not None:
            hints.append(max(0.0, float(limit["reset"]) - now))
    return max(hints) if hints else None


# --- the stored record ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QueuedCall:
    op: str
    params: dict[str, Json]
    queued_at: float

    @property
    def key(self) -> str:
        return call_key(self.op, self.params)


def call_key(op: str, params: Mapping[str, Json]) -> str:
    return op + (json.dumps(params, sort_keys=True, separators=(",", ":")) if params else "")


@dataclass
class BreakerRecord:
    """One API's breaker, last good values and queued calls, as kept in the store."""

    state: BreakerState = field(default_factory=BreakerState)
    cache: dict[str, tuple[float, Json]] = field(default_factory=dict)  # call key -> (stored at, value)
    queue: list[QueuedCall] = field(default_factory=list)
    announced_open_at: float | None = None  # the open period users and the provider were told about
    notes: list[str] = field(default_factory=list)  # what had to be left out to stay small

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "state": self.state.to_dict(),
                "cache": {k: {"at": round(at, 3), "value": v} for k, (at, v) in self.cache.items()},
                "queue": [{"op": q.op, "params": q.params, "at": round(q.queued_at, 3)} for q in self.queue],
                "announced_open_at": self.announced_open_at, "notes": self.notes[-3:]}

    @classmethod
    def from_dict(cls, data: Any) -> BreakerRecord:
        """None (never stored) is a closed breaker with nothing cached. Raises ValueError when damaged."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError("breaker record: not an object")
        state = BreakerState.from_dict(data.get("state"))
        cache: dict[str, tuple[float, Json]] = {}
        raw_cache = data.get("cache", {})
        if not isinstance(raw_cache, dict):
            raise ValueError("breaker record: cache must be an object")
        for key, entry in raw_cache.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("at"), int | float) or "value" not in entry:
                raise ValueError(f"breaker record: cache entry {key!r} needs 'at' and 'value'")
            cache[key] = (float(entry["at"]), entry["value"])
        raw_queue = data.get("queue", [])
        if not isinstance(raw_queue, list):
            raise ValueError("breaker record: queue must be a list")
        queue = []
        for i, q in enumerate(raw_queue):
            if (not isinstance(q, dict) or not isinstance(q.get("op"), str) or not isinstance(q.get("params"), dict)
                    or not isinstance(q.get("at"), int | float)):
                raise ValueError(f"breaker record: queue[{i}] needs 'op', 'params' and 'at'")
            queue.append(QueuedCall(q["op"], q["params"], float(q["at"])))
        announced = data.get("announced_open_at")
        notes = data.get("notes", [])
        return cls(state, cache, queue, float(announced) if isinstance(announced, int | float) else None,
                   [str(n) for n in notes] if isinstance(notes, list) else [])


def size_of(data: Any) -> int:
    """Characters of compact JSON, as Prefect measures a Variable's value."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def fit(rec: BreakerRecord, max_chars: int = MAX_RECORD_CHARS, max_cache: int = MAX_CACHE_ENTRIES) -> list[str]:
    """Shrink `rec` in place until it fits: the oldest cached values go first, then the newest
    queued calls (the ones not yet promised to anybody). Returns what was left out."""
    dropped: list[str] = []
    by_age = sorted(rec.cache, key=lambda k: rec.cache[k][0])
    while len(rec.cache) > max_cache:
        key = by_age.pop(0)
        del rec.cache[key]
    # a margin for the store's own wrapping; the limit is on the whole value
    budget = max_chars - 64
    while size_of(rec.to_dict()) > budget and by_age:
        key = by_age.pop(0)
        if key in rec.cache:
            del rec.cache[key]
            dropped.append(f"cached value of {key[:60]} left out (record over {max_chars} characters)")
    while size_of(rec.to_dict()) > budget and rec.queue:
        gone = rec.queue.pop()
        dropped.append(f"queued call {gone.key[:60]} left out (record over {max_chars} characters)")
    if dropped:
        rec.notes = [*rec.notes, *dropped][-3:]
    return dropped


class BreakerStore(Protocol):
    """Where breaker records live. Values are JSON-safe dicts of at most MAX_RECORD_CHARS."""

    async def load(self, key: str) -> Any: ...

    async def save(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryStore:
    """A store in memory, for tests and one-off scripts: JSON round-trips like the real one."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def load(self, key: str) -> Any:
        raw = self.values.get(key)
        return None if raw is None else json.loads(raw)

    async def save(self, key: str, value: dict[str, Any]) -> None:
        if size_of(value) > MAX_RECORD_CHARS:
            raise ValueError(f"{key}: value is over {MAX_RECORD_CHARS} characters")
        self.values[key] = json.dumps(value)


# --- operations and results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the breaker needs to know of one result: its HTTP status (None: no answer at all)."""

    status: int | None
    reason: str = ""
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Operation(Generic[T]):
    """A call the guard can make, cache and replay. `run` gets the call's JSON parameters; secrets
    and URLs come from configuration when the operation is built, never from the stored queue."""

    name: str
    run: Callable[[Mapping[str, Json]], Awaitable[T]]
    answer: Callable[[T], Answer]
    dump: Callable[[T], Json | None]  # a good result as JSON to keep; None: nothing worth keeping
    load: Callable[[Json], T]


Source = Literal["live", "stale", "unknown"]


@dataclass(frozen=True)
class Guarded(Generic[T]):
    """A guarded call's result. `live`: the API answered now (whatever it said). `stale`: the
    breaker is open and this is the last good value, `age_s` old. `unknown`: open, nothing cached."""

    source: Source
    value: T | None
    phase: Phase
    reason: str = ""
    age_s: float | None = None
    stored_at: float | None = None
    queued: bool = False

    @property
    def fresh(self) -> bool:
        return self.source == "live"

    def summary(self) -> str:
        if self.source == "live":
            return "live"
        if self.source == "stale":
            return f"stale, {self.age_s:.0f} s old"
        return f"unknown: {self.reason}"


class CircuitOpen(Exception):
    """A critical call refused because its API's breaker is open."""

    def __init__(self, api: str, op: str, state: BreakerState, now: float, stale: Guarded[Any] | None = None):
        self.api, self.op, self.state, self.stale = api, op, state, stale
        since = _utc(state.opened_at) if state.opened_at is not None else "?"
        super().__init__(
            f"{api}: circuit open since {since} ({state.last_failure or 'rate limited'}); critical call {op} "
            f"refused without calling the API; it probes again in {state.open_for_s(now):.0f} s")


@dataclass(frozen=True)
class Replayed:
    op: str
    queued_at: float
    outcome: Literal["done", "failed", "kept", "dropped"]
    detail: str


class Guard:
    """One API's breaker, cache and queue in a store, consulted and updated around each call."""

    def __init__(self, store: BreakerStore, key: str, api: str, cfg: BreakerConfig, *,
                 clock: Callable[[], float] = time.time, max_chars: int = MAX_RECORD_CHARS,
                 max_cache: int = MAX_CACHE_ENTRIES, max_queue: int = MAX_QUEUE):
        self.store, self.key, self.api, self.cfg, self.clock = store, key, api, cfg, clock
        self.title = cfg.title or api
        self.max_chars, self.max_cache, self.max_queue = max_chars, max_cache, max_queue
        self._lock = asyncio.Lock()

    async def read(self) -> BreakerRecord:
        """The record as of now (an open breaker whose time is up reads half-open). Not saved."""
        rec = BreakerRecord.from_dict(await self.store.load(self.key))
        rec.state = advance(rec.state, self.cfg, self.clock())
        return rec

    async def _write(self, rec: BreakerRecord) -> None:
        fit(rec, self.max_chars, self.max_cache)
        await self.store.save(self.key, rec.to_dict())

    async def _load_or_fresh(self) -> BreakerRecord:
        try:
            return await self.read()
        except ValueError as exc:
            # A damaged record must not stop calls: start closed, and say so in the next report.
            rec = BreakerRecord(state=reset_state(self.clock()))
            rec.notes.append(f"damaged record replaced: {str(exc)[:100]}")
            return rec

    def _cached(self, rec: BreakerRecord, op: Operation[T], params: Mapping[str, Json], now: float,
                reason: str, queued: bool) -> Guarded[T]:
        entry = rec.cache.get(call_key(op.name, params))
        if entry is not None:
            stored_at, value = entry
            try:
                loaded = op.load(value)
            except (KeyError, TypeError, ValueError) as exc:
                reason += f"; the cached value is unreadable ({type(exc).__name__})"
            else:
                age = max(0.0, now - stored_at)
                return Guarded("stale", loaded, rec.state.phase,
                               f"{reason}; stale, {age:.0f} s old (last good answer {_utc(stored_at)})", age,
                               stored_at, queued)
        return Guarded("unknown", None, rec.state.phase, f"{reason}; no cached value", queued=queued)

    async def call(self, op: Operation[T], params: Mapping[str, Json] | None = None, *,
                   critical: bool = False) -> Guarded[T]:
        params = dict(params or {})
        async with self._lock:
            rec = await self._load_or_fresh()
            now = self.clock()
            if rec.state.phase is Phase.open:
                reason = f"{self.title}: circuit open (cache-only mode) until {_utc(rec.state.open_until or now)}"
                if critical:
                    raise CircuitOpen(self.title, op.name, rec.state, now,
                                      self._cached(rec, op, params, now, reason, queued=False))
                queued = self._enqueue(rec, op.name, params, now)
                if queued:
                    await self._write(rec)
                    queued = any(q.key == call_key(op.name, params) for q in rec.queue)
                else:
                    reason += f"; not queued (queue full: {self.max_queue} calls)"
                return self._cached(rec, op, params, now, reason, queued)
        value = await op.run(params)
        return Guarded("live", value, await self._settle(op, params, value))

    def _enqueue(self, rec: BreakerRecord, op: str, params: dict[str, Json], now: float) -> bool:
        key = call_key(op, params)
        if any(q.key == key for q in rec.queue):
            return True  # the same call is replayed once, however often it was asked for
        if len(rec.queue) >= self.max_queue:
            return False
        rec.queue.append(QueuedCall(op, params, now))
        return True

    async def _settle(self, op: Operation[T], params: Mapping[str, Json], value: T) -> Phase:
        """Record the answer in the breaker and, when good, keep it as the last good value."""
        answer = op.answer(value)
        verdict = classify(self.cfg, answer.status)
        async with self._lock:
            rec = await self._load_or_fresh()
            now = self.clock()
            rec.state = record_outcome(rec.state, self.cfg, now,
                                       Outcome(verdict, answer.status, answer.reason[:200], answer.retry_after_s))
            if answer.status is not None and 200 <= answer.status < 300:
                good = op.dump(value)
                if good is not None:
                    rec.cache[call_key(op.name, params)] = (now, good)
            await self._write(rec)
            return rec.state.phase

    async def replay(self, operations: Mapping[str, Operation[Any]]) -> list[Replayed]:
        """Send the queued calls, oldest first, while the breaker lets calls through (a half-open
        breaker is probed by them). A call the API answered leaves the queue (an answer that is not
        about limits would be the same next time); one refused again or unanswered stays."""
        out: list[Replayed] = []
        async with self._lock:
            pending = list((await self._load_or_fresh()).queue)
        for q in pending:
            async with self._lock:
                rec = await self._load_or_fresh()
                if rec.state.phase is Phase.open:
                    out.append(Replayed(q.op, q.queued_at, "kept", "the breaker is open; kept for later"))
                    continue
                op = operations.get(q.op)
                if op is None:
                    rec.queue = [x for x in rec.queue if x.key != q.key]
                    await self._write(rec)
                    out.append(Replayed(q.op, q.queued_at, "dropped", f"no operation {q.op!r} is configured"))
                    continue
            value = await op.run(q.params)
            answer = op.answer(value)
            await self._settle(op, q.params, value)
            answered = answer.status is not None and classify(self.cfg, answer.status) is not Verdict.failure
            detail = f"HTTP {answer.status}" if answer.status is not None else "no answer"
            if answer.reason and not (answer.status is not None and 200 <= answer.status < 300):
                detail += f": {answer.reason[:160]}"
            if answered:
                async with self._lock:
                    rec = await self._load_or_fresh()
                    rec.queue = [x for x in rec.queue if x.key != q.key]
                    await self._write(rec)
            out.append(Replayed(q.op, q.queued_at, "done" if answered else "failed", detail))
        return out

    async def mark_announced(self, opened_at: float | None) -> None:
        async with self._lock:
            rec = await self._load_or_fresh()
            rec.announced_open_at = opened_at
            await self._write(rec)

    async def reset(self) -> BreakerRecord:
        """Close the breaker and forget counted failures; the cache and queue are kept."""
        async with self._lock:
            rec = await self._load_or_fresh()
            rec.state = reset_state(self.clock())
            await self._write(rec)
            return rec
