"""Recovery tasks: each resolves only the secret its step needs, at the edge, and calls the runbook's
recovery procedures with one client and its deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import SecretStr

from runbook.checks import CheckResult, Status
from runbook.clients import convex_env, convex_export, pagerduty
from runbook.clients.http_probe import make_client
from runbook.clients.s3 import S3Store, StorageError, file_sha256
from runbook.clients.vercel import VercelClient
from runbook.clients.vercel_env import VercelEnv
from runbook.config_types import SecretRef
from runbook.procedures import backup, recovery, system_health
from runbook.procedures.emergency import Effect, enable_maintenance
from runbook.procedures.recovery import ActionResult, Recovery, StepOutcome, TableDigest
from runbook.secrets import SecretError
from runbook.settings import Component, ConfigError, Settings
from tasks.backup import open_store
from tasks.common import post_slack, resolver_for


def recovery_config(settings: Settings) -> Recovery:
    cfg = getattr(settings, "recovery", None)
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["recovery: no [recovery] section"])
    return cfg


def backend_config(settings: Settings) -> recovery.BackendRecovery:
    cfg = recovery_config(settings).backend
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["recovery.backend: no [recovery.backend] section"])
    return cfg


def backup_config(settings: Settings) -> backup.Backup:
    cfg = getattr(settings, "backup", None)
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["backup: no [backup] section (data recovery "
                                                                  "restores from it)"])
    return cfg


# ---- drills and actions -------------------------------------------------------------------------

@task(name="drill-break", cache_policy=NO_CACHE, tags=["recovery", "drill"])
async def drill_break(settings: Settings, what: str) -> ActionResult:
    """Break what a procedure recovers (`what`: backend, frontend, data), as `[recovery.drill]` says.
    Breaking the backend also removes an environment variable when `break_environment` is set, so
    the drill proves the variables are restored too."""
    drill = recovery_config(settings).drill
    action = getattr(drill, f"break_{what}")
    if action is None:
        return ActionResult(False, f"recovery.drill.break_{what}: not configured; nothing broken")
    async with make_client(2) as client:
        result = await recovery.run_action(action, client, settings.base_dir)
        if what == "backend" and drill.break_environment is not None:
            env = await recovery.run_action(drill.break_environment, client, settings.base_dir)
            return ActionResult(result.ok and env.ok, f"{what}: {result.detail}; environment: {env.detail}")
    return ActionResult(result.ok, f"{what}: {result.detail}")


@task(name="redeploy-backend", cache_policy=NO_CACHE, tags=["recovery"])
async def redeploy_backend(settings: Settings) -> ActionResult:
    """The configured redeploy (`npx convex deploy`), the deploy key passed by environment only."""
    cfg = backend_config(settings)
    assert cfg.redeploy is not None
    try:
        key = resolver_for(settings).resolve(cfg.deploy_key)
    except SecretError as exc:
        return ActionResult(False, f"recovery.backend.deploy_key: {exc}")
    async with make_client(2) as client:
        return await recovery.run_action(cfg.redeploy, client, settings.base_dir,
                                         secret_env={"CONVEX_DEPLOY_KEY": key.get_secret_value()})


# ---- backend ------------------------------------------------------------------------------------

@task(name="check-backend", cache_policy=NO_CACHE, tags=["recovery"])
async def check_backend(settings: Settings) -> list[CheckResult]:
    cfg = backend_config(settings)
    try:
        key = resolver_for(settings).resolve(cfg.deploy_key)
    except SecretError as exc:
        return [CheckResult("deploy-key", recovery.ITEM, Status.unknown, str(exc), "readable", severity="P0",
                            target="recovery.backend.deploy_key")]
    async with make_client(8) as client:
        return await recovery.check_backend(cfg, client, key)


async def backend_until_healthy(settings: Settings, settle_s: float) -> list[CheckResult]:
    deadline = time.monotonic() + settle_s
    while True:
        checks = await check_backend(settings)
        if all(c.status.passed for c in checks) or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.5)


# ---- environment variables ----------------------------------------------------------------------

async def _newest_manifest(bcfg: backup.Backup, store: S3Store) -> backup.Manifest | None:
    """The manifest of the newest complete backup; None when there is none."""
    complete = [b for b in await asyncio.to_thread(backup.list_backups, bcfg, store) if b.complete]
    if not complete:
        return None
    return backup.Manifest.from_json(
        await asyncio.to_thread(store.get_bytes, complete[-1].prefix + backup.MANIFEST, backup.MAX_MANIFEST_BYTES))


class EnvironmentUnavailable(Exception):
    """The values to restore cannot be had; the message names the variable or the source, never a value."""


async def _values_from_backup(settings: Settings, refs: dict[str, SecretRef]) -> dict[str, SecretStr]:
    """The newest complete backup's encrypted environment configuration: its SHA-256 checked against
    the manifest, decrypted here, and each variable's value found by its reference."""
    bcfg = backup_config(settings)
    resolver = resolver_for(settings)
    try:
        store = open_store(settings, bcfg, resolver)
        passphrase = resolver.resolve(bcfg.encryption_passphrase)
        manifest = await _newest_manifest(bcfg, store)
        if manifest is None:
            raise EnvironmentUnavailable("no complete backup holds the environment configuration")
        obj = next((o for o in manifest.objects if o.kind == "environment-config"), None)
        if obj is None:
            raise EnvironmentUnavailable(f"backup {manifest.backup_id} holds no environment configuration")
        blob = await asyncio.to_thread(store.get_bytes, obj.key, backup.MAX_CONFIG_BYTES + 4096, obj.version_id)
    except (StorageError, SecretError, backup.ManifestError) as exc:
        raise EnvironmentUnavailable(f"backup: {exc}") from None
    if hashlib.sha256(blob).hexdigest() != obj.sha256:
        raise EnvironmentUnavailable(f"backup {manifest.backup_id}: the environment configuration's SHA-256 "
                                     "does not match its manifest")
    try:
        bundle = await asyncio.to_thread(backup.decrypt, blob, passphrase)
        values, missing = recovery.values_from_config_bundle(bundle, refs)
    except (backup.DecryptionError, recovery.BundleError) as exc:
        raise EnvironmentUnavailable(f"backup {manifest.backup_id}: {exc}") from None
    if missing:
        raise EnvironmentUnavailable(f"backup {manifest.backup_id} holds no value for {', '.join(missing)} "
                                     "(taken before the variable was configured?)")
    return values


