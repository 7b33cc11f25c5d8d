"""Database Recovery against the sandbox: the flow stops writes and says what to send to the
provider's support, to whom, with the timestamp; the test plays the provider (it puts the records
back in the Convex double, as a point-in-time restore would) and answers the flow run's form; the
flow verifies the data against the newest backup and reports the measured RPO. Without a
confirmed restore, nothing is verified, writes stay stopped and the incident is paged."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prefect_runs import form_of, paused_run, resume_and_wait

from flows.backup import full_system_backup_flow
from flows.recovery import database_recovery_flow

pytestmark = [pytest.mark.sandbox]


async def corrupted(sandbox) -> tuple[dict[str, int], datetime]:  # noqa: ANN001
    """A verified backup of the good data, then 12 trades lost: the incident."""
    assert (await full_system_backup_flow(env_file=str(sandbox.env_file), alert=False))["passed"] is True
    counts = sandbox.vendor("convex", "GET", "tables")["counts"]
    sandbox.vendor("convex", "POST", "tables", {"delete": {"trades": 12}})
    return counts, datetime.now(UTC).replace(microsecond=0)


async def test_the_person_is_told_what_to_ask_support_and_the_confirmed_restore_is_verified_with_its_rpo(
        prefect_api, sandbox):
    counts, incident = await corrupted(sandbox)
    run = asyncio.create_task(database_recovery_flow(
        env_file=str(sandbox.env_file), incident_at=incident.isoformat(), reason="a migration corrupted trades",
        return_state=True))
    flow_run = await paused_run("database-recovery", 90)

    # while it waits: writes are stopped, and the form says what to send, to whom, for which time
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True
    form = await form_of(flow_run)
    assert "Send this to **support@convex.dev**" in form
    assert "Subject: Point-in-time restore request: tokenforge-sandbox" in form
    assert f"to its state at {incident.strftime('%Y-%m-%d %H:%M:%S UTC')} ({incident.isoformat()})" in form
    assert "Reason: a migration corrupted trades." in form
    assert "Writes are stopped (maintenance) until the restored data is verified." in form
    assert sandbox.vendor("convex", "GET", "tables")["counts"]["trades"] == counts["trades"] - 12

    # the provider restores the deployment to just before the incident, and says so
    sandbox.vendor("convex", "DELETE", "tables")
    restored_to = incident - timedelta(seconds=40)
    state = await resume_and_wait(flow_run, {"restored": True, "restored_to": restored_to.isoformat(),
                                             "ticket": "CVX-1234"}, run, 120)
    assert state.is_completed(), state
    report = await state.result()

    assert report["passed"] is True and report["restored"] is True, report["markdown"]
    assert report["ticket"] == "CVX-1234" and report["support_contact"] == "support@convex.dev"
    assert report["requested_restore_to"] == incident.isoformat()
    tables = {c["target"]: c for c in report["checks"] if c["name"].startswith("table:")}
    assert {"table trades", "table users"} <= set(tables)
    assert all(c["status"] == "ok" for c in report["checks"]), report["checks"]
    assert tables["table trades"]["observed"] == f"{counts['trades']:,} documents"
    # the measured RPO: the restored-to time against the incident, 40 s, within the 15 minutes
    rpo = report["rpo"]
    assert rpo["measured_rpo_s"] == 40 and rpo["met"] is True and rpo["target_minutes"] == 15
    assert rpo["snapshot_at"] == restored_to.isoformat() and rpo["incident_at"] == incident.isoformat()
    assert report["summary"].startswith("verified; writes allowed again; data lost window 40.0 s")
    assert "measured RPO against the 15 min target: met" in report["summary"]
    assert report["markdown"].startswith("## Database Recovery: RESTORED")
    # writes are allowed again, and the records are all there
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is False
    assert sandbox.vendor("convex", "GET", "tables")["counts"] == counts
    assert sandbox.received("pagerduty") == []


async def test_a_restore_not_confirmed_fails_clearly_keeps_writes_stopped_and_pages(prefect_api, sandbox):
    counts, incident = await corrupted(sandbox)
    run = asyncio.create_task(database_recovery_flow(env_file=str(sandbox.env_file), incident_at=incident.isoformat(),
                                                     return_state=True))
    flow_run = await paused_run("database-recovery", 90)
    report = await (await resume_and_wait(flow_run, {"restored": False, "ticket": "CVX-9"}, run, 120)).result()

    assert report["passed"] is False and report["restored"] is False
    assert report["summary"] == ("not restored: the restore was not confirmed in the UI; writes are still stopped "
                                 "(ticket CVX-9)")
    assert "rpo" not in report and "checks" not in report  # nothing restored, nothing verified or measured
    assert report["markdown"].startswith("## Database Recovery: INCOMPLETE")
    # as documented: writes stay stopped until someone restores, and the data is as it was
    assert report["writes_stopped"] is True
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True
    assert sandbox.vendor("convex", "GET", "tables")["counts"]["trades"] == counts["trades"] - 12
    [page] = [p["event"] for p in sandbox.received("pagerduty")]
    assert page["payload"]["severity"] == "critical"
    assert page["payload"]["summary"].startswith("Database recovery (sandbox) did not complete: not restored")


async def test_a_confirmed_restore_whose_data_is_still_short_is_not_passed_and_writes_stay_stopped(
        prefect_api, sandbox):
    counts, incident = await corrupted(sandbox)
    run = asyncio.create_task(database_recovery_flow(env_file=str(sandbox.env_file), incident_at=incident.isoformat(),
                                                     return_state=True))
    flow_run = await paused_run("database-recovery", 90)
    # confirmed, but the provider restored nothing
    state = await resume_and_wait(flow_run, {"restored": True, "restored_to": incident.isoformat()}, run, 120)
    report = await state.result()

    assert report["passed"] is False and report["restored"] is True
    trades = next(c for c in report["checks"] if c["name"] == "table:trades")
    assert trades["status"] == "fail" and trades["observed"] == f"{counts['trades'] - 12:,} documents"
    assert report["summary"].startswith("restored, but verification FAILED; writes are still stopped")
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True


async def test_restored_data_that_cannot_be_read_is_unknown_keeps_writes_stopped_and_pages(prefect_api, sandbox):
    _, incident = await corrupted(sandbox)
    run = asyncio.create_task(database_recovery_flow(env_file=str(sandbox.env_file), incident_at=incident.isoformat(),
                                                     return_state=True))
    flow_run = await paused_run("database-recovery", 90)
    sandbox.fault("convex", "status:500")  # the backend stops answering between the restore and its check
    state = await resume_and_wait(flow_run, {"restored": True, "restored_to": incident.isoformat()}, run, 120)
    assert state.is_completed(), state  # reported, not crashed
    report = await state.result()

    assert report["passed"] is False and report["restored"] is True
    [unread] = [c for c in report["checks"] if c["target"] == "restored data"]
    assert unread["status"] == "unknown" and unread["observed"].startswith("the restored data could not be read: ")
    assert report["summary"].startswith("restored, but verification FAILED; writes are still stopped")
    assert sandbox.vendor("convex", "GET", "maintenance")["enabled"] is True
    [page] = [p["event"] for p in sandbox.received("pagerduty")]
    assert page["payload"]["summary"].startswith("Database recovery (sandbox) did not complete: restored, but")
