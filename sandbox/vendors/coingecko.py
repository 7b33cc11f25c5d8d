"""CoinGecko Pro API double: `GET /api/v3/key`, the key's plan and monthly call credits.

Shapes from shared/vendors/coingecko.md. The key is read from `x-cg-pro-api-key` (or the
`x_cg_pro_api_key` query parameter). Error bodies are unconfirmed there; this double uses the
shapes that note suggests: `{"error": {"status": {"error_code": 10002, ...}}}` for a missing key,
`{"status": {"error_code": ..., "error_message": ...}}` for a wrong key and for 429, and
`{"error": "..."}` for an unknown path. The message texts are placeholders, not quoted from
CoinGecko.

Knobs (control port, `/vendors/coingecko/usage`):
- `GET` the current values;
- `POST {"used": 96000, "limit": 100000}` sets the month's usage (`remaining` follows as
  limit - used unless given); also `plan`, `rate_limit_request_per_minute`, the optional per-key
  overrides `api_key_monthly_call_credit` / `api_key_rate_limit_request_per_minute`, and
  `throttle: true` to answer every call with the 429 body;
- `DELETE` restores the defaults.
Whether a `/key` call itself costs a credit is unconfirmed (the docs conflict), so reading it does
not change the counts: tests see exactly what they set.

Simple price, `GET /api/v3/simple/price?ids=...&vs_currencies=...` (coingecko.md section 2): an object
keyed by coin id, each keyed by currency; ids without a price are left out, as the note says
CoinGecko does. Knob `/vendors/coingecko/prices`: `POST {"ethereum": {"usd": 3012.45}}` sets (null
removes) prices, `DELETE` restores PRICES.
"""

from __future__ import annotations

from typing import Any

from sandbox.faults import Fault
from sandbox.httpserver import Request, Response

SANDBOX_KEY = "cg-sandbox-key"

DEFAULTS: dict[str, Any] = {
    "plan": "Analyst",
    "rate_limit_request_per_minute": 500,
    "limit": 500_000,
    "used": 12_000,
    "remaining": None,  # None: limit - used
    "api_key_monthly_call_credit": None,
    "api_key_rate_limit_request_per_minute": None,
    "throttle": False,
}

# Prices in the documented shape; the numbers are the note's example values.
PRICES: dict[str, dict[str, float]] = {
    "ethereum": {"usd": 3012.45},
    "binancecoin": {"usd": 585.1},
    "solana": {"usd": 142.7},
}

_INTS = ("rate_limit_request_per_minute", "limit", "used", "remaining", "api_key_monthly_call_credit",
         "api_key_rate_limit_request_per_minute")


def _status_error(code: int, message: str, http: int) -> Response:
    return Response.json({"status": {"error_code": code, "error_message": message}}, http)


class CoinGeckoPro:
    def __init__(self, key: str = SANDBOX_KEY) -> None:
        self.key = key
        self.knobs: dict[str, Any] = dict(DEFAULTS)
        self.prices: dict[str, dict[str, float]] = {k: dict(v) for k, v in PRICES.items()}

    def key_body(self) -> dict[str, Any]:
        k = self.knobs
        remaining = k["remaining"] if k["remaining"] is not None else max(k["limit"] - k["used"], 0)
        body: dict[str, Any] = {
            "plan": k["plan"],
            "rate_limit_request_per_minute": k["rate_limit_request_per_minute"],
            "monthly_call_credit": k["limit"],
            "current_total_monthly_calls": k["used"],
            "current_remaining_monthly_calls": remaining,
        }
        for optional in ("api_key_rate_limit_request_per_minute", "api_key_monthly_call_credit"):
            if k[optional] is not None:
                body[optional] = k[optional]
        return body

    async def __call__(self, request: Request, fault: Fault) -> Response:
        given = request.headers.get("x-cg-pro-api-key") or (request.query.get("x_cg_pro_api_key") or [""])[0]
        if not given:
            return Response.json(
                {"error": {"status": {"error_code": 10002,
                                      "error_message": "API Key Missing. Please make sure you're using the right "
                                                       "authentication method."}}},
                401,
            )
        if given != self.key:
            return _status_error(401, "Invalid API Key. Please check your API key.", 401)
        if request.method == "GET" and request.path == "/api/v3/simple/price":
            if self.knobs["throttle"]:
                return _status_error(
                    429, "You've exceeded the Rate Limit. Please reduce call frequency or upgrade your plan.", 429
                )
            return self.simple_price(request)
        if request.method != "GET" or request.path != "/api/v3/key":
            return Response.json({"error": "Not found"}, 404)
        if self.knobs["throttle"]:
            return _status_error(
                429, "You've exceeded the Rate Limit. Please reduce call frequency or upgrade your plan.", 429
            )
        return Response.json(self.key_body())

    def simple_price(self, request: Request) -> Response:
        ids = [i for i in ",".join(request.query.get("ids", [])).split(",") if i]
        currencies = [c for c in ",".join(request.query.get("vs_currencies", [])).lower().split(",") if c]
        if not ids or not currencies:
            return Response.json({"error": "Missing parameter ids or vs_currencies"}, 400)
        body = {}
        for coin in ids:
            known = self.prices.get(coin)
            if known is not None:
                body[coin] = {c: known[c] for c in currencies if c in known}
        return Response.json(body)

    def control_prices(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.prices = {k: dict(v) for k, v in PRICES.items()}
        elif request.method == "POST":
            try:
                update = request.json()
                if not isinstance(update, dict):
                    raise ValueError('a JSON object: {"<coin id>": {"usd": <price>} or null}')
                for coin, entry in update.items():
                    if entry is not None and (not isinstance(entry, dict) or not all(
                            isinstance(v, int | float) and not isinstance(v, bool) for v in entry.values())):
                        raise ValueError(f"{coin}: a price object such as {{\"usd\": 3012.45}}, or null")
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            for coin, entry in update.items():
                if entry is None:
                    self.prices.pop(coin, None)
                else:
                    self.prices[coin] = dict(entry)
        return Response.json(self.prices)

    async def control(self, request: Request) -> Response | None:
        if request.path == "/vendors/coingecko/prices":
            return self.control_prices(request)
        if request.path != "/vendors/coingecko/usage":
            return None
        if request.method == "DELETE":
            self.knobs = dict(DEFAULTS)
        elif request.method == "POST":
            try:
                update = request.json()
                if not isinstance(update, dict):
                    raise ValueError("a JSON object of knobs")
                unknown = set(update) - set(DEFAULTS)
                if unknown:
                    raise ValueError(f"unknown knobs {sorted(unknown)}; knobs: {sorted(DEFAULTS)}")
                for name in _INTS:
                    value = update.get(name)
                    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                        raise ValueError(f"{name} must be a whole number >= 0 or null")
            except ValueError as exc:
                return Response.json({"error": str(exc)}, 400)
            self.knobs.update(update)
        return Response.json({**self.knobs, "key_body": self.key_body()})


def build(plan: dict[str, Any]) -> CoinGeckoPro:
    return CoinGeckoPro(plan.get("vendor_keys", {}).get("coingecko") or SANDBOX_KEY)
