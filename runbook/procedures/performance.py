"""Monthly Maintenance 2, "Performance Review": metrics trends, slow endpoints, resource usage.

The data is the history the checklists already keep as versioned Prefect table artifacts (read
back by the flow, handed here as `(created, rows)` per run):

- System Health Check (`system-health-table`, rows: item, check, status, observed, latency_ms):
  probe latency and failures per endpoint, RPC latency and failures per chain (an RPC endpoint
  belongs to the chain whose `rpc_names` list it);
- Metrics Review (`metrics-history-<env>`, rows: metric, value): the backend's error rate;
- Wallet Balance Check (`wallet-balances-<env>`, rows: key, chain, wallet, burn_per_day): burn.

Two windows of `window_days` (30) end now: "this month" and the one before it, "last month". Each
measure is summarised per window (latency: p50 and p95 of every probe; error rate: the share of
probes that failed, or the mean of the backend's daily error rates; burn: the mean burn per day)
and compared. A window without samples has no value, and the report says so: no history is never
read as zero latency or zero errors.
"""

from __future__ import annotations

import base64
import io
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from runbook.checks import CheckResult, Status
from runbook.config_types import Severity, Strict

ITEM_TRENDS = "Analyze metrics trends"
ITEM_SLOW = "Optimize slow endpoints"
ITEM_RESOURCES = "Review resource usage"

Run = tuple[datetime, Sequence[Mapping[str, Any]]]


class PerformanceReview(Strict):
    window_days: Annotated[int, Field(ge=1, le=92)] = Field(
        default=30, description="'this month' is this many days up to now; 'last month' the same before it")
    change_warn: Annotated[float, Field(gt=0, le=100)] = Field(
        default=0.5, description="flag a latency or error rate that rose by more than this share (0.5 = +50 %)")
    history_limit: Annotated[int, Field(ge=10, le=100_000)] = Field(
        default=5000, description="artifact versions read per history, newest first")
    chart: bool = Field(default=True, description="embed a PNG chart in the markdown report")
    severity: Severity = Severity.P3


# ---- the maths ----------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): always a value that was observed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def change(current: float | None, previous: float | None) -> float | None:
    """Relative change from previous to current; None when either is missing or previous is 0
    (a rise from nothing has no ratio) unless both are 0."""
    if current is None or previous is None:
        return None
    if previous == 0:
        return 0.0 if current == 0 else None
    return (current - previous) / previous


@dataclass(frozen=True)
class Sample:
    at: datetime
    value: float


@dataclass(frozen=True)
class Measure:
    """What is measured: (kind, subject) with how it is summarised."""

    kind: str  # probe_latency | rpc_latency | probe_errors | rpc_errors | backend_error_rate | wallet_burn
    subject: str
    unit: str


KIND_TITLES = {
    "probe_latency": "Probe latency",
    "rpc_latency": "RPC latency",
    "probe_errors": "Probe error rate",
    "rpc_errors": "RPC error rate",
    "backend_error_rate": "Backend error rate",
    "wallet_burn": "Wallet burn",
}
LATENCY_KINDS = ("probe_latency", "rpc_latency")
ERROR_KINDS = ("probe_errors", "rpc_errors", "backend_error_rate")


def stats_of(kind: str) -> tuple[str, ...]:
    return ("p50", "p95") if kind in LATENCY_KINDS else ("mean",)


def summarise(values: Sequence[float], stat: str) -> float | None:
    if not values:
        return None
    if stat == "mean":
        return statistics.fmean(values)
    return percentile(values, float(stat[1:]))


@dataclass(frozen=True)
class Trend:
    measure: Measure
    stat: str
    current: float | None
    previous: float | None
    n_current: int
    n_previous: int

    @property
    def change(self) -> float | None:
        return change(self.current, self.previous)

    def worsened(self, threshold: float) -> bool:
        """Latency and error rates that rose beyond the threshold (or from none to some errors)."""
        if self.measure.kind not in (*LATENCY_KINDS, *ERROR_KINDS) or self.stat == "p50":
            return False
        if self.current is None or self.previous is None:
            return False
        if self.previous == 0:
            return self.current > 0
        c = self.change
        return c is not None and c > threshold


def windows(now: datetime, days: int) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """(this month, last month) as [start, end) pairs ending now."""
    start = now - timedelta(days=days)
    return (start, now), (start - timedelta(days=days), start)


def trends(series: Mapping[Measure, Sequence[Sample]], now: datetime, days: int) -> list[Trend]:
    (cur_start, cur_end), (prev_start, prev_end) = windows(now, days)
    out = []
    for measure, samples in series.items():
        cur = [s.value for s in samples if cur_start <= s.at < cur_end]
        prev = [s.value for s in samples if prev_start <= s.at < prev_end]
        for stat in stats_of(measure.kind):
            out.append(Trend(measure, stat, summarise(cur, stat), summarise(prev, stat), len(cur), len(prev)))
    order = list(KIND_TITLES)
    return sorted(out, key=lambda t: (order.index(t.measure.kind), t.measure.subject, t.stat))


