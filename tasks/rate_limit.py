"""The API Rate Limit Hit remediation, one task per API: secrets resolved here, at the edge."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.clients.guarded import Operation
from runbook.clients.http_probe import make_client
from runbook.procedures import emergency, rate_limit
from runbook.procedures.emergency import Effect
from runbook.procedures.rate_limit import ApiBreakerReport, Breakers
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import ConfigError, Settings
from tasks.breaker_store import guard_for
from tasks.common import post_slack, resolver_for


def breakers_config(settings: Settings) -> Breakers:
    """The `[breakers]` section; ConfigError names it when it is missing."""
    section = settings.breakers
    if section is None:
        raise ConfigError(f"environment {settings.environment}", ["breakers: no [breakers] section"])
    return section


def _operations(settings: Settings, api: str, client: Any, resolver: SecretResolver
                ) -> tuple[dict[str, Operation[Any]], Operation[Any] | None, list[str]]:
    """The guarded operations of `api` that can be replayed, and the one that probes it."""
    if api == "coingecko":
        usage = settings.api_usage
        if usage is None or usage.coingecko is None:
            return {}, None, ["no [api_usage.coingecko]: nothing to probe or replay with"]
        try:
            key = resolver.resolve(usage.coingecko.api_key)
        except SecretError as exc:
            return {}, None, [f"api_usage.coingecko.api_key: {exc}"]
        op = rate_limit.coingecko_key_usage(client, usage.coingecko.base_url, key, usage.timeout_s)
        prices = rate_limit.coingecko_simple_prices(client, usage.coingecko.base_url, key, usage.timeout_s)
        return {op.name: op, prices.name: prices}, op, []
    return {}, None, [f"no guarded calls are defined for {api!r}: its breaker is reported, not probed"]


@task(name="handle-api-breaker", cache_policy=NO_CACHE, tags=["rate-limit"])
async def handle_breaker(settings: Settings, api: str, dry_run: bool = False) -> ApiBreakerReport:
    """One API's breaker: probe and replay when it lets calls through; notice and provider flag
    when open; withdraw the notice once it has closed."""
    section = breakers_config(settings)
    cfg = section.apis[api]
    guard = guard_for(settings, api, strict=True)
    assert guard is not None
    resolver = resolver_for(settings)
    n = settings.notifications
    fallback = settings.emergency.statuspage if settings.emergency else None
    page = rate_limit.notice_page(section, fallback, cfg.title or api)

    async with make_client(8) as client:

        async def statuspage(post: bool) -> Effect:
            if page is None:
                return Effect("status page", "not-configured",
                              "no [breakers.statuspage] or [emergency.statuspage]: users NOT told")
            try:
                key = resolver.resolve(page.api_key)
            except SecretError as exc:
                return Effect("status page", "failed", str(exc))
            if post:
                return await emergency.post_status_incident(page, client, key, section.notice_message,
                                                            dry_run=dry_run)
            return await rate_limit.resolve_notice(page, client, key, f"{cfg.title or api} answers normally again.",
                                                   dry_run=dry_run)

        async def team(text: str) -> Effect:
            if n.slack is None:
                return Effect("slack", "not-configured", "no [notifications.slack]")
            if dry_run:
                return Effect("slack", "dry-run", "would post: " + text.splitlines()[0])
            delivery = await post_slack(settings, n.slack.webhook_url, text, timeout_s=n.slack.timeout_s)
            return Effect("slack", "done" if delivery.ok else "failed", delivery.detail, verified=delivery.ok)

        async def announce(report: ApiBreakerReport) -> list[Effect]:
            text = (f":warning: {report.title} is rate limiting us ({settings.environment}): breaker "
                    f"{report.state_line}.\nCache-only mode: callers get the last good value with its age; "
                    f"{report.queue_after} non-critical call(s) queued.\n{report.provider_flag}")
            return [await statuspage(True), await team(text)]

        async def withdraw(report: ApiBreakerReport) -> list[Effect]:
            text = (f":white_check_mark: {report.title} answers normally again ({settings.environment}): breaker "
                    f"closed, {sum(r.outcome == 'done' for r in report.replayed)} queued call(s) replayed.")
            return [await statuspage(False), await team(text)]

        operations, probe, notes = _operations(settings, api, client, resolver)
        try:
            report = await rate_limit.handle_api(api, cfg, guard, operations, probe, announce=announce,
                                                 withdraw=withdraw, dry_run=dry_run)
        except Exception as exc:  # noqa: BLE001 - one API's failure must not hide the others' reports
            return ApiBreakerReport(api, cfg.title or api, "unknown", "not read", notes=notes,
                                    error=f"{type(exc).__name__}: {str(exc)[:200]}")
    report.notes = notes + report.notes
    return report
