"""Morning Checklist step 3, "API Usage Review": CoinGecko credits, Alchemy compute units, and the
social APIs' rate-limit windows, each judged against a share of its quota.

Two kinds of quota:
- monthly (CoinGecko call credits, Alchemy compute units): the share used so far, and a forecast
  of the day the quota runs out at the current burn (burn = used / elapsed part of the billing
  period; it runs out at period start + elapsed * limit / used, if that falls inside the period);
- per window (X, Discord): the share of the current rate-limit window used, and when it resets.

A share at or above `warn_at` warns, at or above `fail_at` fails. A quota that cannot be read is
`unknown` with the reason: a failed read is never taken for zero usage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import httpx
from pydantic import Field, SecretStr, model_validator

from runbook.checks import CheckResult, Status
from runbook.clients import alchemy, coingecko, ratelimits
from runbook.config_types import HttpUrl, SecretRef, Severity, Strict
from runbook.secrets import SecretError, SecretResolver, scrub

ITEM = "API Usage Review"

BillingDay = Annotated[
    int,
    Field(ge=1, le=28, description="day of the month (UTC) the billing period starts; 1 = calendar month"),
]


class CoinGeckoUsage(Strict):
    base_url: HttpUrl = coingecko.PRO_ROOT
    api_key: SecretRef = Field(description="the Pro API key (sent as x-cg-pro-api-key)")
    billing_day: BillingDay = 1


class AlchemyUsage(Strict):
    admin_url: HttpUrl = alchemy.ADMIN_ROOT
    access_key: SecretRef = Field(
        description="an Admin API Access Key scoped to Usage (dashboard Settings -> Security); not an app API key"
    )
    monthly_cu_limit: Annotated[int, Field(gt=0, description="the plan's compute units per billing period")]
    used_cu_field: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="dotted path of month-to-date compute units in the usage-summary answer "
        "(its schema is undocumented: take the path from a captured real answer)",
    )
    billing_day: BillingDay = 1


class XUsage(Strict):
    base_url: HttpUrl = "https://api.x.com/2"
    user_token: SecretRef = Field(
        description="an OAuth 2.0 user-context access token (an app-only token cannot call /2/users/me)"
    )


class DiscordUsage(Strict):
    base_url: HttpUrl = "https://discord.com/api/v10"
    bot_token: SecretRef = Field(description="the bot token, sent as 'Authorization: Bot <token>'")


Share = Annotated[float, Field(gt=0, le=1)]


class ApiUsage(Strict):
    coingecko: CoinGeckoUsage | None = None
    alchemy: AlchemyUsage | None = None
    x: XUsage | None = None
    discord: DiscordUsage | None = None
    warn_at: Share = 0.80
    fail_at: Share = 0.95
    severity: Severity = Severity.P2
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10

    @model_validator(mode="after")
    def _valid(self) -> ApiUsage:
        if self.warn_at >= self.fail_at:
            raise ValueError("warn_at must be below fail_at")
        if not any((self.coingecko, self.alchemy, self.x, self.discord)):
            raise ValueError("configure at least one of coingecko, alchemy, x, discord")
        return self

    def secret_refs(self) -> list[SecretRef]:
        refs: list[SecretRef] = []
        if self.coingecko:
            refs.append(self.coingecko.api_key)
        if self.alchemy:
            refs.append(self.alchemy.access_key)
        if self.x:
            refs.append(self.x.user_token)
        if self.discord:
            refs.append(self.discord.bot_token)
        return refs


@dataclass(frozen=True)
class Service:
    """How one service appears in the report."""

    name: str
    target: str
    group: str


COINGECKO = Service("coingecko", "CoinGecko", "CoinGecko")
ALCHEMY = Service("alchemy", "Alchemy", "Alchemy")
X = Service("x", "X (Twitter)", "Social APIs")
DISCORD = Service("discord", "Discord", "Social APIs")


# --- pure logic ---------------------------------------------------------------------------------


def grade(share: float, warn_at: float, fail_at: float) -> Status:
    if share >= fail_at:
        return Status.fail
    if share >= warn_at:
        return Status.warn
    return Status.ok


def _utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _month_shift(year: int, month: int, by: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + by
    return index // 12, index % 12 + 1


def billing_period(now: datetime, billing_day: int = 1) -> tuple[datetime, datetime]:
    """The billing period holding `now`: [start, end), both at 00:00 UTC on `billing_day`."""
    now = _utc(now)
    year, month = now.year, now.month
    if now.day < billing_day:
        year, month = _month_shift(year, month, -1)
    start = datetime(year, month, billing_day, tzinfo=UTC)
    end_year, end_month = _month_shift(year, month, 1)
    return start, datetime(end_year, end_month, billing_day, tzinfo=UTC)


def run_out_at(used: float, limit: float, start: datetime, end: datetime, now: datetime) -> datetime | None:
    """When the quota runs out at the burn so far (used / elapsed time), or None if it lasts the
    period (or nothing has been used). A quota already used up ran out `now`."""
    now = _utc(now)
    if used >= limit:
        return now
    elapsed = (now - start).total_seconds()
    if used <= 0 or elapsed <= 0:
        return None
    when = start + timedelta(seconds=elapsed * limit / used)
    return when if when < end else None


def _n(value: float) -> str:
    return f"{round(value):,}"


def pct(share: float) -> str:
    return f"{share * 100:g}%"


def _until(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds <= 0:
        return "due now"
    if seconds < 90:
        return f"in {seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"in {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"in {hours} h {minutes} min" if minutes else f"in {hours} h"


def monthly_expected(warn_at: float) -> str:
    return f"< {pct(warn_at)} used"


def window_expected(warn_at: float) -> str:
    return f"< {pct(warn_at)} of the rate-limit window used"


def judge_monthly(
    service: Service,
    *,
    used: float,
    limit: float,
    left: float,
    unit: str,
    now: datetime,
    billing_day: int,
    warn_at: float,
    fail_at: float,
    severity: str,
    latency_s: float | None = None,
    notes: Iterable[str] = (),
) -> CheckResult:
    """A monthly quota as a report line: share used, what is left, and the run-out forecast."""
    now = _utc(now)
    share = used / limit
    start, end = billing_period(now, billing_day)
    observed = f"{_n(used)} of {_n(limit)} {unit} used ({share:.1%}), {_n(max(left, 0))} left"
    elapsed_days = (now - start).total_seconds() / 86400
    if used >= limit:
        observed += "; the quota is used up"
    elif used <= 0:
        observed += "; nothing used yet this billing period"
    else:
        when = run_out_at(used, limit, start, end, now)
        if when is not None:
            observed += f"; at this burn runs out on {when:%Y-%m-%d}"
        else:
            projected = used * (end - start).total_seconds() / max((now - start).total_seconds(), 1)
            observed += f"; at this burn lasts the billing period (about {_n(projected)} by {end:%Y-%m-%d})"
    detail = [
        f"billing period {start:%Y-%m-%d} to {end:%Y-%m-%d} (UTC), {elapsed_days:.1f} of "
        f"{(end - start).days} days elapsed"
    ]
    if elapsed_days > 0 and used > 0:
        detail.append(f"burn about {_n(used / elapsed_days)} {unit}/day")
    detail.extend(notes)
    return CheckResult(
        service.name,
        ITEM,
        grade(share, warn_at, fail_at),
        observed=observed,
        expected=monthly_expected(warn_at),
        detail="; ".join(detail),
        latency_s=latency_s,
        severity=severity,
        target=service.target,
        group=service.group,
    )


def reset_time(window: ratelimits.RateWindow, now: datetime) -> datetime | None:
    if window.reset_epoch is not None:
        return datetime.fromtimestamp(window.reset_epoch, UTC)
    if window.reset_after_s is not None:
        return _utc(now) + timedelta(seconds=window.reset_after_s)
    return None


def judge_window(
    service: Service,
    window: ratelimits.RateWindow,
    *,
    now: datetime,
    warn_at: float,
    fail_at: float,
    severity: str,
    latency_s: float | None = None,
    note: str = "",
) -> CheckResult:
    """A rate-limit window as a report line: share used now, what is left, and when it resets."""
    share = window.share_used
    observed = (
        f"{window.used:,} of {window.limit:,} requests used in the current window ({share:.1%}), "
        f"{window.remaining:,} left"
    )
    at = reset_time(window, now)
    if at is None:
        observed += "; reset time not reported"
    else:
        observed += f"; resets at {at:%Y-%m-%d %H:%M:%S} UTC ({_until(at - _utc(now))})"
    detail = [d for d in (note, f"bucket {window.bucket}" if window.bucket else "") if d]
    return CheckResult(
        service.name,
        ITEM,
        grade(share, warn_at, fail_at),
        observed=observed,
        expected=window_expected(warn_at),
        detail="; ".join(detail),
        latency_s=latency_s,
        severity=severity,
        target=service.target,
        group=service.group,
    )


def unreadable(
    service: Service, reason: str, *, expected: str, severity: str, latency_s: float | None = None, checked: bool = True
) -> CheckResult:
    """Usage that could not be read: unknown, with the reason."""
    prefix = "usage not read" if checked else "not checked"
    return CheckResult(
        service.name,
        ITEM,
        Status.unknown,
        observed=f"{prefix}: {reason}",
        expected=expected,
        detail=reason,
        latency_s=latency_s,
        severity=severity,
        target=service.target,
        group=service.group,
    )


# --- judging each service's reading ------------------------------------------------------------


def judge_coingecko(cfg: ApiUsage, reading: coingecko.CreditReading, now: datetime) -> CheckResult:
    svc = cfg.coingecko
    assert svc is not None
    expected = monthly_expected(cfg.warn_at)
    if reading.error is not None or reading.usage is None:
        return unreadable(
            COINGECKO, reading.error or "no usage", expected=expected, severity=cfg.severity.value,
            latency_s=reading.latency_s,
        )
    u = reading.usage
    notes = []
    if u.plan:
        notes.append(f"plan {u.plan}")
    if u.key_monthly_call_credit:
        # The SDK's per-key override: this key may spend only its own cap.
        notes.append(
            f"per-key credit cap {u.key_monthly_call_credit:,} (plan {u.monthly_call_credit:,}); "
            f"CoinGecko reports {u.remaining:,} left"
        )
        left = max(u.limit - u.used, 0)
    else:
        left = u.remaining
    per_minute = u.key_rate_limit_per_minute or u.rate_limit_per_minute
    if per_minute:
        notes.append(f"rate limit {per_minute:,} calls/min")
    return judge_monthly(
        COINGECKO, used=u.used, limit=u.limit, left=left, unit="credits", now=now, billing_day=svc.billing_day,
        warn_at=cfg.warn_at, fail_at=cfg.fail_at, severity=cfg.severity.value, latency_s=reading.latency_s,
        notes=notes,
    )


def judge_alchemy(cfg: ApiUsage, reading: alchemy.CuReading, now: datetime) -> CheckResult:
    svc = cfg.alchemy
    assert svc is not None
    if reading.error is not None or reading.used_cu is None:
        return unreadable(
            ALCHEMY, reading.error or "no usage", expected=monthly_expected(cfg.warn_at),
            severity=cfg.severity.value, latency_s=reading.latency_s,
        )
    limit = svc.monthly_cu_limit
    return judge_monthly(
        ALCHEMY, used=reading.used_cu, limit=limit, left=limit - reading.used_cu, unit="compute units", now=now,
        billing_day=svc.billing_day, warn_at=cfg.warn_at, fail_at=cfg.fail_at, severity=cfg.severity.value,
        latency_s=reading.latency_s, notes=[f"limit {limit:,} CU/month from configuration"],
    )


def judge_social(cfg: ApiUsage, service: Service, reading: ratelimits.WindowReading, now: datetime) -> CheckResult:
    if reading.error is not None or reading.window is None:
        return unreadable(
            service, reading.error or "no rate-limit window", expected=window_expected(cfg.warn_at),
            severity=cfg.severity.value, latency_s=reading.latency_s,
        )
    return judge_window(
        service, reading.window, now=now, warn_at=cfg.warn_at, fail_at=cfg.fail_at, severity=cfg.severity.value,
        latency_s=reading.latency_s, note=reading.note,
    )


# --- the review ---------------------------------------------------------------------------------


async def _guarded(
    cfg: ApiUsage,
    service: Service,
    expected: str,
    ref: SecretRef,
    resolver: SecretResolver,
    read: Callable[[SecretStr], Awaitable[CheckResult]],
) -> CheckResult:
    """Resolve the service's secret and read it; whatever goes wrong is an `unknown` line."""
    try:
        secret = resolver.resolve(ref)
    except SecretError as exc:
        return unreadable(service, str(exc), expected=expected, severity=cfg.severity.value, checked=False)
    try:
        return await read(secret)
    except Exception as exc:  # noqa: BLE001 - one service's bug must not hide the others' results
        reason = scrub(f"{service.target}: unexpected {type(exc).__name__}: {exc}", [secret.get_secret_value()])
        return unreadable(service, reason, expected=expected, severity=cfg.severity.value)


