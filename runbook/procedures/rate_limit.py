"""Incident Response, common incident 4, "API Rate Limit Hit", as the runbook writes it:

    if (rateLimitExceeded) {
      // 1. Enable cache-only mode        -> an open breaker (runbook.clients.guarded)
      // 2. Queue non-critical requests   -> queued in the breaker's record, replayed when it closes
      // 3. Notify users of degraded service -> a status page incident, degraded_performance
      // 4. Contact API provider for increase -> a flagged line in the report and on Slack
    }

This module holds the `[breakers]` section, the guarded operations the platform uses (the CoinGecko
credit read of the API Usage Review), the degraded-service notice on the status page, and the
report of the `api-rate-limit` flow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from pydantic import Field, SecretStr, model_validator

from runbook.clients import coingecko
from runbook.clients.guarded import MAX_CACHE_ENTRIES, MAX_QUEUE, Answer, Guard, Guarded, Operation, Replayed
from runbook.clients.http_probe import describe_error
from runbook.config_types import Name, Strict
from runbook.procedures.circuit_breaker import BreakerConfig, BreakerState, Phase, describe
from runbook.procedures.emergency import Effect, StatusPageTarget, unresolved_incidents

DEFAULT_NOTICE = ("Some figures on TokenForge (prices, usage) may be a few minutes old: a data provider is limiting "
                  "our requests. Token launches and payments are not affected.")


class Breakers(Strict):
    """The `[breakers]` section: one circuit breaker per external API, and how users are told."""

    apis: Annotated[dict[Name, BreakerConfig], Field(min_length=1)] = Field(
        description="per API name (e.g. coingecko): its thresholds")
    statuspage: StatusPageTarget | None = Field(
        default=None, description="the page for the degraded-service notice; default: [emergency.statuspage]")
    notice_component_ids: list[str] | None = Field(
        default=None, description="components marked degraded_performance; default: the page's component_ids")
    notice_message: str = Field(default=DEFAULT_NOTICE, min_length=1, max_length=2000)
    max_cache_entries: Annotated[int, Field(ge=1, le=50)] = MAX_CACHE_ENTRIES
    max_queue: Annotated[int, Field(ge=1, le=200)] = MAX_QUEUE

    @model_validator(mode="after")
    def _notice(self) -> Breakers:
        if self.statuspage and self.notice_component_ids:
            unknown = [c for c in self.notice_component_ids if c not in self.statuspage.component_ids]
            if unknown:
                raise ValueError(f"notice_component_ids: {unknown} are not in statuspage.component_ids")
        return self


def notice_page(cfg: Breakers, fallback: StatusPageTarget | None, title: str) -> StatusPageTarget | None:
    """The status page target of one API's notice: its own incident name, degraded_performance, minor."""
    page = cfg.statuspage or fallback
    if page is None:
        return None
    components = cfg.notice_component_ids if cfg.notice_component_ids is not None else page.component_ids
    return page.model_copy(update={"incident_name": f"Degraded service: {title} data may be delayed",
                                   "component_ids": list(components), "component_status": "degraded_performance",
                                   "impact": "minor"})


# --- the guarded CoinGecko credit read ----------------------------------------------------------

COINGECKO_KEY_USAGE = "coingecko.key-usage"


def _usage_json(reading: coingecko.CreditReading) -> dict[str, Any] | None:
    return asdict(reading.usage) if reading.usage is not None else None


def _usage_from(value: Any) -> coingecko.CreditReading:
    if not isinstance(value, dict):
        raise ValueError("a cached key usage must be an object")
    return coingecko.CreditReading(coingecko.KeyUsage(**value), http_status=200)


def coingecko_key_usage(client: httpx.AsyncClient, base_url: str, api_key: SecretStr,
                        timeout_s: float) -> Operation[coingecko.CreditReading]:
    """`GET /key` as a guarded operation. Its URL and key come from configuration, so a queued call
    carries no parameters at all."""

    async def run(params: Mapping[str, Any]) -> coingecko.CreditReading:
        return await coingecko.read_key_usage(client, base_url, api_key, timeout_s=timeout_s)

    return Operation(
        COINGECKO_KEY_USAGE, run,
        lambda r: Answer(r.http_status, r.error or ""),
        _usage_json, _usage_from,
    )


def as_credit_reading(result: Guarded[coingecko.CreditReading]) -> coingecko.CreditReading:
    """A guarded result as the API Usage Review reads it. Live: the reading itself, unchanged.
    Otherwise an error reading that says the breaker is open and shows the last good figures with
    their age: the review reports `unknown`, never stale figures as today's."""
    if result.source == "live" and result.value is not None:
        return result.value
    reason = result.reason
    if result.source == "stale" and result.value is not None and result.value.usage is not None:
        u = result.value.usage
        reason += f"; it said {u.used:,} of {u.limit:,} credits used"
    if result.queued:
        reason += "; the read is queued for when the breaker closes"
    return coingecko.CreditReading(error=reason)


