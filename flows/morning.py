"""The Morning Checklist (09:00 UTC): the runbook's four steps, one report and one alert at the end.

Each step is its own flow, runnable alone; here they run concurrently as subflows with their own
alerts held back, so a bad morning pages once, naming every failing item.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.checklist import run_checklist
from flows.reviews import api_usage_flow, error_logs_flow
from flows.system_health import system_health_flow
from flows.wallets import wallet_balances_flow


@flow(name="morning-checklist", description="Runbook: Morning Checklist (09:00 UTC), all steps.")
async def morning_checklist_flow(env_file: str | None = None) -> dict[str, Any]:
    """System Health, Wallet Balances, API Usage and Error Logs, concurrently; one report, one alert.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
    """
    return await run_checklist("morning-checklist", "Morning Checklist", env_file, {
        "system-health": system_health_flow,
        "wallet-balances": wallet_balances_flow,
        "api-usage": api_usage_flow,
        "error-logs": error_logs_flow,
    })
