"""Monthly Maintenance 3, Security Audit: rotate API keys, review access logs."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.transactions import atransaction

from flows.environment import load_settings
from flows.publish import artifact_key, publish
from runbook.checks import CheckResult, Status, worst
from runbook.procedures import access_review, key_rotation, system_health
from runbook.procedures.key_rotation import Rotation, SecurityAudit, age_days
from runbook.procedures.reports import render_step
from runbook.settings import Settings
from tasks.alerts import notify
from tasks.key_rotation import (
    audit_config,
    inspect_live_key,
    issue_new_key,
    read_back_after_rollback,
    review_access_logs,
    revoke_leftover_keys,
    revoke_old_key,
    verify_new_key,
)

NAME = "security-audit"


def _backstop_s(cfg: SecurityAudit) -> float:
    # The clients' deadlines bound every call; a task timeout only catches what slips past them.
    return 8 * cfg.timeout_s + cfg.verify_attempts * (cfg.timeout_s + cfg.verify_delay_s) + 30


async def rotate(settings: Settings, cfg: SecurityAudit, service: str, dry_run: bool, force: bool) -> Rotation:
    """One service's rotation. Issue + verify run in one Prefect transaction: if verify fails, the
    issue task's rollback hook restores the old key in the Secret block and revokes the new key.
    The old key is revoked only after the transaction has committed (see runbook.procedures.key_rotation)."""
    svc = cfg.service(service)
    t = _backstop_s(cfg)
    r = Rotation(service, svc.secret_block, "not rotated")
    now = system_health.now()
    live = await inspect_live_key.with_options(timeout_seconds=t)(settings, service)
    r.old = live.label if live.tail else ""
    if live.problem:
        r.step("inspect", "failed", live.problem)
        return r
    age = age_days(live.created_ms, now)
    shown_age = "age unknown" if age is None else f"{age:.1f} days old"
    r.step("inspect", "ok", f"live key {live.label}, {shown_age}" if live.id
           else f"the key in the block ({live.tail}) does not authenticate; it will be replaced")
    try:
        leftover = await revoke_leftover_keys.with_options(timeout_seconds=t)(settings, service, live.id, dry_run)
    except key_rotation.RotationFailed as exc:
        r.step("leftover keys", "failed", str(exc))
        return r
    r.step("leftover keys", "ok", leftover)
    if live.id and age is not None and age < cfg.min_key_age_days and not force:
        r.outcome = "not due"
        r.step("rotate", "skipped", f"the live key is {age:.1f} days old (< {cfg.min_key_age_days:g}); "
                                    "run with force=true to rotate anyway")
        return r
    if dry_run:
        r.outcome = "planned"
        r.step("rotate", "skipped", f"dry run: would create a key, store it in {svc.secret_block!r}, verify it, "
                                    f"then revoke {live.label}")
        return r
    issued = None
    try:
        async with atransaction():
            issued = await issue_new_key.with_options(timeout_seconds=t)(settings, service)
            r.new = issued.label
            r.step("create + store", "ok", f"new key {issued.label} created and stored in {svc.secret_block!r} "
                                           "(read back)")
            verified = await verify_new_key.with_options(timeout_seconds=t)(settings, service, issued)
            r.step("verify", "ok", verified)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the transaction has rolled back; report it
        step = "verify" if issued is not None else "create + store"
        r.step(step, "failed", str(exc) or type(exc).__name__)
        after = await read_back_after_rollback.with_options(timeout_seconds=t)(settings, service, live)
        stray = ", ".join(after.stray) or "none"
        detail = f"the Secret block holds {after.block_holds}; keys created by this rotation still active: {stray}"
        r.step("rollback", "done" if after.clean else "failed", detail)
        r.outcome = "rolled back" if after.clean else "rolled back, needs a person"
        return r
    revoked = await revoke_old_key.with_options(timeout_seconds=t)(settings, service, live)
    r.step("revoke old", "ok" if revoked.done else "failed", revoked.detail)
    r.outcome = "rotated" if revoked.done else "rotated, old key still active"
    return r


def _markdown(environment: str, results: list[CheckResult], rotations: list[Rotation],
              access: access_review.AccessFindings | str, dry_run: bool) -> str:
    note = "Dry run: nothing was created, stored or revoked." if dry_run else ""
    head = render_step(f"Security Audit ({environment})", results, note)
    return "\n".join([head, "### Rotate API keys", "", key_rotation.rotations_markdown(rotations),
                      "### Review access logs", "", access_review.markdown_tables(access)])


@flow(name=NAME, description="Runbook: Monthly Maintenance 3, Security Audit (rotate API keys, review access logs).")
async def security_audit_flow(env_file: str | None = None, services: list[str] | None = None,
                              dry_run: bool = False, force: bool = False, alert: bool = True) -> dict[str, Any]:
    """Rotate each configured service's API key (create, store in its Secret block, verify, then
    revoke the old one; rolled back if any step before the revoke fails), and review the access log
    for logins from new places and failed admin logins.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        services: rotate only these services (default: all in security_audit.services).
        dry_run: for drills: inspect and plan, create and revoke nothing.
        force: rotate even a key younger than security_audit.min_key_age_days (a suspected leak).
        alert: send the alert when a rotation or the review fails.
    """
    settings = load_settings(env_file)
    cfg = audit_config(settings)
    unknown = [s for s in services or [] if s not in cfg.names()]
    if unknown:
        raise ValueError(f"services: {', '.join(unknown)} not in security_audit.services ({', '.join(cfg.names())})")
    started = system_health.now()
    rotations = [await rotate(settings, cfg, s, dry_run, force) for s in (services or cfg.names())]
    access = await review_access_logs(settings, started)
    results = [r.check(cfg.severity) for r in rotations]
    if cfg.access_review is not None:
        results += access_review.judge(access, cfg.access_review)
    status = worst(r.status for r in results) if results else Status.unknown
    markdown = _markdown(settings.environment, results, rotations, access, dry_run)
    rows = [{"check": r.target or r.name, "status": r.status.value, "observed": r.observed,
             "expected": r.expected, "severity": r.severity} for r in results]
    await publish(NAME, markdown, rows, f"Security Audit ({settings.environment})")
    if FlowRunContext.get() is not None:
        await create_table_artifact(table=access_review.table_rows(access) or [{"finding": "none"}],  # type: ignore[call-arg,misc]
                                    key=artifact_key(f"{NAME}-access-log"), _sync=False,
                                    description=f"Access log review ({settings.environment})")
    report: dict[str, Any] = {
        "checklist": NAME, "environment": settings.environment, "status": status.value,
        "passed": bool(results) and all(r.status.passed for r in results), "dry_run": dry_run,
        "started_at": started.isoformat(), "finished_at": system_health.now().isoformat(),
        "rotations": [r.to_dict() for r in rotations], "checks": [r.to_dict() for r in results],
        "access_log": access_review.table_rows(access) if not isinstance(access, str) else access,
        "markdown": markdown, "alerts": [],
    }
    if alert and not dry_run:
        report["alerts"] = await notify(settings, NAME, results)
    logger = get_run_logger()
    (logger.info if report["passed"] else logger.warning)(
        "Security Audit: %s; %s", status.value, "; ".join(f"{r.service}: {r.outcome}" for r in rotations) or
        "no key rotated")
    return report
