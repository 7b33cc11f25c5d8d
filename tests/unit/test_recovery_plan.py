"""The recovery plan's logic alone: order, timing, the stop at a failed step, severity and paging on
an over-budget step, the RTO table, restore verification by checksum, the RPO, the drill trend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from runbook.config_types import Severity
from runbook.procedures import postmortem, recovery
from runbook.procedures.recovery import Budgets, PlanReport, StepOutcome


class Clock:
    """Each step's work advances it; the plan reads it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def plan(budgets: Budgets | None = None, severity: Severity = Severity.P1) -> PlanReport:
    b = budgets or Budgets()
    return PlanReport("full-system-recovery", "test", False, b.rto * 60, severity, recovery.plan_steps(b))


def work(clock: Clock, took: dict[str, float], fail: frozenset[str] = frozenset(), ran: list[str] | None = None):
    def step(name: str):
        async def run() -> StepOutcome:
            if ran is not None:
                ran.append(name)
            clock.now += took.get(name, 1.0)
            return StepOutcome(name not in fail, f"{name} done")
        return run
    return {n: step(n) for n in recovery.ORDER}


def test_steps_run_in_the_runbooks_order_each_timed_against_its_budget():
    clock, ran, paged = Clock(), [], []

    async def page(step, severity):  # noqa: ANN001
        paged.append(step.name)
        return "paged"

    report = asyncio.run(recovery.run_plan(plan(), work(clock, {"backend": 120, "frontend": 300, "monitoring": 60,
                                                                "verification": 240}, ran=ran), page, clock))
    assert ran == ["backend", "frontend", "monitoring", "verification"]
    assert [s.duration_s for s in report.steps] == [120, 300, 60, 240]
    assert [s.budget_s for s in report.steps] == [300, 600, 300, 600]
    assert report.passed and report.total_s == 720 and report.within_rto and paged == []
    assert report.severity_history == ["P1"]
    rows = report.rows()
    assert rows[0] == {"step": "Backend (Convex)", "budget": "5 min", "measured": "2 min 00.0 s",
                       "verdict": "within budget"}
    assert rows[-1] == {"step": "Total (RTO)", "budget": "30 min", "measured": "12 min 00.0 s",
                        "verdict": "within RTO"}


def test_a_failed_step_stops_the_order_and_later_steps_never_run():
    clock, ran = Clock(), []

    async def page(step, severity):  # noqa: ANN001
        return ""

    report = asyncio.run(recovery.run_plan(plan(), work(clock, {}, fail=frozenset({"frontend"}), ran=ran), page, clock))
    assert ran == ["backend", "frontend"]
    assert report.stopped_at == "frontend" and not report.passed
    assert [s.outcome for s in report.steps] == ["ok", "failed", "not-run", "not-run"]
    assert report.steps[2].started_at is None
    assert report.rows()[-1]["verdict"] == "within RTO; stopped at Frontend (Vercel)"
    assert report.markdown().startswith("## Full System Recovery: STOPPED at Frontend (Vercel)")


def test_a_crashing_step_is_a_failed_step_named_with_its_error():
    clock = Clock()
    steps = work(clock, {})

    async def crash() -> StepOutcome:
        raise RuntimeError("connection reset")

    steps["monitoring"] = crash

    async def page(step, severity):  # noqa: ANN001
        return ""

    report = asyncio.run(recovery.run_plan(plan(), steps, page, clock))
    assert report.stopped_at == "monitoring" and report.steps[2].detail == "RuntimeError: connection reset"


def test_over_budget_raises_the_severity_once_per_step_pages_and_goes_on():
    clock, pages = Clock(), []

    async def page(step, severity):  # noqa: ANN001
        pages.append((step.name, severity))
        return f"paged at {severity.value}"

    budgets = Budgets(backend=0.5, frontend=0.5)
    report = asyncio.run(recovery.run_plan(plan(budgets, Severity.P2), work(clock, {"backend": 31, "frontend": 45}),
                                           page, clock))
    assert pages == [("backend", Severity.P1), ("frontend", Severity.P0)]
    assert report.severity is Severity.P0 and report.severity_history == ["P2", "P1", "P0"]
    assert report.passed  # slow is not failed: every step still ran
    assert [s.verdict for s in report.steps] == ["over budget", "over budget", "within budget", "within budget"]
    assert report.steps[0].paged == "paged at P1"
    assert recovery.raise_severity(Severity.P0) is Severity.P0


