"""`tfops` as users and scripts run it: real processes, real exit codes, real output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TFOPS = str(Path(sys.executable).parent / "tfops")


def tfops(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TFOPS, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ),
                          check=False)


def test_check_config_names_every_bad_field_and_exits_2_without_a_traceback(tmp_path):
    bad = tmp_path / "env.toml"
    bad.write_text(
        'environment = "prod"\n'
        '[chains.bsc]\nkind = "evm"\nsymbol = "BNB"\nchain_id = 56\nrpc_urls = ["https://a", "bsc-dataseed2"]\n'
        '[[endpoints]]\nname = "frontend"\ncomponent = "frontend"\nurl = "https://x"\ntimeout = 3\n'
    )
    result = tfops("check-config", str(bad))
    assert result.returncode == 2
    assert "chains.bsc.rpc_urls[1]: not an http(s) URL" in result.stderr
    assert "endpoints[0].timeout: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_check_config_accepts_the_production_example():
    result = tfops("check-config", str(REPO / "deployments" / "production.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_run_refuses_a_bad_environment_file_unknown_flow_and_unknown_parameter(tmp_path):
    bad = tmp_path / "env.toml"
    bad.write_text("environment = 3\n")
    result = tfops("run", "system-health", "--env", str(bad))
    assert result.returncode == 2 and "environment:" in result.stderr and "Traceback" not in result.stderr
    good = REPO / "deployments" / "production.example.toml"
    result = tfops("run", "no-such-flow", "--env", str(good))
    assert result.returncode == 2 and "unknown flow 'no-such-flow'" in result.stderr
    result = tfops("run", "system-health", "--env", str(good), "--param", "colour=red")
    assert result.returncode == 2 and "--param colour" in result.stderr


@pytest.mark.sandbox
def test_sandbox_fault_refuses_unknown_targets_and_modes_with_exit_2(sandbox):
    result = tfops("sandbox", "fault", "--dir", str(sandbox.dir), "nope", "down")
    assert result.returncode == 2 and "unknown target 'nope'" in result.stderr
    result = tfops("sandbox", "fault", "--dir", str(sandbox.dir), "frontend", "wrong-chain")
    assert result.returncode == 2 and "only to RPC endpoints" in result.stderr
    result = tfops("sandbox", "fault", "--dir", str(sandbox.dir), "frontend", "slow:soon")
    assert result.returncode == 2 and "slow:SECONDS" in result.stderr


@pytest.mark.sandbox
def test_run_json_with_the_frontend_down_exits_1_and_sends_one_slack_message(prefect_api, sandbox):
    assert tfops("sandbox", "fault", "--dir", str(sandbox.dir), "frontend", "down").returncode == 0
    result = tfops("run", "system-health", "--env", str(sandbox.env_file), "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in [*report["checks"], *report["chains"]]}
    assert statuses.pop("frontend") == "fail"
    assert set(statuses.values()) == {"ok"}
    slack = sandbox.received("slack")
    assert len(slack) == 1 and "frontend" in slack[0]["text"]
    received = tfops("sandbox", "received", "--dir", str(sandbox.dir), "pagerduty", "--json")
    routing_key = (sandbox.dir / "secrets" / "pagerduty_routing_key").read_text().strip()
    assert received.returncode == 0 and routing_key not in received.stdout
    assert json.loads(received.stdout)[0]["event"]["routing_key"] == "***"


@pytest.mark.sandbox
def test_make_demo_script_shows_the_reports_and_the_alerts(prefect_api):
    result = subprocess.run([sys.executable, "-m", "deployments.demo"], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ), cwd=REPO, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    healthy, _, rest = out.partition("=== Fault: the frontend goes down ===")
    assert "System Health Check: PASS (sandbox)" in healthy  # `tfops run` exited 0: the demo checks it
    assert "- [x] Blockchain connections active: PASS" in healthy
    assert "System Health Check: FAIL (sandbox)" in rest
    assert "FAIL frontend: no answer" in rest
    alert, _, morning = rest.split("=== The alert the sandbox's Slack received ===")[1].partition(
        "=== Morning Checklist")
    assert "[P0] system-health on sandbox: 1 new" in alert
    morning, _, evening = morning.partition("=== Evening Checklist: metrics")
    assert "# Morning Checklist: FAIL (sandbox)" in morning
    assert "## Wallet Balance Check: FAIL" in morning and "| bsc-deployer" in morning
    assert "## API Usage Review: OK" in morning and "## Error Log Review: OK" in morning
    quiet, _, spike = evening.partition("=== Anomaly")
    # OK, or WARN when earlier runs on the same Prefect server left baselines the sandbox's young day is far from
    assert re.search(r"# Evening Checklist: (OK|WARN) \(sandbox\)", quiet) and "## Security Scan: OK" in quiet
    assert re.search(r"Tokens created: (OK|WARN), [0-9]+ in 24 h", quiet)
    assert "# Evening Checklist: FAIL (sandbox)" in spike
    assert "Error rate exceeded 5%: FAIL" in spike
    assert '"event_action": "trigger"' in spike and "[P1] evening-checklist on sandbox: 1 new" in spike
    assert "stopped; no process or port left" in out
