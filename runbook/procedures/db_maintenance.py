"""Weekly Maintenance 3, "Database Optimization": clean old data (30+ days), review slow queries.

Old data is deleted through the deployment's documented function API (`POST /api/mutation`,
`{"path", "args", "format": "json"}` -> `{"status": "success", "value": ...}`, shared/vendors/
convex.md section 1), calling the platform's own maintenance functions with the deploy key:

- `maintenance:countOlderThan({table, beforeMs})` (a query) -> `{"total": n, "older": m}`;
- `maintenance:deleteOlderThan({table, beforeMs, limit})` (a mutation) -> `{"deleted": n, "hasMore": b}`:
  at most `limit` documents older than `beforeMs` (by `_creationTime`), in one transaction.

Convex bounds what one mutation may read and write, so the deletion goes in batches of
`batch_size`, and a run stops after `max_batches` per table (the next run goes on). The cutoff of
each table is fixed when a cleanup starts and kept with its progress (batches, rows deleted) in a
store the caller provides (a Prefect Variable): a re-run after a crash continues the same cutoff
instead of starting a new one, and a finished cleanup is never repeated by a re-run. Counts are
read before and after, and the effect is verified by reading back that nothing older is left.

Slow queries: Convex has no query planner or slow-query log to read; what it exposes is the
function log `npx convex logs` reads, whose entries carry each execution's time. The review is the
95th percentile of execution time per function over the log window against a threshold. Indexes
are declared in the application's `convex/schema.ts` and deployed with its code: this step reports
which functions are slow and leaves index changes to a code change.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol

import httpx
from pydantic import Field, SecretStr, field_validator

from runbook.checks import CheckResult, Status
from runbook.clients import convex_logs, convex_query
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict

ITEM_CLEAN = "Clean old data (30+ days)"
ITEM_SLOW = "Review slow queries"
ITEM_INDEXES = "Update indexes if needed"

TableName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
FunctionPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$")]


class TableRetention(Strict):
    name: TableName
    retention_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="keep this many days; default: the section's retention_days")


class DatabaseMaintenance(Strict):
    convex_url: HttpUrl
    convex_deploy_key: SecretRef = Field(description="the maintenance functions answer only the deploy key")
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30
    # At most 25: the cleanup's progress is one Prefect Variable, whose value holds 5000 characters.
    tables: list[TableRetention] = Field(min_length=1, max_length=25, description="only these tables are ever cleaned")
    batch_size: Annotated[int, Field(ge=1, le=4000)] = Field(
        default=500, description="documents deleted per mutation (one transaction)")
    max_batches: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1000, description="batches per table per run; the next run continues")
    count_function: FunctionPath = "maintenance:countOlderThan"
    delete_function: FunctionPath = "maintenance:deleteOlderThan"
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    deadline_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=1800, description="for the whole cleanup; what is left waits for the next run")
    slow_query_ms: Annotated[float, Field(gt=0)] = Field(
        default=1000, description="a function whose p95 execution time is above this is slow")
    min_executions: Annotated[int, Field(ge=1)] = Field(
        default=5, description="fewer executions than this in the window make no p95")
    log_window_hours: Annotated[int, Field(ge=1, le=24 * 7)] = 24
    log_deadline_s: Annotated[float, Field(gt=0, le=600)] = 30
    log_settle_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    log_max_pages: Annotated[int, Field(ge=1, le=1000)] = 20
    severity: Severity = Severity.P3

    @field_validator("tables")
    @classmethod
    def _unique_tables(cls, tables: list[TableRetention]) -> list[TableRetention]:
        seen: set[str] = set()
        for t in tables:
            if t.name in seen:
                raise ValueError(f"table {t.name!r} is listed twice")
            seen.add(t.name)
        return tables

    def days_for(self, table: TableRetention) -> int:
        return table.retention_days or self.retention_days

    def secret_refs(self) -> list[SecretRef]:
        return [self.convex_deploy_key]


# ---- progress, kept between runs ----------------------------------------------------------------

@dataclass
class TableProgress:
    cutoff_ms: int
    retention_days: int
    batches: int = 0
    deleted: int = 0
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"cutoff_ms": self.cutoff_ms, "retention_days": self.retention_days, "batches": self.batches,
                "deleted": self.deleted, "done": self.done}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TableProgress:
        return cls(int(d["cutoff_ms"]), int(d["retention_days"]), int(d.get("batches", 0)),
                   int(d.get("deleted", 0)), bool(d.get("done", False)))


@dataclass
class Progress:
    """One cleanup: started once, continued by every run until each table is done."""

    started_at: str
    tables: dict[str, TableProgress] = field(default_factory=dict)
    runs: int = 0

    @property
    def finished(self) -> bool:
        return bool(self.tables) and all(t.done for t in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {"started_at": self.started_at, "runs": self.runs,
                "tables": {name: t.to_dict() for name, t in self.tables.items()}}

    @classmethod
    def from_dict(cls, d: Any) -> Progress | None:
        """None for anything that is not a saved progress (a damaged one starts a new cleanup)."""
        if not isinstance(d, dict) or not isinstance(d.get("tables"), dict):
            return None
        try:
            return cls(str(d["started_at"]), {str(k): TableProgress.from_dict(v) for k, v in d["tables"].items()},
                       int(d.get("runs", 0)))
        except (KeyError, TypeError, ValueError):
            return None


class ProgressStore(Protocol):
    async def load(self) -> Any: ...

    async def save(self, value: dict[str, Any]) -> None: ...


def plan(cfg: DatabaseMaintenance, saved: Progress | None, now: datetime) -> tuple[Progress, bool]:
    """The cleanup this run works on, and whether it continues an unfinished one.

    An unfinished saved cleanup keeps its cutoffs; a table added to the configuration since then
    gets its cutoff now. A finished one (or none) starts a new cleanup with cutoffs from now.
    """
    resumed = saved is not None and not saved.finished
    progress = saved if resumed and saved is not None else Progress(started_at=now.isoformat())
    for table in cfg.tables:
        if table.name not in progress.tables:
            days = cfg.days_for(table)
            cutoff = int((now - timedelta(days=days)).timestamp() * 1000)
            progress.tables[table.name] = TableProgress(cutoff, days)
    progress.runs += 1
    return progress, resumed


# ---- the backend's answers ----------------------------------------------------------------------

class UnexpectedAnswer(Exception):
    """A maintenance function answered, but not in the shape its contract says."""


def _count(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise UnexpectedAnswer(f"{where}: `{name}` is not a count ({value!r})")
    return int(value)


def parse_counts(value: Any, where: str) -> tuple[int, int]:
    """`{"total": n, "older": m}` -> (n, m)."""
    if not isinstance(value, dict):
        raise UnexpectedAnswer(f"{where}: answered {type(value).__name__}, not an object with total and older")
    total, older = _count(value.get("total"), "total", where), _count(value.get("older"), "older", where)
    if older > total:
        raise UnexpectedAnswer(f"{where}: older ({older}) is more than total ({total})")
    return total, older


def parse_deletion(value: Any, limit: int, where: str) -> tuple[int, bool]:
    """`{"deleted": n, "hasMore": b}` -> (n, b); more than `limit` deleted breaks the bound, so it is an error."""
    if not isinstance(value, dict):
        raise UnexpectedAnswer(f"{where}: answered {type(value).__name__}, not an object with deleted and hasMore")
    deleted = _count(value.get("deleted"), "deleted", where)
    more = value.get("hasMore")
    if not isinstance(more, bool):
        raise UnexpectedAnswer(f"{where}: `hasMore` is not true or false ({more!r})")
    if deleted > limit:
        raise UnexpectedAnswer(f"{where}: deleted {deleted}, more than the batch limit {limit}")
    return deleted, more


# ---- one table ----------------------------------------------------------------------------------

@dataclass
class TableOutcome:
    table: str
    retention_days: int
    cutoff_ms: int
    before_total: int | None = None
    before_older: int | None = None
    after_total: int | None = None
    after_older: int | None = None
    deleted_now: int = 0
    batches_now: int = 0
    deleted_total: int = 0
    batches_total: int = 0
    largest_batch: int = 0
    done: bool = False
    resumed: bool = False
    error: str | None = None
    stopped_by: str = ""  # "max_batches" | "deadline" when a bound ended the run with more left

    def row(self) -> dict[str, Any]:
        return {
            "table": self.table, "retention_days": self.retention_days,
            "cutoff": _iso(self.cutoff_ms), "before_total": self.before_total, "before_older": self.before_older,
            "deleted": self.deleted_now, "batches": self.batches_now, "largest_batch": self.largest_batch,
            "deleted_in_cleanup": self.deleted_total, "after_total": self.after_total,
            "after_older": self.after_older, "done": self.done, "error": self.error or "",
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


Call = Callable[[str, dict[str, Any], str], Awaitable[Any]]


async def clean_table(
    cfg: DatabaseMaintenance,
    name: str,
    progress: TableProgress,
    call: Call,
    save: Callable[[], Awaitable[None]],
    *,
    resumed: bool,
    dry_run: bool,
    deadline: float,
) -> TableOutcome:
    """Count, delete in batches (saving progress after each), count again."""
    out = TableOutcome(name, progress.retention_days, progress.cutoff_ms, deleted_total=progress.deleted,
                       batches_total=progress.batches, done=progress.done, resumed=resumed)
    args = {"table": name, "beforeMs": progress.cutoff_ms}
    try:
        out.before_total, out.before_older = parse_counts(await call(cfg.count_function, args, "query"),
                                                          f"{cfg.count_function}({name})")
    except (convex_query.QueryFailed, UnexpectedAnswer) as exc:
        out.error = f"not counted, nothing deleted: {exc}"
        return out
    if dry_run or progress.done or out.before_older == 0:
        if not dry_run and not progress.done:
            progress.done = out.done = True  # nothing older than the cutoff: no mutation to send
            await save()
        out.after_total, out.after_older = out.before_total, out.before_older
        return out
    while True:
        if out.batches_now >= cfg.max_batches:
            out.stopped_by = "max_batches"
            break
        if time.monotonic() >= deadline:
            out.stopped_by = "deadline"
            break
        where = f"{cfg.delete_function}({name}) batch {progress.batches + 1}"
        try:
            answer = await call(cfg.delete_function, {**args, "limit": cfg.batch_size}, "mutation")
            deleted, more = parse_deletion(answer, cfg.batch_size, where)
        except (convex_query.QueryFailed, UnexpectedAnswer) as exc:
            out.error = f"stopped after {progress.batches} batches: {exc}"
            break
        progress.batches += 1
        progress.deleted += deleted
        progress.done = not more
        out.batches_now += 1
        out.deleted_now += deleted
        out.largest_batch = max(out.largest_batch, deleted)
        await save()
        if not more:
            break
    out.deleted_total, out.batches_total, out.done = progress.deleted, progress.batches, progress.done
    try:
        out.after_total, out.after_older = parse_counts(await call(cfg.count_function, args, "query"),
                                                        f"{cfg.count_function}({name}) after")
    except (convex_query.QueryFailed, UnexpectedAnswer) as exc:
        out.error = (out.error + "; " if out.error else "") + f"not verified: {exc}"
    return out


def judge_table(cfg: DatabaseMaintenance, out: TableOutcome, dry_run: bool) -> CheckResult:
    sev = cfg.severity.value
    expected = f"no {out.table} document older than {out.retention_days} days (before {_iso(out.cutoff_ms)})"

    def result(status: Status, observed: str, detail: str = "") -> CheckResult:
        return CheckResult(f"db:clean:{out.table}", ITEM_CLEAN, status, observed, expected, detail,
                           severity=sev, target=f"{out.table} ({out.retention_days} days)", group="convex")

    if out.before_older is None:
        return result(Status.unknown, f"unknown: {out.error}", out.error or "")
    counts = f"{out.before_total:,} documents, {out.before_older:,} older than the cutoff"
    if dry_run:
        return result(Status.ok, f"dry run: {counts}; would delete {out.before_older:,} in batches of "
                                 f"<= {cfg.batch_size}; nothing deleted")
    if out.before_older == 0 and out.batches_now == 0:
        # Done by an earlier run of this cleanup (and still clean), or nothing was ever old.
        return result(Status.ok, f"{counts}; nothing to delete")
    resumed = f" (continuing the cleanup started earlier: {out.batches_total - out.batches_now} batches before)" \
        if out.resumed and out.batches_total > out.batches_now else ""
    batches = "1 batch" if out.batches_now == 1 else f"{out.batches_now} batches"
    did = (f"deleted {out.deleted_now:,} in {batches} of <= {cfg.batch_size} "
           f"(largest {out.largest_batch}){resumed}")
    after = "" if out.after_older is None else \
        f"; after: {out.after_total:,} documents, {out.after_older:,} older than the cutoff"
    if out.error and out.after_older is None and not out.done:
        return result(Status.fail, f"{counts}; {did}; {out.error}; a re-run continues at the same cutoff",
                      out.error)
    if out.error and not out.done:
        return result(Status.fail, f"{counts}; {did}; {out.error}{after}; a re-run continues at the same cutoff",
                      out.error)
    if out.after_older is None:
        return result(Status.unknown, f"{counts}; {did}; {out.error}", out.error or "")
    if out.done and out.after_older > 0:
        return result(Status.fail, f"{counts}; {did}{after}: the function said none was left",
                      "deleteOlderThan reported no more, yet older documents remain")
    if not out.done:
        bound = {"max_batches": f"max_batches ({cfg.max_batches})", "deadline": f"deadline_s ({cfg.deadline_s:g} s)"}
        return result(Status.warn, f"{counts}; {did}{after}; stopped at {bound.get(out.stopped_by, 'a bound')}, "
                                   "the next run continues at the same cutoff")
    return result(Status.ok, f"{counts}; {did}{after}")


async def clean_old_data(
    cfg: DatabaseMaintenance,
    client: httpx.AsyncClient,
    deploy_key: SecretStr,
    store: ProgressStore,
    now: datetime,
    *,
    dry_run: bool = False,
) -> tuple[list[CheckResult], list[dict[str, Any]], dict[str, Any]]:
    """Every configured table in turn (one at a time: the cleanup is a background load on the
    production database). Returns (results, table rows, the cleanup's state)."""
    saved = Progress.from_dict(await store.load())
    progress, resumed = plan(cfg, saved, now)  # a dry run uses the same plan and never saves it

    async def call(path: str, args: dict[str, Any], kind: str) -> Any:
        return await convex_query.query(client, cfg.convex_url, path, args, cfg.timeout_s, deploy_key,
                                        kind="mutation" if kind == "mutation" else "query")

    async def save() -> None:
        if not dry_run:
            await store.save(progress.to_dict())

    await save()
    deadline = time.monotonic() + cfg.deadline_s
    outcomes = []
    for table in cfg.tables:
        outcomes.append(await clean_table(cfg, table.name, progress.tables[table.name], call, save,
                                          resumed=resumed, dry_run=dry_run, deadline=deadline))
    await save()
    state = {"started_at": progress.started_at, "resumed": resumed, "runs": progress.runs,
             "finished": progress.finished, "dry_run": dry_run}
    return [judge_table(cfg, o, dry_run) for o in outcomes], [o.row() for o in outcomes], state


# ---- slow queries -------------------------------------------------------------------------------

def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sample: always a value that was seen."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class FunctionTiming:
    identifier: str
    udf_type: str
    executions: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float


def timings(entries: Iterable[convex_logs.LogEntry], since_s: float, min_executions: int) -> list[FunctionTiming]:
    """Per function, the execution times of its completed runs in the window; slowest p95 first.
    Functions with fewer than `min_executions` runs get no percentiles (one slow run is not a trend)."""
    times: dict[str, list[float]] = {}
    kinds: dict[str, str] = {}
    for e in entries:
        if e.kind != "Completion" or e.execution_time_s is None or e.timestamp_s < since_s:
            continue
        times.setdefault(e.identifier, []).append(e.execution_time_s * 1000)
        kinds.setdefault(e.identifier, e.udf_type)
    out = []
    for ident, ms in times.items():
        enough = len(ms) >= min_executions
        out.append(FunctionTiming(ident, kinds[ident], len(ms), percentile(ms, 50) if enough else None,
                                  percentile(ms, 95) if enough else None, max(ms)))
    return sorted(out, key=lambda t: (-(t.p95_ms if t.p95_ms is not None else -1), -t.max_ms, t.identifier))


def judge_slow_queries(cfg: DatabaseMaintenance, read: convex_logs.LogRead, now: datetime
                       ) -> tuple[CheckResult, list[FunctionTiming]]:
    sev = cfg.severity.value
    expected = f"every function's p95 execution time <= {cfg.slow_query_ms:g} ms ({cfg.log_window_hours} h)"

    def result(status: Status, observed: str, detail: str = "") -> CheckResult:
        return CheckResult("db:slow-queries", ITEM_SLOW, status, observed, expected, detail,
                           latency_s=read.latency_s, severity=sev, target="Convex functions", group="convex")

    if read.error and not read.entries:
        return result(Status.unknown, f"unknown: the function log was not read ({read.error})", read.error), []
    since = (now - timedelta(hours=cfg.log_window_hours)).timestamp()
    found = timings(read.entries, since, cfg.min_executions)
    if not found:
        why = "the function log has no executions with an execution time in the window"
        return result(Status.unknown, f"unknown: {why}", why), []
    partial = "" if read.complete and not read.error else \
        f" (partial: {read.error or 'a bound stopped the reading'})"
    measured = [t for t in found if t.p95_ms is not None]
    if not measured:
        why = f"no function ran {cfg.min_executions} times or more in the window"
        return result(Status.unknown, f"unknown: {why}{partial}", why), found
    slow = [t for t in measured if t.p95_ms is not None and t.p95_ms > cfg.slow_query_ms]
    if slow:
        names = ", ".join(f"{t.identifier} p95 {t.p95_ms:.0f} ms ({t.executions} runs)" for t in slow[:5])
        return result(Status.warn, f"{len(slow)} of {len(measured)} functions slow: {names}{partial}"), found
    top = measured[0]
    return result(Status.ok, f"{len(measured)} functions, slowest p95 {top.identifier} {top.p95_ms:.0f} ms"
                             f"{partial}"), found


async def review_slow_queries(
    cfg: DatabaseMaintenance, client: httpx.AsyncClient, deploy_key: SecretStr, now: datetime
) -> tuple[CheckResult, list[FunctionTiming]]:
    since = now - timedelta(hours=cfg.log_window_hours)
    read = await convex_logs.read_function_logs(
        client, cfg.convex_url, deploy_key, since_ms=since.timestamp() * 1000, until_ms=now.timestamp() * 1000,
        deadline_s=cfg.log_deadline_s, max_pages=cfg.log_max_pages, settle_s=cfg.log_settle_s,
    )
    return judge_slow_queries(cfg, read, now)


def not_read(cfg: DatabaseMaintenance, reason: str) -> list[CheckResult]:
    """The secret could not be resolved: nothing was counted, deleted or read."""
    sev = cfg.severity.value
    return [
        *(CheckResult(f"db:clean:{t.name}", ITEM_CLEAN, Status.unknown, f"unknown: {reason}", "old data cleaned",
                      reason, severity=sev, target=f"{t.name} ({cfg.days_for(t)} days)", group="convex")
          for t in cfg.tables),
        CheckResult("db:slow-queries", ITEM_SLOW, Status.unknown, f"unknown: {reason}", "function log read",
                    reason, severity=sev, target="Convex functions", group="convex"),
    ]


def timing_rows(found: Sequence[FunctionTiming], threshold_ms: float) -> list[dict[str, Any]]:
    return [{"function": t.identifier, "type": t.udf_type, "executions": t.executions,
             "p50_ms": None if t.p50_ms is None else round(t.p50_ms, 1),
             "p95_ms": None if t.p95_ms is None else round(t.p95_ms, 1), "max_ms": round(t.max_ms, 1),
             "slow": t.p95_ms is not None and t.p95_ms > threshold_ms} for t in found]


def render_details(cfg: DatabaseMaintenance, rows: Sequence[dict[str, Any]],
                   found: Sequence[FunctionTiming], state: dict[str, Any]) -> str:
    """The tables under the checklist lines: what each table held and lost, the slowest functions."""
    lines = []
    if state.get("resumed"):
        lines += [f"Continues the cleanup started {state['started_at']} (run {state['runs']}): same cutoffs.", ""]
    if rows:
        lines += ["| table | keep (days) | cutoff | before | older | deleted | batches | after | older after |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            def cell(v: Any) -> str:
                return "unknown" if v is None else (f"{v:,}" if isinstance(v, int) else str(v))
            lines.append(f"| {r['table']} | {r['retention_days']} | {r['cutoff']} | {cell(r['before_total'])} | "
                         f"{cell(r['before_older'])} | {r['deleted']:,} | {r['batches']} | "
                         f"{cell(r['after_total'])} | {cell(r['after_older'])} |")
        lines.append("")
    if found:
        lines += [f"Slowest functions ({cfg.log_window_hours} h, threshold p95 {cfg.slow_query_ms:g} ms):", "",
                  "| function | type | runs | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|---|"]
        for t in found[:10]:
            p50 = "n/a" if t.p50_ms is None else f"{t.p50_ms:.0f}"
            p95 = "n/a" if t.p95_ms is None else f"{t.p95_ms:.0f}"
            lines.append(f"| {t.identifier} | {t.udf_type} | {t.executions} | {p50} | {p95} | {t.max_ms:.0f} |")
        lines.append("")
    lines.append(f"- {ITEM_INDEXES}: indexes are declared in convex/schema.ts and deployed with the code; "
                 "a slow function above is the place to add one.")
    return "\n".join(lines) + "\n"
