"""The data-loss drill against the sandbox: records deleted, writes stopped, the restore approved in the
flow run's form, every record of the backup back with matching checksums, and the measured RPO."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from prefect_runs import form_of, paused_run, resume_and_wait

from flows.recovery import data_loss_recovery_flow

pytestmark = [pytest.mark.sandbox]


async def test_the_drill_deletes_records_and_restores_every_one_of_the_backup_after_approval(prefect_api, sandbox):
    counts = sandbox.vendor("convex", "GET", "tables")["counts"]
    run = asyncio.create_task(data_loss_recovery_flow(env_file=str(sandbox.env_file), drill=True,
                                                      reason="drill: a bad migration", return_state=True))
    flow_run = await paused_run("data-loss-recovery", 90)

    # while it waits: records are gone, writes are stopped, and nothing was restored
    damaged = sandbox.vendor("convex", "GET", "tables")
    assert damaged["counts"]["trades"] == counts["trades"] - 40 and damaged["counts"]["users"] == counts["users"] - 5
    assert damaged["imports"] == []
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True
    form = await form_of(flow_run)
    assert "## Restore from backup" in form and "drill: a bad migration" in form
    assert f"| trades | {counts['trades']:,} | {counts['trades'] - 40:,} | 40 |" in form
    assert f"| users | {counts['users']:,} | {counts['users'] - 5:,} | 5 |" in form

    state = await resume_and_wait(flow_run, {"approve": True, "approver": "on-call engineer"}, run, 120)
    assert state.is_completed(), state
    report = await state.result()

    assert report["passed"] is True, report["markdown"]
    assert report["restored"] is True and report["approved_by"] == "on-call engineer"
    assert report["lost_beyond_snapshot"] == 0
    assert all(c["status"] == "ok" for c in report["verification"])
    assert {c["target"] for c in report["verification"]} >= {"table trades", "table users"}
    # nothing was written between the drill's backup and the break: the window lost nothing
    assert report["written_after_snapshot"] == 0
    rpo = report["rpo"]
    assert rpo["met"] is True and rpo["target_minutes"] == 15
    assert 0 <= rpo["measured_rpo_s"] <= 15 * 60
    measured = (datetime.fromisoformat(rpo["incident_at"]) - datetime.fromisoformat(rpo["snapshot_at"]))
    assert abs(measured.total_seconds() - rpo["measured_rpo_s"]) < 0.01
    assert "measured RPO against the 15 min target: met" in report["summary"]
    assert "0 records lost beyond the snapshot" in report["summary"]

    # the sandbox holds every record again, through one import in replace mode; writes allowed
    restored = sandbox.vendor("convex", "GET", "tables")
    assert restored["counts"] == counts
    [imported] = restored["imports"]
    assert imported["mode"] == "replace"
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is False
    assert [s["step"] for s in report["steps"]][-8:] == [
        "drill: break", "stop all writes", "newest verified backup", "assess damage", "approval",
        "restore from backup", "verify data integrity", "writes allowed again"]
    assert all(s["ok"] for s in report["steps"])
    assert report["markdown"].startswith("## Data Loss recovery drill: RESTORED")


async def test_a_refused_restore_restores_nothing_and_keeps_writes_stopped(prefect_api, sandbox):
    run = asyncio.create_task(data_loss_recovery_flow(env_file=str(sandbox.env_file), drill=True, return_state=True))
    flow_run = await paused_run("data-loss-recovery", 90)
    state = await resume_and_wait(flow_run, {"approve": False, "approver": "on-call engineer"}, run, 120)
    report = await state.result()
    assert report["passed"] is False and report["restored"] is False
    assert report["summary"] == "not restored: refused; writes are still stopped"
    assert sandbox.vendor("convex", "GET", "tables")["imports"] == []
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True
    pages = [p["event"] for p in sandbox.received("pagerduty")]
    drill_key = (sandbox.dir / "secrets" / "drill_pagerduty_routing_key").read_text().strip()
    assert [p["routing_key"] for p in pages] == [drill_key]  # the drill channel, never production's