async def environment_values(settings: Settings, env: recovery.EnvironmentRestore, where: str) -> dict[
        str, SecretStr]:
    """The values to restore, from the configured source, resolved here at the edge."""
    if env.source == "backup":
        return await _values_from_backup(settings, dict(env.variables))
    resolver = resolver_for(settings)
    values = {}
    for name, ref in env.variables.items():
        try:
            values[name] = resolver.resolve(ref)
        except SecretError as exc:
            raise EnvironmentUnavailable(f"{where}.environment.variables.{name}: {exc}") from None
    return values


@task(name="restore-backend-environment", cache_policy=NO_CACHE, tags=["recovery"])
async def restore_backend_environment(settings: Settings) -> recovery.EnvRestore:
    """Backend Recovery step 2: the Convex deployment's variables set from the configured source,
    through the documented environment-variable API, and read back."""
    cfg = backend_config(settings)
    if not cfg.environment.variables:
        return recovery.EnvRestore(True, "no environment variables configured")
    try:
        key = resolver_for(settings).resolve(cfg.deploy_key)
        wanted = await environment_values(settings, cfg.environment, "recovery.backend")
    except (SecretError, EnvironmentUnavailable) as exc:
        return recovery.EnvRestore(False, f"environment variables not restored: {exc}")
    async with make_client(2) as client:
        return await recovery.restore_environment(
            convex_env.ConvexEnv(client, cfg.convex_url, key, cfg.timeout_s), wanted, "Convex")


