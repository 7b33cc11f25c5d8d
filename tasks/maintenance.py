"""Weekly Maintenance steps on the application checkout: dependency updates and security patches."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.checks import CheckResult
from runbook.procedures import dependencies
from runbook.settings import Settings


def _section(settings: Settings) -> dependencies.Dependencies | None:
    # Read loosely so that an environment file without the section skips the step.
    section = getattr(settings, "dependencies", None)
    if section is not None and not isinstance(section, dependencies.Dependencies):
        raise TypeError(f"settings.dependencies is a {type(section).__name__}, not a Dependencies section")
    return section


@task(name="update-dependencies", cache_policy=NO_CACHE, tags=["maintenance"])
async def update_dependencies(settings: Settings, now: datetime) -> list[CheckResult]:
    """`npm outdated`, then `npm update` on a new branch kept only if the tests pass."""
    cfg = _section(settings)
    if cfg is None:
        return []
    return await dependencies.dependency_updates(cfg, settings.base_dir, now)


@task(name="patch-security", cache_policy=NO_CACHE, tags=["maintenance"])
async def patch_security(settings: Settings, now: datetime, force_approved: bool = False) -> list[CheckResult]:
    """`npm audit` by severity, then `npm audit fix` on a new branch kept only if the tests pass."""
    cfg = _section(settings)
    if cfg is None:
        return []
    return await dependencies.security_patches(cfg, settings.base_dir, now, force_approved=force_approved)
