"""Full System Recovery against the sandbox: a drill that breaks the backend and the frontend and
recovers both in the runbook's order, a step over its (shortened) budget that raises the severity and
pages the drill channel, and a failed frontend step that stops the order there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.recovery import backend_recovery_flow, full_system_recovery_flow
from flows.system_health import system_health_flow
from sandbox.convex_envvars import SANDBOX_ENVIRONMENT
from sandbox.vendors.vercel_env import SANDBOX_PROJECT_ENV

pytestmark = [pytest.mark.sandbox]


def env_file(sandbox, tmp_path: Path, budgets: dict[str, float] | None = None) -> Path:
    """The sandbox's environment, with System Health as the checklist the monitoring step looks for
    (the test runs it; the Morning Checklist would only add time) and, optionally, other budgets."""
    text = sandbox.env_file.read_text().replace('file = "secrets/', f'file = "{sandbox.dir}/secrets/')
    assert 'checklist_flow = "morning-checklist"' in text
    text = text.replace('checklist_flow = "morning-checklist"', 'checklist_flow = "system-health"')
    if budgets:
        text += "\n[recovery.budgets]\n" + "".join(f"{k} = {v}\n" for k, v in budgets.items())
    path = tmp_path / "environment.toml"
    path.write_text(text)
    return path


def drill_routing_key(sandbox) -> str:
    return (sandbox.dir / "secrets" / "drill_pagerduty_routing_key").read_text().strip()


def production_routing_key(sandbox) -> str:
    return (sandbox.dir / "secrets" / "pagerduty_routing_key").read_text().strip()


async def test_full_drill_breaks_backend_and_frontend_recovers_in_order_and_pages_the_drill_channel_when_over_budget(
        prefect_api, sandbox, tmp_path):
    # the backend's budget is cut to 30 ms: the step runs past it, so the severity goes up and the
    # drill channel is paged; the step itself succeeds, so the order goes on
    env = env_file(sandbox, tmp_path, {"backend": 0.0005})
    assert (await system_health_flow(env_file=str(env), alert=False))["passed"] is True
    before = sandbox.vendor("vercel", "GET", "deployments")["current"]

    report = await full_system_recovery_flow(env_file=str(env), drill=True)

    assert report["passed"] is True, report["markdown"]
    assert [s["name"] for s in report["steps"]] == ["backend", "frontend", "monitoring", "verification"]
    assert [s["outcome"] for s in report["steps"]] == ["ok"] * 4
    assert len(report["breaks"]) == 2 and not any(b.startswith("NOT BROKEN") for b in report["breaks"])
    backend, frontend = report["steps"][0], report["steps"][1]
    assert backend["detail"].startswith("redeployed"), backend["detail"]
    assert "promoted" in frontend["detail"] and "passes its checks" in frontend["detail"]
    for s in report["steps"]:
        assert s["started_at"] and s["ended_at"] and s["duration_s"] is not None and s["budget_s"] > 0
    # the page: severity P1 -> P0, to the drill channel's PagerDuty key, never production's
    assert backend["over_budget"] is True and backend["verdict"] == "over budget"
    assert report["severity_history"] == ["P1", "P0"] and report["severity"] == "P0"
    pages = [p["event"] for p in sandbox.received("pagerduty")]
    assert len(pages) == 1
    assert pages[0]["routing_key"] == drill_routing_key(sandbox) != production_routing_key(sandbox)
    assert pages[0]["payload"]["severity"] == "critical"
    assert "Backend (Convex) took" in pages[0]["payload"]["summary"] and "severity raised to P0" in pages[0][
        "payload"]["summary"]
    assert any(m["text"].startswith("[DRILL] Recovery (sandbox): Backend (Convex) took") for m in
               sandbox.received("slack"))
    # the RTO table: a row per step and the total against the 30 minutes
    table = report["rto_table"]
    assert [r["step"] for r in table] == ["Backend (Convex)", "Frontend (Vercel)", "Monitoring", "Verification",
                                          "Total (RTO)"]
    assert table[-1]["budget"] == "30 min" and table[-1]["verdict"] == "within RTO"
    # the drill removed a backend variable; the backend step put it back and read it back
    assert "environment: " in report["breaks"][0]
    variables = sandbox.vendor("convex", "GET", "environment")
    assert variables["variables"] == {n: hashlib.sha256(v.encode()).hexdigest()
                                      for n, v in SANDBOX_ENVIRONMENT.items()}
    assert variables["updates"] == [{"set": ["ALCHEMY_API_KEY"], "removed": []}]
    checks = {c["name"]: c for c in backend["checks"]}
    assert checks["env:ALCHEMY_API_KEY"]["observed"] == "restored; read back equal"
    assert checks["env:SITE_URL"]["observed"] == "present, equal to the source"
    assert "environment variables Convex: restored ALCHEMY_API_KEY" in backend["detail"]
    assert not any(v in json.dumps(report) for v in SANDBOX_ENVIRONMENT.values())  # never a value
    # the sandbox is healthy again: faults cleared by the redeploy, the good deployment serving
    assert sandbox.faults()["convex"] == "ok"
    vercel = sandbox.vendor("vercel", "GET", "deployments")
    assert vercel["current"] == before  # the last good deployment serves again, over the drill's bad one
    assert [d["bad"] for d in vercel["deployments"] if not d["current"]].count(True) == 1
    assert (await system_health_flow(env_file=str(env), alert=False))["passed"] is True
    # the drill is kept in the history, and the trend report reads it
    async with get_client() as client:
        history = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recovery-drills-sandbox"])))
        trend = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recovery-drill-trend-sandbox"])))
    rows = history[0].data if not isinstance(history[0].data, str) else json.loads(history[0].data)
    assert [r["step"] for r in rows] == ["backend", "frontend", "monitoring", "verification", "total"]
    assert "| Backend (Convex) |" in trend[0].data and "RTO trend" in trend[0].data


async def test_a_failed_frontend_step_stops_the_order_there(prefect_api, sandbox, tmp_path):
    env = env_file(sandbox, tmp_path)
    sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})
    sandbox.fault("vercel", "down")  # the frontend is down and Vercel's API cannot be reached to fix it

    report = await full_system_recovery_flow(env_file=str(env), drill=False)

    assert report["passed"] is False
    assert report["stopped_at"] == "frontend"
    assert [s["outcome"] for s in report["steps"]] == ["ok", "failed", "not-run", "not-run"]
    assert "cannot read the production deployments" in report["steps"][1]["detail"]
    assert report["steps"][2]["started_at"] is None and report["steps"][3]["started_at"] is None
    assert report["rto_table"][-1]["verdict"].endswith("stopped at Frontend (Vercel)")
    assert report["markdown"].startswith("## Full System Recovery: STOPPED at Frontend (Vercel)")
    assert sandbox.received("pagerduty") == []  # nothing went over budget


async def test_a_healthy_backend_is_left_alone_and_a_drill_without_a_channel_pages_nobody(prefect_api, sandbox,
                                                                                        tmp_path):
    env = env_file(sandbox, tmp_path, {"backend": 0.0001})
    text = env.read_text()
    start = text.index("[recovery.drill.channel]")
    end = text.index("[", start + 1)
    env.write_text(text[:start] + text[end:])  # no drill channel configured
    report = await backend_recovery_flow(env_file=str(env), drill=False)
    assert report["passed"] is True
    assert report["steps"][0]["detail"] == "functions deployed and answering; no redeploy needed"
    assert report["steps"][0]["paged"].startswith("slack: delivered")  # not a drill: the team's own channel

    sandbox.clear_received()
    drill = await backend_recovery_flow(env_file=str(env), drill=True)
    assert drill["passed"] is True and drill["steps"][0]["paged"] == "nobody paged: no drill channel configured"
    assert sandbox.received("pagerduty") == [] and sandbox.received("slack") == []


async def test_the_recovery_checklist_checks_what_it_can_and_writes_the_postmortem(prefect_api, sandbox, tmp_path):
    from flows.backup import full_system_backup_flow
    from flows.recovery import recovery_checklist_flow

    env = env_file(sandbox, tmp_path)
    assert (await full_system_backup_flow(env_file=str(env), alert=False))["passed"] is True
    assert (await system_health_flow(env_file=str(env), alert=False))["passed"] is True
    report = await recovery_checklist_flow(env_file=str(env), drill=True, incident="frontend outage",
                                           incident_url=sandbox.url("frontend") + "/", ask=False)
    items = {i["item"]: i for i in report["items"]}
    assert list(items) == ["System accessible", "All features working", "No data loss", "Performance normal",
                           "Monitoring active", "Incident documented", "Post-mortem scheduled"]
    for name in ("System accessible", "All features working", "No data loss", "Monitoring active",
                 "Incident documented"):
        assert items[name]["status"] == "ok", items[name]
    assert items["Post-mortem scheduled"]["observed"].startswith("document created")
    assert report["postmortem"].startswith("# Post-mortem: DRILL: frontend outage")
    assert "system-health run" in report["postmortem"]  # the timeline holds the runs before it


async def test_frontend_recovery_restores_the_projects_variables_and_reads_them_back(prefect_api, sandbox, tmp_path):
    from flows.recovery import frontend_recovery_flow

    env = env_file(sandbox, tmp_path)
    sandbox.vendor("vercel", "POST", "environment", {"remove": ["SENTRY_AUTH_TOKEN"],
                                                     "set": {"NEXT_PUBLIC_CONVEX_URL": "https://wrong.example"}})

    report = await frontend_recovery_flow(env_file=str(env), drill=False)

    assert report["passed"] is True, report["markdown"]
    step = report["steps"][0]
    assert "environment variables Vercel (production): restored NEXT_PUBLIC_CONVEX_URL, SENTRY_AUTH_TOKEN" in step[
        "detail"]
    shown = sandbox.vendor("vercel", "GET", "environment")
    assert {k: v["sha256"] for k, v in shown["variables"].items()} == {
        k: hashlib.sha256(v.encode()).hexdigest() for k, v in SANDBOX_PROJECT_ENV.items()}
    assert shown["upserts"] == 1
    assert not any(v in json.dumps(report) for v in SANDBOX_PROJECT_ENV.values())
    again = await frontend_recovery_flow(env_file=str(env), drill=False)
    assert again["passed"] is True and sandbox.vendor("vercel", "GET", "environment")["upserts"] == 1  # nothing twice


async def test_backend_variables_restored_from_the_newest_backup_and_a_missing_one_named(prefect_api, sandbox,
                                                                                       tmp_path):
    from flows.backup import full_system_backup_flow

    env = env_file(sandbox, tmp_path)
    text = env.read_text().replace("[recovery.backend.environment.variables]",
                                   '[recovery.backend.environment]\nsource = "backup"\n\n'
                                   "[recovery.backend.environment.variables]")
    env.write_text(text)
    assert (await full_system_backup_flow(env_file=str(env), alert=False))["passed"] is True
    # the secret store loses the value; the backup still holds it
    (sandbox.dir / "secrets" / "convex_env_alchemy_api_key").write_text("rotated-away\n")
    sandbox.vendor("convex", "POST", "environment", {"remove": ["ALCHEMY_API_KEY"]})

    report = await backend_recovery_flow(env_file=str(env), drill=False)

    assert report["passed"] is True, report["markdown"]
    variables = sandbox.vendor("convex", "GET", "environment")["variables"]
    assert variables["ALCHEMY_API_KEY"] == hashlib.sha256(SANDBOX_ENVIRONMENT["ALCHEMY_API_KEY"].encode()).hexdigest()

    # a variable configured after the newest backup was taken: named, nothing half-restored
    env.write_text(env.read_text().replace("[recovery.backend.environment.variables]\n",
                                           '[recovery.backend.environment.variables]\nNEW_VAR = { env = "X" }\n'))
    failed = await backend_recovery_flow(env_file=str(env), drill=False)
    assert failed["passed"] is False
    assert "holds no value for NEW_VAR" in failed["steps"][0]["detail"]