@task(name="restore-frontend-environment", cache_policy=NO_CACHE, tags=["recovery"])
async def restore_frontend_environment(settings: Settings) -> recovery.EnvRestore:
    """Frontend Recovery "Copy .env.production": the Vercel project's variables for the target set
    from the configured source, through Vercel's documented project env API, and read back."""
    fcfg = recovery_config(settings).frontend
    if fcfg is None or not fcfg.environment.variables:
        return recovery.EnvRestore(True, "no environment variables configured")
    vc = getattr(settings, "vercel", None)
    if vc is None:
        return recovery.EnvRestore(False, "no [vercel] section: the frontend's variables cannot be restored")
    try:
        token = resolver_for(settings).resolve(vc.token)
        wanted = await environment_values(settings, fcfg.environment, "recovery.frontend")
    except (SecretError, EnvironmentUnavailable) as exc:
        return recovery.EnvRestore(False, f"environment variables not restored: {exc}")
    async with make_client(2) as client:
        return await recovery.restore_environment(VercelEnv(client, vc, token, fcfg.target), wanted,
                                                  f"Vercel ({fcfg.target})")


# ---- frontend -----------------------------------------------------------------------------------

def _frontend_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"endpoints": [e for e in settings.endpoints
                                                     if e.component is Component.frontend]})


@task(name="probe-frontend", cache_policy=NO_CACHE, tags=["recovery"])
async def probe_frontend(settings: Settings) -> list[CheckResult]:
    only = _frontend_settings(settings)
    async with make_client(8) as client:
        return await system_health.probe_endpoints(only, client, resolver_for(settings))


@task(name="recover-frontend", cache_policy=NO_CACHE, tags=["recovery"])
async def recover_frontend(settings: Settings) -> StepOutcome:
    """Promote the last good Vercel deployment when the frontend fails, and verify both ways."""
    vc = getattr(settings, "vercel", None)
    if vc is None:
        return StepOutcome(False, "no [vercel] section: the frontend cannot be redeployed")
    only = _frontend_settings(settings)
    if not only.endpoints:
        return StepOutcome(False, "no frontend endpoint in [[endpoints]] to verify the frontend with")
    resolver = resolver_for(settings)
    try:
        token = resolver.resolve(vc.token)
    except SecretError as exc:
        return StepOutcome(False, f"vercel.token: {exc}")
    async with make_client(8) as client:
        async def probe() -> list[CheckResult]:
            return await system_health.probe_endpoints(only, client, resolver)

        return await recovery.recover_frontend(VercelClient(client, vc, token), probe,
                                               deadline_s=vc.verify_deadline_s, poll_s=vc.verify_poll_s)


# ---- monitoring ---------------------------------------------------------------------------------

async def _deployments(names: list[str]) -> list[recovery.DeploymentState] | None:
    from prefect.exceptions import ObjectNotFound

    out = []
    try:
        async with get_client() as client:
            for name in names:
                try:
                    d = await client.read_deployment_by_name(name)
                except ObjectNotFound:
                    out.append(recovery.DeploymentState(name, False))
                    continue
                active = sum(1 for s in d.schedules if getattr(s, "active", False))
                out.append(recovery.DeploymentState(name, True, bool(getattr(d, "paused", False)), active))
    except Exception:  # noqa: BLE001 - an unreachable API is "unknown", said by judge_monitoring
        return None
    return out


async def _last_run(flow_name: str) -> tuple[datetime | None, str | None]:
    try:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))),
                sort=FlowRunSort.END_TIME_DESC, limit=1)
    except Exception as exc:  # noqa: BLE001
        return None, f"the Prefect API did not answer ({type(exc).__name__})"
    if not runs:
        return None, None
    return runs[0].end_time or runs[0].start_time, None


async def post_to_channel(settings: Settings, text: str, drill: bool) -> tuple[bool, str]:
    """One message on the team's Slack channel, or the drill channel in a drill."""
    cfg = recovery_config(settings)
    ref = cfg.drill.channel.slack_webhook_url if drill else (
        settings.notifications.slack.webhook_url if settings.notifications.slack else None)
    if ref is None:
        return False, ("no drill channel (recovery.drill.channel.slack_webhook_url)" if drill
                       else "no [notifications.slack]")
    delivery = await post_slack(settings, ref, text, timeout_s=5)
    return delivery.ok, ("drill channel: " if drill else "") + delivery.detail


