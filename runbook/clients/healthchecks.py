"""Healthchecks.io-style dead-man's switch: a checklist that finished pings its check's URL.

Follows shared/vendors/healthchecks.md (the Pinging API): `POST <ping_url>` signals success,
`POST <ping_url>/fail` a failure; the request body (the run's summary, first 100 kB kept) shows in
the check's log; a good answer is HTTP 200 with the plain-text body `OK`. No auth header: the
check's UUID in the URL is the credential, so the URL is a secret and never appears in a detail.
If pings stop arriving (Prefect, its worker or its machine is down), Healthchecks pages.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
from pydantic import Field, SecretStr

from runbook.clients.http_probe import describe_error
from runbook.clients.ratelimits import scrub
from runbook.clients.slack import Delivery
from runbook.config_types import SecretRef, Strict

BODY_LIMIT = 100_000  # bytes the service keeps of a ping's body
RETRYABLE = {429, 500, 502, 503, 504}


class Heartbeat(Strict):
    """`[heartbeat]`: where every Morning and Evening Checklist pings when it ends."""

    ping_url: SecretRef = Field(
        description="the check's ping URL, e.g. https://hc-ping.com/<uuid> (the URL is its credential)"
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(default=10, description="deadline for all attempts")
    attempts: Annotated[int, Field(ge=1, le=5)] = Field(
        default=3, description="tries on a connection error, 429 or 5xx (curl's --retry in the vendor's docs)"
    )


def signal_url(ping_url: str, failed: bool) -> str:
    return ping_url.rstrip("/") + ("/fail" if failed else "")


async def ping(
    client: httpx.AsyncClient,
    ping_url: SecretStr,
    *,
    failed: bool,
    body: str = "",
    timeout_s: float,
    attempts: int = 3,
) -> Delivery:
    """One success or failure signal, retried within one deadline; never raises."""
    url = signal_url(ping_url.get_secret_value(), failed)
    what = "fail" if failed else "success"
    content = body.encode("utf-8")[:BODY_LIMIT]
    detail = "no attempt made"
    try:
        async with asyncio.timeout(timeout_s):
            for attempt in range(1, attempts + 1):
                try:
                    response = await client.post(url, content=content, headers={"Content-Type": "text/plain"},
                                                 timeout=httpx.Timeout(timeout_s))
                except httpx.HTTPError as exc:
                    # the URL is the credential: describe the error without repeating it
                    detail = f"healthchecks: {scrub(describe_error(exc).split(' (')[0], ping_url)}"
                except Exception as exc:  # noqa: BLE001 - "never raises"; httpx.InvalidURL is no HTTPError
                    # its message quotes pieces of the URL, and the URL is the credential: the type only
                    detail = f"healthchecks: {type(exc).__name__} for the configured ping URL (not shown)"
                    break
                else:
                    if response.status_code == 200:
                        return Delivery(True, f"healthchecks: pinged ({what})")
                    reason = response.text.strip()[:80] or "no reason given"
                    detail = f"healthchecks: HTTP {response.status_code} {reason}"
                    if response.status_code not in RETRYABLE:
                        break
                if attempt < attempts:
                    await asyncio.sleep(min(0.5 * attempt, 2))
    except TimeoutError:
        detail = f"healthchecks: no answer within {timeout_s:g} s ({detail})"
    return Delivery(False, f"{detail}; the {what} ping was not recorded")
