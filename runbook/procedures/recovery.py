"""Recovery Procedures (Frontend, Backend, Full System, Database) and Emergency Procedures 2, Data Loss.

Full System Recovery is a timed plan, in the runbook's order: Backend (Convex) 5 min, Frontend
(Vercel) 10 min, Monitoring 5 min, Verification 10 min; total RTO 30 min. Each step records its
start, end, duration, budget and outcome. A step that runs past its budget raises the incident's
severity one level and pages (`on_over_budget`); the plan goes on unless the step failed. A failed
step stops the plan: a later step never runs on a broken earlier one, and the report says where it
stopped. Budgets come from the `[recovery]` section so drills and tests can shorten them.

Data Loss ("stop all writes, assess damage scope, restore from backup, verify data integrity"):
the maintenance switch on; live documents per table (a fresh snapshot export, the one documented
way to read every table) against the newest verified backup's export; restore through the
backend's documented import in replace mode (`npx convex import --replace`, i.e.
`POST /api/import?format=zip&mode=replace`, see `import_snapshot`); verify counts and per-table
checksums against the backup; the switch off. The data lost window is the time between the
backup's snapshot and the incident: the measured RPO, against the runbook's 15 minutes.

Drills break what a procedure recovers with the `[recovery.drill]` actions (a command, or one HTTP
request), then run the procedure for real and record the measured RTO/RPO.

No Prefect here: the flows time and order the steps through `run_plan`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import tarfile
import time
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import httpx
from pydantic import Field, SecretStr, model_validator

from runbook.checks import CheckResult, Status
from runbook.clients import commands, convex_query
from runbook.clients.http_probe import BodyTooLarge, describe_error, read_limited
from runbook.clients.vercel import VercelClient, VercelError, previous_good
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict
from runbook.procedures.emergency import MaintenanceSwitch, probe_until_settled

ITEM = "Full System Recovery"
STEP_TITLES = {
    "backend": "Backend (Convex)",
    "frontend": "Frontend (Vercel)",
    "monitoring": "Monitoring",
    "verification": "Verification",
}
ORDER = ("backend", "frontend", "monitoring", "verification")
MAX_IMPORT_ANSWER_BYTES = 64 * 1024


# ---- configuration ------------------------------------------------------------------------------

class Budgets(Strict):
    """Minutes per step, as the runbook's Full System Recovery lists them, and the total RTO."""

    backend: Annotated[float, Field(gt=0, le=1440)] = 5
    frontend: Annotated[float, Field(gt=0, le=1440)] = 10
    monitoring: Annotated[float, Field(gt=0, le=1440)] = 5
    verification: Annotated[float, Field(gt=0, le=1440)] = 10
    rto: Annotated[float, Field(gt=0, le=10_080)] = 30

    def seconds(self, step: str) -> float:
        return float(getattr(self, step)) * 60


class HttpRequest(Strict):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: HttpUrl
    json_body: dict[str, Any] | list[Any] | None = Field(default=None, description="sent as the JSON body")
    ok_status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200, 201, 202, 204])


class Action(Strict):
    """Something done to a deployment: a command (argument list, no shell) or one HTTP request."""

    command: Annotated[list[str], Field(min_length=1)] | None = None
    cwd: str | None = Field(default=None, description="folder the command runs in (relative: to the environment file)")
    http: HttpRequest | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300
    description: str = Field(default="", max_length=300, description="what it does, for the report")

    @model_validator(mode="after")
    def _one(self) -> Action:
        if (self.command is None) == (self.http is None):
            raise ValueError("an action needs exactly one of command, http")
        if self.cwd is not None and self.command is None:
            raise ValueError("cwd: only with command")
        return self

    def describe(self) -> str:
        if self.description:
            return self.description
        if self.command is not None:
            return "`" + " ".join(self.command) + "`"
        assert self.http is not None
        return f"{self.http.method} {self.http.url}"


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")]


class EnvironmentRestore(Strict):
    """Environment variables a recovery puts back (runbook: Backend Recovery "Restore environment
    variables", Frontend Recovery "Copy .env.production"): each name and the secret reference that
    holds its value. The same references are in the Full System Backup's encrypted configuration
    (it stores every referenced secret's value, keyed by reference), so `source` picks where the
    values are read: `references` (the secret store as it is now: a rotated key is restored with
    its new value) or `backup` (the newest complete backup's encrypted configuration: for when the
    secret store itself is lost)."""

    variables: dict[EnvName, SecretRef] = Field(
        default_factory=dict, description="variable name -> where its value is kept")
    source: Literal["references", "backup"] = Field(
        default="references", description="read the values from the references, or from the newest backup")


class FrontendRecovery(Strict):
    """`[recovery.frontend]`: what the frontend step restores besides the deployment."""

    environment: EnvironmentRestore = Field(default_factory=EnvironmentRestore)
    target: Literal["production", "preview", "development"] = Field(
        default="production", description="the Vercel environment the variables belong to")


