"""Morning Checklist step 2: Wallet Balance Check, as a flow."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.environment import load_settings
from flows.history import read_rows
from flows.publish import artifact_key
from runbook.checks import worst
from runbook.procedures import system_health
from tasks.alerts import notify
from tasks.wallets import read_wallet_balances


def history_key(environment: str) -> str:
    return artifact_key(f"wallet-balances-{environment}")


async def wallet_history(environment: str) -> dict[str, list[tuple[datetime, Decimal]]]:
    history: dict[str, list[tuple[datetime, Decimal]]] = {}
    for created, rows in await read_rows(history_key(environment)):
        for row in rows:
            if row.get("balance") is not None and row.get("key"):
                history.setdefault(row["key"], []).append((created, Decimal(str(row["balance"]))))
    return history


@flow(name="wallet-balances", description="Runbook: Morning Checklist 2, Wallet Balance Check.")
async def wallet_balances_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Every deployer wallet on every chain against its floor, with burn per day and runway.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing wallets (the Morning Checklist sends one for all steps).
    """
    settings = load_settings(env_file)
    started = system_health.now()
    history = await wallet_history(settings.environment)
    results, rows, reads, markdown = await read_wallet_balances(settings, started, history)
    report: dict[str, Any] = {
        "checklist": "wallet-balances",
        "environment": settings.environment,
        "status": worst(r.status for r in results).value,
        "passed": all(r.status.passed for r in results),
        "started_at": started.isoformat(),
        "finished_at": system_health.now().isoformat(),
        "checks": [r.to_dict() for r in results],
        "reads": reads,
        "wallets": rows,
        "markdown": markdown,
        "alerts": [],
    }
    await create_markdown_artifact(markdown=markdown, key=artifact_key("wallet-balance-check"),
                                   description=f"Wallet Balance Check ({settings.environment})", _sync=False)  # type: ignore[call-arg]
    await create_table_artifact(table=rows, key=history_key(settings.environment),
                                description="wallet balances, one version per run", _sync=False)  # type: ignore[call-arg]
    if alert:
        report["alerts"] = await notify(settings, "wallet-balances", results)
    if report["alerts"]:
        get_run_logger().warning("Wallet balances: %s; alert: %s", report["status"], "; ".join(report["alerts"]))
    return report
