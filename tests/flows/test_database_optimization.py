"""Database Optimization against the sandbox's Convex double: old rows go in bounded batches through
the maintenance mutation, newer rows stay, a cleanup cut short is continued at the same cutoff."""

from __future__ import annotations

import time

import pytest

from flows.database import database_optimization_flow
from tasks.db_maintenance import progress_variable

pytestmark = [pytest.mark.sandbox]

DAY = 86_400


@pytest.fixture
def clean_slate(prefect_api, sandbox):
    """No saved cleanup from an earlier test, no rows, no deletion calls, a function log of fast runs."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if client.read_variable_by_name(progress_variable("sandbox")) is not None:
            client.delete_variable_by_name(progress_variable("sandbox"))
    for store in ("users", "logins", "trades", "deletions", "logs"):
        sandbox.vendor("convex", "DELETE", store)
    sandbox.vendor("convex", "POST", "logs", {"function": "users:get", "udfType": "Query", "count": 10, "ago_s": 600})
    return sandbox


def saved_progress():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(progress_variable("sandbox"))
    return None if variable is None else variable.value


def row(report, table):
    return next(r for r in report["tables"] if r["table"] == table)


def check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


async def test_old_rows_go_in_bounded_batches_and_newer_rows_stay(clean_slate):
    sb = clean_slate
    sb.vendor("convex", "POST", "users", [{"user": "old-user", "count": 120, "ago_s": 40 * DAY},
                                          {"user": "new-user", "count": 10, "ago_s": DAY}])
    sb.vendor("convex", "POST", "logins", [{"source": "198.51.100.1", "count": 60, "ago_s": 31 * DAY},
                                           {"source": "198.51.100.2", "count": 5, "ago_s": 29 * DAY}])
    # trades keep 90 days in the sandbox's [database]: 40 days old stays, 100 days old goes
    sb.vendor("convex", "POST", "trades", [{"user": "u", "amount_usd": 1, "count": 30, "ago_s": 40 * DAY},
                                           {"user": "u", "amount_usd": 1, "count": 20, "ago_s": 100 * DAY}])
    started_ms = time.time() * 1000

    report = await database_optimization_flow(env_file=str(sb.env_file), alert=False)

    assert report["passed"] is True, report["markdown"]
    logins = row(report, "logins")  # the Convex table of successful logins
    assert (logins["before_total"], logins["before_older"], logins["deleted"], logins["batches"]) == (130, 120, 120, 3)
    assert (logins["after_total"], logins["after_older"], logins["largest_batch"]) == (10, 0, 50)
    failed = row(report, "failedLogins")
    assert (failed["before_older"], failed["deleted"], failed["after_total"], failed["after_older"]) == (60, 60, 5, 0)
    trades = row(report, "trades")
    assert (trades["retention_days"], trades["before_total"], trades["deleted"],
            trades["after_total"]) == (90, 50, 20, 30)

    calls = sb.vendor("convex", "GET", "deletions")["calls"]
    assert calls and all(c["limit"] == 50 and c["deleted"] <= 50 for c in calls)
    assert [c["table"] for c in calls] == ["logins"] * 3 + ["failedLogins"] * 2 + ["trades"]
    cutoff = {c["table"]: c["beforeMs"] for c in calls}
    assert abs(cutoff["logins"] - (started_ms - 30 * DAY * 1000)) < 60_000
    assert abs(cutoff["trades"] - (started_ms - 90 * DAY * 1000)) < 60_000
    assert {x["user"] for x in sb.vendor("convex", "GET", "users")} == {"new-user"}
    assert all(t["at"] * 1000 >= cutoff["trades"] for t in sb.vendor("convex", "GET", "trades"))

    md = report["markdown"]
    assert md.startswith("## Database Optimization: OK")
    assert ("- [x] logins (30 days): OK, 130 documents, 120 older than the cutoff; "
            "deleted 120 in 3 batches of <= 50") in md
    assert "| logins | 30 |" in md and "Update indexes if needed" in md
    assert saved_progress()["tables"]["logins"]["done"] is True

    again = await database_optimization_flow(env_file=str(sb.env_file), alert=False)
    assert again["passed"] is True and again["cleanup"]["resumed"] is False
    assert [row(again, t)["deleted"] for t in ("logins", "failedLogins", "trades")] == [0, 0, 0]
    assert "nothing to delete" in check(again, "db:clean:logins")["observed"]


async def test_a_cleanup_cut_short_is_continued_at_the_same_cutoff(clean_slate):
    sb = clean_slate
    sb.vendor("convex", "POST", "users", [{"user": "old", "count": 200, "ago_s": 45 * DAY},
                                          {"user": "new", "count": 3, "ago_s": 60}])
    sb.vendor("convex", "POST", "deletions", {"fail_after": 2})  # the backend fails after two batches

    first = await database_optimization_flow(env_file=str(sb.env_file), alert=False)

    logins = check(first, "db:clean:logins")
    assert logins["status"] == "fail" and first["passed"] is False
    assert "stopped after 2 batches" in logins["observed"] and "continues at the same cutoff" in logins["observed"]
    assert row(first, "logins")["after_older"] == 100  # verified by reading back: half is gone
    saved = saved_progress()
    assert saved["tables"]["logins"]["batches"] == 2 and saved["tables"]["logins"]["done"] is False
    cutoff = saved["tables"]["logins"]["cutoff_ms"]

    sb.vendor("convex", "POST", "deletions", {"fail_after": None})
    # a row that turns 30 days old only after the first run's cutoff must survive the continued cleanup
    sb.vendor("convex", "POST", "users", {"user": "edge", "count": 1,
                                          "ago_s": (time.time() * 1000 - cutoff) / 1000 - 5})
    second = await database_optimization_flow(env_file=str(sb.env_file), alert=False)

    assert second["passed"] is True, second["markdown"]
    assert second["cleanup"]["resumed"] is True and second["cleanup"]["runs"] == 2
    logins = row(second, "logins")
    assert (logins["deleted"], logins["batches"], logins["deleted_in_cleanup"]) == (100, 2, 200)
    assert logins["after_older"] == 0 and logins["after_total"] == 4
    calls = sb.vendor("convex", "GET", "deletions")["calls"]
    assert {c["beforeMs"] for c in calls if c["table"] == "logins"} == {cutoff}
    assert "continuing the cleanup started earlier: 2 batches before" in check(second, "db:clean:logins")["observed"]
    assert {x["user"] for x in sb.vendor("convex", "GET", "users")} == {"new", "edge"}
    assert saved_progress()["tables"]["logins"]["done"] is True


async def test_a_dry_run_counts_and_deletes_nothing(clean_slate):
    sb = clean_slate
    sb.vendor("convex", "POST", "users", {"user": "old", "count": 70, "ago_s": 40 * DAY})
    report = await database_optimization_flow(env_file=str(sb.env_file), alert=False, dry_run=True)
    assert report["passed"] is True
    observed = check(report, "db:clean:logins")["observed"]
    assert "dry run: 70 documents, 70 older than the cutoff; would delete 70" in observed
    assert sb.vendor("convex", "GET", "deletions")["calls"] == []
    assert len(sb.vendor("convex", "GET", "users")) == 70
    assert saved_progress() is None


async def test_slow_functions_are_named_by_their_p95(clean_slate):
    sb = clean_slate
    sb.vendor("convex", "DELETE", "logs")
    sb.vendor("convex", "POST", "logs", [
        {"function": "tokens:create", "udfType": "Mutation", "count": 19, "ago_s": 3600, "executionTime": 0.05},
        {"function": "tokens:create", "udfType": "Mutation", "count": 1, "ago_s": 3000, "executionTime": 2.5},
        {"function": "trades:history", "udfType": "Query", "count": 20, "ago_s": 1800, "executionTime": 0.9},
    ])
    report = await database_optimization_flow(env_file=str(sb.env_file), alert=False)
    slow = check(report, "db:slow-queries")
    # one 2.5 s outlier in 20 runs is above p95; a query at 900 ms every time is slow
    assert slow["status"] == "warn", slow
    assert "1 of 2 functions slow: trades:history p95 900 ms (20 runs)" in slow["observed"]
    by_function = {f["function"]: f for f in report["slow_functions"]}
    assert by_function["tokens:create"]["p95_ms"] == 50.0 and by_function["tokens:create"]["max_ms"] == 2500.0


async def test_a_backend_that_is_down_is_unknown_not_clean(clean_slate):
    sb = clean_slate
    sb.fault("convex", "down")
    report = await database_optimization_flow(env_file=str(sb.env_file), alert=False)
    assert {c["status"] for c in report["checks"]} == {"unknown"}, report["markdown"]
    assert "not counted, nothing deleted" in check(report, "db:clean:logins")["observed"]
    assert check(report, "db:slow-queries")["observed"].startswith("unknown: the function log was not read")
