"""The Security Audit flow against the sandbox's token and Convex doubles and a real Prefect server.

Each test first puts the double's live key in the Secret block the environment file names (the
sandbox does not create Prefect blocks), then checks what the flow changed by asking the double
directly whether each key still authenticates, and by reading the Secret block back.
"""

from __future__ import annotations

import json

import httpx
import pytest
from prefect.blocks.system import Secret

from flows.security_audit import security_audit_flow
from sandbox.envfile import SECURITY_AUDIT_BLOCK
from sandbox.vendors.vercel_tokens import SANDBOX_LIVE_TOKEN

pytestmark = [pytest.mark.sandbox]


async def block_value() -> str:
    return str((await Secret.aload(SECURITY_AUDIT_BLOCK)).get())


def who(sandbox, token: str) -> str | None:
    """The token id `token` authenticates as on the double, or None when it does not."""
    r = httpx.get(sandbox.url("vercel-tokens") + "/v5/user/tokens/current",
                  headers={"Authorization": f"Bearer {token}"}, timeout=5, trust_env=False)
    return r.json()["token"]["id"] if r.status_code == 200 else None


@pytest.fixture
async def live_key(prefect_api, sandbox) -> str:
    """The double's live key, stored in the Secret block; returns its token id."""
    await Secret(value=SANDBOX_LIVE_TOKEN).asave(SECURITY_AUDIT_BLOCK, overwrite=True)
    old_id = who(sandbox, SANDBOX_LIVE_TOKEN)
    assert old_id is not None
    return old_id


def assert_no_key_in(report: dict, *values: str) -> None:
    text = json.dumps(report)
    for value in values:
        assert value not in text


async def test_a_rotation_stores_and_verifies_the_new_key_then_revokes_the_old(sandbox, live_key):
    report = await security_audit_flow(env_file=str(sandbox.env_file), alert=False)
    rotation = report["rotations"][0]
    assert rotation["outcome"] == "rotated", report["markdown"]
    new = await block_value()
    assert new != SANDBOX_LIVE_TOKEN
    new_id = who(sandbox, new)
    assert new_id is not None and rotation["new_key"] == f"{new_id} (...{new[-4:]})"
    assert who(sandbox, SANDBOX_LIVE_TOKEN) is None  # the old key no longer authenticates
    assert [s["step"] for s in rotation["steps"]] == ["inspect", "leftover keys", "create + store", "verify",
                                                      "revoke old"]
    assert "### Rotate API keys" in report["markdown"] and "| revoke old | ok |" in report["markdown"]
    assert_no_key_in(report, SANDBOX_LIVE_TOKEN, new)

    again = await security_audit_flow(env_file=str(sandbox.env_file), alert=False)
    assert again["rotations"][0]["outcome"] == "not due"  # a re-run the same month changes nothing
    assert await block_value() == new and who(sandbox, new) == new_id


async def test_a_new_key_that_does_not_verify_is_rolled_back(sandbox, live_key):
    sandbox.vendor("vercel-tokens", "POST", "config", {"reject_new": True})
    report = await security_audit_flow(env_file=str(sandbox.env_file), alert=False)
    rotation = report["rotations"][0]
    assert rotation["outcome"] == "rolled back", report["markdown"]
    assert await block_value() == SANDBOX_LIVE_TOKEN  # the Secret block is unchanged
    assert who(sandbox, SANDBOX_LIVE_TOKEN) == live_key  # the old key is still active
    new_id = rotation["new_key"].split(" ")[0]
    tokens = {t["id"]: t for t in sandbox.vendor("vercel-tokens", "GET", "tokens")}
    assert tokens[new_id]["active"] is False  # the new key was revoked by the rollback hook
    steps = {s["step"]: s for s in rotation["steps"]}
    assert steps["verify"]["status"] == "failed" and "does not work" in steps["verify"]["detail"]
    assert steps["rollback"]["status"] == "done" and "holds the old key" in steps["rollback"]["detail"]
    check = next(c for c in report["checks"] if c["name"] == "security:rotate:vercel")
    assert check["status"] == "fail"
    assert report["passed"] is False


async def test_a_failed_revoke_keeps_the_verified_new_key_and_asks_a_person(sandbox, live_key):
    sandbox.vendor("vercel-tokens", "POST", "config", {"fail_delete": [live_key]})
    report = await security_audit_flow(env_file=str(sandbox.env_file), alert=False)
    rotation = report["rotations"][0]
    assert rotation["outcome"] == "rotated, old key still active", report["markdown"]
    new = await block_value()
    assert who(sandbox, new) is not None and who(sandbox, SANDBOX_LIVE_TOKEN) == live_key
    assert "STILL ACTIVE" in rotation["steps"][-1]["detail"] and "by hand" in rotation["steps"][-1]["detail"]
    check = next(c for c in report["checks"] if c["name"] == "security:rotate:vercel")
    assert check["status"] == "fail"


async def test_a_dry_run_plans_and_changes_nothing(sandbox, live_key):
    before = sandbox.vendor("vercel-tokens", "GET", "tokens")
    report = await security_audit_flow(env_file=str(sandbox.env_file), dry_run=True)
    assert report["rotations"][0]["outcome"] == "planned"
    assert await block_value() == SANDBOX_LIVE_TOKEN
    assert sandbox.vendor("vercel-tokens", "GET", "tokens") == before
    assert report["alerts"] == [] and sandbox.received("slack") == []


async def test_the_access_review_flags_a_new_place_and_failed_admin_logins(sandbox, live_key):
    sandbox.vendor("convex", "POST", "users", [
        {"user": "admin-1", "source": "198.51.100.7", "admin": True, "ago_s": 60 * 86400},
        {"user": "admin-1", "source": "203.0.113.99", "admin": True, "ago_s": 86400},
    ])
    sandbox.vendor("convex", "POST", "logins", {"source": "203.0.113.50", "user": "admin-1", "admin": True,
                                                "count": 4, "ago_s": 3600})
    report = await security_audit_flow(env_file=str(sandbox.env_file), dry_run=True)
    checks = {c["name"]: c for c in report["checks"]}
    places, failed = checks["security:access:new-places"], checks["security:access:failed-admin-logins"]
    assert places["status"] == "fail" and "admin admin-1 from 203.0.113.99" in places["observed"]
    assert failed["status"] == "fail" and "4 failed admin login(s)" in failed["observed"]
    assert {(r["finding"], r["source"], r["count"]) for r in report["access_log"]} == {
        ("new place", "203.0.113.99", 1), ("failed admin login", "203.0.113.50", 4)}
    assert "| admin-1 | yes | 203.0.113.99 |" in report["markdown"]


async def test_an_unreadable_access_log_is_unknown(sandbox, live_key):
    sandbox.fault("convex", "status:500")
    report = await security_audit_flow(env_file=str(sandbox.env_file), dry_run=True)
    checks = [c for c in report["checks"] if c["name"].startswith("security:access:")]
    assert [c["status"] for c in checks] == ["unknown", "unknown"]
    assert "Access log not read" in report["markdown"]
