"""Weekly and Monthly Maintenance as composite flows against the sandbox: every step runs, a failed or
crashed step does not stop the others, and the one report names what did not pass."""

from __future__ import annotations

import pytest

from flows.maintenance_schedule import monthly_maintenance_flow, weekly_maintenance_flow
from tasks.db_maintenance import progress_variable

pytestmark = [pytest.mark.sandbox]

DAY = 86_400


def env_copy(sandbox, name: str, drop: tuple[str, ...] = (), add: str = "") -> str:
    """The sandbox's environment file beside itself (its secret paths stay valid), sections changed."""
    blocks = sandbox.env_file.read_text().split("\n\n")
    kept = [b for b in blocks if not b.lstrip().startswith(drop)] if drop else blocks
    path = sandbox.dir / name
    path.write_text("\n\n".join(kept) + "\n" + add)
    return str(path)


@pytest.fixture
def no_saved_cleanup(prefect_api):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if client.read_variable_by_name(progress_variable("sandbox")) is not None:
            client.delete_variable_by_name(progress_variable("sandbox"))


async def test_weekly_runs_every_step_and_names_the_ones_that_failed(prefect_api, sandbox, no_saved_cleanup, tmp_path):
    missing = tmp_path / "no-such-checkout"
    env = env_copy(sandbox, "weekly.toml", add=f'[dependencies]\napp_dir = "{missing}"\n')
    sandbox.vendor("convex", "POST", "users", [{"user": "old", "count": 80, "ago_s": 40 * DAY},
                                               {"user": "new", "count": 2, "ago_s": DAY}])
    sandbox.vendor("convex", "POST", "logs", {"function": "users:get", "udfType": "Query", "count": 10, "ago_s": 600})

    report = await weekly_maintenance_flow(env_file=env)

    assert list(report["steps"]) == ["dependency-updates", "security-patches", "database-optimization"]
    assert report["failed_steps"] == ["dependency-updates", "security-patches"]
    assert report["steps"]["database-optimization"]["passed"] is True
    assert {u["user"] for u in sandbox.vendor("convex", "GET", "users")} == {"new"}  # it ran, and cleaned
    md = report["markdown"]
    # a checkout that is not there leaves the npm steps unknown (nothing could be checked), not failed
    assert md.startswith("# Weekly Maintenance: UNKNOWN (sandbox)")
    assert "- [?] Dependency Updates: UNKNOWN" in md and "- [x] Database Optimization: OK" in md
    assert "Did not pass: dependency-updates, security-patches." in md
    assert str(missing) in md  # the step's own report says why
    assert "## Database Optimization: OK" in md
    assert len(sandbox.received("slack")) == 1  # one alert for the whole run


async def test_monthly_goes_on_past_a_crashed_step(prefect_api, sandbox):
    env = env_copy(sandbox, "monthly.toml", drop=("[security_audit", "[[security_audit"))

    report = await monthly_maintenance_flow(env_file=env, dry_run=True)

    assert list(report["steps"]) == ["full-system-backup", "verify-backup", "performance-review", "security-audit"]
    assert report["steps"]["security-audit"] == {"status": "fail", "passed": False, "crashed": True}
    assert report["steps"]["full-system-backup"]["passed"] is True
    assert report["steps"]["verify-backup"]["passed"] is True
    assert "security-audit" in report["failed_steps"]
    md = report["markdown"]
    assert "- [ ] Security Audit: CRASHED" in md and "no [security_audit] section" in md
    assert "## Full System Backup: OK" in md and "## Backup Verification: OK" in md
    assert "## Performance Review:" in md
