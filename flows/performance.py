"""Monthly Maintenance 2: Performance Review, as a flow: this month against last month, from the
history the checklists keep as versioned table artifacts."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from prefect import flow, get_run_logger

from flows import metrics as metrics_flow
from flows import wallets as wallets_flow
from flows.environment import load_settings
from flows.publish import publish
from runbook.checks import Status, worst
from runbook.procedures import performance, system_health
from runbook.procedures.reports import render_step
from tasks.alerts import notify
from tasks.performance import draw_chart, read_history

TITLE = "Performance Review"
HEALTH_KEY = "system-health-table"  # flows/system_health.py publishes it every run, alone or in the morning


@flow(name="performance-review", description="Runbook: Monthly Maintenance 2, Performance Review.")
async def performance_review_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Probe latency p50/p95 per endpoint, RPC latency per chain, error rates and wallet burn over the
    last 30 days against the 30 before, from the System Health, Metrics Review and Wallet Balance
    histories; a table and a chart. Missing history is reported as missing, never as zero.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        alert: send the alert when latency or error rates rose beyond the configured change.
    """
    settings = load_settings(env_file)
    cfg = settings.performance or performance.PerformanceReview()
    env = settings.environment
    started = system_health.now()
    since = started - timedelta(days=2 * cfg.window_days)
    health, metric_runs, wallet_runs = await asyncio.gather(
        read_history(HEALTH_KEY, since, cfg.history_limit, description=f"System Health Check ({env})"),
        read_history(metrics_flow.history_key(env), since, cfg.history_limit),
        read_history(wallets_flow.history_key(env), since, cfg.history_limit),
    )
    rpc_chain = {rpc: name for name, chain in settings.chains.items() for rpc in chain.endpoint_names(name)}
    series = {
        **performance.health_series(health, [e.name for e in settings.endpoints], rpc_chain),
        **performance.metrics_series(metric_runs),
        **performance.wallet_series(wallet_runs, {name: c.symbol for name, c in settings.chains.items()}),
    }
    found = performance.trends(series, started, cfg.window_days)
    sources = {
        "perf:latency": f"{len(health)} System Health Check runs ({HEALTH_KEY})",
        "perf:errors": f"{len(health)} System Health Check and {len(metric_runs)} Metrics Review runs",
        "perf:wallet-burn": f"{len(wallet_runs)} Wallet Balance Check runs with a burn "
                            f"({wallets_flow.history_key(env)})",
    }
    checks = performance.judge(cfg, found, sources)
    status = worst(c.status for c in checks)
    note = (f"This month: the {cfg.window_days} days to {started:%Y-%m-%d %H:%M} UTC; last month: the "
            f"{cfg.window_days} days before. From {len(health)} System Health, {len(metric_runs)} Metrics Review "
            f"and {len(wallet_runs)} Wallet Balance runs.")
    markdown = render_step(TITLE, checks, note) + "\n" + performance.render_table(found, cfg.window_days)
    chart = ""
    if cfg.chart:
        try:
            png = await draw_chart(series, found, started, cfg.window_days, f"{TITLE} ({env})")
            chart = "\n" + performance.image_markdown(png, f"{TITLE} chart ({env})") + "\n"
        except Exception as exc:  # noqa: BLE001 - the numbers stand without the picture
            get_run_logger().warning("performance chart not drawn: %s", exc)
            chart = f"\n(chart not drawn: {type(exc).__name__})\n"
    rows = performance.table_rows(found)
    await publish("performance-review", markdown + chart, rows or [{"measure": "(no history)"}],
                  f"{TITLE} ({env})")
    report: dict[str, Any] = {
        "checklist": "performance-review",
        "environment": env,
        "status": status.value,
        "passed": all(c.status.passed for c in checks),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "checks": [c.to_dict() for c in checks],
        "trends": rows,
        "history_runs": {"system_health": len(health), "metrics": len(metric_runs), "wallets": len(wallet_runs)},
        "chart": "embedded in the performance-review markdown artifact (PNG, data: URI)" if chart.startswith("\n!")
                 else "not drawn",
        "markdown": markdown,  # the chart lives in the artifact only: a report stays small
        "alerts": [],
    }
    if alert:
        report["alerts"] = await notify(settings, "performance-review", checks)
    if report["alerts"]:
        get_run_logger().warning("%s: %s; alert: %s", TITLE, status.value, "; ".join(report["alerts"]))
    if status is Status.unknown:
        get_run_logger().info("%s: history missing: %s", TITLE, "; ".join(sources.values()))
    return report
