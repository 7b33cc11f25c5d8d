"""Performance Review's trend maths: windows, percentiles, month-over-month change, what counts as
worse, and missing history reported as missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runbook.checks import Status
from runbook.procedures import performance as perf

NOW = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
CFG = perf.PerformanceReview()


def days_ago(d: float) -> datetime:
    return NOW - timedelta(days=d)


def health_run(at, frontend_ms, rpc_ms, frontend_status="ok"):
    return (at, [
        {"item": "Frontend responsive", "check": "frontend", "status": frontend_status, "observed": "HTTP 200",
         "latency_ms": frontend_ms},
        {"item": "Blockchain connections active", "check": "eth-rpc-1", "status": "ok", "observed": "chain id 1",
         "latency_ms": rpc_ms},
        {"item": "Blockchain connections active", "check": "ethereum (ETH)", "status": "ok", "observed": "primary",
         "latency_ms": 999.0},
    ])


def test_change_is_relative_and_a_rise_from_nothing_has_no_ratio():
    assert perf.change(150.0, 100.0) == pytest.approx(0.5)
    assert perf.change(50.0, 100.0) == pytest.approx(-0.5)
    assert perf.change(0.0, 0.0) == 0.0
    assert perf.change(0.2, 0.0) is None
    assert perf.change(None, 1.0) is None and perf.change(1.0, None) is None


def test_windows_are_this_month_and_the_one_before_ending_now():
    (cur_start, cur_end), (prev_start, prev_end) = perf.windows(NOW, 30)
    assert (cur_end, cur_start, prev_end, prev_start) == (NOW, days_ago(30), days_ago(30), days_ago(60))


def test_latency_p50_p95_per_endpoint_and_per_chain_month_over_month():
    runs = [health_run(days_ago(40 - i * 0.1), 100.0 + i, 50.0) for i in range(20)]  # last month
    runs += [health_run(days_ago(10 - i * 0.1), 200.0 + i, 50.0) for i in range(20)]  # this month
    runs.append(health_run(days_ago(61), 10_000.0, 10_000.0))  # before both windows: ignored
    series = perf.health_series(runs, ["frontend"], {"eth-rpc-1": "ethereum"})
    found = {(t.measure.kind, t.measure.subject, t.stat): t for t in perf.trends(series, NOW, 30)}
    p95 = found[("probe_latency", "frontend", "p95")]
    assert (p95.previous, p95.current, p95.n_previous, p95.n_current) == (118.0, 218.0, 20, 20)
    assert p95.change == pytest.approx(100 / 118)
    assert found[("probe_latency", "frontend", "p50")].current == 209.0
    rpc = found[("rpc_latency", "ethereum", "p95")]
    assert (rpc.previous, rpc.current, rpc.change) == (50.0, 50.0, 0.0)
    assert ("rpc_latency", "ethereum (ETH)", "p95") not in found  # the rollup line is not an endpoint
    assert p95.worsened(0.5) and not found[("probe_latency", "frontend", "p50")].worsened(0.5)


def test_failed_probes_count_as_errors_but_not_as_latency_and_unknown_counts_as_neither():
    runs = [health_run(days_ago(1), 100.0, 50.0),
            (days_ago(2), [{"check": "frontend", "status": "fail", "observed": "no answer: refused",
                            "latency_ms": 3000}]),
            (days_ago(3), [{"check": "frontend", "status": "unknown", "observed": "not probed", "latency_ms": None}]),
            (days_ago(4), [{"check": "frontend", "status": "fail", "observed": "HTTP 500", "latency_ms": 20.0}])]
    series = perf.health_series(runs, ["frontend"], {})
    latency = series[perf.Measure("probe_latency", "frontend", "ms")]
    errors = series[perf.Measure("probe_errors", "frontend", "share")]
    assert sorted(s.value for s in latency) == [20.0, 100.0]
    assert sorted(s.value for s in errors) == [0.0, 1.0, 1.0]


def test_an_error_rate_from_zero_to_some_is_worse():
    series = {perf.Measure("backend_error_rate", "convex functions", "share"):
              [perf.Sample(days_ago(40), 0.0), perf.Sample(days_ago(5), 0.02)]}
    [t] = perf.trends(series, NOW, 30)
    assert t.worsened(CFG.change_warn) and perf.fmt_change(t) == "new (was 0)"
    [check] = [c for c in perf.judge(CFG, [t], {}) if c.name == "perf:errors"]
    assert check.status is Status.warn and "0.00% -> 2.00%" in check.observed


def test_missing_history_is_said_never_zero():
    sources = {"perf:latency": "0 System Health Check runs", "perf:errors": "0 runs", "perf:wallet-burn": "0 runs"}
    checks = perf.judge(CFG, [], sources)
    assert [c.status for c in checks] == [Status.unknown] * 3
    assert "no history in the last 30 days (0 System Health Check runs)" in checks[0].observed

    series = {perf.Measure("probe_latency", "frontend", "ms"): [perf.Sample(days_ago(1), 120.0)]}
    found = perf.trends(series, NOW, 30)
    rows = perf.table_rows(found)
    assert {r["last_month"] for r in rows} == {None} and {r["change"] for r in rows} == {"no data last month"}
    latency = perf.judge(CFG, found, sources)[0]
    assert latency.status is Status.ok and latency.observed.startswith("no history for the 30 days before")
    assert "no data" in perf.render_table(found, 30)


def test_wallet_burn_is_the_mean_burn_per_day_and_unknown_burn_is_left_out():
    runs = [(days_ago(35), [{"key": "ethereum:0xa", "chain": "ethereum", "wallet": "deployer", "burn_per_day": 0.2}]),
            (days_ago(3), [{"key": "ethereum:0xa", "chain": "ethereum", "wallet": "deployer", "burn_per_day": 0.1},
                           {"key": "ethereum:0xa", "chain": "ethereum", "wallet": "deployer", "burn_per_day": None}]),
            (days_ago(2), [{"key": "ethereum:0xa", "chain": "ethereum", "wallet": "deployer", "burn_per_day": 0.3}])]
    [t] = perf.trends(perf.wallet_series(runs, {"ethereum": "ETH"}), NOW, 30)
    assert (t.measure.subject, t.measure.unit) == ("ethereum:deployer", "ETH/day")
    assert (t.previous, t.current, t.n_current) == (pytest.approx(0.2), pytest.approx(0.2), 2)


def test_the_chart_is_a_png():
    runs = [health_run(days_ago(d), 100.0 + d, 40.0) for d in (1, 2, 35)]
    series = perf.health_series(runs, ["frontend"], {"eth-rpc-1": "ethereum"})
    png = perf.chart_png(series, perf.trends(series, NOW, 30), NOW, 30, "Performance Review (test)")
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) < 200_000
    empty = perf.chart_png({}, [], NOW, 30, "Performance Review (empty)")
    assert empty.startswith(b"\x89PNG")
    assert perf.image_markdown(b"\x89PNG", "chart").startswith("![chart](data:image/png;base64,iVBO")