def guarded_key_usage_reader(guard: Guard) -> Callable[..., Awaitable[coingecko.CreditReading]]:
    """`coingecko.read_key_usage` through `guard`: same arguments, same result while closed."""

    async def read(client: httpx.AsyncClient, base_url: str, api_key: SecretStr, *,
                   timeout_s: float) -> coingecko.CreditReading:
        op = coingecko_key_usage(client, base_url, api_key, timeout_s)
        return as_credit_reading(await guard.call(op, critical=False))

    return read


COINGECKO_SIMPLE_PRICE = "coingecko.simple-price"


def _prices_from(value: Any) -> coingecko.PriceReading:
    if not isinstance(value, dict) or not all(isinstance(v, int | float) for v in value.values()):
        raise ValueError("cached prices must be an object of numbers")
    return coingecko.PriceReading({str(k): float(v) for k, v in value.items()}, http_status=200)


def coingecko_simple_prices(client: httpx.AsyncClient, base_url: str, api_key: SecretStr,
                            timeout_s: float) -> Operation[coingecko.PriceReading]:
    """`GET /simple/price` as a guarded operation; its one parameter is the sorted list of coin ids."""

    async def run(params: Mapping[str, Any]) -> coingecko.PriceReading:
        return await coingecko.read_simple_prices(client, base_url, api_key, list(params["ids"]), timeout_s=timeout_s)

    return Operation(
        COINGECKO_SIMPLE_PRICE, run,
        lambda r: Answer(r.http_status, r.error or ""),
        lambda r: dict(r.prices) if r.error is None and r.prices else None,
        _prices_from,
    )


def guarded_price_reader(guard: Guard) -> Callable[..., Awaitable[coingecko.PriceReading]]:
    """`coingecko.read_simple_prices` through `guard`. While the breaker is open the last good prices
    come back with a note giving their age, so a report can say they are not today's."""

    async def read(client: httpx.AsyncClient, base_url: str, api_key: SecretStr, ids: list[str], *,
                   timeout_s: float) -> coingecko.PriceReading:
        op = coingecko_simple_prices(client, base_url, api_key, timeout_s)
        result = await guard.call(op, {"ids": sorted(ids)}, critical=False)
        if result.source == "live" and result.value is not None:
            return result.value
        if result.source == "stale" and result.value is not None:
            cached = result.value.prices
            return coingecko.PriceReading({i: cached[i] for i in ids if i in cached},
                                          tuple(i for i in ids if i not in cached), note=result.reason)
        return coingecko.PriceReading({}, tuple(ids), result.reason)

    return read


# --- the degraded-service notice ----------------------------------------------------------------


async def resolve_notice(sp: StatusPageTarget, client: httpx.AsyncClient, api_key: SecretStr, message: str, *,
                         dry_run: bool = False) -> Effect:
    """Resolve the notice's incident (found by name among the page's unresolved incidents) and put
    its components back to operational, then check it left the public page.

    `PATCH /v1/pages/{page_id}/incidents/{id}` with `{"incident": {"status": "resolved", ...}}`:
    the update shape of shared/vendors/statuspage.md (marked unconfirmed there)."""
    name = "status page"
    if dry_run:
        return Effect(name, "dry-run", f"would resolve incident {sp.incident_name!r}")
    try:
        open_ones = [i for i in await unresolved_incidents(sp, client) if i.get("name") == sp.incident_name]
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the other APIs' reports still matter
        return Effect(name, "failed", f"cannot read the public page: {describe_error(exc).split(' (')[0]}")
    if not open_ones:
        return Effect(name, "already", f"no open incident {sp.incident_name!r}", verified=True)
    headers = {"Authorization": f"OAuth {api_key.get_secret_value()}"}
    body = {"incident": {"status": "resolved", "body": message,
                         "components": dict.fromkeys(sp.component_ids, "operational")}}
    for incident in open_ones:
        url = f"{sp.base_url.rstrip('/')}/pages/{sp.page_id}/incidents/{incident.get('id')}"
        try:
            async with asyncio.timeout(sp.timeout_s):
                response = await client.patch(url, json=body, headers=headers, timeout=httpx.Timeout(sp.timeout_s))
        except Exception as exc:  # noqa: BLE001 - the request carries a secret: describe, never repr
            return Effect(name, "failed", f"resolve incident: {describe_error(exc).split(' (')[0]}")
        if response.status_code not in (200, 201):
            return Effect(name, "failed", f"resolve incident {incident.get('id')}: HTTP {response.status_code}")
    try:
        still = [i for i in await unresolved_incidents(sp, client) if i.get("name") == sp.incident_name]
    except Exception as exc:  # noqa: BLE001
        return Effect(name, "done", f"incident resolved; cannot read it back: {describe_error(exc).split(' (')[0]}")
    if still:
        return Effect(name, "done", "incident resolved but still listed on the public page")
    return Effect(name, "done", f"incident {sp.incident_name!r} resolved; gone from the public page", verified=True)


