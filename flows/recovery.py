"""Recovery Procedures 1-4 and Emergency Procedures 2 (Data Loss) as flows, each runnable as a drill.

A drill (`drill=True`) first breaks, in the sandbox or a staging environment, what the procedure
recovers (the `[recovery.drill]` actions), then runs the procedure for real and records the
measured RTO/RPO. Drill alerts go only to the drill channel from configuration.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import apause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.checklist import _checks
from flows.environment import env_path, load_settings
from flows.history import read_rows
from flows.publish import artifact_key, publish
from flows.system_health import system_health_flow
from runbook.checks import CheckResult, Status, worst
from runbook.procedures import recovery
from runbook.procedures.recovery import PlanReport, Recovery, StepOutcome, StepRecord
from runbook.settings import Settings
from tasks import recovery as t

DRILL_TREND_KEY = "recovery-drill-trend"


def _run_id() -> str:
    ctx = FlowRunContext.get()
    return str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else f"local-{time.time_ns()}"


# ---- steps --------------------------------------------------------------------------------------

class RedeployDone(RunInput):
    deployed: bool = Field(default=False, description="Tick once `npx convex deploy` finished")
    by: str = Field(default="", description="Your name, for the report")


async def backend_step(settings: Settings) -> StepOutcome:
    """Backend Recovery: verify functions deployed and the critical paths; redeploy when they fail
    (the configured command, or a person, with the exact steps); restore the environment
    variables (set what is missing or differs, read back); verify again."""
    cfg = t.backend_config(settings)
    checks = await t.check_backend(settings)
    healthy = all(c.status.passed for c in checks)
    how = ""
    if not healthy:
        if cfg.redeploy is not None:
            result = await t.redeploy_backend(settings)
            if not result.ok:
                return StepOutcome(False, f"redeploy failed: {result.detail}", checks)
            how = f"redeployed: {result.detail}"
        else:
            rcfg = t.recovery_config(settings)
            try:
                answer = await apause_flow_run(
                    wait_for_input=RedeployDone.with_initial_data(
                        description=recovery.manual_redeploy_steps(cfg, settings.environment)),
                    timeout=rcfg.approval_timeout_s, poll_interval=rcfg.approval_poll_s, key="backend-redeploy")
            except FlowPauseTimeout:
                return StepOutcome(False, f"nobody confirmed the redeploy within {rcfg.approval_timeout_s} s", checks)
            if not answer.deployed:
                return StepOutcome(False, "the redeploy was not confirmed", checks)
            how = f"redeployed by hand ({answer.by or 'unnamed'})"
    env = await t.restore_backend_environment(settings)
    env_note = f"; environment variables {env.detail}" if env.restored or not env.ok else ""
    if not env.ok:
        return StepOutcome(False, (how + "; " if how else "") + f"environment variables not restored: {env.detail}",
                           [*checks, *env.checks])
    if healthy and not env.restored:
        return StepOutcome(True, "functions deployed and answering; no redeploy needed", [*checks, *env.checks])
    how = how or "no redeploy needed"
    after = await t.backend_until_healthy(settings, cfg.settle_s)
    if all(c.status.passed for c in after):
        return recovery.outcome_of([*after, *env.checks], f"{how}{env_note}; functions deployed and answering")
    return StepOutcome(False, f"{how}{env_note}, but the backend still fails", [*after, *env.checks])


async def frontend_step(settings: Settings) -> StepOutcome:
    """Frontend Recovery: the last good deployment promoted when the frontend fails (it serves with
    the variables it was built with), then the project's variables restored ("Copy .env.production")
    so that the next build has them too."""
    outcome = await t.recover_frontend(settings)
    if not outcome.ok:
        return outcome
    env = await t.restore_frontend_environment(settings)
    if not env.ok:
        return StepOutcome(False, f"{outcome.detail}; but environment variables not restored: {env.detail}",
                           [*outcome.checks, *env.checks])
    if env.restored:
        outcome.detail += f"; environment variables {env.detail}"
    outcome.checks = [*outcome.checks, *env.checks]
    return outcome


async def monitoring_step(settings: Settings, drill: bool) -> StepOutcome:
    checks = await t.check_monitoring(settings, drill)
    return recovery.outcome_of(checks, "deployments scheduled, checklist recent, alert channel reachable")


async def verification_step(env_file: str) -> StepOutcome:
    """The System Health flow, all of it, must pass."""
    report = await system_health_flow(env_file=env_file, alert=False)
    return recovery.outcome_of(_checks(report), "the System Health Check passes")


# ---- the timed plan -----------------------------------------------------------------------------

async def _settle_broken(settings: Settings, what: list[str], settle_s: float) -> None:
    """Wait (at most `settle_s`) until each break shows, so the clock measures a real recovery."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        broken = []
        if "backend" in what:
            broken.append(not all(c.status.passed for c in await t.check_backend(settings)))
        if "frontend" in what:
            broken.append(not all(c.status.passed for c in await t.probe_frontend(settings)))
        if all(broken):
            return
        await asyncio.sleep(0.5)


