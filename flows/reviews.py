"""Checklist steps that review sources: API usage and error logs (morning), security scan (evening)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.environment import load_settings
from flows.steps import run_step
from tasks.reviews import review_api_usage, review_error_logs, scan_security


@flow(name="error-logs", description="Runbook: Morning Checklist 4, Error Log Review.")
async def error_logs_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """New and regressed Sentry issues and Convex function errors of the last 24 hours.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing checks (the Morning Checklist sends one for all steps).
    """
    settings = load_settings(env_file)
    return await run_step("error-logs", "Error Log Review", settings, review_error_logs, alert)


@flow(name="api-usage", description="Runbook: Morning Checklist 3, API Usage Review.")
async def api_usage_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Usage against quota for CoinGecko, Alchemy and the social APIs, with the day each runs out.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing checks (the Morning Checklist sends one for all steps).
    """
    settings = load_settings(env_file)
    return await run_step("api-usage", "API Usage Review", settings, review_api_usage, alert)


@flow(name="security-scan", description="Runbook: Evening Checklist 2, Security Scan.")
async def security_scan_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Suspicious activity on the platform's contracts, failed logins, and admin actions by principals
    not on the allow-list, over the last 24 hours; each finding names its evidence.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing checks.
    """
    settings = load_settings(env_file)
    return await run_step("security-scan", "Security Scan", settings, scan_security, alert)
