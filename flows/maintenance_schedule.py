"""Weekly Maintenance (Mondays) and Monthly Maintenance (the 1st): the runbook's steps as subflows,
one report and one alert at the end.

Each step is its own flow, runnable alone; here they run with their own alerts held back. Steps
that share something run one after the other in a lane (the npm steps work on the same checkout;
the backup is verified after it is taken), lanes run concurrently. A step that fails or crashes
does not stop the steps after it: the report names it and the alert carries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prefect import flow, get_run_logger

from flows.backup import full_system_backup_flow, verify_backup_flow
from flows.checklist import _checks
from flows.database import database_optimization_flow
from flows.environment import env_path, load_settings
from flows.maintenance import dependency_updates_flow, security_patches_flow
from flows.performance import performance_review_flow
from flows.publish import publish
from flows.security_audit import security_audit_flow
from runbook.checks import CheckResult, Status, worst
from runbook.procedures import system_health
from runbook.settings import Settings
from tasks.alerts import notify

Step = tuple[str, str, Callable[[], Awaitable[dict[str, Any]]]]  # (flow name, runbook title, start it)


async def _run_lane(lane: Sequence[Step]) -> list[tuple[Step, dict[str, Any]]]:
    out = []
    for step in lane:
        name, title, start = step
        try:
            report = await start()
        except Exception as exc:  # noqa: BLE001 - one step's crash is reported; the next step still runs
            get_run_logger().warning("%s crashed: %s: %s", name, type(exc).__name__, exc)
            report = {"checklist": name, "status": Status.fail.value, "passed": False, "crashed": True,
                      "checks": [CheckResult(name, title, Status.fail, f"the step crashed: {type(exc).__name__}: "
                                             f"{str(exc)[:300]}", "the step runs to its report", str(exc)[:500],
                                             severity="P2", target=title).to_dict()],
                      "markdown": f"## {title}: CRASHED\n\n- [ ] {type(exc).__name__}: {str(exc)[:300]}\n"}
        out.append((step, report))
    return out


def _step_line(title: str, report: dict[str, Any]) -> str:
    status = str(report.get("status", "unknown"))
    mark = "[x]" if report.get("passed") else ("[?]" if status == "unknown" else "[ ]")
    word = "CRASHED" if report.get("crashed") else status.upper()
    return f"- {mark} {title}: {word}"


async def run_maintenance(
    name: str, title: str, settings: Settings, lanes: Sequence[Sequence[Step]]
) -> dict[str, Any]:
    started = system_health.now()
    done = [pair for lane in await asyncio.gather(*(_run_lane(lane) for lane in lanes)) for pair in lane]
    order = [step[0] for lane in lanes for step in lane]
    done.sort(key=lambda pair: order.index(pair[0][0]))
    checks = [c for _, report in done for c in _checks(report)]
    statuses = [Status(str(r.get("status", "unknown"))) for _, r in done]
    status = worst([*statuses, *(c.status for c in checks)])
    failed = [step[0] for step, r in done if not r.get("passed")]
    heading = f"# {title}: {status.value.upper()} ({settings.environment})"
    summary = [_step_line(step[1], r) for step, r in done]
    if failed:
        summary += ["", "Did not pass: " + ", ".join(failed) + "."]
    markdown = "\n".join([heading, "", *summary, "", *(str(r.get("markdown", "")) for _, r in done)])
    report: dict[str, Any] = {
        "checklist": name,
        "environment": settings.environment,
        "status": status.value,
        "passed": not failed,
        "failed_steps": failed,
        "started_at": started.isoformat(),
        "finished_at": "",
        "steps": {step[0]: {"status": r.get("status"), "passed": bool(r.get("passed")),
                            "crashed": bool(r.get("crashed"))} for step, r in done},
        "checks": [c.to_dict() for c in checks],
        "markdown": markdown,
        "alerts": [],
    }
    report["alerts"] = await notify(settings, name, checks)
    if report["alerts"]:
        get_run_logger().warning("%s: %s; alert: %s", title, status.value, "; ".join(report["alerts"]))
    rows = [{"step": step[0], "status": r.get("status"), "passed": bool(r.get("passed")),
             "crashed": bool(r.get("crashed"))} for step, r in done]
    await publish(name, markdown, rows, f"{title} ({settings.environment})")
    report["finished_at"] = system_health.now().isoformat()
    return report


@flow(name="weekly-maintenance", description="Runbook: Weekly Maintenance (Mondays), all steps.")
async def weekly_maintenance_flow(env_file: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Dependency Updates then Security Patches (one checkout), and Database Optimization alongside;
    one report, one alert naming every step that did not pass.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        dry_run: Database Optimization counts and deletes nothing (the npm steps work on a local
            branch that is never pushed, and run as usual).
    """
    env_file = env_path(env_file)
    settings = load_settings(env_file)
    return await run_maintenance("weekly-maintenance", "Weekly Maintenance", settings, [
        [("dependency-updates", "Dependency Updates", lambda: dependency_updates_flow(env_file=env_file, alert=False)),
         ("security-patches", "Security Patches", lambda: security_patches_flow(env_file=env_file, alert=False))],
        [("database-optimization", "Database Optimization",
          lambda: database_optimization_flow(env_file=env_file, alert=False, dry_run=dry_run))],
    ])


@flow(name="monthly-maintenance", description="Runbook: Monthly Maintenance (the 1st), all steps.")
async def monthly_maintenance_flow(env_file: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Full System Backup then its verification, Performance Review and Security Audit alongside;
    one report, one alert naming every step that did not pass. Verification runs even when the
    backup failed: it then checks the newest complete backup, and its age says how stale it is.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        dry_run: the Security Audit plans its key rotations and changes nothing.
    """
    env_file = env_path(env_file)
    settings = load_settings(env_file)
    return await run_maintenance("monthly-maintenance", "Monthly Maintenance", settings, [
        [("full-system-backup", "Full System Backup", lambda: full_system_backup_flow(env_file=env_file, alert=False)),
         ("verify-backup", "Backup Verification", lambda: verify_backup_flow(env_file=env_file, alert=False))],
        [("performance-review", "Performance Review", lambda: performance_review_flow(env_file=env_file, alert=False))],
        [("security-audit", "Security Audit",
          lambda: security_audit_flow(env_file=env_file, dry_run=dry_run, alert=False))],
    ])
