"""The Vercel tokens client and the rotation steps against the sandbox's token double, and the
access-log review against its Convex double. The secret store here is a plain dict behind the
store port (the Prefect Secret block is exercised by the flow tests)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from runbook import settings as config
from runbook.checks import Status
from runbook.clients.http_probe import make_client
from runbook.clients.vercel_tokens import NotAuthenticated, TokenApiError, VercelTokens
from runbook.procedures import access_review, key_rotation
from runbook.procedures.key_rotation import Issue, RotationFailed
from sandbox.vendors.vercel_tokens import SANDBOX_ADMIN_TOKEN, SANDBOX_LIVE_TOKEN

pytestmark = pytest.mark.sandbox

ADMIN = SecretStr(SANDBOX_ADMIN_TOKEN)
LIVE = SecretStr(SANDBOX_LIVE_TOKEN)


class DictStore:
    def __init__(self, **blocks: str) -> None:
        self.blocks = {k: SecretStr(v) for k, v in blocks.items()}
        self.fail_writes = False

    async def read(self, name: str) -> SecretStr | None:
        return self.blocks.get(name)

    async def write(self, name: str, value: SecretStr) -> None:
        if self.fail_writes:
            raise PermissionError("store refused the write")
        self.blocks[name] = value


def audit(sandbox):
    s = config.load(sandbox.env_file)
    assert s.security_audit is not None
    return s.security_audit, s.security_audit.service("vercel")


async def test_a_created_token_authenticates_as_itself_until_it_is_deleted(sandbox):
    async with make_client(4) as client:
        api = VercelTokens(client, sandbox.url("vercel-tokens"), 5)
        live = await api.whoami(LIVE)
        assert live.name == "tokenforge-api" and live.created_at_ms is not None
        created = await api.create(ADMIN, "tfops-rotation-vercel-test")
        assert (await api.whoami(created.value)).id == created.meta.id
        assert created.meta.id in {t.id for t in await api.list(ADMIN)}
        assert await api.delete(ADMIN, created.meta.id) is True
        with pytest.raises(NotAuthenticated):
            await api.whoami(created.value)
        assert await api.get(ADMIN, created.meta.id) is None
        assert await api.delete(ADMIN, created.meta.id) is False  # already gone: not an error
        with pytest.raises(NotAuthenticated, match="HTTP 403 forbidden"):
            await api.create(SecretStr("tfsbx_not_a_token_at_all"), "x")


async def test_the_knobs_reject_new_tokens_and_fail_a_delete(sandbox):
    sandbox.vendor("vercel-tokens", "POST", "config", {"reject_new": True})
    async with make_client(4) as client:
        api = VercelTokens(client, sandbox.url("vercel-tokens"), 5)
        created = await api.create(ADMIN, "tfops-rotation-vercel-test")
        with pytest.raises(NotAuthenticated):
            await api.whoami(created.value)
        live_id = (await api.whoami(LIVE)).id
        sandbox.vendor("vercel-tokens", "POST", "config", {"fail_delete": [live_id]})
        with pytest.raises(TokenApiError, match="HTTP 500 internal_server_error") as info:
            await api.delete(ADMIN, live_id)
        assert info.value.status == 500
    listed = {t["id"]: t for t in sandbox.vendor("vercel-tokens", "GET", "tokens")}
    assert listed[live_id]["active"] is True and "value" not in listed[live_id]


async def test_an_unreachable_provider_is_an_error_without_a_status(sandbox):
    sandbox.fault("vercel-tokens", "down")
    async with make_client(4) as client:
        with pytest.raises(TokenApiError, match="connection failed") as info:
            await VercelTokens(client, sandbox.url("vercel-tokens"), 2).whoami(LIVE)
    assert info.value.status is None and not isinstance(info.value, NotAuthenticated)


async def test_issue_then_undo_puts_the_old_key_back_and_revokes_the_new_one(sandbox):
    cfg, svc = audit(sandbox)
    store = DictStore(**{svc.secret_block: SANDBOX_LIVE_TOKEN})
    async with make_client(4) as client:
        api = VercelTokens(client, svc.api_url, 5)
        live = await key_rotation.inspect_live(api, store, svc)
        assert live.id is not None and live.tail == "..." + SANDBOX_LIVE_TOKEN[-4:]
        done = Issue()
        issued = await key_rotation.issue(api, store, svc, ADMIN, cfg.token_prefix, datetime.now(UTC), done)
        new_value = store.blocks[svc.secret_block]
        assert new_value.get_secret_value() != SANDBOX_LIVE_TOKEN
        assert f"authenticates as {issued.id}" in await key_rotation.verify(api, store, svc, issued, 1, 0)
        notes = await key_rotation.undo_issue(api, store, svc, ADMIN, issued.id, done.previous, done.block_written)
        assert notes == [f"Secret block {svc.secret_block!r} restored to the old key (...{SANDBOX_LIVE_TOKEN[-4:]})",
                         f"new key {issued.id} revoked"]
        assert store.blocks[svc.secret_block].get_secret_value() == SANDBOX_LIVE_TOKEN
        with pytest.raises(NotAuthenticated):
            await api.whoami(new_value)
        after = await key_rotation.read_back_rollback(api, store, svc, ADMIN, live, cfg.token_prefix)
        assert after.clean, after


async def test_a_store_that_refuses_the_write_leaves_no_new_key_behind(sandbox):
    cfg, svc = audit(sandbox)
    store = DictStore(**{svc.secret_block: SANDBOX_LIVE_TOKEN})
    store.fail_writes = True
    async with make_client(4) as client:
        api = VercelTokens(client, svc.api_url, 5)
        with pytest.raises(RotationFailed, match=r"not stored .*PermissionError.*revoked"):
            await key_rotation.issue(api, store, svc, ADMIN, cfg.token_prefix, datetime.now(UTC), Issue())
        assert key_rotation.leftovers(await api.list(ADMIN), cfg.token_prefix, svc.name, set()) == []
    assert store.blocks[svc.secret_block].get_secret_value() == SANDBOX_LIVE_TOKEN


async def test_a_failed_revoke_of_the_old_key_says_it_is_still_active(sandbox):
    _, svc = audit(sandbox)
    store = DictStore(**{svc.secret_block: SANDBOX_LIVE_TOKEN})
    async with make_client(4) as client:
        api = VercelTokens(client, svc.api_url, 5)
        live = await key_rotation.inspect_live(api, store, svc)
        assert live.id is not None
        sandbox.vendor("vercel-tokens", "POST", "config", {"fail_delete": [live.id]})
        failed = await key_rotation.revoke_old(api, ADMIN, live)
        assert not failed.done and "STILL ACTIVE" in failed.detail and "revoke the old one by hand" in failed.detail
        sandbox.vendor("vercel-tokens", "DELETE", "config")
        done = await key_rotation.revoke_old(api, ADMIN, live)
        assert done.done and "revoked (read back: gone)" in done.detail
        with pytest.raises(NotAuthenticated):
            await api.whoami(LIVE)


async def test_the_access_review_reads_the_convex_login_log_page_by_page(sandbox):
    s = config.load(sandbox.env_file)
    assert s.security_audit is not None and s.security_audit.access_review is not None
    cfg = s.security_audit.access_review.model_copy(update={"page_size": 2})
    sandbox.vendor("convex", "POST", "users", [
        {"user": "admin-1", "source": "198.51.100.7", "admin": True, "ago_s": 60 * 86400},
        {"user": "admin-1", "source": "198.51.100.7", "admin": True, "ago_s": 3 * 86400},
        {"user": "admin-1", "source": "203.0.113.99", "admin": True, "ago_s": 86400},
        {"user": "user-5", "count": 3, "ago_s": 3600},  # the activity generator's kind: no source
    ])
    sandbox.vendor("convex", "POST", "logins", {"source": "203.0.113.50", "user": "admin-1", "admin": True,
                                                "count": 3, "ago_s": 7200})
    key = SecretStr((sandbox.dir / "secrets" / "convex_deploy_key").read_text().strip())
    async with make_client(4) as client:
        found = await access_review.review_access(cfg, client, datetime.now(UTC), key)
    assert not isinstance(found, str), found
    assert found.events == 9 and found.no_source == 3
    assert [(p.user, p.source) for p in found.new_places] == [("admin-1", "203.0.113.99")]
    assert [(f.user, f.source, f.attempts) for f in found.failed_admin] == [("admin-1", "203.0.113.50", 3)]


async def test_an_unreachable_login_log_is_unknown(sandbox):
    s = config.load(sandbox.env_file)
    assert s.security_audit is not None and s.security_audit.access_review is not None
    cfg = s.security_audit.access_review.model_copy(update={"timeout_s": 1.0})
    sandbox.fault("convex", "hang")
    async with make_client(4) as client:
        found = await access_review.review_access(cfg, client, datetime.now(UTC))
    assert found == "security:loginEvents: timed out"
    assert {c.status for c in access_review.judge(found, cfg)} == {Status.unknown}