# ---- history rows -> samples --------------------------------------------------------------------

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def health_series(
    runs: Iterable[Run], endpoints: Iterable[str], rpc_chain: Mapping[str, str]
) -> dict[Measure, list[Sample]]:
    """Probe latency and failures per endpoint, RPC latency and failures per chain.

    A probe that got no answer has no latency to count (its time is the deadline, not the
    endpoint's speed) but counts as a failure; an `unknown` check was not probed and counts as neither.
    """
    names = set(endpoints)
    out: dict[Measure, list[Sample]] = {}
    for at, rows in runs:
        for row in rows:
            check = row.get("check")
            if check in names:
                subject, lat_kind, err_kind = str(check), "probe_latency", "probe_errors"
            elif check in rpc_chain:
                subject, lat_kind, err_kind = rpc_chain[str(check)], "rpc_latency", "rpc_errors"
            else:
                continue  # a chain's rollup line, or an endpoint no longer configured
            status = row.get("status")
            if status not in ("ok", "warn", "fail"):
                continue
            answered = not str(row.get("observed", "")).startswith("no answer")
            latency = _number(row.get("latency_ms"))
            if answered and latency is not None:
                out.setdefault(Measure(lat_kind, subject, "ms"), []).append(Sample(at, latency))
            out.setdefault(Measure(err_kind, subject, "share"), []).append(
                Sample(at, 0.0 if status in ("ok", "warn") else 1.0))
    return out


def metrics_series(runs: Iterable[Run]) -> dict[Measure, list[Sample]]:
    """The backend's error rate, one sample per Metrics Review run that could read it."""
    out: dict[Measure, list[Sample]] = {}
    for at, rows in runs:
        for row in rows:
            value = _number(row.get("value"))
            if row.get("metric") == "error_rate" and value is not None:
                out.setdefault(Measure("backend_error_rate", "convex functions", "share"), []).append(Sample(at, value))
    return out


def wallet_series(runs: Iterable[Run], symbols: Mapping[str, str]) -> dict[Measure, list[Sample]]:
    """Each wallet's burn per day as the Wallet Balance Check computed it (None = not burning or
    not enough history: left out, not zero)."""
    out: dict[Measure, list[Sample]] = {}
    for at, rows in runs:
        for row in rows:
            burn = _number(row.get("burn_per_day"))
            if burn is None or not row.get("chain"):
                continue
            chain = str(row["chain"])
            subject = f"{chain}:{row.get('wallet') or row.get('key')}"
            out.setdefault(Measure("wallet_burn", subject, f"{symbols.get(chain, '')}/day".strip("/")), []).append(
                Sample(at, burn))
    return out


# ---- judging and reporting ----------------------------------------------------------------------

def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "no data"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "share":
        return f"{value * 100:.2f}%"
    return f"{value:.6g} {unit}"


def fmt_change(t: Trend) -> str:
    if t.current is None:
        return "no data this month"
    if t.previous is None:
        return "no data last month"
    c = t.change
    if c is None:
        return "new (was 0)"
    return f"{c * 100:+.1f}%"


def judge(cfg: PerformanceReview, found: Sequence[Trend], sources: Mapping[str, str]) -> list[CheckResult]:
    """One line per group of measures: latency (slow endpoints), error rates (trends), wallet burn
    (resource usage). `sources` maps a group to the history it needs, to name it when it is empty."""
    sev = cfg.severity.value
    groups = [
        ("perf:latency", ITEM_SLOW, "Probe and RPC latency", LATENCY_KINDS),
        ("perf:errors", ITEM_TRENDS, "Error rates", ERROR_KINDS),
        ("perf:wallet-burn", ITEM_RESOURCES, "Wallet burn", ("wallet_burn",)),
    ]
    out = []
    for name, item, target, kinds in groups:
        mine = [t for t in found if t.measure.kind in kinds]
        expected = f"no p95 latency or error rate up more than {cfg.change_warn * 100:.0f}% month over month" \
            if name != "perf:wallet-burn" else "burn per day known for both months"
        with_now = [t for t in mine if t.current is not None]
        if not with_now:
            why = f"no history in the last {cfg.window_days} days ({sources.get(name, 'no source')})"
            out.append(CheckResult(name, item, Status.unknown, f"unknown: {why}", expected, why, severity=sev,
                                   target=target))
            continue
        with_both = [t for t in with_now if t.previous is not None]
        prefix = "" if with_both else f"no history for the {cfg.window_days} days before, nothing to compare; "
        worse = [t for t in with_both if t.worsened(cfg.change_warn)]
        if worse:
            listed = ", ".join(f"{t.measure.subject} {KIND_TITLES[t.measure.kind].lower()} {t.stat} "
                               f"{fmt(t.previous, t.measure.unit)} -> {fmt(t.current, t.measure.unit)} "
                               f"({fmt_change(t)})" for t in worse[:6])
            out.append(CheckResult(name, item, Status.warn, f"{len(worse)} worse: {listed}", expected,
                                   severity=sev, target=target))
            continue
        shown = [t for t in with_now if t.stat != "p50"][:6]
        listed = ", ".join(f"{t.measure.subject} {t.stat} {fmt(t.current, t.measure.unit)}"
                           + (f" ({fmt_change(t)})" if t.previous is not None else "") for t in shown)
        out.append(CheckResult(name, item, Status.ok, prefix + listed, expected, severity=sev, target=target))
    return out