async def review(
    cfg: ApiUsage, client: httpx.AsyncClient, resolver: SecretResolver, now: datetime,
    read_key_usage: Callable[..., Awaitable[coingecko.CreditReading]] = coingecko.read_key_usage,
) -> list[CheckResult]:
    """Read every configured service's usage at once and judge each; one result per service, in
    the order CoinGecko, Alchemy, X, Discord. Never raises for a vendor's failure.

    `read_key_usage` is CoinGecko's reader; the checklists pass it through the API's circuit breaker."""
    jobs: list[Awaitable[CheckResult]] = []
    timeout = cfg.timeout_s
    if cfg.coingecko is not None:
        cg = cfg.coingecko

        async def read_coingecko(key: SecretStr) -> CheckResult:
            reading = await read_key_usage(client, cg.base_url, key, timeout_s=timeout)
            return judge_coingecko(cfg, reading, now)

        jobs.append(_guarded(cfg, COINGECKO, monthly_expected(cfg.warn_at), cg.api_key, resolver, read_coingecko))
    if cfg.alchemy is not None:
        al = cfg.alchemy

        async def read_alchemy(key: SecretStr) -> CheckResult:
            reading = await alchemy.read_usage_summary(
                client, al.admin_url, key, timeout_s=timeout, used_cu_field=al.used_cu_field
            )
            return judge_alchemy(cfg, reading, now)

        jobs.append(_guarded(cfg, ALCHEMY, monthly_expected(cfg.warn_at), al.access_key, resolver, read_alchemy))
    if cfg.x is not None:
        xc = cfg.x

        async def read_x(token: SecretStr) -> CheckResult:
            reading = await ratelimits.read_x_window(client, xc.base_url, token, timeout_s=timeout)
            return judge_social(cfg, X, reading, now)

        jobs.append(_guarded(cfg, X, window_expected(cfg.warn_at), xc.user_token, resolver, read_x))
    if cfg.discord is not None:
        dc = cfg.discord

        async def read_discord(token: SecretStr) -> CheckResult:
            reading = await ratelimits.read_discord_window(client, dc.base_url, token, timeout_s=timeout)
            return judge_social(cfg, DISCORD, reading, now)

        jobs.append(_guarded(cfg, DISCORD, window_expected(cfg.warn_at), dc.bot_token, resolver, read_discord))
    return list(await asyncio.gather(*jobs))