async def run_timed(settings: Settings, env_file: str, procedure: str, steps: list[str], drill: bool,
                    breaks: list[str]) -> PlanReport:
    cfg = t.recovery_config(settings)
    logger = get_run_logger()
    budgets = cfg.budgets
    rto_s = budgets.rto * 60 if steps == list(recovery.ORDER) else sum(budgets.seconds(s) for s in steps)
    report = PlanReport(procedure, settings.environment, drill, rto_s, cfg.severity,
                        recovery.plan_steps(budgets, steps))
    if drill:
        for what in breaks:
            result = await t.drill_break(settings, what)
            report.breaks.append(result.detail if result.ok else f"NOT BROKEN: {result.detail}")
        await _settle_broken(settings, breaks, cfg.drill.settle_s)
    dedup = f"tfops-recovery-{settings.environment}-{_run_id()}"

    async def over_budget(step: StepRecord, severity: Any) -> str:
        text = recovery.over_budget_text(report, step)
        logger.warning("%s", text)
        return await t.page_incident(settings, text, severity.value, dedup, drill)

    work = {
        "backend": lambda: backend_step(settings),
        "frontend": lambda: frontend_step(settings),
        "monitoring": lambda: monitoring_step(settings, drill),
        "verification": lambda: verification_step(env_file),
    }
    await recovery.run_plan(report, {s: work[s] for s in steps}, over_budget)
    title = procedure.replace("-", " ").title() + (" drill" if drill else "")
    await publish(procedure + ("-drill" if drill else ""), report.markdown(), report.rows(),
                  f"{title} ({settings.environment})")
    if drill:
        report.notes.append(await record_drill(report))
    (logger.info if report.passed else logger.error)(
        "%s: %s in %.1f s", title, "recovered" if report.passed else f"stopped at {report.stopped_at}",
        report.total_s)
    return report


async def record_drill(report: PlanReport) -> str:
    """Keep the drill in the history (a new version of one keyed table artifact) and publish the trend."""
    if FlowRunContext.get() is None:
        return "drill not recorded: no flow run"
    key = artifact_key(recovery.DRILL_HISTORY_KEY + "-" + report.environment)
    rows = recovery.drill_rows(report)
    await create_table_artifact(table=rows, key=key, description=f"Recovery drill ({report.procedure})",
                                _sync=False)  # type: ignore[call-arg, misc]
    history = [r for _, r in await read_rows(key)]
    trend = recovery.trend_markdown(list(reversed(history)))
    await create_markdown_artifact(markdown=trend, key=artifact_key(f"{DRILL_TREND_KEY}-{report.environment}"),
                                   description="Measured RTO per step across drills",
                                   _sync=False)  # type: ignore[call-arg, misc]
    return f"Drill recorded ({len(history)} in the history; trend in artifact {DRILL_TREND_KEY}-{report.environment})."


@flow(name="full-system-recovery",
      description="Runbook: Recovery Procedures 3, Full System Recovery: backend, frontend, monitoring, verification.")
async def full_system_recovery_flow(env_file: str | None = None, drill: bool = False) -> dict[str, Any]:
    """Backend (Convex, 5 min) -> Frontend (Vercel, 10) -> Monitoring (5) -> Verification (10);
    total RTO 30 min. Each step is timed against its budget; one over budget raises the severity and
    pages; a failed step stops the order. Publishes the RTO table.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: first break the backend and the frontend (the `[recovery.drill]` actions), then recover;
            alerts go to the drill channel only; the measured times join the drill history.
    """
    path = env_path(env_file)
    settings = load_settings(path)
    report = await run_timed(settings, path, "full-system-recovery", list(recovery.ORDER), drill,
                             ["backend", "frontend"])
    return report.to_dict()


