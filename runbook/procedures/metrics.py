"""Evening Checklist step 1, "Metrics Review": daily active users, tokens created, transaction
volume and error rate over the window, each against its trailing baseline.

Where each comes from:
- daily active users, transaction volume, error rate: Convex query functions (names configurable)
  run through the deployment's documented HTTP API, each asked `{"sinceMs", "untilMs"}` and
  answering a number (error rate: a fraction 0..1, or null when nothing ran in the window);
- tokens created: the chain itself, the `TokenCreated` events of each EVM chain's TokenFactory in
  the window, read with `eth_getLogs` in block ranges the endpoint accepts through the first
  endpoint on the right chain with a fresh head. A chain that cannot be read makes the total
  `unknown`: a partial sum would understate the day.

The baseline is the median of the earlier runs' values over the trailing `baseline_days`, one value
per UTC day (that day's latest run), so a day with ten drills weighs as much as a day with one run
and one odd day does not move it. A change beyond `band` (0.5 = +/-50 %) is flagged
(`flag_status`); no earlier run means no baseline yet, which is said, not flagged. The
configured threshold rules ("Custom alerts") are then applied to the same values.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from eth_utils import keccak
from pydantic import Field, SecretStr

from runbook.checks import CheckResult, Status
from runbook.clients import convex_query, evm_logs
from runbook.config_types import Chain, ChainKind, HttpUrl, SecretRef, Severity, Strict

ITEM = "Metrics Review"

TOKEN_CREATED = "TokenCreated(address,address,string,string,uint256,uint256)"  # noqa: S105 - an event signature
TOKEN_CREATED_TOPIC = "0x" + keccak(text=TOKEN_CREATED).hex()

FunctionPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$")]

# metric -> (label, unit); the order is the report's
METRICS: dict[str, tuple[str, str]] = {
    "daily_active_users": ("Daily active users", "count"),
    "tokens_created": ("Tokens created", "count"),
    "transaction_volume": ("Transaction volume", "usd"),
    "error_rate": ("Error rate", "fraction"),
}


class MetricFunctions(Strict):
    daily_active_users: FunctionPath = "metrics:dailyActiveUsers"
    transaction_volume: FunctionPath = "metrics:transactionVolume"
    error_rate: FunctionPath = "metrics:errorRate"


class MetricsReview(Strict):
    convex_url: HttpUrl = Field(description="the Convex deployment whose query functions report the metrics")
    convex_deploy_key: SecretRef | None = Field(
        default=None, description="sent as `Authorization: Convex <key>` when the functions need it")
    functions: MetricFunctions = Field(default_factory=MetricFunctions)
    window_hours: Annotated[int, Field(gt=0, le=24 * 31)] = 24
    baseline_days: Annotated[int, Field(ge=1, le=90)] = 7
    band: Annotated[float, Field(gt=0, le=100)] = Field(
        default=0.5, description="flag a change beyond this share of the baseline (0.5 = +/-50 %)")
    flag_status: Literal["warn", "fail"] = "warn"
    severity: Severity = Severity.P2
    max_block_range: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    deadline_s: Annotated[float, Field(gt=0, le=900)] = 60


@dataclass(frozen=True)
class Reading:
    """One metric's value over the window, or why there is none; `source` says where it came from."""

    metric: str
    value: float | None
    source: str
    error: str | None = None


@dataclass(frozen=True)
class Baseline:
    value: float
    days: int


# ---- reading ------------------------------------------------------------------------------------

def parse_value(metric: str, value: Any) -> float | None:
    """A function's answer as a number; None only for a null error rate (nothing ran)."""
    if value is None and metric == "error_rate":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"answered {type(value).__name__} {str(value)[:40]!r}, not a number")
    if value < 0:
        raise ValueError(f"answered {value}, a negative {metric}")
    if metric == "error_rate" and value > 1:
        raise ValueError(f"answered {value}: an error rate is a fraction from 0 to 1")
    return float(value)