class BackendRecovery(Strict):
    """`[recovery.backend]`: how the Convex deployment is checked and redeployed."""

    convex_url: HttpUrl
    deploy_key: SecretRef = Field(description="deploy (admin) key; given to the deploy command as CONVEX_DEPLOY_KEY")
    critical_functions: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$")]],
                                  Field(min_length=1)] = Field(
        default_factory=lambda: ["system:health"],
        description="query functions that must answer (the critical paths), called with {} through /api/query")
    redeploy: Action | None = Field(
        default=None, description="the redeploy (`npx convex deploy` in the app checkout); without one the flow "
                                  "pauses for a person to run it")
    settle_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=30, description="how long the functions may take to answer after the redeploy")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10
    environment: EnvironmentRestore = Field(
        default_factory=EnvironmentRestore, description="the deployment's environment variables to restore")


class Monitoring(Strict):
    """`[recovery.monitoring]`: what "monitoring active" means."""

    deployments: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=list, description="scheduled deployments ('flow/deployment') that must be active")
    checklist_flow: str = Field(default="morning-checklist", description="the checklist that must have run recently")
    max_checklist_age_h: Annotated[float, Field(gt=0, le=720)] = 24


class DrillChannel(Strict):
    """Where drill alerts go: never the production contacts."""

    slack_webhook_url: SecretRef | None = None
    pagerduty_routing_key: SecretRef | None = None
    pagerduty_events_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"


class Drill(Strict):
    """`[recovery.drill]`: how a drill breaks what each procedure recovers, and where its alerts go."""

    break_backend: Action | None = Field(default=None, description="makes the backend's functions fail")
    break_frontend: Action | None = Field(default=None, description="puts a bad deployment in production")
    break_data: Action | None = Field(default=None, description="deletes records")
    break_environment: Action | None = Field(
        default=None, description="removes a backend environment variable (done with break_backend)")
    channel: DrillChannel = Field(default_factory=DrillChannel)
    settle_s: Annotated[float, Field(ge=0, le=600)] = Field(
        default=10, description="how long a break may take to show before the drill goes on anyway")


class Database(Strict):
    """`[recovery.database]`: the provider's point-in-time restore, done by its support."""

    support_contact: str = Field(default="support@convex.dev", min_length=3, max_length=200)
    deployment_name: str = Field(min_length=1, max_length=200, description="the deployment support restores")


class Recovery(Strict):
    """The `[recovery]` section."""

    budgets: Budgets = Field(default_factory=Budgets)
    severity: Severity = Field(default=Severity.P1, description="the incident's severity when recovery starts")
    backend: BackendRecovery | None = None
    frontend: FrontendRecovery | None = None
    monitoring: Monitoring = Field(default_factory=Monitoring)
    drill: Drill = Field(default_factory=Drill)
    database: Database | None = None
    max_rpo_minutes: Annotated[float, Field(gt=0, le=525_600)] = Field(default=15, description="the runbook's RPO")
    import_timeout_s: Annotated[float, Field(gt=0, le=6 * 3600)] = Field(
        default=1800, description="deadline of the restore (the snapshot import)")
    export_deadline_s: Annotated[float, Field(gt=0, le=6 * 3600)] = Field(
        default=1800, description="deadline of each export taken to count live documents")
    approval_timeout_s: Annotated[int, Field(ge=10, le=86_400)] = 3600
    approval_poll_s: Annotated[int, Field(ge=1, le=60)] = 5

    def secret_refs(self) -> list[SecretRef]:
        refs = []
        if self.backend:
            refs.append(self.backend.deploy_key)
            refs += list(self.backend.environment.variables.values())
        if self.frontend:
            refs += list(self.frontend.environment.variables.values())
        ch = self.drill.channel
        refs += [r for r in (ch.slack_webhook_url, ch.pagerduty_routing_key) if r is not None]
        return refs


# ---- the timed plan -----------------------------------------------------------------------------

Outcome = Literal["ok", "failed", "not-run"]


@dataclass
class StepOutcome:
    """What a step's work returns: passed or not, and the checks or actions behind it."""

    ok: bool
    detail: str
    checks: list[CheckResult] = field(default_factory=list)


@dataclass
class StepRecord:
    name: str
    title: str
    budget_s: float
    outcome: Outcome = "not-run"
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    detail: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    paged: str = ""

    @property
    def over_budget(self) -> bool:
        return self.duration_s is not None and self.duration_s > self.budget_s

    @property
    def verdict(self) -> str:
        if self.outcome == "not-run":
            return "not run"
        if self.outcome == "failed":
            return "FAILED" + (" (over budget)" if self.over_budget else "")
        return "over budget" if self.over_budget else "within budget"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [c.to_dict() for c in self.checks]
        d["over_budget"] = self.over_budget
        d["verdict"] = self.verdict
        return d


def raise_severity(severity: Severity) -> Severity:
    """One level more severe (P3 -> P2 -> P1 -> P0); P0 stays P0."""
    return Severity(f"P{max(0, severity.rank - 1)}")