@flow(name="backend-recovery", description="Runbook: Recovery Procedures 2, Backend Recovery (Convex).")
async def backend_recovery_flow(env_file: str | None = None, drill: bool = False) -> dict[str, Any]:
    """Verify the Convex functions and critical paths; redeploy when they fail (the configured
    command, or a person with the exact steps, confirmed in the UI); verify again. 5-minute budget.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: first make the backend's functions fail, then recover.
    """
    path = env_path(env_file)
    report = await run_timed(load_settings(path), path, "backend-recovery", ["backend"], drill, ["backend"])
    return report.to_dict()


@flow(name="frontend-recovery", description="Runbook: Recovery Procedures 1, Frontend Recovery (Vercel).")
async def frontend_recovery_flow(env_file: str | None = None, drill: bool = False) -> dict[str, Any]:
    """Promote the last good production deployment on Vercel when the frontend fails, read
    production back, then verify through the health checks. 10-minute budget.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: first put a bad deployment in production, then recover.
    """
    path = env_path(env_file)
    report = await run_timed(load_settings(path), path, "frontend-recovery", ["frontend"], drill, ["frontend"])
    return report.to_dict()


# ---- data loss ----------------------------------------------------------------------------------

class ApproveRestore(RunInput):
    approve: bool = Field(default=False, description="Tick to replace the tables with the backup's")
    approver: str = Field(default="", description="Your name, for the report")


def _restore_form(damage: list[recovery.TableDamage], backup_id: str, snapshot_at: datetime | None,
                  incident_at: datetime, reason: str) -> type[RunInput]:
    lines = [f"## Restore from backup {backup_id}? ({reason})", "",
             f"The backup's snapshot was taken at {snapshot_at.isoformat() if snapshot_at else 'an unknown time'}; "
             f"the incident at {incident_at.isoformat()}. Everything written between the two is not in the backup.",
             "", recovery.damage_markdown(damage), "",
             "Approving imports the backup's export in replace mode (`npx convex import --replace`): each table in it "
             "is replaced by the backup's documents. Writes are stopped (maintenance) until the data is verified."]
    return ApproveRestore.with_initial_data(description="\n".join(lines))


@flow(name="data-loss-recovery",
      description="Runbook: Emergency Procedures 2, Data Loss: stop writes, assess, restore from backup, verify.")
async def data_loss_recovery_flow(env_file: str | None = None, drill: bool = False, incident_at: str | None = None,
                                  reason: str = "data loss") -> dict[str, Any]:
    """Maintenance on; live documents per table against the newest verified backup; after approval
    in the Prefect UI, import the backup in replace mode; verify counts and checksums per table;
    maintenance off. Reports the data lost window (snapshot to incident) as the measured RPO.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: take a backup when none is within the RPO, delete records (`recovery.drill.break_data`),
            then recover; alerts go to the drill channel only.
        incident_at: when the data was lost (ISO-8601, UTC by default); default: now (in a drill: the break).
        reason: what happened, for the approval form and the report.
    """
    settings = load_settings(env_file)
    cfg = t.recovery_config(settings)
    t.backup_config(settings)  # the restore's source: no [backup] section is a clear error before anything starts
    logger = get_run_logger()
    started = datetime.now(UTC)
    incident = recovery.parse_time(incident_at, "incident_at", started)
    steps: list[dict[str, Any]] = []
    at_incident: dict[str, recovery.TableDigest] | None = None

    def note(step: str, ok: bool, detail: str) -> None:
        steps.append({"step": step, "ok": ok, "detail": detail, "at": datetime.now(UTC).isoformat()})

    with tempfile.TemporaryDirectory(prefix="tfops-recovery-") as tmp:
        scratch = Path(tmp)
        if drill:
            taken = await t.newest_backup_at(settings)
            if not t.backup_window_ok(taken, datetime.now(UTC), cfg.max_rpo_minutes):
                from tasks.backup import take_backup

                results, _ = await take_backup(settings, env_path(env_file), datetime.now(UTC))
                ok = bool(results) and all(r.status.passed for r in results)
                note("drill: backup first", ok, "a backup within the RPO taken before the drill" if ok
                     else "the backup before the drill failed")
            at_incident = await t.export_live(settings, scratch)
            broke = await t.drill_break(settings, "data")
            incident = datetime.now(UTC)
            note("drill: break", broke.ok, broke.detail)
        report = await _recover_data(settings, cfg, scratch, incident, reason, drill, at_incident, note)
    report["steps"] = steps
    report["started_at"] = started.isoformat()
    report["finished_at"] = datetime.now(UTC).isoformat()
    report["markdown"] = _data_markdown(report)
    await publish("data-loss-recovery" + ("-drill" if drill else ""), report["markdown"], steps,
                  f"Data Loss recovery{' drill' if drill else ''} ({settings.environment})")
    if not report["passed"]:
        await t.page_incident(settings, ("[DRILL] " if drill else "") + f"Data loss recovery ({settings.environment}) "
                              f"did not complete: {report['summary']}", "P0",
                              f"tfops-recovery-{settings.environment}-{_run_id()}", drill)
    (logger.info if report["passed"] else logger.error)("Data loss recovery: %s", report["summary"])
    return report


