"""Monthly Maintenance 1: Full System Backup, and Backup Verification, as flows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows.environment import env_path
from flows.steps import run_step
from runbook import settings as config
from runbook.checks import CheckResult
from runbook.settings import Settings
from tasks.backup import take_backup, verify_latest_backup


@flow(name="full-system-backup", description="Runbook: Monthly Maintenance 1, Full System Backup.")
async def full_system_backup_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Export the Convex data, back up the environment configuration (encrypted) and the deployment
    artifacts to S3, write the manifest last, then delete backups past retention.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert when the backup fails.
    """
    path = env_path(env_file)
    settings = config.load(path)
    kept: dict[str, Any] = {}

    async def check(s: Settings, now: datetime) -> list[CheckResult]:
        results, report = await take_backup(s, path, now)
        kept.update(report)
        return results

    report = await run_step("full-system-backup", "Full System Backup", settings, check, alert)
    report["backup"] = kept
    return report


@flow(name="verify-backup", description="Runbook: Monthly Maintenance 1, Backup Verification (and the RPO).")
async def verify_backup_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Check the newest complete backup object by object against its manifest (size, SHA-256),
    count each table's documents in its export, and report its age as the current RPO.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert when verification fails or the RPO is exceeded.
    """
    settings = config.load(env_path(env_file))
    return await run_step("verify-backup", "Backup Verification", settings,
                          lambda s, now: verify_latest_backup(s, now), alert)