@dataclass
class PlanReport:
    """A run of the ordered plan: every step's record, the severity, and where it stopped."""

    procedure: str
    environment: str
    drill: bool
    rto_s: float
    severity: Severity
    steps: list[StepRecord]
    started_at: str = ""
    ended_at: str = ""
    total_s: float = 0.0
    stopped_at: str | None = None
    severity_history: list[str] = field(default_factory=list)
    breaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.stopped_at is None and all(s.outcome == "ok" for s in self.steps)

    @property
    def within_rto(self) -> bool:
        return self.total_s <= self.rto_s

    def rows(self) -> list[dict[str, Any]]:
        """The RTO table: step, budget, measured, verdict, then the total against the RTO."""
        rows = [{"step": s.title, "budget": _minutes(s.budget_s),
                 "measured": "-" if s.duration_s is None else _duration(s.duration_s), "verdict": s.verdict}
                for s in self.steps]
        rows.append({"step": "Total (RTO)", "budget": _minutes(self.rto_s), "measured": _duration(self.total_s),
                     "verdict": ("within RTO" if self.within_rto else "RTO EXCEEDED")
                     + ("" if self.stopped_at is None else f"; stopped at {STEP_TITLES.get(self.stopped_at, '')}")})
        return rows

    def markdown(self) -> str:
        title = "Full System Recovery" + (" drill" if self.drill else "")
        verdict = "RECOVERED" if self.passed else f"STOPPED at {STEP_TITLES.get(self.stopped_at or '', '?')}"
        lines = [f"## {title}: {verdict}", "",
                 f"Environment {self.environment}; started {self.started_at}, ended {self.ended_at}; "
                 f"total {_duration(self.total_s)} against an RTO of {_minutes(self.rto_s)}; "
                 f"severity {self.severity.value}.", ""]
        if self.breaks:
            lines += ["Drill: broken first: " + "; ".join(self.breaks), ""]
        lines += ["| Step | Budget | Measured | Verdict |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['budget']} | {r['measured']} | {r['verdict']} |" for r in self.rows()]
        lines.append("")
        for n, s in enumerate(self.steps, 1):
            mark = {"ok": "[x]", "failed": "[ ]", "not-run": "[-]"}[s.outcome]
            lines.append(f"{n}. {mark} **{s.title}**: {s.verdict}" + (f": {s.detail}" if s.detail else ""))
            for c in s.checks:
                lines.append(f"   - {c.target or c.name}: {c.status.value.upper()}, {c.observed}"
                             + ("" if c.status.passed else f" (expected {c.expected})"))
            if s.paged:
                lines.append(f"   - over budget: severity raised; {s.paged}")
        if self.severity_history:
            lines += ["", "Severity: " + " -> ".join(self.severity_history)]
        if self.notes:
            lines += ["", *self.notes]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "procedure": self.procedure, "environment": self.environment, "drill": self.drill,
            "passed": self.passed, "stopped_at": self.stopped_at, "severity": self.severity.value,
            "severity_history": self.severity_history, "started_at": self.started_at, "ended_at": self.ended_at,
            "total_s": round(self.total_s, 3), "rto_s": self.rto_s, "within_rto": self.within_rto,
            "steps": [s.to_dict() for s in self.steps], "rto_table": self.rows(), "breaks": self.breaks,
            "notes": self.notes, "markdown": self.markdown(),
        }


StepWork = Callable[[], Awaitable[StepOutcome]]
OverBudget = Callable[[StepRecord, Severity], Awaitable[str]]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def plan_steps(budgets: Budgets, names: Sequence[str] = ORDER) -> list[StepRecord]:
    unknown = [n for n in names if n not in STEP_TITLES]
    if unknown:
        raise ValueError(f"unknown recovery steps: {', '.join(unknown)}")
    return [StepRecord(n, STEP_TITLES[n], budgets.seconds(n)) for n in names]


async def run_plan(
    report: PlanReport,
    work: Mapping[str, StepWork],
    on_over_budget: OverBudget,
    clock: Callable[[], float] = time.time,
) -> PlanReport:
    """Run `report.steps` in order with `work[name]`; stop at the first failed step.

    A step that ends past its budget raises `report.severity` one level and calls `on_over_budget`
    (which pages and returns what it did); the next step still runs unless this one failed. An
    exception in a step's work is that step's failure, with the exception named."""
    t0 = clock()
    report.started_at = _iso(t0)
    if not report.severity_history:
        report.severity_history.append(report.severity.value)
    for step in report.steps:
        start = clock()
        step.started_at = _iso(start)
        try:
            outcome = await work[step.name]()
        except Exception as exc:  # noqa: BLE001 - a crashed step is a failed step; the plan must say where
            outcome = StepOutcome(False, f"{type(exc).__name__}: {exc}")
        end = clock()
        step.ended_at, step.duration_s = _iso(end), end - start
        step.outcome = "ok" if outcome.ok else "failed"
        step.detail, step.checks = outcome.detail, outcome.checks
        if step.over_budget:
            report.severity = raise_severity(report.severity)
            report.severity_history.append(report.severity.value)
            step.paged = await on_over_budget(step, report.severity)
        if not outcome.ok:
            report.stopped_at = step.name
            break
    t1 = clock()
    report.ended_at, report.total_s = _iso(t1), t1 - t0
    return report


def over_budget_text(report: PlanReport, step: StepRecord) -> str:
    drill = "[DRILL] " if report.drill else ""
    assert step.duration_s is not None
    return (f"{drill}Recovery ({report.environment}): {step.title} took {_duration(step.duration_s)}, over its "
            f"budget of {_minutes(step.budget_s)}; incident severity raised to {report.severity.value}")


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:g} min" if minutes >= 1 and float(minutes).is_integer() else f"{seconds:g} s"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


# ---- actions --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ActionResult:
    ok: bool
    detail: str