# --- the report -----------------------------------------------------------------------------------


def _utc(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def provider_flag(api: str, cfg: BreakerConfig, state: BreakerState) -> str:
    """Runbook step 4: the line that asks a person to contact the provider."""
    where = f": {cfg.limit_increase}" if cfg.limit_increase else ""
    return (f"ACTION: contact {cfg.title or api} for a higher rate limit{where} (the breaker opened "
            f"{state.trips} time(s) since its last reset; last: {state.last_failure or 'rate limited'})")


@dataclass
class ApiBreakerReport:
    api: str
    title: str
    phase: str
    state_line: str
    opened_at: float | None = None
    queue_before: int = 0
    queue_after: int = 0
    cached: list[str] = field(default_factory=list)  # "<call>: N s old"
    replayed: list[Replayed] = field(default_factory=list)
    probes: list[str] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)
    provider_flag: str | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(e.ok for e in self.effects)

    def to_dict(self) -> dict[str, Any]:
        return {"api": self.api, "title": self.title, "phase": self.phase, "state": self.state_line,
                "opened_at": _utc(self.opened_at) if self.opened_at else None, "queue_before": self.queue_before,
                "queue_after": self.queue_after, "cached": self.cached,
                "replayed": [asdict(r) for r in self.replayed], "probes": self.probes,
                "effects": [e.to_dict() for e in self.effects], "provider_flag": self.provider_flag,
                "notes": self.notes, "error": self.error, "ok": self.ok}


@dataclass
class RateLimitReport:
    environment: str
    started_at: float
    finished_at: float
    apis: list[ApiBreakerReport]
    dry_run: bool = False

    @property
    def passed(self) -> bool:
        return all(a.ok for a in self.apis)

    @property
    def open_apis(self) -> list[str]:
        return [a.title for a in self.apis if a.phase == Phase.open.value]

    def summary(self) -> str:
        if self.open_apis:
            head = f"API rate limit ({self.environment}): cache-only mode for {', '.join(self.open_apis)}"
        else:
            head = f"API rate limit ({self.environment}): every breaker closed or probing"
        failed = [f"{a.title}: {a.error or '; '.join(e.detail for e in a.effects if not e.ok)}"
                  for a in self.apis if not a.ok]
        return head + (f"; NOT DONE: {'; '.join(failed)}" if failed else "")

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "passed": self.passed, "dry_run": self.dry_run,
                "started_at": _utc(self.started_at), "finished_at": _utc(self.finished_at),
                "open": self.open_apis, "apis": [a.to_dict() for a in self.apis], "summary": self.summary(),
                "markdown": self.markdown()}

    def rows(self) -> list[dict[str, Any]]:
        return [{"api": a.title, "breaker": a.phase, "state": a.state_line, "queued": a.queue_after,
                 "replayed": sum(r.outcome == "done" for r in a.replayed),
                 "notice": "; ".join(f"{e.name}: {e.status}" for e in a.effects) or "-",
                 "provider": "flagged" if a.provider_flag else "-", "ok": a.ok} for a in self.apis]

    def markdown(self) -> str:
        verdict = "DEGRADED" if self.open_apis else "NORMAL"
        if not self.passed:
            verdict += ", ACTION INCOMPLETE"
        lines = [f"## API Rate Limit Hit: {verdict}", "", f"- Environment: {self.environment}",
                 f"- Checked: {_utc(self.started_at)}" + (" (dry run: nothing sent)" if self.dry_run else ""), ""]
        flags = [a.provider_flag for a in self.apis if a.provider_flag]
        if flags:
            lines += ["**Contact the API provider:**", *(f"- {f}" for f in flags), ""]
        lines += ["| API | Breaker | Queue | Cache-only answers |", "|---|---|---|---|"]
        for a in self.apis:
            queue = f"{a.queue_before} -> {a.queue_after}" if a.queue_before != a.queue_after else str(a.queue_after)
            lines.append(f"| {a.title} | {a.state_line} | {queue} | {', '.join(a.cached) or '-'} |")
        for a in self.apis:
            steps = _steps(a)
            if steps:
                lines += ["", f"### {a.title}", "", *steps]
        return "\n".join(lines) + "\n"

    def slack_text(self) -> str:
        lines = [f":warning: {self.summary()}"]
        for a in self.apis:
            if a.phase == Phase.open.value:
                lines.append(f"- {a.title}: {a.state_line}; serving cached values; {a.queue_after} call(s) queued")
            if a.provider_flag:
                lines.append(f"- {a.provider_flag}")
        return "\n".join(lines)


