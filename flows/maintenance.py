"""Weekly Maintenance 1 and 2: Dependency Updates and Security Patches, as flows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow

from flows.environment import load_settings
from flows.steps import run_step
from runbook.checks import CheckResult
from runbook.settings import Settings
from tasks.maintenance import patch_security, update_dependencies


@flow(name="dependency-updates", description="Runbook: Weekly Maintenance 1, Dependency Updates.")
async def dependency_updates_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Outdated packages of the application checkout, then `npm update` on a new branch and the test
    command; the branch keeps a commit only if the tests pass, otherwise it is deleted. Nothing is pushed.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert when the update or its tests fail.
    """
    settings = load_settings(env_file)
    return await run_step("dependency-updates", "Dependency Updates", settings, update_dependencies, alert)


@flow(name="security-patches", description="Runbook: Weekly Maintenance 2, Security Patches.")
async def security_patches_flow(
    env_file: str | None = None, alert: bool = True, force_approved: bool = False
) -> dict[str, Any]:
    """`npm audit` advisories by severity, then `npm audit fix` on a new branch kept only if the tests
    pass. An audit service that cannot be reached makes the step unknown, never "no vulnerabilities".

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for advisories at or above audit_fail_at, or a failed fix.
        force_approved: also run `npm audit fix --force` (semver-major changes); only after someone
            has reviewed the breaking changes the previous report listed.
    """
    settings = load_settings(env_file)

    async def check(s: Settings, now: datetime) -> list[CheckResult]:
        return await patch_security(s, now, force_approved=force_approved)

    return await run_step("security-patches", "Security Patches", settings, check, alert)