async def run_action(action: Action, client: httpx.AsyncClient, base_dir: Path,
                     secret_env: Mapping[str, str] | None = None) -> ActionResult:
    """Do one action under its deadline; how it ended, in words fit for a report (no secret)."""
    if action.command is not None:
        cwd = None if action.cwd is None else (base_dir / action.cwd)
        try:
            result = await commands.run(action.command, timeout_s=action.timeout_s, cwd=cwd, secret_env=secret_env)
        except commands.CommandError as exc:
            return ActionResult(False, f"{action.describe()}: {exc}")
        tail = result.tail(3).replace("\n", " / ")
        return ActionResult(result.ok, result.describe() + (f": {tail}" if tail and not result.ok else ""))
    http = action.http
    assert http is not None
    try:
        async with asyncio.timeout(action.timeout_s):
            response = await client.request(http.method, http.url, json=http.json_body,
                                            timeout=httpx.Timeout(action.timeout_s))
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer is the action's failure
        return ActionResult(False, f"{action.describe()}: {describe_error(exc)}")
    ok = response.status_code in http.ok_status
    return ActionResult(ok, f"{action.describe()}: HTTP {response.status_code}"
                        + ("" if ok else f" {response.text[:160]}"))


# ---- backend ------------------------------------------------------------------------------------

async def check_backend(cfg: BackendRecovery, client: httpx.AsyncClient, deploy_key: SecretStr | None) -> list[
        CheckResult]:
    """The runbook's "verify functions deployed" and "test critical paths": the deployment's
    `/instance_version` answers, and every critical function answers through `/api/query`."""
    sev = "P0"
    out: list[CheckResult] = []
    url = cfg.convex_url.rstrip("/") + "/instance_version"
    try:
        async with asyncio.timeout(cfg.timeout_s):
            response = await client.get(url, timeout=httpx.Timeout(cfg.timeout_s))
        version = response.text.strip()[:60]
        if response.status_code == 200 and version:
            out.append(CheckResult("instance-version", ITEM, Status.ok, f"running {version}",
                                   "the deployment answers its version", severity=sev, target=url))
        else:
            out.append(CheckResult("instance-version", ITEM, Status.fail, f"HTTP {response.status_code}",
                                   "the deployment answers its version", severity=sev, target=url))
    except Exception as exc:  # noqa: BLE001 - unreachable is a fact to report, not a crash
        out.append(CheckResult("instance-version", ITEM, Status.fail, describe_error(exc),
                               "the deployment answers its version", severity=sev, target=url))

    async def call(path: str) -> CheckResult:
        t0 = time.monotonic()
        try:
            await convex_query.query(client, cfg.convex_url, path, {}, cfg.timeout_s, deploy_key)
        except convex_query.QueryFailed as exc:
            return CheckResult(f"function:{path}", ITEM, Status.fail, str(exc), "answers", severity=sev,
                               target=f"function {path}")
        return CheckResult(f"function:{path}", ITEM, Status.ok, f"answers in {1000 * (time.monotonic() - t0):.0f} ms",
                           "answers", latency_s=time.monotonic() - t0, severity=sev, target=f"function {path}")

    out.extend(await asyncio.gather(*(call(p) for p in cfg.critical_functions)))
    return out


def manual_redeploy_steps(cfg: BackendRecovery, environment: str) -> str:
    """What a person does when no redeploy action is configured (the runbook's Backend Recovery)."""
    return "\n".join([
        f"## Backend Recovery ({environment}): redeploy the Convex functions", "",
        "No `recovery.backend.redeploy` is configured, so this step needs you. In a checkout of the app at the "
        "commit production should run:", "",
        "```bash",
        "export CONVEX_DEPLOY_KEY=...   # the production deploy key (from the password manager)",
        "npx convex deploy -y",
        "npx convex env list          # restore any environment variable that is missing",
        "```", "",
        f"Deployment: {cfg.convex_url}. When it finishes, tick *deployed* below; the flow then checks "
        f"`/instance_version` and these functions: {', '.join(cfg.critical_functions)}.",
    ])


# ---- environment variables ------------------------------------------------------------------------

class EnvSide(Protocol):
    """Where variables live (a Convex deployment, a Vercel project): read them all, set some."""

    async def read(self) -> Mapping[str, str | None]: ...

    async def write(self, values: Mapping[str, SecretStr]) -> None: ...


@dataclass
class EnvRestore:
    """What a restore did: the names it set, a check per variable, and a fingerprint of the values
    read back (never a value, nor a hash of a single one)."""

    ok: bool
    detail: str
    restored: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    fingerprint: str = ""


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def env_fingerprint(values: Mapping[str, str]) -> str:
    """One digest over every name and its value's SHA-256: two sets of variables agree when their
    fingerprints do. A digest of all of them, so no single value can be guessed from it."""
    digest = hashlib.sha256()
    for name in sorted(values):
        digest.update(f"{name}={_sha(values[name])}\n".encode())
    return digest.hexdigest()[:16]