async def _recover_data(settings: Settings, cfg: Recovery, scratch: Path, incident: datetime, reason: str,
                        drill: bool, at_incident: dict[str, recovery.TableDigest] | None, note: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"procedure": "data-loss-recovery", "environment": settings.environment, "drill": drill,
                           "incident_at": incident.isoformat(), "passed": False, "restored": False}

    def stop(summary: str) -> dict[str, Any]:
        out["summary"] = summary
        return out

    # 1. stop all writes
    on = await t.maintenance(settings, True, reason)
    note("stop all writes", on.ok, on.detail)
    if on.status == "failed":
        return stop(f"writes not stopped: {on.detail}")
    # 2. assess damage scope against the newest verified backup
    checks, manifest, zip_path = await t.newest_verified_backup(settings, scratch, datetime.now(UTC))
    out["backup_checks"] = [c.to_dict() for c in checks]
    if manifest is None or zip_path is None:
        bad = "; ".join(f"{c.target or c.name}: {c.observed}" for c in checks if not c.status.passed)
        note("newest verified backup", False, bad)
        return stop(f"no verified backup to restore from: {bad}")
    backup_digest = await asyncio.to_thread(recovery.digest_snapshot, zip_path)
    note("newest verified backup", True, f"{manifest.backup_id}: {len(manifest.objects)} objects verified, snapshot "
                                         f"{manifest.snapshot_at.isoformat() if manifest.snapshot_at else 'unknown'}")
    out["backup_id"] = manifest.backup_id
    try:
        live = await t.export_live(settings, scratch)
    except Exception as exc:  # noqa: BLE001 - an unreadable deployment is "live unknown", and the restore can go on
        live = None
        note("assess damage", False, f"live documents unknown: {type(exc).__name__}: {exc}")
    damage = recovery.assess_damage({k: v.count for k, v in backup_digest.items()}, live)
    out["damage"] = [{"table": d.table, "backup": d.backup, "live": d.live, "missing": d.missing} for d in damage]
    if live is not None:
        note("assess damage", True, f"{sum(d.missing for d in damage):,} documents missing against the backup")
    # 3. restore from backup, after approval
    try:
        answer = await apause_flow_run(
            wait_for_input=_restore_form(damage, manifest.backup_id, manifest.snapshot_at, incident, reason),
            timeout=cfg.approval_timeout_s, poll_interval=cfg.approval_poll_s, key="approve-restore")
    except FlowPauseTimeout:
        note("approval", False, f"no answer within {cfg.approval_timeout_s} s")
        return stop("not restored: no approval; writes are still stopped")
    approver = str(getattr(answer, "approver", "")) or None
    if not getattr(answer, "approve", False):
        note("approval", False, "refused" + (f" by {approver}" if approver else ""))
        return stop("not restored: refused; writes are still stopped")
    out["approved_by"] = approver
    note("approval", True, f"approved by {approver or 'unnamed'}")
    ok, detail = await t.restore_snapshot(settings, zip_path)
    note("restore from backup", ok, detail)
    if not ok:
        return stop(f"not restored: {detail}; writes are still stopped")
    out["restored"] = True
    # 4. verify data integrity
    restored = await t.export_live(settings, scratch)
    verified = recovery.verify_restore(backup_digest, restored)
    out["verification"] = [c.to_dict() for c in verified]
    lost = recovery.lost_beyond_snapshot(backup_digest, restored)
    out["lost_beyond_snapshot"] = lost
    integrity = all(c.status.passed for c in verified) and lost == 0
    note("verify data integrity", integrity, f"{len(verified)} tables: counts and checksums "
         + ("match the backup" if integrity else "DO NOT match the backup") + f"; {lost:,} documents of the backup "
         "missing")
    if at_incident is not None:
        out["written_after_snapshot"] = recovery.written_after_snapshot(at_incident, backup_digest)
    snapshot_at = manifest.snapshot_at or datetime.fromisoformat(manifest.started_at)
    rpo = recovery.Rpo(snapshot_at, incident, cfg.max_rpo_minutes)
    out["rpo"] = rpo.to_dict()
    if not integrity:
        return stop("restored, but the data does not match the backup; writes are still stopped")
    off = await t.maintenance(settings, False, reason)
    note("writes allowed again", off.ok, off.detail)
    out["passed"] = off.ok
    return stop(("restored and verified; " if off.ok else "restored and verified, but maintenance is still on; ")
                + rpo.text() + f"; {lost} records lost beyond the snapshot")


