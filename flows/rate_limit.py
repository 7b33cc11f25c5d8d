"""Incident Response, common incident 4, API Rate Limit Hit, as a flow."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prefect import flow, get_run_logger

from flows.environment import load_settings
from flows.publish import publish
from runbook.procedures.rate_limit import RateLimitReport
from tasks.rate_limit import breakers_config, handle_breaker


class RateLimitIncomplete(Exception):
    """A breaker could not be read, or users or the team could not be told; the message says which."""


@flow(name="api-rate-limit",
      description="Runbook: Incident Response 4, API Rate Limit Hit: circuit breakers, cache-only mode, notices.")
async def api_rate_limit_flow(env_file: str | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Check every configured API's circuit breaker and do what the runbook asks of each:
    while one is open (cache-only mode), tell users of the degraded service on the status page and
    the team on Slack, and flag the provider for a limit increase; once it lets calls through
    again, probe it, replay the calls queued meanwhile and withdraw the notice.

    The breakers live in Prefect Variables (`tfops-breaker-<env>-<api>`): the checklists that call
    these APIs open them; this flow reads and acts on them. Safe to re-run: a notice is posted once
    per open period.

    Args:
        env_file: the environment file (TOML); default: the TFOPS_ENV_FILE job variable.
        dry_run: for drills: read and report only; no probe, no replay, no notice.
    """
    settings = load_settings(env_file)
    section = breakers_config(settings)
    started = time.time()
    reports = await asyncio.gather(*(handle_breaker(settings, api, dry_run) for api in section.apis))
    report = RateLimitReport(settings.environment, started, time.time(), list(reports), dry_run)
    await publish("api-rate-limit", report.markdown(), report.rows(), f"API Rate Limit Hit ({settings.environment})")
    logger = get_run_logger()
    (logger.info if report.passed else logger.error)("%s", report.summary())
    if not report.passed:
        raise RateLimitIncomplete(report.summary())
    return report.to_dict()