async def restore_environment(side: EnvSide, wanted: Mapping[str, SecretStr], where: str,
                              item: str = ITEM) -> EnvRestore:
    """Set every wanted variable that is missing or differs (compared by SHA-256, so values stay
    in memory only), then read all of them back: each must be there with the wanted value. A
    variable already right is not written again, so a re-run after a crash changes nothing."""
    if not wanted:
        return EnvRestore(True, "no environment variables configured")
    source = {n: v.get_secret_value() for n, v in wanted.items()}
    want_fp = env_fingerprint(source)
    try:
        before = dict(await side.read())
    except Exception as exc:  # noqa: BLE001 - a deployment that cannot be read cannot be restored
        return EnvRestore(False, f"{where}: the variables cannot be read: {exc}", fingerprint=want_fp)
    # an unreadable value (None) cannot be compared, so it is set again: setting is idempotent
    stale = sorted(n for n, v in source.items() if (seen := before.get(n)) is None or _sha(seen) != _sha(v))
    if stale:
        try:
            await side.write({n: wanted[n] for n in stale})
        except Exception as exc:  # noqa: BLE001 - the write's failure is the restore's, named
            return EnvRestore(False, f"{where}: setting {', '.join(stale)} failed: {exc}", fingerprint=want_fp)
        try:
            after = dict(await side.read())
        except Exception as exc:  # noqa: BLE001 - unverified is not restored
            return EnvRestore(False, f"{where}: set {', '.join(stale)}, but reading back failed: {exc}", stale,
                              fingerprint=want_fp)
    else:
        after = before
    checks = []
    for name in sorted(source):
        got = after.get(name)
        set_now = name in stale
        expected = "present, value equal to the source's"
        if name not in after:
            status, seen = Status.fail, "missing" + (" after the restore" if set_now else "")
        elif got is None:
            status, seen = Status.warn, ("set; " if set_now else "present; ") + "its value cannot be read back"
        elif _sha(got) != _sha(source[name]):
            status, seen = Status.fail, "value differs from the source" + (" after the restore" if set_now else "")
        else:
            status, seen = Status.ok, "restored; read back equal" if set_now else "present, equal to the source"
        checks.append(CheckResult(f"env:{name}", item, status, seen, expected, severity="P0",
                                  target=f"{where} variable {name}"))
    readable = {n: v for n in source if isinstance(v := after.get(n), str)}
    got_fp = env_fingerprint(readable) if len(readable) == len(source) else "incomplete"
    ok = all(c.status.passed for c in checks)
    counts = f"{len(source)} variable{'s' if len(source) != 1 else ''}"
    if not ok:
        bad = [c.name[4:] for c in checks if not c.status.passed]
        detail = f"{where}: {', '.join(bad)} not as the source has them after the restore"
    elif stale:
        detail = f"{where}: restored {', '.join(stale)}; read back: {counts} equal to the source (fingerprint {got_fp})"
    else:
        detail = f"{where}: {counts} present and equal to the source (fingerprint {got_fp})"
    return EnvRestore(ok, detail, stale, checks, got_fp)


class BundleError(Exception):
    """A backup's environment configuration that cannot be read; the message holds no value."""


def values_from_config_bundle(bundle: bytes, refs: Mapping[str, SecretRef]) -> tuple[dict[str, SecretStr],
                                                                                      list[str]]:
    """The values of `refs` (variable name -> reference) from a Full System Backup's decrypted
    environment configuration (a tar.gz whose `environment/secrets.json` holds `{"secrets":
    {"<reference>": "<value>"}}`, see runbook.procedures.backup.config_bundle). Returns the values
    found and the names whose reference the backup does not hold."""
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            member = tar.extractfile("environment/secrets.json")
            if member is None:
                raise BundleError("environment/secrets.json is not a file")
            stored = json.loads(member.read()).get("secrets")
    except KeyError:
        raise BundleError("the backup's configuration holds no environment/secrets.json") from None
    except (tarfile.TarError, OSError, ValueError, AttributeError) as exc:
        raise BundleError(f"the backup's configuration cannot be read ({type(exc).__name__})") from None
    if not isinstance(stored, dict):
        raise BundleError("environment/secrets.json has no 'secrets' object")
    values, missing = {}, []
    for name, ref in refs.items():
        value = stored.get(ref.describe())
        if isinstance(value, str):
            values[name] = SecretStr(value)
        else:
            missing.append(name)
    stored.clear()
    return values, sorted(missing)


# ---- data -----------------------------------------------------------------------------------------

class SnapshotError(Exception):
    """A snapshot zip that cannot be read as tables of documents; the message names the entry."""


@dataclass(frozen=True)
class TableDigest:
    """One table of a snapshot: how many documents, their ids, and a checksum of their content
    (SHA-256 over the documents as canonical JSON, sorted by `_id`), so two snapshots of the same
    data agree whatever order or formatting the export used."""

    count: int
    sha256: str
    ids: frozenset[str]