@task(name="check-monitoring", cache_policy=NO_CACHE, tags=["recovery"])
async def check_monitoring(settings: Settings, drill: bool) -> list[CheckResult]:
    """Scheduled deployments active, the last checklist recent, the alert channel reachable."""
    cfg = recovery_config(settings).monitoring
    deployments, (last, error), channel = await asyncio.gather(
        _deployments(cfg.deployments), _last_run(cfg.checklist_flow),
        post_to_channel(settings, ("[DRILL] " if drill else "") + f"Recovery ({settings.environment}): monitoring "
                        "check, this channel receives alerts", drill))
    return recovery.judge_monitoring(cfg, deployments, last, error, channel, datetime.now(UTC))


# ---- paging -------------------------------------------------------------------------------------

@task(name="page-incident", cache_policy=NO_CACHE, tags=["recovery", "alerts"])
async def page_incident(settings: Settings, text: str, severity: str, dedup_key: str, drill: bool) -> str:
    """Slack and PagerDuty at the incident's severity. A drill goes only to the drill channel from
    configuration; with none configured, a drill pages nobody."""
    cfg = recovery_config(settings)
    resolver = resolver_for(settings)
    n = settings.notifications
    if drill:
        ch = cfg.drill.channel
        slack_ref, pd_ref, events_url = ch.slack_webhook_url, ch.pagerduty_routing_key, ch.pagerduty_events_url
    else:
        slack_ref = n.slack.webhook_url if n.slack else None
        pd_ref = n.pagerduty.routing_key if n.pagerduty else None
        events_url = n.pagerduty.events_url if n.pagerduty else ""
    sent = []
    async with make_client(4) as client:
        if slack_ref is not None:
            sent.append((await post_slack(settings, slack_ref, text, timeout_s=5)).detail)
        if pd_ref is not None:
            try:
                delivery = await pagerduty.enqueue(client, events_url, resolver.resolve(pd_ref), action="trigger",
                                                   dedup_key=dedup_key, summary=text, source=n.source,
                                                   severity=severity, timeout_s=5)
                sent.append(delivery.detail)
            except SecretError as exc:
                sent.append(f"pagerduty: not sent ({exc})")
    if not sent:
        return "nobody paged: no drill channel configured" if drill else "nobody paged: no channel configured"
    return ("drill channel: " if drill else "") + "; ".join(sent)


# ---- data ---------------------------------------------------------------------------------------

@task(name="export-live", cache_policy=NO_CACHE, tags=["recovery", "data"])
async def export_live(settings: Settings, scratch: Path) -> dict[str, TableDigest]:
    """Every table as it is now: a fresh snapshot export, digested per table."""
    cfg, bcfg = recovery_config(settings), backup_config(settings)
    key = resolver_for(settings).resolve(bcfg.convex_deploy_key)
    folder = scratch / f"live-{time.time_ns()}"
    folder.mkdir()
    exporter = convex_export.ConvexExporter(bcfg.convex_url, key, timeout_s=bcfg.timeout_s,
                                            deadline_s=cfg.export_deadline_s, poll_interval_s=bcfg.export_poll_s)
    got = await asyncio.to_thread(exporter.export, folder)
    return await asyncio.to_thread(recovery.digest_snapshot, got.path)