def test_the_total_is_judged_against_the_rto():
    clock = Clock()

    async def page(step, severity):  # noqa: ANN001
        return ""

    report = asyncio.run(recovery.run_plan(plan(Budgets(rto=1)), work(clock, {"backend": 30, "frontend": 31}),
                                           page, clock))
    assert not report.within_rto and report.rows()[-1]["verdict"] == "RTO EXCEEDED"


def test_an_action_is_a_command_or_a_request_never_both_and_budgets_must_be_positive():
    with pytest.raises(ValidationError, match="exactly one of command, http"):
        recovery.Action(command=["npx", "convex", "deploy"], http={"url": "https://x"})
    with pytest.raises(ValidationError, match="exactly one of command, http"):
        recovery.Action()
    with pytest.raises(ValidationError, match="greater than 0"):
        Budgets(backend=0)
    assert recovery.Action(command=["npx", "convex", "deploy"]).describe() == "`npx convex deploy`"


def _zip(path: Path, tables: dict[str, list[dict]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("_tables/documents.jsonl", "".join(json.dumps({"name": t, "id": i}) + "\n"
                                                        for i, t in enumerate(tables)))
        for t, docs in tables.items():
            zf.writestr(f"{t}/documents.jsonl", "".join(json.dumps(d) + "\n" for d in docs))
    return path


def test_a_restore_is_verified_by_count_and_checksum_per_table(tmp_path):
    docs = [{"_id": f"id{i}", "_creationTime": i, "amount": i} for i in range(5)]
    backup = recovery.digest_snapshot(_zip(tmp_path / "b.zip", {"trades": docs, "users": [{"_id": "u", "n": 1}]}))
    # the same documents in another order and key order: the same checksum
    shuffled = [dict(reversed(list(d.items()))) for d in reversed(docs)]
    same = recovery.digest_snapshot(_zip(tmp_path / "s.zip", {"trades": shuffled, "users": [{"n": 1, "_id": "u"}]}))
    assert same == backup
    assert all(c.status.value == "ok" for c in recovery.verify_restore(backup, same))
    assert recovery.lost_beyond_snapshot(backup, same) == 0
    # one document changed, one missing: both tables caught
    changed = [*docs[:4]]
    changed[0] = {**changed[0], "amount": 99}
    bad = recovery.digest_snapshot(_zip(tmp_path / "c.zip", {"trades": changed}))
    checks = {c.target: c for c in recovery.verify_restore(backup, bad)}
    trades = checks["table trades"]
    assert trades.status.value == "fail" and "1 of the backup's missing" in trades.observed
    assert checks["table users"].observed == "table missing"
    assert recovery.lost_beyond_snapshot(backup, bad) == 2
    live = recovery.digest_snapshot(_zip(tmp_path / "l.zip", {"trades": [*docs, {"_id": "new"}]}))
    assert recovery.written_after_snapshot(live, backup) == 1
    damage = recovery.assess_damage({"trades": 5, "users": 1}, bad)
    assert [(d.table, d.live, d.missing) for d in damage] == [("trades", 4, 1), ("users", 0, 1)]
    assert "| trades | 5 | 4 | 1 |" in recovery.damage_markdown(damage)


def test_a_zip_that_is_not_an_export_is_refused_with_its_name(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(recovery.SnapshotError, match="x.zip: no _tables/documents.jsonl"):
        recovery.digest_snapshot(tmp_path / "x.zip")


def test_the_rpo_is_the_time_from_snapshot_to_incident():
    snap = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    rpo = recovery.Rpo(snap, snap + timedelta(minutes=12), 15)
    assert rpo.met and rpo.to_dict()["measured_rpo_s"] == 720
    late = recovery.Rpo(snap, snap + timedelta(minutes=20), 15)
    assert not late.met and "EXCEEDED" in late.text()
    assert recovery.parse_time("2025-01-01T12:00:00", "incident_at", snap) == snap
    with pytest.raises(ValueError, match="incident_at: 'noon'"):
        recovery.parse_time("noon", "incident_at", snap)


def test_the_drill_trend_shows_each_step_across_drills():
    clock = Clock()

    async def page(step, severity):  # noqa: ANN001
        return ""

    drills = []
    for seconds in (100, 50):
        report = asyncio.run(recovery.run_plan(plan(), work(clock, {"backend": seconds}), page, clock))
        drills.append(recovery.drill_rows(report))
    trend = recovery.trend_markdown(drills)
    line = next(x for x in trend.splitlines() if x.startswith("| Backend (Convex) |"))
    assert "1 min 40.0 s" in line and "50.0 s" in line and line.endswith("faster (-50%) |")
    assert recovery.trend_markdown([]).endswith("No drill recorded yet.\n")


def test_monitoring_is_judged_from_deployments_the_last_checklist_and_the_channel():
    now = datetime(2025, 1, 2, tzinfo=UTC)
    cfg = recovery.Monitoring(deployments=["morning-checklist/daily", "evening-checklist/daily"])
    states = [recovery.DeploymentState("morning-checklist/daily", True, False, 1),
              recovery.DeploymentState("evening-checklist/daily", True, True, 1)]
    checks = {c.name: c for c in recovery.judge_monitoring(cfg, states, now - timedelta(hours=25), None,
                                                           (True, "slack: delivered"), now)}
    assert checks["deployment:morning-checklist/daily"].status.value == "ok"
    assert checks["deployment:evening-checklist/daily"].observed == "paused"
    assert checks["checklist"].status.value == "fail" and checks["alert-channel"].status.value == "ok"
    unknown = recovery.judge_monitoring(cfg, None, None, "the Prefect API did not answer", (False, "x"), now)
    assert [c.status.value for c in unknown] == ["unknown", "unknown", "fail"]


def test_the_support_request_and_the_postmortem_say_what_happened_when():
    req = recovery.support_request(recovery.Database(deployment_name="tokenforge-prod"), "production",
                                   datetime(2025, 1, 1, 11, 58, tzinfo=UTC), "a bad migration")
    assert "**support@convex.dev**" in req and "2025-01-01 11:58:00 UTC" in req and "tokenforge-prod" in req
    doc = postmortem.render(title="outage", environment="production", incident_at=datetime(2025, 1, 1, tzinfo=UTC),
                            severity="P0", events=[postmortem.Event(datetime(2025, 1, 1, 0, 5, tzinfo=UTC), "b"),
                                                   postmortem.Event(datetime(2025, 1, 1, 0, 1, tzinfo=UTC), "a")],
                            checklist=[{"item": "System accessible", "passed": True, "observed": "ok"}],
                            objectives=["RTO 12 min"])
    assert doc.index("| 2025-01-01 00:01:00 | a |") < doc.index("| 2025-01-01 00:05:00 | b |")
    assert "- [x] System accessible: ok" in doc and "- RTO 12 min" in doc and "## Action items" in doc


class Variables:
    """A place holding variables, as a deployment does: reads answer what writes left."""

    def __init__(self, values: dict[str, str | None], lose_on_write: str | None = None) -> None:
        self.values = dict(values)
        self.writes: list[list[str]] = []
        self.lose_on_write = lose_on_write

    async def read(self):  # noqa: ANN201
        return dict(self.values)

    async def write(self, values):  # noqa: ANN001, ANN201
        self.writes.append(sorted(values))
        self.values.update({k: v.get_secret_value() for k, v in values.items()})
        if self.lose_on_write:
            self.values.pop(self.lose_on_write, None)


def wanted(**values: str):  # noqa: ANN201
    from pydantic import SecretStr

    return {k: SecretStr(v) for k, v in values.items()}


def test_a_restore_sets_only_what_is_missing_or_different_and_reads_every_variable_back():
    side = Variables({"A": "1", "B": "stale", "EXTRA": "kept"})
    result = asyncio.run(recovery.restore_environment(side, wanted(A="1", B="2", C="3"), "Convex"))
    assert result.ok and result.restored == ["B", "C"] and side.writes == [["B", "C"]]
    assert side.values == {"A": "1", "B": "2", "C": "3", "EXTRA": "kept"}
    assert [c.observed for c in result.checks] == ["present, equal to the source", "restored; read back equal",
                                                   "restored; read back equal"]
    assert result.fingerprint == recovery.env_fingerprint({"A": "1", "B": "2", "C": "3"})
    assert "restored B, C" in result.detail
    # no value, nor a single value's hash, in anything the report shows
    shown = result.detail + " ".join(f"{c.observed} {c.expected} {c.target}" for c in result.checks)
    assert "stale" not in shown and hashlib.sha256(b"2").hexdigest()[:8] not in shown
    again = asyncio.run(recovery.restore_environment(side, wanted(A="1", B="2", C="3"), "Convex"))
    assert again.ok and again.restored == [] and side.writes == [["B", "C"]]  # a re-run writes nothing


def test_a_variable_missing_after_the_write_fails_the_restore_by_name():
    side = Variables({}, lose_on_write="B")
    result = asyncio.run(recovery.restore_environment(side, wanted(A="1", B="2"), "Convex"))
    assert not result.ok and "B not as the source has them" in result.detail
    assert {c.name: c.status.value for c in result.checks} == {"env:A": "ok", "env:B": "fail"}


def test_a_deployment_that_cannot_be_read_is_not_restored():
    class Down(Variables):
        async def read(self):  # noqa: ANN201
            raise RuntimeError("HTTP 503")

    result = asyncio.run(recovery.restore_environment(Down({}), wanted(A="1"), "Convex"))
    assert not result.ok and result.detail == "Convex: the variables cannot be read: HTTP 503"


def test_values_come_from_a_backups_configuration_by_reference():
    import io
    import tarfile

    from runbook.config_types import SecretRef
    from runbook.procedures.backup import config_bundle

    refs = {"ALCHEMY_API_KEY": SecretRef(env="ALCHEMY"), "SITE_URL": SecretRef(file="secrets/site")}
    values = {"env:ALCHEMY": "k-1", "file:secrets/site": "https://x"}
    from pydantic import SecretStr

    bundle, missing = config_bundle(None, list(refs.values()), lambda r: SecretStr(values[r.describe()]))
    assert missing == []
    got, lost = recovery.values_from_config_bundle(bundle, {**refs, "NEW": SecretRef(env="NEW")})
    assert {k: v.get_secret_value() for k, v in got.items()} == {"ALCHEMY_API_KEY": "k-1", "SITE_URL": "https://x"}
    assert lost == ["NEW"]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz"):
        pass
    with pytest.raises(recovery.BundleError, match="no environment/secrets.json"):
        recovery.values_from_config_bundle(buffer.getvalue(), refs)


def test_environment_variables_load_from_configuration_and_join_the_backed_up_secrets():
    cfg = recovery.Recovery.model_validate({
        "backend": {"convex_url": "https://x.convex.cloud", "deploy_key": {"env": "K"},
                    "environment": {"source": "backup", "variables": {"ALCHEMY_API_KEY": {"env": "A"}}}},
        "frontend": {"environment": {"variables": {"NEXT_PUBLIC_X": {"env": "N"}}}}})
    assert cfg.backend is not None and cfg.backend.environment.source == "backup"
    assert {r.describe() for r in cfg.secret_refs()} >= {"env:A", "env:N"}
    with pytest.raises(ValidationError, match="variables"):
        recovery.Recovery.model_validate({"frontend": {"environment": {"variables": {"1BAD": {"env": "N"}}}}})
