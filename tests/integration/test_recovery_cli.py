"""`tfops run full-system-recovery --param drill=true --json`, as the on-call engineer runs a drill:
the sandbox is broken, recovered in the runbook's order, and healthy afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TFOPS = str(Path(sys.executable).parent / "tfops")

pytestmark = [pytest.mark.sandbox]


def tfops(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TFOPS, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)


def test_a_full_system_recovery_drill_breaks_and_recovers_the_sandbox(prefect_api, sandbox, tmp_path):
    # The monitoring step wants a recent checklist run: System Health stands in for the Morning Checklist.
    env = tmp_path / "environment.toml"
    env.write_text(sandbox.env_file.read_text()
                   .replace('file = "secrets/', f'file = "{sandbox.dir}/secrets/')
                   .replace('checklist_flow = "morning-checklist"', 'checklist_flow = "system-health"'))
    assert tfops("run", "system-health", "--env", str(env)).returncode == 0

    result = tfops("run", "full-system-recovery", "--env", str(env), "--param", "drill=true", "--json")

    assert result.returncode == 0, result.stderr + result.stdout[-3000:]
    report = json.loads(result.stdout)
    assert report["drill"] is True and report["passed"] is True
    assert [b.split(":")[0] for b in report["breaks"]] == ["backend", "frontend"]
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["backend", "frontend", "monitoring", "verification"]
    assert [s["budget_s"] for s in steps.values()] == [300, 600, 300, 600]
    assert all(s["outcome"] == "ok" and s["verdict"] == "within budget" for s in steps.values())
    assert [r["step"] for r in report["rto_table"]][-1] == "Total (RTO)"
    assert report["rto_table"][-1]["budget"] == "30 min" and report["within_rto"] is True
    assert report["total_s"] >= sum(s["duration_s"] for s in steps.values()) - 0.01  # rounded to ms
    # healthy afterwards: the System Health flow passes
    after = tfops("run", "system-health", "--env", str(env), "--json")
    assert after.returncode == 0, after.stdout[-2000:]
    assert json.loads(after.stdout)["passed"] is True
    assert sandbox.received("pagerduty") == []  # within every budget: nobody paged