@task(name="newest-verified-backup", cache_policy=NO_CACHE, tags=["recovery", "data"])
async def newest_verified_backup(settings: Settings, scratch: Path, now: datetime) -> tuple[
        list[CheckResult], backup.Manifest | None, Path | None]:
    """The newest complete backup, verified against its manifest, and its export on local disk
    (its SHA-256 checked again after download). The RPO check is left out: how old the backup is,
    is what the restore measures, not a reason not to restore."""
    bcfg = backup_config(settings)
    resolver = resolver_for(settings)
    try:
        store = open_store(settings, bcfg, resolver)
        passphrase = resolver.resolve(bcfg.encryption_passphrase)
    except (StorageError, SecretError) as exc:
        return [CheckResult("backup-setup", "Data Loss", Status.fail, str(exc), "storage usable", severity="P0")], \
            None, None
    checks = await asyncio.to_thread(backup.verify_backup, bcfg, store, now, passphrase=passphrase)
    checks = [c for c in checks if c.name != "rpo"]
    if not all(c.status.passed for c in checks):
        return checks, None, None
    manifest = await _newest_manifest(bcfg, store)  # the one verify_backup just checked
    obj = None if manifest is None else next((o for o in manifest.objects if o.kind == "convex-export"), None)
    if manifest is None or obj is None:
        return [*checks, CheckResult("backup-export", "Data Loss", Status.fail, "the backup holds no Convex export",
                                     "a Convex export", severity="P0")], None, None
    local = scratch / f"backup-{manifest.backup_id}.zip"
    await asyncio.to_thread(store.download_file, obj.key, local, obj.version_id)
    sha = await asyncio.to_thread(file_sha256, local)
    if sha != obj.sha256:
        return [*checks, CheckResult("backup-export", "Data Loss", Status.fail, f"downloaded sha256 {sha[:12]}...",
                                     f"sha256 {obj.sha256[:12]}...", severity="P0")], None, None
    return checks, manifest, local


@task(name="backup-age", cache_policy=NO_CACHE, tags=["recovery", "data"])
async def newest_backup_at(settings: Settings) -> datetime | None:
    bcfg = backup_config(settings)
    store = open_store(settings, bcfg, resolver_for(settings))
    complete = [b for b in await asyncio.to_thread(backup.list_backups, bcfg, store) if b.complete]
    return complete[-1].taken_at if complete else None


@task(name="restore-snapshot", cache_policy=NO_CACHE, tags=["recovery", "data"])
async def restore_snapshot(settings: Settings, zip_path: Path) -> tuple[bool, str]:
    """The backup's export imported in replace mode: `npx convex import --replace`."""
    cfg, bcfg = recovery_config(settings), backup_config(settings)
    try:
        key = resolver_for(settings).resolve(bcfg.convex_deploy_key)
    except SecretError as exc:
        return False, f"backup.convex_deploy_key: {exc}"
    async with make_client(2) as client:
        try:
            written = await recovery.import_snapshot(client, bcfg.convex_url, key, zip_path, cfg.import_timeout_s)
        except recovery.ImportFailed as exc:
            return False, f"import failed: {exc}"
    return True, f"imported {zip_path.name} in replace mode: {written:,} documents written"


@task(name="maintenance", cache_policy=NO_CACHE, tags=["recovery"])
async def maintenance(settings: Settings, enabled: bool, reason: str) -> Effect:
    """Stop all writes (the backend's maintenance switch) or let them in again; read back either way."""
    em = getattr(settings, "emergency", None)
    m = em.maintenance if em is not None else None
    name = "maintenance on" if enabled else "maintenance off"
    if m is None:
        return Effect(name, "not-configured", "no [emergency.maintenance]: writes NOT stopped")
    resolver = resolver_for(settings)
    try:
        key = resolver.resolve(m.deploy_key)
        auth = resolver.resolve(m.probe_auth_header) if m.probe_auth_header else None
    except SecretError as exc:
        return Effect(name, "failed", str(exc))
    async with make_client(4) as client:
        if enabled:
            effect = await enable_maintenance(m, client, key, auth, reason)
            effect.name = name
            return effect
        ok, detail = await recovery.disable_maintenance(m, client, key, auth)
    return Effect(name, "done" if ok else "failed", detail, verified=ok)


def backup_window_ok(taken_at: datetime | None, now: datetime, max_rpo_minutes: float) -> bool:
    return taken_at is not None and now - taken_at <= timedelta(minutes=max_rpo_minutes)
