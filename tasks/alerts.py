"""Deliver a checklist run's alert to the channels its severity calls for, without repeating pages."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from runbook.checks import CheckResult
from runbook.clients import pagerduty, slack
from runbook.clients.http_probe import make_client
from runbook.config_types import Severity
from runbook.procedures import noise
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.common import resolver_for


def state_variable(environment: str, checklist: str) -> str:
    """The Prefect Variable holding a checklist's alert state (names take lowercase, digits, _ and -)."""
    return re.sub(r"[^a-z0-9_-]+", "-", f"tfops-alert-state-{environment}-{checklist}".lower())[:255]


@task(name="notify", cache_policy=NO_CACHE, tags=["alerts"])
async def notify(settings: Settings, checklist: str, results: list[CheckResult]) -> list[str]:
    """One grouped message per run: new failures page (P0/P1) and post, repeats only remind after a
    while, recoveries are noted and resolve the page. Returns one line per delivery.

    The state lives in a Prefect Variable so every run of the checklist, on any worker, sees it.
    """
    name = state_variable(settings.environment, checklist)
    try:
        previous = noise.AlertState.from_dict(await Variable.aget(name, default=None))
    except ValueError:  # a damaged state: start afresh; a repeated alert beats a missed one
        previous = noise.AlertState()
    notice, state = noise.plan(
        checklist, settings.environment, results, previous, datetime.now(UTC), settings.alerts.remind_after
    )
    if not settings.alerts.send_recoveries:
        notice = replace(notice, recovered=())
    n = settings.notifications
    resolver = resolver_for(settings)
    deliveries: list[str] = []
    async with make_client(4) as client:

        async def slack_post() -> str:
            assert n.slack is not None
            return (await slack.post_webhook(client, resolver.resolve(n.slack.webhook_url), notice.slack_text(),
                                             timeout_s=n.slack.timeout_s)).detail

        async def page(action: str) -> str:
            assert n.pagerduty is not None
            return (await pagerduty.enqueue(
                client, n.pagerduty.events_url, resolver.resolve(n.pagerduty.routing_key), action=action,
                dedup_key=notice.dedup_key, summary=notice.title, source=n.source,
                severity=(notice.severity or Severity.P3).value, custom_details={"lines": notice.lines()},
                timeout_s=n.pagerduty.timeout_s,
            )).detail

        jobs = []
        if not notice.is_empty and n.slack is not None:
            jobs.append(("slack", slack_post()))
        if n.pagerduty is not None and notice.should_page(n.page_at):
            jobs.append(("pagerduty", page("trigger")))
        elif n.pagerduty is not None and notice.should_resolve(n.page_at):
            jobs.append(("pagerduty", page("resolve")))
        for channel, job in jobs:
            try:
                deliveries.append(await job)
            except SecretError as exc:
                deliveries.append(f"{channel}: not sent ({exc})")
    try:
        await Variable.aset(name, state.to_dict(), overwrite=True)
    except Exception as exc:  # noqa: BLE001 - the alert went out; a lost state only means a repeat next run
        deliveries.append(f"alert state not saved ({type(exc).__name__})")
    return deliveries
