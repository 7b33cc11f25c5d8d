"""Deliver one alert to the channels its severity calls for."""

from __future__ import annotations

import asyncio

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.clients import pagerduty, slack
from runbook.clients.http_probe import make_client
from runbook.procedures.alerting import Alert, channels_for
from runbook.secrets import SecretError
from runbook.settings import Settings
from tasks.common import resolver_for


@task(name="send-alert", cache_policy=NO_CACHE, tags=["alerts"])
async def send_alert(settings: Settings, alert: Alert) -> list[str]:
    """Returns one line per channel saying whether it was delivered; never raises on a failed
    delivery, because a broken alert channel must not hide the checklist's report."""
    n = settings.notifications
    resolver = resolver_for(settings)
    channels = channels_for(alert, n)
    async with make_client(4) as client:

        async def deliver(channel: str) -> str:
            try:
                if channel == "slack" and n.slack:
                    url = resolver.resolve(n.slack.webhook_url)
                    result = await slack.post_webhook(
                        client, url, alert.text, alert.slack_blocks(), timeout_s=n.slack.timeout_s
                    )
                elif channel == "pagerduty" and n.pagerduty:
                    key = resolver.resolve(n.pagerduty.routing_key)
                    result = await pagerduty.enqueue(
                        client, n.pagerduty.events_url, key, action="trigger", dedup_key=alert.dedup_key,
                        summary=alert.title, source=n.source, severity=alert.severity.value,
                        custom_details={"failing": list(alert.lines)}, timeout_s=n.pagerduty.timeout_s,
                    )
                else:
                    return f"{channel}: not configured"
            except SecretError as exc:
                return f"{channel}: not sent ({exc})"
            return result.detail

        return list(await asyncio.gather(*(deliver(c) for c in channels)))
