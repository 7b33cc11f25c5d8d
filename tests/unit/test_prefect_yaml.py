"""prefect.yaml: every deployment points at a registered flow, on the runbook's schedule, with the
pull step, work pool and concurrency the runbook's unattended runs need. Parsed by Prefect's own model."""

from __future__ import annotations

import importlib
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
