"""Alchemy compute-unit usage, from the Admin API's Usage API (shared/vendors/alchemy.md).

What Alchemy documents: `GET https://admin-api.alchemy.com/v1/usage/summary` returns "usage
totals for the current billing period and recent rolling windows", with statuses 200, 401, 403,
404. It is NOT called with an app's RPC key: it needs an account Access Key scoped to "Usage"
(dashboard Settings -> Security), sent as `Authorization: Bearer <access key>`. There is no
JSON-RPC method or response header that reports compute units.

What Alchemy does not document (unconfirmed): the 200 body's field names. Following the vendor
note ("do not invent field names; capture a real response first", e.g. with
`alchemy usage summary --json`), this module names no field of that body. The caller passes
`used_cu_field`, the dotted path (`a.b.0.c`) of the month-to-date compute units in a captured real
answer; without it, the summary is still fetched (which proves the key and the endpoint) and the
reading says why no number could be taken, listing the answer's top-level fields. The plan's
monthly CU limit is configuration: no documented field reports it either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.ratelimits import ParseError, VendorAnswer, http_error, scrub, vendor_get

ADMIN_ROOT = "https://admin-api.alchemy.com/v1"


@dataclass(frozen=True)
class CuReading:
    used_cu: float | None = None
    error: str | None = None
    latency_s: float | None = None
    fields: tuple[str, ...] = ()


def value_at(payload: Any, dotted: str) -> Any:
    """The value at a dotted path; a numeric part indexes a list. Raises ParseError naming the part."""
    value = payload
    walked = []
    for part in dotted.split("."):
        walked.append(part)
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise ParseError(f"the usage summary has no {'.'.join(walked)!r}")
    return value


def parse_summary(payload: Any, used_cu_field: str | None) -> float:
    """Month-to-date compute units from a usage-summary answer, at `used_cu_field`.

    A JSON number, or a string holding one (some vendors send counts as strings), is accepted.
    """
    if not isinstance(payload, dict):
        raise ParseError("the usage summary is not a JSON object")
    if not used_cu_field:
        fields = ", ".join(sorted(payload)[:12]) or "none"
        raise ParseError(
            "the usage summary's schema is not documented, so no field is read by default: set "
            f"used_cu_field to the path of month-to-date compute units (top-level fields: {fields})"
        )
    value = value_at(payload, used_cu_field)
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ParseError(f"{used_cu_field!r} is not a number: {value[:40]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ParseError(f"{used_cu_field!r} is not a number: {str(value)[:40]!r}")
    if value < 0:
        raise ParseError(f"{used_cu_field!r} is negative: {value!r}")
    return float(value)


def _reason(answer: VendorAnswer) -> str | None:
    # Error bodies are not documented either: quote the start of whatever came back.
    return answer.text() or None


async def read_usage_summary(
    client: httpx.AsyncClient,
    admin_url: str,
    access_key: SecretStr,
    *,
    timeout_s: float,
    used_cu_field: str | None,
) -> CuReading:
    """`GET {admin_url}/usage/summary` with the Admin API Access Key. Never raises."""
    vendor = "Alchemy"
    answer = await vendor_get(
        client,
        admin_url.rstrip("/") + "/usage/summary",
        {"Authorization": f"Bearer {access_key.get_secret_value()}", "Accept": "application/json"},
        timeout_s=timeout_s,
        secret=access_key,
        vendor=vendor,
    )
    if answer.error is not None:
        return CuReading(error=answer.error, latency_s=answer.latency_s)
    if answer.status != 200:
        error = http_error(vendor, answer, _reason(answer), access_key)
        if answer.status in (401, 403):
            error += " (the Usage API takes an Admin API Access Key scoped to Usage, not an app API key)"
        return CuReading(error=error, latency_s=answer.latency_s)
    try:
        payload = answer.json()
    except ParseError as exc:
        return CuReading(error=scrub(f"{vendor}: HTTP 200 but {exc}", access_key), latency_s=answer.latency_s)
    fields = tuple(sorted(payload)) if isinstance(payload, dict) else ()
    try:
        used = parse_summary(payload, used_cu_field)
    except ParseError as exc:
        return CuReading(
            error=scrub(f"{vendor}: HTTP 200 but {exc}", access_key), latency_s=answer.latency_s, fields=fields
        )
    return CuReading(used, latency_s=answer.latency_s, fields=fields)