def _data_markdown(report: dict[str, Any]) -> str:
    title = "Data Loss recovery" + (" drill" if report.get("drill") else "")
    lines = [f"## {title}: {'RESTORED' if report['passed'] else 'INCOMPLETE'}", "", report.get("summary", ""), ""]
    for n, s in enumerate(report.get("steps", []), 1):
        lines.append(f"{n}. {'[x]' if s['ok'] else '[ ]'} **{s['step']}** ({s['at']}): {s['detail']}")
    if report.get("damage"):
        lines += ["", "Damage against the backup:", "",
                  recovery.damage_markdown([recovery.TableDamage(d["table"], d["backup"], d["live"])
                                            for d in report["damage"]])]
    if "written_after_snapshot" in report:
        lines += ["", f"Written after the snapshot and lost with the data lost window: "
                      f"{report['written_after_snapshot']:,} documents."]
    return "\n".join(lines) + "\n"


# ---- database recovery --------------------------------------------------------------------------

class RestoreConfirmed(RunInput):
    restored: bool = Field(default=False, description="Tick once support confirms the restore")
    restored_to: str = Field(default="", description="The point in time support restored to (ISO-8601, UTC)")
    ticket: str = Field(default="", description="Support's ticket or message reference")


@flow(name="database-recovery",
      description="Runbook: Recovery Procedures 4, Database Recovery: point-in-time restore through the provider.")
