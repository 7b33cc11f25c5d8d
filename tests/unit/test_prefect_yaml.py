"""prefect.yaml: every deployment points at a registered flow, on the runbook's schedule, with the
pull step, work pool and concurrency the runbook's unattended runs need. Parsed by Prefect's own model."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import yaml
from prefect.cli.deploy._models import PrefectYamlModel

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "prefect.yaml").read_text())
MODEL = PrefectYamlModel.model_validate(SPEC)


def test_every_deployment_runs_a_registered_flow_by_its_entrypoint():
    from flows.registry import FLOWS

    for d in MODEL.deployments:
        module, func = d.entrypoint.split(":")
        flow = getattr(importlib.import_module(module.removesuffix(".py").replace("/", ".")), func)
        assert flow.name == d.flow_name
        assert FLOWS[d.flow_name] is flow
    assert {d.flow_name for d in MODEL.deployments} == set(FLOWS)


def test_the_morning_checklist_runs_at_0900_utc_and_late_runs_do_not_pile_up():
    morning = next(d for d in MODEL.deployments if d.flow_name == "morning-checklist")
    assert morning.name == "daily"
    [schedule] = SPEC["deployments"][0]["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == ("0 9 * * *", "UTC")
    assert morning.concurrency_limit.limit == 1 and morning.concurrency_limit.collision_strategy == "CANCEL_NEW"


def test_the_evening_checklist_runs_at_1800_utc():
    spec = next(d for d in SPEC["deployments"] if d["flow_name"] == "evening-checklist")
    assert spec["name"] == "daily"
    [schedule] = spec["schedules"]
    assert (schedule["cron"], schedule["timezone"], schedule["active"]) == ("0 18 * * *", "UTC", True)


def test_workers_run_from_the_project_folder_with_the_env_file_from_a_job_variable():
    assert MODEL.pull == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $TFOPS_PROJECT_DIR }}"}}
    ]
    for d in MODEL.deployments:
        assert d.work_pool.name == "tokenforge-ops"
        assert d.work_pool.job_variables["env"]["TFOPS_ENV_FILE"] == "{{ $TFOPS_ENV_FILE }}"


# ---- the runbook's schedules ---------------------------------------------------------------------

# (flow, deployment) -> the runbook's time, as cron in UTC.
RUNBOOK_TIMES = {
    ("morning-checklist", "daily"): "0 9 * * *",  # Morning Checklist (9:00 AM UTC)
    ("evening-checklist", "daily"): "0 18 * * *",  # Evening Checklist (6:00 PM UTC)
    ("verify-backup", "rpo-check"): "*/15 * * * *",  # Database Recovery: RPO 15 minutes max
    ("full-system-backup", "rpo"): "10-59/15 * * * *",  # ... so a backup every 15 minutes, before each check
}
# Flows the runbook puts on a period: Weekly Maintenance, Monthly Maintenance, the gas strategy daily.
# The weekly and monthly steps run inside these two (and each alone by hand, never twice on schedule).
RUNBOOK_PERIODS = {
    "weekly-maintenance": "weekly",
    "monthly-maintenance": "monthly",
}


def _schedules(spec: dict) -> list[dict]:
    return spec.get("schedules") or []


def _fires(cron: str, days: int) -> list:
    from datetime import UTC, datetime, timedelta

    from cronsim import CronSim

    start = datetime(2025, 1, 1, tzinfo=UTC)
    out = []
    for t in CronSim(cron, start - timedelta(seconds=1)):  # CronSim yields times after its start
        if t >= start + timedelta(days=days):
            return out
        out.append(t)
    raise AssertionError("unreachable")


def _period(cron: str) -> str:
    """What a cron expression means, told by when it fires from 2025-01-01 on."""
    fires = _fires(cron, 28)
    if len(fires) == 28 and all((b - a).total_seconds() == 86400 for a, b in zip(fires, fires[1:], strict=False)):
        return "daily"
    if len(fires) == 4 and all((b - a).days == 7 for a, b in zip(fires, fires[1:], strict=False)):
        return "weekly"
    if len(_fires(cron, 365)) == 12:
        return "monthly"
    return f"{len(fires)} times in 28 days"


def test_the_runbook_times_are_the_deployments_schedules_in_utc():
    specs = {(d["flow_name"], d["name"]): d for d in SPEC["deployments"]}
    for key, cron in RUNBOOK_TIMES.items():
        assert key in specs, f"no deployment {key[0]}/{key[1]}"
        [schedule] = _schedules(specs[key])
        assert (schedule["cron"], schedule["timezone"], schedule.get("active", True)) == (cron, "UTC", True), key
    assert len(_fires(RUNBOOK_TIMES[("verify-backup", "rpo-check")], 1)) == 96


def test_maintenance_runs_on_the_runbook_period_and_gas_strategy_daily():
    periods = dict(RUNBOOK_PERIODS)
    periods.update({d["flow_name"]: "daily" for d in SPEC["deployments"] if d["flow_name"].startswith("gas")})
    for flow, period in periods.items():
        scheduled = [d for d in SPEC["deployments"] if d["flow_name"] == flow and _schedules(d)]
        assert scheduled, f"{flow} has no scheduled deployment"
        for d in scheduled:
            [schedule] = _schedules(d)
            assert schedule["timezone"] == "UTC" and schedule.get("active", True)
            assert _period(schedule["cron"]) == period, (flow, schedule["cron"])
            assert period in d["tags"] and d["name"] == period, (flow, d["name"], d["tags"])


def test_every_schedule_is_utc_active_and_named_by_its_period():
    for d in SPEC["deployments"]:
        for schedule in _schedules(d):
            assert schedule["timezone"] == "UTC", d["flow_name"]
            assert schedule.get("active", True), d["flow_name"]
            period = _period(schedule["cron"])
            if period in ("daily", "weekly", "monthly"):
                assert period in d["tags"], (d["flow_name"], d["name"], period)
        if d["name"] == "on-demand":
            assert not _schedules(d), f"{d['flow_name']}/on-demand must not be scheduled"


def test_zombie_detection_gets_a_heartbeat_from_every_deployment():
    from deployments.automations import HEARTBEAT_S

    for d in MODEL.deployments:
        assert d.work_pool.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_S)


def test_the_run_form_shows_every_parameter_typed_with_a_description_and_default():
    """What the UI's Run form is built from: Prefect's parameter schema of each deployed flow."""
    from prefect.utilities.callables import parameter_schema

    from flows.registry import FLOWS

    for name in {d.flow_name for d in MODEL.deployments}:
        schema = parameter_schema(FLOWS[name].fn).model_dump()
        assert not schema.get("required"), f"{name}: every parameter needs a default for scheduled runs"
        for param, prop in schema["properties"].items():
            assert prop.get("description"), f"{name}.{param} has no description (Args: in its docstring)"
            assert "type" in prop or "anyOf" in prop or "allOf" in prop or "$ref" in prop, f"{name}.{param}"
            if param in ("alert", "dry_run", "drill") or param.startswith(("force", "dry_run")):
                assert prop.get("type") == "boolean", f"{name}.{param} should be a checkbox"
            if param == "severity":
                assert "enum" in str(schema.get("definitions", {})) or "enum" in prop, f"{name}.severity"


def test_a_step_of_the_weekly_or_monthly_flow_is_not_also_scheduled_on_that_period():
    """The composites run their steps; a step with its own weekly or monthly schedule would run twice."""
    from flows.maintenance_schedule import monthly_maintenance_flow, weekly_maintenance_flow

    steps = {"weekly": {"dependency-updates", "security-patches", "database-optimization"},
             "monthly": {"full-system-backup", "verify-backup", "performance-review", "security-audit"}}
    source = inspect.getsource(weekly_maintenance_flow.fn) + inspect.getsource(monthly_maintenance_flow.fn)
    assert all(f'"{name}"' in source for names in steps.values() for name in names)
    for d in SPEC["deployments"]:
        for period, names in steps.items():
            if d["flow_name"] in names:
                assert all(_period(s["cron"]) != period for s in _schedules(d)), (d["flow_name"], d["name"])