def digest_snapshot(zip_path: Path) -> dict[str, TableDigest]:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = set(zf.namelist())
            if "_tables/documents.jsonl" not in names:
                raise SnapshotError(f"{zip_path.name}: no _tables/documents.jsonl (not a Convex snapshot export)")
            tables = [json.loads(line)["name"] for line in zf.read("_tables/documents.jsonl").decode().splitlines()
                      if line.strip()]
            out: dict[str, TableDigest] = {}
            for table in tables:
                entry = f"{table}/documents.jsonl"
                if entry not in names:
                    raise SnapshotError(f"{zip_path.name}: table {table!r} is listed but {entry} is missing")
                docs: dict[str, str] = {}
                with zf.open(entry) as f:
                    for n, raw in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
                        if not raw.strip():
                            continue
                        doc = json.loads(raw)
                        if not isinstance(doc, dict) or not isinstance(doc.get("_id"), str):
                            raise SnapshotError(f"{zip_path.name}: {entry} line {n} has no _id")
                        docs[doc["_id"]] = json.dumps(doc, sort_keys=True, separators=(",", ":"))
                digest = hashlib.sha256()
                for ident in sorted(docs):
                    digest.update(docs[ident].encode() + b"\n")
                out[table] = TableDigest(len(docs), digest.hexdigest(), frozenset(docs))
            return out
    except zipfile.BadZipFile as exc:
        raise SnapshotError(f"{zip_path.name}: not a readable zip ({exc})") from None
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise SnapshotError(f"{zip_path.name}: cannot be read ({type(exc).__name__}: {exc})") from None


@dataclass
class TableDamage:
    table: str
    backup: int
    live: int | None

    @property
    def missing(self) -> int:
        return max(0, self.backup - (self.live or 0)) if self.live is not None else self.backup


def assess_damage(backup: Mapping[str, int], live: Mapping[str, TableDigest] | None) -> list[TableDamage]:
    """Documents per table in the backup against what is live now (None: live unknown)."""
    return [TableDamage(t, n, None if live is None else (live[t].count if t in live else 0))
            for t, n in sorted(backup.items())]


def damage_markdown(damage: Sequence[TableDamage]) -> str:
    lines = ["| Table | In the backup | Live now | Missing |", "|---|---|---|---|"]
    for d in damage:
        live = "unknown" if d.live is None else f"{d.live:,}"
        lines.append(f"| {d.table} | {d.backup:,} | {live} | {d.missing:,} |")
    return "\n".join(lines)


class ImportFailed(Exception):
    """The restore did not run; the message says why (no secret in it)."""