async def read_convex_metric(
    metric: str, function: str, cfg: MetricsReview, client: httpx.AsyncClient, since: datetime, until: datetime,
    deploy_key: SecretStr | None,
) -> Reading:
    args = {"sinceMs": int(since.timestamp() * 1000), "untilMs": int(until.timestamp() * 1000)}
    source = f"Convex {function}"
    try:
        answer = await convex_query.query(client, cfg.convex_url, function, args, cfg.timeout_s, deploy_key)
        value = parse_value(metric, answer)
    except convex_query.QueryFailed as exc:
        return Reading(metric, None, source, str(exc))
    except ValueError as exc:
        return Reading(metric, None, source, f"{function} {exc}")
    if value is None:
        return Reading(metric, None, source, f"{function} answered null: no function ran in the window")
    return Reading(metric, value, source)


async def _count_tokens(
    client: httpx.AsyncClient, url: str, chain: Chain, cfg: MetricsReview, since: datetime,
) -> tuple[int, evm_logs.Window]:
    assert chain.chain_id is not None and chain.token_factory is not None
    window = await evm_logs.open_window(client, url, chain_id=chain.chain_id, max_head_age_s=chain.max_head_age_s,
                                        since=since.timestamp(), timeout_s=cfg.timeout_s, deadline_s=cfg.deadline_s)
    logs = await evm_logs.get_logs(client, url, address=chain.token_factory, topics=[TOKEN_CREATED_TOPIC],
                                   from_block=window.from_block, to_block=window.to_block,
                                   max_range=cfg.max_block_range, deadline_s=cfg.deadline_s)
    return len(logs), window


async def read_tokens_created(
    chains: Mapping[str, Chain], cfg: MetricsReview, client: httpx.AsyncClient, since: datetime,
) -> Reading:
    """TokenCreated events of every EVM chain's TokenFactory in the window, chains read concurrently."""
    factories = {n: c for n, c in chains.items() if c.kind is ChainKind.evm and c.token_factory}
    if not factories:
        return Reading("tokens_created", None, "chain", "no EVM chain has a token_factory configured")

    async def one(name: str, chain: Chain) -> tuple[str, tuple[str, tuple[int, evm_logs.Window]] | list[str]]:
        endpoints = list(zip(chain.endpoint_names(name), chain.rpc_urls, strict=True))
        got = await evm_logs.first_usable(
            endpoints, lambda url: _count_tokens(client, url, chain, cfg, since), cfg.deadline_s * 2)
        return name, got

    counted = await asyncio.gather(*(one(n, c) for n, c in factories.items()))
    parts, failures, total = [], [], 0
    for name, got in counted:
        if isinstance(got, list):
            failures.append(f"{name}: " + ("; ".join(got) or "no RPC endpoint"))
            continue
        endpoint, (count, window) = got
        total += count
        parts.append(f"{name} {count} (blocks {window.from_block}-{window.to_block} via {endpoint})")
    source = "TokenCreated events: " + ", ".join(parts) if parts else "TokenCreated events"
    if failures:
        return Reading("tokens_created", None, source, "not every chain was read: " + "; ".join(failures))
    return Reading("tokens_created", float(total), source)


async def read_metrics(
    cfg: MetricsReview, chains: Mapping[str, Chain], client: httpx.AsyncClient, now: datetime,
    deploy_key: SecretStr | None = None,
) -> list[Reading]:
    """Every metric of the window, all sources at once, in the report's order."""
    since = now - timedelta(hours=cfg.window_hours)
    fns = cfg.functions
    readings = await asyncio.gather(
        read_convex_metric("daily_active_users", fns.daily_active_users, cfg, client, since, now, deploy_key),
        read_tokens_created(chains, cfg, client, since),
        read_convex_metric("transaction_volume", fns.transaction_volume, cfg, client, since, now, deploy_key),
        read_convex_metric("error_rate", fns.error_rate, cfg, client, since, now, deploy_key),
    )
    return list(readings)


