"""PagerDuty Events API v2: trigger and resolve alerts, deduplicated by a stable key."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.http_probe import describe_error
from runbook.clients.slack import Delivery

PD_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}


async def enqueue(
    client: httpx.AsyncClient,
    events_url: str,
    routing_key: SecretStr,
    *,
    action: str,
    dedup_key: str,
    summary: str = "",
    source: str = "",
    severity: str = "P1",
    component: str | None = None,
    custom_details: dict[str, Any] | None = None,
    timeout_s: float,
) -> Delivery:
    body: dict[str, Any] = {
        "routing_key": routing_key.get_secret_value(),
        "event_action": action,
        "dedup_key": dedup_key[:255],
    }
    if action == "trigger":
        body["payload"] = {
            "summary": summary[:1024],
            "source": source,
            "severity": PD_SEVERITY[severity],
            **({"component": component} if component else {}),
            **({"custom_details": custom_details} if custom_details else {}),
        }
    try:
        async with asyncio.timeout(timeout_s):
            response = await client.post(events_url, json=body, timeout=httpx.Timeout(timeout_s))
    except Exception as exc:  # noqa: BLE001
        return Delivery(False, f"pagerduty: {describe_error(exc)}")
    if response.status_code == 202:
        return Delivery(True, "pagerduty: accepted")
    if response.status_code == 429:
        return Delivery(False, "pagerduty: rate limited (HTTP 429); the event was not ingested")
    try:
        message = response.json().get("message", "")
    except ValueError:
        message = response.text[:80]
    return Delivery(False, f"pagerduty: HTTP {response.status_code} {message}".strip())