async def database_recovery_flow(env_file: str | None = None, drill: bool = False, restore_to: str | None = None,
                                 incident_at: str | None = None, reason: str = "database corruption") -> dict[str, Any]:
    """Stops all writes (the maintenance switch: nothing written now would survive the restore),
    tells the person what to send the provider's support, to whom, with the timestamp; waits for
    their confirmation in the UI; then verifies the backend and the data against the newest backup,
    measures the RPO (restored-to time against the incident) and lets writes in again. When the
    restore is not confirmed or the data does not verify, writes stay stopped and the incident is
    paged.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: first delete records (`recovery.drill.break_data`); the person then restores.
        restore_to: the point in time to ask for (ISO-8601); default: the incident time.
        incident_at: when the damage happened (ISO-8601); default: now.
        reason: what happened, for the support request.
    """
    settings = load_settings(env_file)
    cfg = t.recovery_config(settings)
    if cfg.database is None:
        raise ValueError("recovery.database: no [recovery.database] section (the provider's support contact)")
    now = datetime.now(UTC)
    incident = recovery.parse_time(incident_at, "incident_at", now)
    target = recovery.parse_time(restore_to, "restore_to", incident)
    broke = await t.drill_break(settings, "data") if drill else None
    guide = recovery.support_request(cfg.database, settings.environment, target, reason)
    out: dict[str, Any] = {"procedure": "database-recovery", "environment": settings.environment, "drill": drill,
                           "incident_at": incident.isoformat(), "requested_restore_to": target.isoformat(),
                           "support_contact": cfg.database.support_contact, "passed": False, "restored": False,
                           "break": broke.detail if broke else None}
    on = await t.maintenance(settings, True, reason)
    out["writes_stopped"] = on.ok
    out["maintenance"] = [on.detail]
    checks: list[CheckResult] = []
    if on.status == "failed":
        out["summary"] = f"not started: writes not stopped ({on.detail})"
    else:
        try:
            answer = await apause_flow_run(
                wait_for_input=RestoreConfirmed.with_initial_data(
                    description=guide + "\n\nWrites are stopped (maintenance) until the restored data is verified."),
                timeout=cfg.approval_timeout_s, poll_interval=cfg.approval_poll_s, key="confirm-restore")
        except FlowPauseTimeout:
            answer = None
        if answer is None or not answer.restored:
            out["summary"] = ("not restored: the restore was not confirmed in the UI; writes are still stopped"
                              + (f" (ticket {answer.ticket})" if answer is not None and answer.ticket else ""))
        else:
            out["restored"] = True
            restored_to = recovery.parse_time(answer.restored_to or None, "restored_to", target)
            checks = await t.check_backend(settings) if cfg.backend else []
            manifest, live, unread = None, {}, ""
            try:  # whatever fails here, writes stay stopped and the failure is paged below, never a crash
                with tempfile.TemporaryDirectory(prefix="tfops-recovery-") as tmp:
                    _, manifest, _ = await t.newest_verified_backup(settings, Path(tmp), datetime.now(UTC))
                    if manifest is not None:
                        live = await t.export_live(settings, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - reported as unknown, with the reason
                unread = f"the restored data could not be read: {type(exc).__name__}: {str(exc)[:300]}"
            if unread:
                checks.append(CheckResult("backup", "Database Recovery", Status.unknown, unread,
                                          "the restored data against the newest verified backup", severity="P0",
                                          target="restored data"))
            elif manifest is None:
                checks.append(CheckResult("backup", "Database Recovery", Status.unknown,
                                          "no verified backup to compare the restored data with",
                                          "a verified backup", severity="P0", target="newest backup"))
            else:
                for table, count in sorted(manifest.tables.items()):
                    now_count = live[table].count if table in live else 0
                    checks.append(CheckResult(f"table:{table}", "Database Recovery",
                                              Status.ok if now_count >= count else Status.fail,
                                              f"{now_count:,} documents", f">= {count:,} (backup {manifest.backup_id})",
                                              severity="P0", target=f"table {table}"))
            rpo = recovery.Rpo(restored_to, incident, cfg.max_rpo_minutes)
            out.update(restored_to=restored_to.isoformat(), ticket=answer.ticket, rpo=rpo.to_dict(),
                       checks=[c.to_dict() for c in checks])
            verified = bool(checks) and all(c.status.passed for c in checks)
            if not verified:
                out["summary"] = "restored, but verification FAILED; writes are still stopped; " + rpo.text()
            else:
                off = await t.maintenance(settings, False, reason)
                out["maintenance"].append(off.detail)
                out["writes_stopped"] = not off.ok
                out["passed"] = off.ok
                out["summary"] = ("verified; writes allowed again; " if off.ok else
                                  "verified, but maintenance is still on; ") + rpo.text()
    markdown = (f"## Database Recovery{' drill' if drill else ''}: {'RESTORED' if out['passed'] else 'INCOMPLETE'}"
                f"\n\n{out['summary']}\n\n" + guide + "\n\n## Outcome\n\n" + out["summary"] + "\n" + "".join(
                    f"\n- {c.target or c.name}: {c.status.value.upper()}, {c.observed}" for c in checks))
    out["markdown"] = markdown
    await publish("database-recovery" + ("-drill" if drill else ""), markdown,
                  [c.to_dict() for c in checks] or [{"summary": out["summary"]}],
                  f"Database Recovery{' drill' if drill else ''} ({settings.environment})")
    if not out["passed"]:
        await t.page_incident(settings, ("[DRILL] " if drill else "") + f"Database recovery ({settings.environment}) "
                              f"did not complete: {out['summary']}", "P0",
                              f"tfops-recovery-{settings.environment}-{_run_id()}", drill)
    (get_run_logger().info if out["passed"] else get_run_logger().error)("Database recovery: %s", out["summary"])
    return out


# ---- Appendix C: the recovery checklist ---------------------------------------------------------

CHECKLIST_ITEMS = ("System accessible", "All features working", "No data loss", "Performance normal",
                   "Monitoring active", "Incident documented", "Post-mortem scheduled")
LATENCY_KEY = "recovery-checklist-latency"
RECOVERY_FLOWS = ["full-system-recovery", "backend-recovery", "frontend-recovery", "data-loss-recovery",
                  "database-recovery", "system-health", "emergency-shutdown"]


class ChecklistAnswers(RunInput):
    incident_url: str = Field(default="", description="Where the incident is documented (ticket or document URL)")
    postmortem_at: str = Field(default="", description="When the post-mortem meeting is (e.g. 2025-02-03 15:00 UTC)")
    notes: str = Field(default="", description="Anything the checks above could not see")


def _item(n: int, status: Status, observed: str, expected: str, how: str) -> dict[str, Any]:
    return {"item": CHECKLIST_ITEMS[n], "status": status.value, "passed": status.passed, "observed": observed,
            "expected": expected, "checked": how}


def _summarize(checks: list[CheckResult]) -> tuple[Status, str]:
    if not checks:
        return Status.unknown, "nothing to check is configured"
    bad = [c for c in checks if not c.status.passed]
    status = worst(c.status for c in checks)
    if bad:
        return status, "; ".join(f"{c.target or c.name}: {c.observed}" for c in bad)
    return status, f"{len(checks)} checks pass"


async def _timeline(since: datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterStartTime

    from runbook.procedures.postmortem import Event

    events = []
    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=RECOVERY_FLOWS)),
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)),  # type: ignore[arg-type]
                limit=200)
            names = {f.id: f.name for f in await client.read_flows(
                flow_filter=FlowFilter(name=FlowFilterName(any_=RECOVERY_FLOWS)))}
    except Exception:  # noqa: BLE001 - a timeline without the runs is still a document to fill in
        return []
    for r in runs:
        name = names.get(r.flow_id, "flow")
        if r.start_time:
            events.append(Event(r.start_time, f"{name} run {r.name} started"))
        if r.end_time:
            events.append(Event(r.end_time, f"{name} run {r.name} ended {r.state_name or ''}".strip()))
    return events


