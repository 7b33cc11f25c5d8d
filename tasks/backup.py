"""Full System Backup and Backup Verification tasks: boto3 is blocking, so the runbook's backup code
runs in a worker thread while the task keeps a Prefect progress artifact up to date."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from pydantic import SecretStr

from runbook.checks import CheckResult, Status
from runbook.clients.s3 import S3Store, StorageError, make_boto3_client
from runbook.config_types import SecretRef
from runbook.procedures import backup
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import Settings
from tasks.common import resolver_for

PROGRESS_EVERY_S = 1.0


def backup_config(settings: Settings) -> backup.Backup | None:
    return getattr(settings, "backup", None)


def _problem(item: str, name: str, observed: str, expected: str, severity: str) -> list[CheckResult]:
    return [CheckResult(name, item, Status.fail, observed, expected, detail=observed, severity=severity,
                        target=name)]


def open_store(settings: Settings, cfg: backup.Backup, resolver: SecretResolver) -> S3Store:
    """The backup bucket, credentials resolved here at the edge. Raises StorageError/SecretError."""
    storage = settings.storage
    if storage is None:
        raise StorageError("no [storage] section: the backup needs a bucket")
    key_id = resolver.resolve(storage.access_key_id) if storage.access_key_id else None
    secret = resolver.resolve(storage.secret_access_key) if storage.secret_access_key else None
    client = make_boto3_client(
        region=storage.region, endpoint_url=storage.endpoint_url, access_key_id=key_id, secret_access_key=secret,
        timeout_s=cfg.timeout_s, max_pool_connections=max(10, cfg.max_concurrency * 2),
    )
    return S3Store(client, storage.bucket, part_size=cfg.part_size, max_concurrency=cfg.max_concurrency)


def config_refs(settings: Settings, cfg: backup.Backup) -> list[SecretRef]:
    """Every secret the environment references, for the encrypted config backup. The passphrase
    itself stays out: a backup that holds its own key protects nothing."""
    refs = list(settings.secret_refs())
    if settings.storage is not None:
        refs += [r for r in (settings.storage.access_key_id, settings.storage.secret_access_key) if r is not None]
    refs.append(cfg.convex_deploy_key)
    seen: set[SecretRef] = set()
    out = []
    for ref in refs:
        if ref not in seen and ref != cfg.encryption_passphrase:
            seen.add(ref)
            out.append(ref)
    return out


class _Progress:
    """Written by boto3's threads, read by the task's loop: plain numbers, no Prefect calls off-loop."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 0.0


async def _keep_artifact(progress: _Progress, artifact: UUID) -> None:
    shown = -1.0
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        if progress.percent != shown:
            shown = progress.percent
            with contextlib.suppress(Exception):  # a missed progress update must not stop a backup
                await aupdate_progress_artifact(artifact, round(shown, 1))


@task(name="full-system-backup", cache_policy=NO_CACHE, tags=["backup"])
async def take_backup(settings: Settings, env_file: str, now: datetime) -> tuple[list[CheckResult], dict[str, Any]]:
    """Export Convex, package the environment (encrypted) and artifacts, upload, write the manifest,
    then apply retention. Returns the checks and the report (no secret in either)."""
    cfg = backup_config(settings)
    if cfg is None:
        return [], {}
    sev = cfg.severity.value
    resolver = resolver_for(settings)
    try:
        store = open_store(settings, cfg, resolver)
        passphrase = resolver.resolve(cfg.encryption_passphrase)
        deploy_key = resolver.resolve(cfg.convex_deploy_key)
    except (StorageError, SecretError) as exc:
        return _problem(backup.ITEM_BACKUP, "backup-setup", str(exc), "storage and secrets usable", sev), {}

    progress = _Progress()
    keeper: asyncio.Task[None] | None = None
    if TaskRunContext.get() is not None:
        with contextlib.suppress(Exception):
            artifact = await acreate_progress_artifact(
                0.0, key=f"backup-progress-{settings.environment}".lower().replace("_", "-"),
                description=f"Full System Backup upload ({settings.environment})")
            keeper = asyncio.create_task(_keep_artifact(progress, artifact))
    try:
        report = await asyncio.to_thread(
            backup.run_backup, cfg, store, backup.convex_source(cfg, deploy_key), Path(env_file), now, progress,
            environment=settings.environment, passphrase=passphrase, secret_refs=config_refs(settings, cfg),
            resolve=resolver.resolve,
        )
    finally:
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await aupdate_progress_artifact(artifact, round(progress.percent, 1))
    if report.complete:
        retention, deleted = await asyncio.to_thread(backup.apply_retention, cfg, store, now)
        report.results.append(retention)
        report.retention = deleted
    get_run_logger().info("backup %s: %s, %d bytes in %.1f s", report.backup_id, report.status.value,
                          report.bytes_uploaded, report.upload_s)
    return report.results, report.to_dict()


@task(name="verify-backup", cache_policy=NO_CACHE, tags=["backup"])
async def verify_latest_backup(settings: Settings, now: datetime) -> list[CheckResult]:
    """The newest complete backup against its manifest, its tables, its encryption, and the RPO."""
    cfg = backup_config(settings)
    if cfg is None:
        return []
    resolver = resolver_for(settings)
    try:
        store = open_store(settings, cfg, resolver)
    except (StorageError, SecretError) as exc:
        return _problem(backup.ITEM_VERIFY, "verify-setup", str(exc), "storage usable", cfg.severity.value)
    passphrase: SecretStr | None
    try:
        passphrase = resolver.resolve(cfg.encryption_passphrase)
    except SecretError:
        passphrase = None  # verification still runs; the decrypt check then reports unknown
    return await asyncio.to_thread(backup.verify_backup, cfg, store, now, passphrase=passphrase)