def table_rows(found: Sequence[Trend]) -> list[dict[str, Any]]:
    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 6)

    return [{"measure": KIND_TITLES[t.measure.kind], "subject": t.measure.subject, "stat": t.stat,
             "unit": t.measure.unit, "this_month": r(t.current), "last_month": r(t.previous),
             "change": fmt_change(t), "samples_this_month": t.n_current, "samples_last_month": t.n_previous}
            for t in found]


def render_table(found: Sequence[Trend], days: int) -> str:
    lines = [f"| measure | subject | stat | this month ({days} d) | last month | change | samples |",
             "|---|---|---|---|---|---|---|"]
    for t in found:
        lines.append(f"| {KIND_TITLES[t.measure.kind]} | {t.measure.subject} | {t.stat} | "
                     f"{fmt(t.current, t.measure.unit)} | {fmt(t.previous, t.measure.unit)} | {fmt_change(t)} | "
                     f"{t.n_current} / {t.n_previous} |")
    return "\n".join(lines) + "\n"


def daily_p95(samples: Sequence[Sample]) -> list[tuple[datetime, float]]:
    days: dict[datetime, list[float]] = {}
    for s in samples:
        days.setdefault(s.at.replace(hour=0, minute=0, second=0, microsecond=0), []).append(s.value)
    return [(day, percentile(v, 95)) for day, v in sorted(days.items())]


def chart_png(series: Mapping[Measure, Sequence[Sample]], found: Sequence[Trend], now: datetime, days: int,
              title: str) -> bytes:
    """Two panels: daily p95 latency per endpoint and chain over both months, and each p95 last
    month vs this month. A panel without data says so instead of drawing an empty axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.dates import DateFormatter

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), dpi=72)
    try:
        fig.suptitle(title)
        (cur_start, _), (prev_start, _) = windows(now, days)
        drawn = False
        for measure, samples in sorted(series.items(), key=lambda kv: (kv[0].kind, kv[0].subject)):
            if measure.kind not in LATENCY_KINDS:
                continue
            points = [(d, v) for d, v in daily_p95(samples) if d >= prev_start - timedelta(days=1)]
            if points:
                top.plot([d for d, _ in points], [v for _, v in points], marker="o", markersize=3,
                         label=f"{measure.subject} ({'RPC' if measure.kind == 'rpc_latency' else 'probe'})")
                drawn = True
        top.axvline(cur_start, color="grey", linestyle="--", linewidth=1)  # where 'this month' starts
        top.set_ylabel("daily p95 latency (ms)")
        if drawn:
            top.legend(fontsize=7, ncol=3)
            top.xaxis.set_major_formatter(DateFormatter("%m-%d"))
        else:
            top.text(0.5, 0.5, "no latency history", ha="center", va="center", transform=top.transAxes)
        p95 = [t for t in found if t.measure.kind in LATENCY_KINDS and t.stat == "p95"]
        if p95:
            xs = range(len(p95))
            width = 0.4
            bottom.bar([x - width / 2 for x in xs], [t.previous or 0 for t in p95], width, label="last month",
                       color="#b0b0b0")
            bottom.bar([x + width / 2 for x in xs], [t.current or 0 for t in p95], width, label="this month",
                       color="#2b6cb0")
            for x, t in zip(xs, p95, strict=True):
                if t.previous is None:
                    bottom.text(x - width / 2, 0, "no data", rotation=90, fontsize=7, ha="center", va="bottom")
            labels = [f"{t.measure.subject} ({'RPC' if t.measure.kind == 'rpc_latency' else 'probe'})" for t in p95]
            bottom.set_xticks(list(xs), labels, rotation=20, fontsize=8, ha="right")
            bottom.set_ylabel("p95 latency (ms)")
            bottom.legend(fontsize=8)
        else:
            bottom.text(0.5, 0.5, "no latency history", ha="center", va="center", transform=bottom.transAxes)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def image_markdown(png: bytes, alt: str) -> str:
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"