@flow(name="recovery-checklist", description="Runbook: Appendix C, Recovery Checklist, and the post-mortem document.")
async def recovery_checklist_flow(env_file: str | None = None, drill: bool = False, incident: str = "incident",
                                  incident_at: str | None = None, incident_url: str = "",
                                  ask: bool = True) -> dict[str, Any]:
    """System accessible, all features working, no data loss, performance normal, monitoring
    active: checked automatically. Incident documented and post-mortem scheduled: asked in the UI
    (unless `incident_url` is given and answers). Creates the post-mortem document from its
    template with the timeline of the recovery runs.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        drill: a rehearsal: the channel check posts to the drill channel; the document says DRILL.
        incident: a short name of the incident, for the post-mortem.
        incident_at: when it started (ISO-8601); default: 24 hours before now.
        incident_url: where it is documented; checked to answer.
        ask: ask a person in the UI for what cannot be checked (off for unattended runs).
    """
    from runbook.procedures import postmortem
    from tasks.health import probe_chains, probe_endpoints

    settings = load_settings(env_file)
    now = datetime.now(UTC)
    since = recovery.parse_time(incident_at, "incident_at", now - timedelta(hours=24))
    items: list[dict[str, Any]] = []
    # 1-2: accessible and working (the critical paths: every configured HTTP call, a read per chain)
    frontend = await t.probe_frontend(settings)
    status, seen = _summarize(frontend)
    items.append(_item(0, status, seen, "the frontend answers", "automatic"))
    endpoints, (rpcs, rollups) = await asyncio.gather(probe_endpoints(settings), probe_chains(settings))
    status, seen = _summarize([*endpoints, *rollups])
    items.append(_item(1, status, seen, "every endpoint answers; one read per chain", "automatic"))
    # 3: no data loss: live documents against the newest backup
    try:
        with tempfile.TemporaryDirectory(prefix="tfops-recovery-") as tmp:
            _, manifest, _ = await t.newest_verified_backup(settings, Path(tmp), now)
            live = await t.export_live(settings, Path(tmp)) if manifest is not None else {}
        if manifest is None:
            items.append(_item(2, Status.unknown, "no verified backup to compare with", "tables >= the backup",
                               "automatic"))
        else:
            short = [f"{tb}: {live[tb].count if tb in live else 0:,} < {n:,}" for tb, n in manifest.tables.items()
                     if (live[tb].count if tb in live else 0) < n]
            items.append(_item(2, Status.fail if short else Status.ok, "; ".join(short) or
                               f"every table holds at least the backup {manifest.backup_id}'s documents",
                               "tables >= the backup", "automatic"))
    except Exception as exc:  # noqa: BLE001 - unknown, with the reason
        items.append(_item(2, Status.unknown, f"{type(exc).__name__}: {exc}", "tables >= the backup", "automatic"))
    # 4: performance: latency against the trailing baseline of earlier runs
    latencies = {c.name: c.latency_s for c in [*endpoints, *rpcs] if c.latency_s is not None}
    key = artifact_key(f"{LATENCY_KEY}-{settings.environment}")
    history = [rows for _, rows in await read_rows(key, limit=14)] if FlowRunContext.get() else []
    slow = []
    for name, value in latencies.items():
        past = sorted(r["latency_s"] for rows in history for r in rows if r.get("name") == name)
        if past and value > max(2 * past[len(past) // 2], past[len(past) // 2] + 0.2):
            slow.append(f"{name} {1000 * value:.0f} ms (baseline {1000 * past[len(past) // 2]:.0f} ms)")
    if not history:
        items.append(_item(3, Status.warn, "no baseline yet: these latencies start it", "latency near the baseline",
                           "automatic"))
    else:
        items.append(_item(3, Status.fail if slow else Status.ok, "; ".join(slow) or
                           f"{len(latencies)} latencies within 2x their baseline of {len(history)} run(s)",
                           "latency near the baseline", "automatic"))
    if FlowRunContext.get() is not None:
        await create_table_artifact(table=[{"name": n, "latency_s": round(v, 4)} for n, v in latencies.items()],
                                    key=key, description="Recovery checklist latencies",
                                    _sync=False)  # type: ignore[call-arg, misc]
    # 5: monitoring
    status, seen = _summarize(await t.check_monitoring(settings, drill))
    items.append(_item(4, status, seen, "deployments scheduled, checklist recent, alerts reachable", "automatic"))
    # 6-7: asked
    answers = None
    if ask:
        try:
            answers = await apause_flow_run(
                wait_for_input=ChecklistAnswers.with_initial_data(
                    description="## Recovery checklist: the items only you can answer\n\n"
                                + "\n".join(f"- {'[x]' if i['passed'] else '[ ]'} {i['item']}: {i['observed']}"
                                            for i in items),
                    incident_url=incident_url),
                timeout=t.recovery_config(settings).approval_timeout_s, key="recovery-checklist")
        except FlowPauseTimeout:
            answers = None
    url = (getattr(answers, "incident_url", "") or incident_url).strip()
    meeting = (getattr(answers, "postmortem_at", "") or "").strip()
    if url:
        from runbook.clients import http_probe

        async with http_probe.make_client(2) as client:
            seen_obs = await http_probe.probe(client, "incident", url, deadline_s=10) if url.startswith(
                ("http://", "https://")) else None
        reachable = seen_obs is None or seen_obs.get("status") == 200
        items.append(_item(5, Status.ok if reachable else Status.fail, url + ("" if reachable else " does not answer"),
                           "a linked incident record", "asked" if answers else "parameter"))
    else:
        items.append(_item(5, Status.unknown, "not answered", "a linked incident record", "asked"))
    events = await _timeline(since)
    events.append(postmortem.Event(now, "recovery checklist run: " + ", ".join(
        f"{i['item']} {i['status']}" for i in items)))
    document = postmortem.render(
        title=("DRILL: " if drill else "") + incident, environment=settings.environment, incident_at=since,
        severity=t.recovery_config(settings).severity.value, events=events, checklist=items,
        objectives=[], meeting=meeting, incident_url=url)
    if FlowRunContext.get() is not None:
        await create_markdown_artifact(markdown=document, key=artifact_key(f"postmortem-{settings.environment}"),
                                       description=f"Post-mortem: {incident}", _sync=False)  # type: ignore[call-arg, misc]
    items.append(_item(6, Status.ok if meeting else Status.warn,
                       f"document created ({len(events)} timeline events)" + (f"; meeting {meeting}" if meeting
                                                                                  else "; meeting not scheduled"),
                       "a document and a meeting", "automatic + asked"))
    passed = all(i["passed"] for i in items)
    markdown = "## Recovery Checklist: " + ("PASS" if passed else "NOT DONE") + "\n\n" + "\n".join(
        f"- {'[x]' if i['passed'] else '[ ]'} {i['item']}: {i['status'].upper()}, {i['observed']} ({i['checked']})"
        for i in items) + "\n"
    await publish("recovery-checklist", markdown, items, f"Recovery Checklist ({settings.environment})")
    return {"checklist": "recovery-checklist", "environment": settings.environment, "passed": passed,
            "items": items, "markdown": markdown, "postmortem": document}
