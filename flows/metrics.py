"""Evening Checklist step 1: Metrics Review, as a flow. Each run's values are kept as a version of
one keyed table artifact (see flows/history.py) and read back as the next runs' baselines."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext

from flows.environment import load_settings
from flows.history import read_rows
from flows.publish import artifact_key
from flows.steps import run_step
from runbook.checks import CheckResult
from runbook.procedures import metrics
from runbook.settings import Settings
from tasks.reviews import review_metrics


def history_key(environment: str) -> str:
    return artifact_key(f"metrics-history-{environment}")


@flow(name="metrics-review", description="Runbook: Evening Checklist 1, Metrics Review.")
async def metrics_review_flow(env_file: str | None = None, alert: bool = True) -> dict[str, Any]:
    """Daily active users, tokens created, transaction volume and error rate of the last 24 hours,
    each against its trailing 7-day baseline, and the threshold rules (error rate above 5% -> P1).

    Args:
        env_file: the environment file (TOML) to check; default: the TFOPS_ENV_FILE job variable.
        alert: send the alert for failing checks (the Evening Checklist sends one for all steps).
    """
    settings = load_settings(env_file)
    history = metrics.history_from_rows(await read_rows(history_key(settings.environment)))
    kept: list[dict[str, Any]] = []

    async def check(s: Settings, now: datetime) -> list[CheckResult]:
        results, rows = await review_metrics(s, now, history)
        kept.extend(rows)
        return results

    report = await run_step("metrics-review", "Metrics Review", settings, check, alert)
    report["metrics"] = kept
    if kept and FlowRunContext.get() is not None:
        await create_table_artifact(table=kept, key=history_key(settings.environment),  # type: ignore[call-arg]
                                    description="metric values, one version per run", _sync=False)
    return report
