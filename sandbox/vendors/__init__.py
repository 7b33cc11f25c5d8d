"""Doubles of third-party services for the sandbox, registered by endpoint name.

Each entry builds one service from the hub's plan. A service is an async callable
`(Request, Fault) -> Response` (see sandbox/httpserver.py and sandbox/services.py); it may also
have `control(request) -> Response | None` for its knobs, reached at `/vendors/<name>/...` on the
hub's control port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.vendors import (
    alchemy,
    coingecko,
    healthchecks,
    sentry,
    slack_api,
    social,
    statuspage,
    telegram,
    vercel,
    vercel_tokens,
)

REGISTRY: dict[str, Callable[[dict[str, Any]], Any]] = {
    "coingecko": coingecko.build,
    "alchemy": alchemy.build,
    "x-api": social.build_x,
    "discord": social.build_discord,
    "sentry": sentry.SentryApi.from_plan,
    "statuspage": statuspage.build,
    "telegram": telegram.build,
    "healthchecks": healthchecks.build,
    "vercel": vercel.build,
    "slack-api": slack_api.build,
    "vercel-tokens": vercel_tokens.build,
}
