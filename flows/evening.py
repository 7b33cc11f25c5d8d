"""The Evening Checklist (18:00 UTC): Metrics Review and Security Scan, one report and one alert."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.checklist import run_checklist
from flows.metrics import metrics_review_flow
from flows.reviews import security_scan_flow


@flow(name="evening-checklist", description="Runbook: Evening Checklist (18:00 UTC), all steps.")
async def evening_checklist_flow(env_file: str | None = None) -> dict[str, Any]:
    """Metrics Review and Security Scan, concurrently; one report, one alert.

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
    """
    return await run_checklist("evening-checklist", "Evening Checklist", env_file, {
        "metrics-review": metrics_review_flow,
        "security-scan": security_scan_flow,
    })