# ---- judging ------------------------------------------------------------------------------------

def baseline(history: Sequence[tuple[datetime, float]], now: datetime, days: int) -> Baseline | None:
    """The median of one value per UTC day (its latest run) over the `days` before `now`."""
    start = now - timedelta(days=days)
    latest: dict[str, tuple[datetime, float]] = {}
    for at, value in history:
        if not start <= at < now or not math.isfinite(value):
            continue
        day = at.astimezone(UTC).date().isoformat()
        if day not in latest or at > latest[day][0]:
            latest[day] = (at, value)
    if not latest:
        return None
    return Baseline(statistics.median(v for _, v in latest.values()), len(latest))


def fmt(metric: str, value: float) -> str:
    unit = METRICS.get(metric, ("", "count"))[1]
    if unit == "fraction":
        return f"{value * 100:.2f}%"
    if unit == "usd":
        return f"${value:,.2f}"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def change(value: float, base: float) -> float:
    if base == 0:
        return 0.0 if value == 0 else math.inf
    return (value - base) / base


def judge(reading: Reading, base: Baseline | None, cfg: MetricsReview, window_hours: int) -> CheckResult:
    label = METRICS[reading.metric][0]
    expected = f"within +/-{cfg.band * 100:g}% of the {cfg.baseline_days}-day baseline"

    def result(status: Status, observed: str, detail: str) -> CheckResult:
        return CheckResult(f"metrics:{reading.metric}", ITEM, status, observed, expected, detail=detail,
                           severity=cfg.severity.value, target=label, group="metrics")

    if reading.value is None:
        why = reading.error or "no value"
        return result(Status.unknown, f"unknown ({why})", why)
    value = fmt(reading.metric, reading.value)
    if base is None:
        return result(Status.ok, f"{value} in {window_hours} h; no baseline yet (no earlier run in "
                                 f"{cfg.baseline_days} days)", reading.source)
    delta = change(reading.value, base.value)
    shown = "new activity from zero" if math.isinf(delta) else f"{delta * 100:+.0f}%"
    observed = (f"{value} in {window_hours} h; baseline {fmt(reading.metric, base.value)} "
                f"(median of {base.days} day(s)), {shown}")
    if abs(delta) > cfg.band:
        detail = f"{label} changed {shown} against its baseline, beyond the +/-{cfg.band * 100:g}% band"
        return result(Status(cfg.flag_status), observed, detail)
    return result(Status.ok, observed, reading.source)


def review(
    readings: Sequence[Reading], history: Mapping[str, Sequence[tuple[datetime, float]]], cfg: MetricsReview,
    now: datetime,
) -> list[CheckResult]:
    """One result per metric, judged against its baseline from `history` (metric -> (time, value))."""
    return [judge(r, baseline(history.get(r.metric, ()), now, cfg.baseline_days), cfg, cfg.window_hours)
            for r in readings]


def values(readings: Sequence[Reading]) -> dict[str, float | None]:
    return {r.metric: r.value for r in readings}


def history_rows(readings: Sequence[Reading]) -> list[dict[str, Any]]:
    """What a run keeps for the next runs' baselines (a failed reading is kept as null, never 0)."""
    return [{"metric": r.metric, "value": r.value, "source": r.source, "error": r.error or ""} for r in readings]


def history_from_rows(
    runs: Sequence[tuple[datetime, Sequence[Mapping[str, Any]]]],
) -> dict[str, list[tuple[datetime, float]]]:
    out: dict[str, list[tuple[datetime, float]]] = {}
    for at, rows in runs:
        for row in rows:
            value, metric = row.get("value"), row.get("metric")
            if isinstance(metric, str) and isinstance(value, int | float) and not isinstance(value, bool):
                out.setdefault(metric, []).append((at, float(value)))
    return out
