"""`tfops up` on SQLite: every deployment on the runbook's schedule, the Morning Checklist run from
the UI completes with its artifacts and its heartbeat, a failing run reaches on-call Slack."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from sandbox import stack

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
RUNBOOK_TIMES = {  # as the runbook says them, in UTC
    "morning-checklist/daily": "0 9 * * *",
    "evening-checklist/daily": "0 18 * * *",
    "verify-backup/rpo-check": "*/15 * * * *",
    "full-system-backup/rpo": "10-59/15 * * * *",  # a backup before each RPO check
}


def _ui_run_env(sandbox: stack.Sandbox) -> Path:
    """The sandbox's environment under another name, beside it (its secrets are relative paths), so a
    run shows which file it read: the form's parameter, not the deployment's job variable."""
    path = sandbox.dir / "ui-run.toml"
    text = sandbox.env_file.read_text().replace('environment = "sandbox"', 'environment = "sandbox-ui-run"', 1)
    assert "sandbox-ui-run" in text
    path.write_text(text)
    return path


def _pings(sandbox: stack.Sandbox) -> list[dict]:
    return list(sandbox.vendor("healthchecks", "GET", "pings"))


def test_every_deployment_is_served_on_the_runbook_schedule(served):
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    with served.client() as client:
        flows = {f.id: f.name for f in client.read_flows()}
        deployments = {f"{flows[d.flow_id]}/{d.name}": d for d in client.read_deployments()}
        pools = WorkPoolFilter(name=WorkPoolFilterName(any_=["tokenforge-ops"]))
        [pool] = client.read_work_pools(work_pool_filter=pools)
        automations = {a.name: a for a in client.read_automations()}
    assert pool.type == "process"
    assert set(deployments) == {f"{d['flow_name']}/{d['name']}" for d in SPEC["deployments"]}
    for spec in SPEC["deployments"]:
        served_d = deployments[f"{spec['flow_name']}/{spec['name']}"]
        assert served_d.work_pool_name == "tokenforge-ops"
        assert served_d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
        assert served_d.job_variables["env"]["TFOPS_ENV_FILE"] == str(served.env_file)
        got = sorted((s.schedule.cron, s.schedule.timezone, s.active) for s in served_d.schedules)
        want = sorted((s["cron"], s["timezone"], s.get("active", True)) for s in spec.get("schedules", []))
        assert got == want, served_d.name
        assert not served_d.paused
    for name, cron in RUNBOOK_TIMES.items():
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployments[name].schedules] == [(cron, "UTC")]
    # the UI's form: typed parameters with descriptions
    form = deployments["emergency-shutdown/on-demand"].parameter_openapi_schema["properties"]
    assert form["dry_run"]["type"] == "boolean" and form["dry_run"]["description"]
    assert {a for a in automations if a.startswith("tfops: ")} >= {
        "tfops: crash zombie runs", "tfops: notify on-call of failed or crashed runs",
        "tfops: page when a scheduled checklist has not started within 15 min",
    }
    assert all(a.enabled for a in automations.values())
    zombie = automations["tfops: crash zombie runs"]
    assert (zombie.trigger.posture, zombie.trigger.after, zombie.trigger.within.total_seconds()) == (
        "Proactive", {"prefect.flow-run.heartbeat"}, 180)
    assert [(a.type, a.state) for a in zombie.actions] == [("change-flow-run-state", "CRASHED")]
    late = automations["tfops: page when a scheduled checklist has not started within 15 min"]
    assert (late.trigger.after, late.trigger.within.total_seconds()) == ({"prefect.flow-run.Late"}, 900)
    ids = [r["prefect.resource.id"] for r in late.trigger.match_related]
    assert sorted(i for value in ids for i in ([value] if isinstance(value, str) else value)) == [
        "prefect.tag.checklist", "prefect.tag.daily"]
    with served.client() as client:
        blocks = {a.block_document_id: client.read_block_document(a.block_document_id).name for a in late.actions}
    assert sorted(blocks.values()) == ["tfops-oncall-pagerduty", "tfops-oncall-slack"]


def test_the_morning_checklist_run_from_the_ui_completes_with_its_artifacts_and_heartbeat(served, sandbox):
    env_file = _ui_run_env(sandbox)
    run = served.run_deployment("morning-checklist/daily", {"env_file": str(env_file)})
    assert run.state.name == "Completed", run.state.message
    assert run.parameters == {"env_file": str(env_file)}
    artifacts = served.artifacts(run.id)
    assert {"morning-checklist", "morning-checklist-table"} <= set(artifacts)
    report = artifacts["morning-checklist"]
    assert report.type == "markdown" and report.description == "Morning Checklist (sandbox-ui-run)"
    assert report.data.startswith("# Morning Checklist: ")
    for step in ("System Health", "Wallet Balance", "API Usage", "Error Log"):
        assert step in report.data
    assert artifacts["morning-checklist-table"].type == "table"
    # the dead-man's switch: one ping at the end, /fail only if the checklist failed
    [ping] = _pings(sandbox)
    passed = report.data.startswith(("# Morning Checklist: OK", "# Morning Checklist: WARN"))
    assert ping["signal"] == ("success" if passed else "fail")
    assert ping["body"].startswith("Morning Checklist: ")
    assert f"Heartbeat (dead-man's switch): healthchecks: pinged ({ping['signal']})" in report.data


def test_a_lost_heartbeat_ping_shows_in_the_report_and_does_not_fail_the_checklist(served, sandbox):
    sandbox.fault("healthchecks", "status:503")
    run = served.run_deployment("evening-checklist/daily", {})
    assert run.state.name == "Completed", run.state.message
    report = served.artifacts(run.id)["evening-checklist"]
    assert report.description == "Evening Checklist (sandbox)"  # the job variable's file
    assert "Heartbeat (dead-man's switch): healthchecks: HTTP 503" in report.data
    assert "the success ping was not recorded" in report.data or "the fail ping was not recorded" in report.data
    assert _pings(sandbox) == []


def test_a_failing_run_is_posted_to_on_call_slack_with_a_link(served, sandbox):
    run = served.run_deployment("system-health/on-demand", {"env_file": "/nonexistent/production.toml"})
    assert run.state.name == "Failed"
    link = f"{served.ui}/runs/flow-run/{run.id}"
    deadline = time.monotonic() + 90  # the event, the trigger, the action: seconds apart
    messages: list[str] = []
    while time.monotonic() < deadline:
        messages = [m["text"] for m in sandbox.received("slack")]
        if any(link in m for m in messages):
            break
        time.sleep(1)
    [message] = [m for m in messages if link in m]
    assert f"system-health run {run.name}: Failed" in message
    assert "system-health/on-demand" in message and "cannot read the file" in message
