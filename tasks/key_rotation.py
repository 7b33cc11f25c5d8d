"""Security Audit tasks: one task per rotation step, and the access-log review.

`issue_new_key` carries the rollback: its `on_rollback` hook puts the old key back in the Secret
block and revokes the new key whenever the flow's transaction around issue + verify fails (Prefect
transactions, docs.prefect.io/v3/advanced/transactions: a staged task's hooks run when a later task
in the same transaction fails). What the hook needs is kept on the task's own transaction with
`set` (in memory only, never persisted), since a secret may be neither a task parameter nor a
persisted result. Key values never leave these tasks; results carry ids and last-four only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from prefect.transactions import BaseTransaction, get_transaction
from pydantic import SecretStr

from runbook.clients.http_probe import make_client
from runbook.clients.vercel_tokens import TokenApiError
from runbook.procedures import access_review, key_rotation
from runbook.procedures.access_review import AccessFindings
from runbook.procedures.key_rotation import (
    AfterRollback,
    IssuedKey,
    KeyProvider,
    LiveKey,
    Revocation,
    RotatedService,
    RotationFailed,
    SecurityAudit,
)
from runbook.secrets import SecretError
from runbook.settings import ConfigError, Settings
from tasks.common import resolver_for

TAGS = ["security-audit"]
ROLLBACK_STATE = "key-rotation"


class PrefectSecretStore:
    """The secret store of the rotation: Prefect Secret blocks, by name."""

    async def read(self, name: str) -> SecretStr | None:
        try:
            block: Secret[Any] = await Secret.aload(name)
        except ValueError:  # Prefect's answer for a block that does not exist
            return None
        value = block.get()
        return value if isinstance(value, SecretStr) else SecretStr(str(value))

    async def write(self, name: str, value: SecretStr) -> None:
        await Secret(value=value).asave(name, overwrite=True)


def audit_config(settings: Settings) -> SecurityAudit:
    cfg = settings.security_audit
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["security_audit: no [security_audit] section"])
    return cfg


@asynccontextmanager
async def _provider(settings: Settings, service: str) -> AsyncIterator[tuple[SecurityAudit, RotatedService,
                                                                            KeyProvider]]:
    cfg = audit_config(settings)
    svc = cfg.service(service)
    async with make_client(4) as client:
        yield cfg, svc, key_rotation.make_provider(svc, client, cfg.timeout_s)


def _admin(settings: Settings, svc: RotatedService) -> SecretStr:
    try:
        return resolver_for(settings).resolve(svc.admin_token)
    except SecretError as exc:
        raise RotationFailed(f"security_audit.services.{svc.name}.admin_token: {exc}") from None


@task(name="inspect-live-key", cache_policy=NO_CACHE, tags=TAGS)
async def inspect_live_key(settings: Settings, service: str) -> LiveKey:
    """Which provider token the key in the Secret block is, and how old."""
    async with _provider(settings, service) as (_, svc, provider):
        return await key_rotation.inspect_live(provider, PrefectSecretStore(), svc)


@task(name="revoke-leftover-keys", cache_policy=NO_CACHE, tags=TAGS)
async def revoke_leftover_keys(settings: Settings, service: str, live_id: str | None, dry_run: bool) -> str:
    """Keys an interrupted rotation created and never stored or revoked: revoke them first."""
    async with _provider(settings, service) as (cfg, svc, provider):
        admin = _admin(settings, svc)
        try:
            found = key_rotation.leftovers(await provider.list(admin), cfg.token_prefix, svc.name, {live_id or ""})
        except TokenApiError as exc:
            raise RotationFailed(f"cannot list the provider's keys: {exc}") from None
        if not found:
            return "none"
        if dry_run:
            return "would revoke " + ", ".join(t.id for t in found)
        for t in found:
            try:
                await provider.delete(admin, t.id)
            except TokenApiError as exc:
                raise RotationFailed(f"leftover key {t.id} not revoked: {exc}") from None
        return "revoked " + ", ".join(t.id for t in found)


@task(name="issue-new-key", cache_policy=NO_CACHE, persist_result=False, tags=TAGS)
async def issue_new_key(settings: Settings, service: str) -> IssuedKey:
    """Create the new key with the admin credential and store it in the Secret block, read back."""
    done = key_rotation.Issue()
    txn = get_transaction()
    try:
        async with _provider(settings, service) as (cfg, svc, provider):
            admin = _admin(settings, svc)
            return await key_rotation.issue(provider, PrefectSecretStore(), svc, admin, cfg.token_prefix,
                                            datetime.now(UTC), done)
    finally:
        if txn is not None:
            txn.set(ROLLBACK_STATE, {"settings": settings, "service": service,
                                     "new_id": done.key.id if done.key else None, "previous": done.previous,
                                     "block_written": done.block_written})


@issue_new_key.on_rollback  # type: ignore[arg-type]  # Prefect awaits coroutine hooks
async def undo_new_key(txn: BaseTransaction) -> None:
    """The transaction failed after the new key was issued: old key back in the block, new key revoked."""
    state: dict[str, Any] | None = txn.get(ROLLBACK_STATE, None)
    if not state or state["new_id"] is None:
        return
    settings: Settings = state["settings"]
    try:
        async with _provider(settings, state["service"]) as (_, svc, provider):
            notes = await key_rotation.undo_issue(provider, PrefectSecretStore(), svc, _admin(settings, svc),
                                                  state["new_id"], state["previous"], state["block_written"])
    except RotationFailed as exc:
        notes = [str(exc)]
    txn.logger.warning("key rotation of %s rolled back: %s", state["service"], "; ".join(notes))


@task(name="verify-new-key", cache_policy=NO_CACHE, tags=TAGS)
async def verify_new_key(settings: Settings, service: str, expected: IssuedKey) -> str:
    """The key read back from the Secret block authenticates as the new token; raises otherwise."""
    async with _provider(settings, service) as (cfg, svc, provider):
        return await key_rotation.verify(provider, PrefectSecretStore(), svc, expected, cfg.verify_attempts,
                                         cfg.verify_delay_s)


@task(name="revoke-old-key", cache_policy=NO_CACHE, tags=TAGS)
async def revoke_old_key(settings: Settings, service: str, old: LiveKey) -> Revocation:
    async with _provider(settings, service) as (_, svc, provider):
        try:
            admin = _admin(settings, svc)
        except RotationFailed as exc:
            return Revocation(False, f"old key {old.label} not revoked: {exc}")
        return await key_rotation.revoke_old(provider, admin, old)


@task(name="read-back-after-rollback", cache_policy=NO_CACHE, tags=TAGS)
async def read_back_after_rollback(settings: Settings, service: str, old: LiveKey) -> AfterRollback:
    async with _provider(settings, service) as (cfg, svc, provider):
        try:
            admin = _admin(settings, svc)
        except RotationFailed as exc:
            return AfterRollback(f"unknown: {exc}", [])
        return await key_rotation.read_back_rollback(provider, PrefectSecretStore(), svc, admin, old,
                                                     cfg.token_prefix)


@task(name="review-access-logs", cache_policy=NO_CACHE, tags=TAGS)
async def review_access_logs(settings: Settings, now: datetime) -> AccessFindings | str:
    """The access-log review of the window; a string says why the log could not be read."""
    cfg = audit_config(settings).access_review
    if cfg is None:
        return "no [security_audit.access_review] section"
    try:
        key = resolver_for(settings).resolve(cfg.convex_deploy_key) if cfg.convex_deploy_key else None
    except SecretError as exc:
        return f"security_audit.access_review.convex_deploy_key: {exc}"
    async with make_client(2) as client:
        return await access_review.review_access(cfg, client, now, key)
