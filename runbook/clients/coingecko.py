"""CoinGecko Pro API: the key's monthly call credits, from `GET /api/v3/key`.

Shapes from shared/vendors/coingecko.md: the key is sent as `x-cg-pro-api-key`; the answer is
`{"plan", "rate_limit_request_per_minute", "monthly_call_credit", "current_total_monthly_calls",
"current_remaining_monthly_calls"}`, all counts JSON numbers, plus the optional per-key overrides
`api_key_rate_limit_request_per_minute` and `api_key_monthly_call_credit`.
Whether `/key` exists on the Demo root is unconfirmed, so only the Pro root is supported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from runbook.clients.ratelimits import ParseError, VendorAnswer, http_error, scrub, vendor_get

PRO_ROOT = "https://pro-api.coingecko.com/api/v3"
KEY_HEADER = "x-cg-pro-api-key"


@dataclass(frozen=True)
class KeyUsage:
    monthly_call_credit: int
    used: int
    remaining: int
    plan: str | None = None
    rate_limit_per_minute: int | None = None
    key_monthly_call_credit: int | None = None
    key_rate_limit_per_minute: int | None = None

    @property
    def limit(self) -> int:
        """The credits this key may spend: the per-key override when the answer has one."""
        return self.key_monthly_call_credit or self.monthly_call_credit


@dataclass(frozen=True)
class CreditReading:
    usage: KeyUsage | None = None
    error: str | None = None
    latency_s: float | None = None
    http_status: int | None = None  # None: no answer; the circuit breaker counts 429s by it


def _count(payload: dict[str, Any], name: str, required: bool = True) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise ParseError(f"the /key answer has no {name!r}")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ParseError(f"{name!r} is not a number: {str(value)[:40]!r}")
    if value < 0 or not float(value).is_integer():
        raise ParseError(f"{name!r} is not a whole number >= 0: {value!r}")
    return int(value)


def parse_key(payload: Any) -> KeyUsage:
    """The `/key` answer as KeyUsage; raises ParseError naming the missing or malformed field."""
    if not isinstance(payload, dict):
        raise ParseError("the /key answer is not a JSON object")
    credit = _count(payload, "monthly_call_credit")
    used = _count(payload, "current_total_monthly_calls")
    remaining = _count(payload, "current_remaining_monthly_calls")
    assert credit is not None and used is not None and remaining is not None
    key_credit = _count(payload, "api_key_monthly_call_credit", required=False)
    if credit == 0 and not key_credit:
        raise ParseError("'monthly_call_credit' is 0")
    plan = payload.get("plan")
    return KeyUsage(
        monthly_call_credit=credit,
        used=used,
        remaining=remaining,
        plan=plan if isinstance(plan, str) else None,
        rate_limit_per_minute=_count(payload, "rate_limit_request_per_minute", required=False),
        key_monthly_call_credit=key_credit,
        key_rate_limit_per_minute=_count(payload, "api_key_rate_limit_request_per_minute", required=False),
    )


def error_reason(payload: Any) -> str | None:
    """What a CoinGecko error body says. Error bodies are unconfirmed in the docs; these are the
    three shapes third-party clients normalise (shared/vendors/coingecko.md section 3):
    `{"status": {"error_code", "error_message"}}`, `{"error": {"status": {...}}}`, `{"error": "..."}`.
    """
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, str):
        return error
    status = error.get("status") if isinstance(error, dict) else payload.get("status")
    if isinstance(status, dict):
        message, code = status.get("error_message"), status.get("error_code")
        if isinstance(message, str):
            return f"{message} (error_code {code})" if code is not None else message
    return None


def _reason(answer: VendorAnswer) -> str | None:
    try:
        return error_reason(answer.json()) or answer.text()
    except ParseError:
        return answer.text() or None


async def read_key_usage(
    client: httpx.AsyncClient, base_url: str, api_key: SecretStr, *, timeout_s: float
) -> CreditReading:
    """`GET {base_url}/key` with the Pro key. Never raises; never puts the key in a message."""
    vendor = "CoinGecko"
    answer = await vendor_get(
        client,
        base_url.rstrip("/") + "/key",
        {KEY_HEADER: api_key.get_secret_value(), "Accept": "application/json"},
        timeout_s=timeout_s,
        secret=api_key,
        vendor=vendor,
    )
    if answer.error is not None:
        return CreditReading(error=answer.error, latency_s=answer.latency_s)
    if answer.status != 200:
        return CreditReading(error=http_error(vendor, answer, _reason(answer), api_key), latency_s=answer.latency_s,
                             http_status=answer.status)
    try:
        usage = parse_key(answer.json())
    except ParseError as exc:
        return CreditReading(error=scrub(f"{vendor}: HTTP 200 but {exc}", api_key), latency_s=answer.latency_s,
                             http_status=200)
    return CreditReading(usage, latency_s=answer.latency_s, http_status=200)


# ---- simple price ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PriceReading:
    """Prices by coin id in one currency; ids CoinGecko did not answer for are absent (`missing`)."""

    prices: dict[str, float]
    missing: tuple[str, ...] = ()
    error: str | None = None
    latency_s: float | None = None
    http_status: int | None = None  # for the circuit breaker: a 429 counts against it
    note: str | None = None  # set when the prices are a cached answer, with their age


def parse_simple_price(payload: Any, ids: list[str], currency: str) -> tuple[dict[str, float], tuple[str, ...]]:
    """`GET /simple/price` as {id: price}. The documented shape (shared/vendors/coingecko.md section 2)
    is an object keyed by coin id, each an object keyed by currency; unknown ids are simply absent.
    Raises ParseError for anything else."""
    if not isinstance(payload, dict):
        raise ParseError("the /simple/price answer is not a JSON object")
    prices: dict[str, float] = {}
    for coin in ids:
        entry = payload.get(coin)
        if entry is None:
            continue
        value = entry.get(currency) if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value == float("inf"):
            raise ParseError(f"{coin}.{currency} is not a positive number: {str(value)[:40]!r}")
        prices[coin] = float(value)
    return prices, tuple(c for c in ids if c not in prices)


async def read_simple_prices(
    client: httpx.AsyncClient, base_url: str, api_key: SecretStr, ids: list[str], *, currency: str = "usd",
    timeout_s: float,
) -> PriceReading:
    """`GET {base_url}/simple/price?ids=...&vs_currencies=...` with the Pro key. Never raises; never
    puts the key in a message."""
    vendor = "CoinGecko"
    query = httpx.QueryParams({"ids": ",".join(ids), "vs_currencies": currency, "precision": "full"})
    answer = await vendor_get(
        client,
        f"{base_url.rstrip('/')}/simple/price?{query}",
        {KEY_HEADER: api_key.get_secret_value(), "Accept": "application/json"},
        timeout_s=timeout_s,
        secret=api_key,
        vendor=vendor,
    )
    if answer.error is not None:
        return PriceReading({}, tuple(ids), answer.error, answer.latency_s)
    if answer.status != 200:
        return PriceReading({}, tuple(ids), http_error(vendor, answer, _reason(answer), api_key), answer.latency_s,
                            http_status=answer.status)
    try:
        prices, missing = parse_simple_price(answer.json(), ids, currency)
    except ParseError as exc:
        return PriceReading({}, tuple(ids), scrub(f"{vendor}: HTTP 200 but {exc}", api_key), answer.latency_s,
                            http_status=answer.status)
    return PriceReading(prices, missing, latency_s=answer.latency_s, http_status=answer.status)
