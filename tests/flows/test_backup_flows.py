"""The monthly backup and its verification as flows against the sandbox: Convex export, S3, manifest."""

from __future__ import annotations

import re

import pytest

from flows.backup import full_system_backup_flow, verify_backup_flow

pytestmark = [pytest.mark.sandbox]


async def test_a_backup_then_its_verification_pass_and_name_what_was_stored(prefect_api, sandbox):
    backup = await full_system_backup_flow(env_file=str(sandbox.env_file))
    assert backup["passed"] is True, backup["markdown"]
    assert re.search(r"/manifest\.json: OK, 3 objects, .* written last", backup["markdown"])
    secret = (sandbox.dir / "secrets" / "backup_passphrase").read_text().strip()
    assert secret not in str(backup)

    verified = await verify_backup_flow(env_file=str(sandbox.env_file))
    assert verified["passed"] is True, verified["markdown"]
    md = verified["markdown"]
    assert md.startswith("## Backup Verification: OK")
    assert "sha256 matches" in md and "decrypts with the passphrase" in md and "RPO" in md
    assert sandbox.received("slack") == []