def _steps(a: ApiBreakerReport) -> list[str]:
    lines: list[str] = []
    if a.error:
        lines.append(f"- [ ] could not handle the breaker: {a.error}")
    if a.phase == Phase.open.value:
        lines.append(f"- [x] 1. Cache-only mode: open since {_utc(a.opened_at)}; callers get the last good value "
                     "with its age")
        lines.append(f"- [x] 2. Non-critical calls queued: {a.queue_after}")
    for p in a.probes:
        lines.append(f"- [x] probe: {p}")
    for r in a.replayed:
        mark = "[x]" if r.outcome == "done" else "[ ]"
        lines.append(f"- {mark} replayed {r.op} (queued {_utc(r.queued_at)}): {r.outcome}, {r.detail}")
    for e in a.effects:
        mark = "[x]" if e.ok else "[ ]"
        lines.append(f"- {mark} 3. Notify users ({e.name}): {e.status}, {e.detail}")
    if a.provider_flag:
        lines.append(f"- [ ] 4. {a.provider_flag}")
    lines += [f"- note: {n}" for n in a.notes]
    return lines


def api_report(api: str, cfg: BreakerConfig, state: BreakerState, now: float, queue: int,
               cache: Mapping[str, tuple[float, Any]], notes: Sequence[str]) -> ApiBreakerReport:
    return ApiBreakerReport(
        api, cfg.title or api, state.phase.value, describe(state, cfg, now), state.opened_at, queue, queue,
        [f"{key}: {now - at:.0f} s old" for key, (at, _) in cache.items()], notes=list(notes))


# --- one API's breaker, handled -------------------------------------------------------------------

Notify = Callable[[ApiBreakerReport], Awaitable[list[Effect]]]


async def handle_api(api: str, cfg: BreakerConfig, guard: Guard, operations: Mapping[str, Operation[Any]],
                     probe: Operation[Any] | None, *, announce: Notify, withdraw: Notify,
                     dry_run: bool = False) -> ApiBreakerReport:
    """Read the breaker and act on what it says:
    - half-open: replay the queued calls (they are its probes), then probe until it closes or opens;
    - closed with calls queued: replay them;
    - open: tell users and flag the provider, once per open episode (`announced_open_at`);
    - closed after an announced episode: withdraw the notice.
    A dry run reads and reports only."""
    rec = await guard.read()
    before = len(rec.queue)
    replayed: list[Replayed] = []
    probes: list[str] = []
    if not dry_run and rec.state.phase is not Phase.open:
        if rec.queue:
            replayed += await guard.replay(operations)
            rec = await guard.read()
        tries = 0
        while rec.state.phase is Phase.half_open and probe is not None and tries < cfg.successes_to_close:
            result = await guard.call(probe)
            tries += 1
            if result.source == "live":
                answer = probe.answer(result.value)
                seen = f"HTTP {answer.status}" if answer.status is not None else f"no answer ({answer.reason})"
            else:
                seen = f"not sent: {result.summary()}"
            probes.append(f"{probe.name}: {seen}, breaker now {result.phase.value}")
            rec = await guard.read()
        if rec.state.phase is Phase.closed and rec.queue:
            replayed += await guard.replay(operations)
            rec = await guard.read()
    now = guard.clock()
    report = api_report(api, cfg, rec.state, now, len(rec.queue), rec.cache, rec.notes)
    report.queue_before, report.replayed, report.probes = before, replayed, probes
    if rec.state.phase is Phase.open:
        report.provider_flag = provider_flag(api, cfg, rec.state)
        if rec.announced_open_at is None:
            report.effects = await announce(report)
            if not dry_run and all(e.ok for e in report.effects):
                await guard.mark_announced(rec.state.opened_at)
        else:
            report.effects = [Effect("notice", "already", f"users and the team were told at "
                                                          f"{_utc(rec.announced_open_at)}", verified=True)]
    elif rec.state.phase is Phase.closed and rec.announced_open_at is not None:
        report.effects = await withdraw(report)
        if not dry_run and all(e.ok for e in report.effects):
            await guard.mark_announced(None)
    return report