async def import_snapshot(client: httpx.AsyncClient, convex_url: str, deploy_key: SecretStr, zip_path: Path,
                          timeout_s: float, mode: Literal["replace", "replaceAll"] = "replace") -> int:
    """Restore a snapshot zip the way `npx convex import --replace` does: one
    `POST <deployment>/api/import?format=zip&mode=replace` carrying the zip, admin-authorized,
    answered `{"numWritten": n}` (the backend's `import` route in `crates/local_backend/src/router.rs`
    and its `ImportQueryArgs`/`ImportResponse` in `snapshot_import.rs`; the wire spelling of the mode
    follows the handler's camelCase arguments). Replace mode makes it idempotent: a second run leaves
    the same tables. Returns the documents written."""
    url = convex_url.rstrip("/") + "/api/import"
    headers = {"Authorization": f"Convex {deploy_key.get_secret_value()}", "Content-Type": "application/zip"}
    data = zip_path.read_bytes()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, params={"format": "zip", "mode": mode}, content=data,
                                     headers=headers, timeout=httpx.Timeout(timeout_s)) as response:
                raw = await read_limited(response, MAX_IMPORT_ANSWER_BYTES)
    except BodyTooLarge as exc:
        raise ImportFailed(f"{url}: {exc}") from None
    except (httpx.HTTPError, TimeoutError, OSError) as exc:
        raise ImportFailed(f"{url}: {describe_error(exc)}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    if response.status_code != 200:
        message = answer.get("message") if isinstance(answer, dict) else raw[:200].decode("utf-8", "replace")
        raise ImportFailed(f"{url}: HTTP {response.status_code}: {message}")
    if not isinstance(answer, dict) or not isinstance(answer.get("numWritten"), int):
        raise ImportFailed(f"{url}: HTTP 200 without numWritten")
    return int(answer["numWritten"])


def verify_restore(backup: Mapping[str, TableDigest], restored: Mapping[str, TableDigest]) -> list[CheckResult]:
    """Every backed-up table back with the same count and checksum, per table."""
    out = []
    for table, want in sorted(backup.items()):
        got = restored.get(table)
        expected = f"{want.count:,} documents, sha256 {want.sha256[:12]}..."
        if got is None:
            out.append(CheckResult(f"restore:{table}", "Data Loss", Status.fail, "table missing", expected,
                                   severity="P0", target=f"table {table}"))
        elif got.count != want.count or got.sha256 != want.sha256:
            lost = len(want.ids - got.ids)
            out.append(CheckResult(f"restore:{table}", "Data Loss", Status.fail,
                                   f"{got.count:,} documents, sha256 {got.sha256[:12]}... ({lost:,} of the backup's "
                                   "missing)", expected, severity="P0", target=f"table {table}"))
        else:
            out.append(CheckResult(f"restore:{table}", "Data Loss", Status.ok,
                                   f"{got.count:,} documents, checksum matches", expected, severity="P0",
                                   target=f"table {table}"))
    return out


def lost_beyond_snapshot(backup: Mapping[str, TableDigest], restored: Mapping[str, TableDigest]) -> int:
    """Documents in the backup that are not back after the restore: must be zero."""
    return sum(len(want.ids - (restored[t].ids if t in restored else frozenset())) for t, want in backup.items())


def written_after_snapshot(at_incident: Mapping[str, TableDigest], backup: Mapping[str, TableDigest]) -> int:
    """Documents live at the incident that the backup does not hold: the data lost window's writes."""
    return sum(len(d.ids - (backup[t].ids if t in backup else frozenset())) for t, d in at_incident.items())


@dataclass(frozen=True)
class Rpo:
    snapshot_at: datetime
    incident_at: datetime
    target_minutes: float

    @property
    def window(self) -> timedelta:
        return max(timedelta(0), self.incident_at - self.snapshot_at)

    @property
    def met(self) -> bool:
        return self.window <= timedelta(minutes=self.target_minutes)

    def text(self) -> str:
        seconds = self.window.total_seconds()
        return (f"data lost window {_duration(seconds)} (snapshot {self.snapshot_at.isoformat()} to incident "
                f"{self.incident_at.isoformat()}): measured RPO against the {self.target_minutes:g} min target: "
                + ("met" if self.met else "EXCEEDED"))

    def to_dict(self) -> dict[str, Any]:
        return {"snapshot_at": self.snapshot_at.isoformat(), "incident_at": self.incident_at.isoformat(),
                "measured_rpo_s": round(self.window.total_seconds(), 3), "target_minutes": self.target_minutes,
                "met": self.met}


def parse_time(value: str | None, name: str, default: datetime) -> datetime:
    """An ISO-8601 time parameter (UTC when no zone is given); ValueError names the parameter."""
    if value is None or value == "":
        return default
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an ISO-8601 time, e.g. 2025-01-31T14:05:00Z") from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def support_request(cfg: Database, environment: str, restore_to: datetime, reason: str) -> str:
    """What to send to the provider's support for a point-in-time restore (runbook: Database Recovery)."""
    return "\n".join([
        f"## Database Recovery ({environment}): ask for a point-in-time restore", "",
        f"Send this to **{cfg.support_contact}** from the team's account:", "",
        "```text",
        f"Subject: Point-in-time restore request: {cfg.deployment_name}",
        "",
        f"Please restore the production deployment {cfg.deployment_name} to its state at "
        f"{restore_to.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')} ({restore_to.astimezone(UTC).isoformat()}).",
        f"Reason: {reason}.",
        "Please confirm the exact point in time restored to when it is done.",
        "```", "",
        "When support confirms, fill in the form below with the time they restored to; the flow then checks the "
        "backend's functions and the data against the newest backup, and measures the RPO.",
    ])


# ---- monitoring -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeploymentState:
    name: str
    found: bool
    paused: bool = False
    active_schedules: int = 0


def judge_monitoring(cfg: Monitoring, deployments: Sequence[DeploymentState] | None, last_checklist: datetime | None,
                     checklist_error: str | None, channel: tuple[bool, str], now: datetime) -> list[CheckResult]:
    item, sev = "Monitoring", "P1"
    out = []
    if deployments is None:
        out.append(CheckResult("deployments", item, Status.unknown, "the Prefect API did not answer",
                               "scheduled deployments active", severity=sev, target="scheduled deployments"))
    elif not cfg.deployments:
        out.append(CheckResult("deployments", item, Status.ok, "none listed in recovery.monitoring.deployments",
                               "scheduled deployments active", severity=sev, target="scheduled deployments"))
    for d in deployments or []:
        if not d.found:
            status, seen = Status.fail, "not found"
        elif d.paused or d.active_schedules == 0:
            status, seen = Status.fail, "paused" if d.paused else "no active schedule"
        else:
            status, seen = Status.ok, f"active ({d.active_schedules} schedule{'s' if d.active_schedules > 1 else ''})"
        out.append(CheckResult(f"deployment:{d.name}", item, status, seen, "active with a schedule", severity=sev,
                               target=f"deployment {d.name}"))
    limit = timedelta(hours=cfg.max_checklist_age_h)
    target = f"last {cfg.checklist_flow} run"
    if checklist_error is not None:
        out.append(CheckResult("checklist", item, Status.unknown, checklist_error,
                               f"within {cfg.max_checklist_age_h:g} h", severity=sev, target=target))
    elif last_checklist is None:
        out.append(CheckResult("checklist", item, Status.fail, "never ran", f"within {cfg.max_checklist_age_h:g} h",
                               severity=sev, target=target))
    else:
        age = now - last_checklist
        out.append(CheckResult("checklist", item, Status.ok if age <= limit else Status.fail,
                               f"{_duration(age.total_seconds())} ago ({last_checklist.isoformat()})",
                               f"within {cfg.max_checklist_age_h:g} h", severity=sev, target=target))
    reachable, detail = channel
    out.append(CheckResult("alert-channel", item, Status.ok if reachable else Status.fail, detail,
                           "the alert channel accepts a message", severity=sev, target="alert channel"))
    return out


def outcome_of(checks: Iterable[CheckResult], ok_text: str) -> StepOutcome:
    checks = list(checks)
    problems = [c for c in checks if not c.status.passed]
    if not checks:
        return StepOutcome(False, "nothing was checked")
    if problems:
        return StepOutcome(False, "; ".join(f"{c.target or c.name}: {c.observed}" for c in problems), checks)
    return StepOutcome(True, ok_text, checks)


# ---- drill history --------------------------------------------------------------------------------

DRILL_HISTORY_KEY = "recovery-drills"


def drill_rows(report: PlanReport) -> list[dict[str, Any]]:
    """One drill as rows of the history table: a row per step and one for the total."""
    rows = [{"drill_at": report.started_at, "step": s.name, "budget_s": round(s.budget_s, 3),
             "measured_s": None if s.duration_s is None else round(s.duration_s, 3), "outcome": s.outcome}
            for s in report.steps]
    rows.append({"drill_at": report.started_at, "step": "total", "budget_s": round(report.rto_s, 3),
                 "measured_s": round(report.total_s, 3), "outcome": "ok" if report.passed else "failed"})
    return rows


def trend_markdown(history: Sequence[Sequence[Mapping[str, Any]]]) -> str:
    """Measured RTO per step across drills, oldest first: one column per drill."""
    drills = [rows for rows in history if rows][-12:]
    if not drills:
        return "## Recovery drills: RTO trend\n\nNo drill recorded yet.\n"
    steps = [*ORDER, "total"]
    header = [str(rows[0].get("drill_at", "?"))[:16].replace("T", " ") for rows in drills]
    lines = ["## Recovery drills: RTO trend", "",
             f"Measured time per step across the last {len(drills)} drill(s), oldest first.", "",
             "| Step | Budget | " + " | ".join(header) + " | Trend |", "|---|---|" + "---|" * len(drills) + "---|"]
    for step in steps:
        cells, values, budget = [], [], None
        for rows in drills:
            row = next((r for r in rows if r.get("step") == step), None)
            value = None if row is None else row.get("measured_s")
            budget = budget if row is None else row.get("budget_s", budget)
            if isinstance(value, int | float):
                values.append(float(value))
                mark = " (over)" if budget is not None and value > budget else ""
                cells.append(f"{_duration(float(value))}{mark}")
            else:
                cells.append("-")
        title = STEP_TITLES.get(step, "Total (RTO)")
        trend = _trend(values)
        lines.append(f"| {title} | {'-' if budget is None else _minutes(float(budget))} | " + " | ".join(cells)
                     + f" | {trend} |")
    return "\n".join(lines) + "\n"


def _trend(values: Sequence[float]) -> str:
    if len(values) < 2:
        return "-"
    first, last = values[0], values[-1]
    if first == 0:
        return "-"
    change = (last - first) / first
    if abs(change) < 0.1:
        return "steady"
    return f"{'slower' if change > 0 else 'faster'} ({change:+.0%})"


# ---- frontend -------------------------------------------------------------------------------------

Probe = Callable[[], Awaitable[list[CheckResult]]]


async def recover_frontend(vercel: VercelClient, probe: Probe, *, deadline_s: float, poll_s: float) -> StepOutcome:
    """The runbook's Frontend Recovery on Vercel: when the frontend fails its checks, promote the
    last good production deployment (the newest READY one before the current: what
    `vercel rollback` returns to), read production back until it serves that deployment, then
    probe until the frontend passes. A frontend that already passes is left alone, so a re-run
    never walks production further back."""
    before = await probe()
    if before and all(c.status.passed for c in before):
        try:
            serving_now = (await vercel.current_production()).label()
        except VercelError as exc:
            serving_now = f"unknown ({exc})"
        return StepOutcome(True, f"the frontend passes its checks; nothing promoted (serving {serving_now})", before)
    try:
        current = await vercel.current_production()
        candidates = await vercel.list_production_deployments(state="READY", limit=20)
    except VercelError as exc:
        return StepOutcome(False, f"cannot read the production deployments: {exc}", before)
    target = previous_good(candidates, current)
    if target is None:
        return StepOutcome(False, f"no READY production deployment older than the current {current.label()} to "
                                  "promote", before)
    try:
        await vercel.promote(target.id)
    except VercelError as exc:
        return StepOutcome(False, f"promote {target.id} failed: {exc}", before)
    deadline = time.monotonic() + deadline_s
    serving = current
    while True:
        try:
            serving = await vercel.current_production()
        except VercelError:
            pass
        if serving.id == target.id or time.monotonic() > deadline:
            break
        await asyncio.sleep(poll_s)
    if serving.id != target.id:
        return StepOutcome(False, f"promoted {target.id}, but production still serves {serving.id} after "
                                  f"{deadline_s:g} s", before)
    after = before
    while True:
        after = await probe()
        if (after and all(c.status.passed for c in after)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(poll_s)
    moved = f"promoted {target.label()} over the bad {current.label()}; production serves it"
    if after and all(c.status.passed for c in after):
        return StepOutcome(True, moved + "; the frontend passes its checks", after)
    return StepOutcome(False, moved + ", but the frontend still fails its checks", after)


# ---- the maintenance switch off --------------------------------------------------------------------

async def disable_maintenance(m: MaintenanceSwitch, client: httpx.AsyncClient, deploy_key: SecretStr,
                              probe_auth: SecretStr | None) -> tuple[bool, str]:
    """The backend's maintenance switch off, then the public endpoints probed until none refuses.
    Turning it off twice is harmless: it sets."""
    try:
        await convex_query.query(client, m.convex_url, m.function, {"enabled": False, "reason": "recovered"},
                                 m.timeout_s, deploy_key, kind="mutation")
    except convex_query.QueryFailed as exc:
        return False, f"switch not turned off: {exc}"
    probes = await probe_until_settled(m, client, probe_auth, refused=False)
    return all(ok for ok, _ in probes), "switch turned off; " + "; ".join(d for _, d in probes)
