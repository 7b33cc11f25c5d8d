"""The Morning Checklist composes its steps' flows: one report, one alert naming every failure."""

from __future__ import annotations

import pytest

from flows.morning import morning_checklist_flow

pytestmark = [pytest.mark.sandbox]


async def test_one_report_and_one_alert_for_failures_in_two_steps(prefect_api, sandbox):
    sandbox.fault("frontend", "down")
    sandbox.fault("sol-deployer", "low")
    report = await morning_checklist_flow(env_file=str(sandbox.env_file))
    assert report["passed"] is False
    assert report["steps"]["system-health"]["passed"] is False
    assert report["steps"]["wallet-balances"]["passed"] is False
    failing = sorted(c["name"] for c in report["checks"] if c["status"] == "fail")
    assert failing == ["frontend", "solana:sol-deployer"]
    slack = sandbox.received("slack")
    assert len(slack) == 1, [m["text"] for m in slack]
    assert slack[0]["text"].startswith("[P0] morning-checklist on sandbox: 2 new")
    assert "frontend" in slack[0]["text"] and "solana:sol-deployer" in slack[0]["text"]
    md = report["markdown"]
    assert md.startswith("# Morning Checklist: FAIL (sandbox)")
    assert "## System Health Check: FAIL" in md and "## Wallet Balance Check: FAIL" in md
    # the dead-man's switch hears that the checklist ran, and that it failed
    [ping] = sandbox.vendor("healthchecks", "GET", "pings")
    assert ping["signal"] == "fail" and ping["body"].startswith("Morning Checklist: FAIL (sandbox)")
    assert "- Frontend responsive: frontend fail" in ping["body"].splitlines()
    assert any(ln.startswith("- Wallet Balance Check: solana:sol-deployer") and ln.endswith(" fail")
               for ln in ping["body"].splitlines())
    assert report["heartbeat"] == "healthchecks: pinged (fail)"
    assert md.endswith("Heartbeat (dead-man's switch): healthchecks: pinged (fail)\n")
