"""Database Optimization's pure parts: configuration, the resumable plan, the backend's answers,
the verdict per table, and the slow-function percentiles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.checks import Status
from runbook.clients.convex_logs import LogEntry, LogRead
from runbook.procedures import db_maintenance as db
from runbook.settings import ConfigError, parse

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def config(**changes):
    base = {"convex_url": "https://tokenforge.convex.cloud", "convex_deploy_key": {"env": "CONVEX_DEPLOY_KEY"},
            "tables": [{"name": "logins"}, {"name": "trades", "retention_days": 90}], "batch_size": 100}
    return db.DatabaseMaintenance.model_validate(base | changes)


def test_retention_defaults_to_30_days_and_a_table_may_keep_longer():
    cfg = config()
    assert [cfg.days_for(t) for t in cfg.tables] == [30, 90]


@pytest.mark.parametrize(("changes", "named"), [
    ({"tables": []}, "database.tables"),
    ({"tables": [{"name": "logins"}, {"name": "logins"}]}, "table 'logins' is listed twice"),
    ({"batch_size": 0}, "database.batch_size"),
    ({"batch_size": 100_000}, "database.batch_size"),
    ({"tables": [{"name": "drop table"}]}, "database.tables[0].name"),
    ({"retention_days": 0}, "database.retention_days"),
])
def test_bad_settings_name_the_field(changes, named):
    section = {"convex_url": "https://x.convex.cloud", "convex_deploy_key": {"env": "K"},
               "tables": [{"name": "logins"}]} | changes
    with pytest.raises(ConfigError) as err:
        parse({"environment": "test", "database": section})
    assert named in str(err.value)


def test_a_new_cleanup_fixes_each_tables_cutoff_from_now():
    progress, resumed = db.plan(config(), None, NOW)
    assert resumed is False and progress.runs == 1
    assert progress.tables["logins"].cutoff_ms == int((NOW - timedelta(days=30)).timestamp() * 1000)
    assert progress.tables["trades"].cutoff_ms == int((NOW - timedelta(days=90)).timestamp() * 1000)


def test_an_unfinished_cleanup_keeps_its_cutoffs_and_a_finished_one_starts_afresh():
    first, _ = db.plan(config(), None, NOW)
    first.tables["logins"].batches, first.tables["logins"].deleted = 3, 300
    saved = db.Progress.from_dict(first.to_dict())
    later = NOW + timedelta(days=2)
    again, resumed = db.plan(config(tables=[{"name": "logins"}, {"name": "trades", "retention_days": 90},
                                             {"name": "sessions"}]), saved, later)
    assert resumed is True and again.runs == 2
    assert again.tables["logins"].cutoff_ms == first.tables["logins"].cutoff_ms
    assert again.tables["logins"].batches == 3
    assert again.tables["sessions"].cutoff_ms == int((later - timedelta(days=30)).timestamp() * 1000)

    for t in again.tables.values():
        t.done = True
    fresh, resumed = db.plan(config(), db.Progress.from_dict(again.to_dict()), later)
    assert resumed is False and fresh.tables["logins"].cutoff_ms > first.tables["logins"].cutoff_ms


@pytest.mark.parametrize("damaged", [None, "x", {"tables": []}, {"tables": {"t": {"batches": 1}}}])
def test_damaged_saved_progress_is_no_progress(damaged):
    progress = db.Progress.from_dict(damaged)
    assert progress is None or not progress.tables


def test_the_backends_answers_are_checked_against_their_contract():
    assert db.parse_counts({"total": 10, "older": 4}, "w") == (10, 4)
    assert db.parse_deletion({"deleted": 100, "hasMore": True}, 100, "w") == (100, True)
    for bad in ({"total": 3, "older": 4}, {"total": -1, "older": 0}, {"total": "3", "older": 0}, [1]):
        with pytest.raises(db.UnexpectedAnswer):
            db.parse_counts(bad, "w")
    with pytest.raises(db.UnexpectedAnswer, match="more than the batch limit 100"):
        db.parse_deletion({"deleted": 101, "hasMore": False}, 100, "w")
    with pytest.raises(db.UnexpectedAnswer, match="hasMore"):
        db.parse_deletion({"deleted": 1}, 100, "w")


def outcome(**kw):
    base = {"table": "logins", "retention_days": 30, "cutoff_ms": 1_700_000_000_000, "before_total": 500,
            "before_older": 300, "after_total": 200, "after_older": 0, "deleted_now": 300, "batches_now": 3,
            "deleted_total": 300, "batches_total": 3, "largest_batch": 100, "done": True}
    return db.TableOutcome(**(base | kw))


def test_a_table_verdict_reads_back_what_is_left():
    cfg = config()
    assert db.judge_table(cfg, outcome(), False).status is Status.ok
    left = db.judge_table(cfg, outcome(after_older=7), False)
    assert left.status is Status.fail and "the function said none was left" in left.observed
    cut = db.judge_table(cfg, outcome(done=False, error="stopped after 2 batches: HTTP 500", after_older=100), False)
    assert cut.status is Status.fail and "a re-run continues at the same cutoff" in cut.observed
    bounded = db.judge_table(cfg, outcome(done=False, stopped_by="max_batches", after_older=50), False)
    assert bounded.status is Status.warn and "max_batches" in bounded.observed
    uncounted = db.judge_table(cfg, outcome(before_total=None, before_older=None, error="not counted: refused"), False)
    assert uncounted.status is Status.unknown and "refused" in uncounted.observed


def test_percentile_is_nearest_rank():
    assert db.percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert (db.percentile(values, 50), db.percentile(values, 95), db.percentile(values, 100)) == (50.0, 95.0, 100.0)
    assert db.percentile([1.0] * 19 + [100.0], 95) == 1.0  # one outlier in twenty is above the p95
    with pytest.raises(ValueError):
        db.percentile([], 95)


def entry(fn, at, seconds, kind="Completion"):
    return LogEntry(fn, "Query", at, None, kind=kind, execution_time_s=seconds)


def test_slow_functions_are_those_whose_p95_passes_the_threshold():
    cfg = config(slow_query_ms=500, min_executions=5)
    t = NOW.timestamp() - 60
    entries = [entry("trades:history", t, 0.8) for _ in range(10)] + [entry("users:get", t, 0.01) for _ in range(10)]
    entries += [entry("rare:job", t, 9.0)]  # one run: no p95, and not called slow
    entries += [entry("old:fn", t - 2 * 86400, 9.0) for _ in range(10)]  # outside the window
    entries += [entry("users:get", t, 30.0, kind="Progress")]  # not a completed execution
    check, found = db.judge_slow_queries(cfg, LogRead(entries=entries), NOW)
    assert check.status is Status.warn
    assert check.observed.startswith("1 of 2 functions slow: trades:history p95 800 ms (10 runs)")
    assert [f.identifier for f in found] == ["trades:history", "users:get", "rare:job"]
    assert found[2].p95_ms is None and found[2].max_ms == 9000.0


def test_an_unreadable_or_empty_log_is_unknown_never_fast():
    cfg = config()
    check, _ = db.judge_slow_queries(cfg, LogRead(error="refused (GET /instance_version)", complete=False), NOW)
    assert check.status is Status.unknown and "refused" in check.observed
    check, _ = db.judge_slow_queries(cfg, LogRead(), NOW)
    assert check.status is Status.unknown and "no executions" in check.observed
