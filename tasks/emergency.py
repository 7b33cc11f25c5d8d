"""Emergency tasks: each resolves only the secret its step needs, at the edge, and keeps the
transaction journal in Prefect Variables so that a re-run on any worker sees what an earlier run sent."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable
from pydantic import SecretStr

from runbook.clients import chat_broadcast, pagerduty
from runbook.clients.evm_tx import JournalEntry
from runbook.clients.http_probe import make_client
from runbook.clients.slack import Delivery
from runbook.config_types import SecretRef
from runbook.procedures import emergency
from runbook.procedures.emergency import ChainOutcome, Effect, Emergency, WithdrawalPlan
from runbook.secrets import SecretError
from runbook.settings import ConfigError, Settings
from tasks.common import post_to_team, resolver_for, signing_key
from tasks.contracts import stored_fees


def emergency_config(settings: Settings) -> Emergency:
    """The `[emergency]` section, checked against the environment's chains; ConfigError names the field."""
    cfg = getattr(settings, "emergency", None)
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["emergency: no [emergency] section"])
    problems = cfg.problems_with(settings.chains)
    if problems:
        raise ConfigError(f"environment {settings.environment}", problems)
    return cfg


class PrefectJournal:
    """Journal entries as Prefect Variables (JSON; a signed transaction is public once sent).

    A journal that cannot be read or written costs only the shortcut: the pending-nonce check
    still keeps a re-run from adding a second transaction."""

    @staticmethod
    def variable(key: str) -> str:
        return ("tfops-tx-" + re.sub(r"[^a-z0-9_-]+", "-", key.lower()))[:255]

    async def get(self, key: str) -> JournalEntry | None:
        try:
            value = await Variable.aget(self.variable(key), default=None)
        except Exception as exc:  # noqa: BLE001 - see the class note
            get_run_logger().warning("transaction journal not readable (%s); relying on the nonce check",
                                     type(exc).__name__)
            return None
        if not isinstance(value, dict):
            return None
        try:
            return JournalEntry.from_dict(value)
        except (KeyError, TypeError, ValueError):
            get_run_logger().warning("transaction journal entry %s is damaged; relying on the nonce check",
                                     self.variable(key))
            return None

    async def put(self, key: str, entry: JournalEntry) -> None:
        try:
            await Variable.aset(self.variable(key), entry.to_dict(), overwrite=True)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - see the class note
            get_run_logger().warning("transaction journal not written (%s); relying on the nonce check",
                                     type(exc).__name__)


@task(name="pause-fee-collector", cache_policy=NO_CACHE, tags=["emergency"])
async def pause_fee_collector(settings: Settings, chain: str, dry_run: bool = False) -> ChainOutcome:
    """Pause one chain's FeeCollector with the pauser key (pre-authorized: no approval) and read it back."""
    cfg = emergency_config(settings)
    contract = settings.chains[chain].fee_collector or ""
    try:
        key = resolver_for(settings).resolve(cfg.pauser_key)
    except SecretError as exc:
        return ChainOutcome(chain, contract, "pause", "failed", f"cannot read emergency.pauser_key: {exc}",
                            verification="not verified")
    log = get_run_logger()
    async with make_client(8) as client:
        return await emergency.pause_chain(cfg, chain, settings.chains[chain], client, key, PrefectJournal(),
                                           environment=settings.environment, dry_run=dry_run, on_event=log.info,
                                           gas=await stored_fees(settings, chain))


@task(name="disable-public-api", cache_policy=NO_CACHE, tags=["emergency"])
async def disable_public_api(settings: Settings, reason: str, dry_run: bool = False) -> Effect:
    """The backend's maintenance switch on, and the public endpoints seen refusing."""
    m = emergency_config(settings).maintenance
    if m is None:
        return Effect("API maintenance", "not-configured", "no [emergency.maintenance]: public API NOT disabled")
    resolver = resolver_for(settings)
    try:
        deploy_key = resolver.resolve(m.deploy_key)
        probe_auth = resolver.resolve(m.probe_auth_header) if m.probe_auth_header else None
    except SecretError as exc:
        return Effect("API maintenance", "failed", str(exc))
    async with make_client(8) as client:
        return await emergency.enable_maintenance(m, client, deploy_key, probe_auth, reason, dry_run=dry_run)


@task(name="broadcast-emergency", cache_policy=NO_CACHE, tags=["emergency"])
async def broadcast_emergency(settings: Settings, reason: str, dry_run: bool = False) -> list[Effect]:
    """The emergency message on every configured channel at once: status page, Slack, PagerDuty,
    and Telegram and Discord where configured."""
    cfg = emergency_config(settings)
    n = settings.notifications
    resolver = resolver_for(settings)
    async with make_client(8) as client:

        async def statuspage() -> Effect:
            sp = cfg.statuspage
            if sp is None:
                return Effect("status page", "not-configured", "no [emergency.statuspage]: users NOT told there")
            try:
                key = resolver.resolve(sp.api_key)
            except SecretError as exc:
                return Effect("status page", "failed", str(exc))
            return await emergency.post_status_incident(sp, client, key, cfg.broadcast_message, dry_run=dry_run)

        async def slack() -> Effect:
            if n.slack is None:
                return Effect("slack", "not-configured", "no [notifications.slack]")
            try:
                url = resolver.resolve(n.slack.webhook_url)
            except SecretError as exc:
                return Effect("slack", "failed", str(exc))
            text = emergency.slack_text(settings.environment, reason, cfg.broadcast_message)
            return await emergency.post_slack(client, url, text, timeout_s=n.slack.timeout_s, dry_run=dry_run)

        async def page() -> Effect:
            if n.pagerduty is None:
                return Effect("pagerduty", "not-configured", "no [notifications.pagerduty]")
            if dry_run:
                return Effect("pagerduty", "dry-run", "would trigger a P0 page")
            try:
                routing_key = resolver.resolve(n.pagerduty.routing_key)
            except SecretError as exc:
                return Effect("pagerduty", "failed", str(exc))
            delivery = await pagerduty.enqueue(
                client, n.pagerduty.events_url, routing_key, action="trigger",
                dedup_key=f"tfops-emergency-{settings.environment}", summary=f"Emergency shutdown: {reason}",
                source=n.source, severity="P0", timeout_s=n.pagerduty.timeout_s)
            return Effect("pagerduty", "done" if delivery.ok else "failed", delivery.detail, verified=delivery.ok)

        # Public channels, like the status page: they get the users' message, never the reason.
        text = cfg.broadcast_message

        async def chat(name: str, ref: SecretRef, send: Callable[[SecretStr], Awaitable[Delivery]]) -> Effect:
            """A public chat channel: its secret (bot token, webhook URL) read, then the users' message."""
            try:
                secret = resolver.resolve(ref)
            except SecretError as exc:
                return Effect(name, "failed", str(exc))
            return await emergency.post_chat(name, lambda: send(secret), dry_run=dry_run)

        async def telegram() -> Effect | None:
            tg = cfg.telegram
            if tg is None:
                return None
            return await chat("telegram", tg.bot_token, lambda token: chat_broadcast.send_telegram(
                client, str(tg.base_url), token, tg.chat_id, text, timeout_s=tg.timeout_s))

        async def discord() -> Effect | None:
            dc = cfg.discord
            if dc is None:
                return None
            return await chat("discord", dc.webhook_url, lambda url: chat_broadcast.send_discord(
                client, url, text, timeout_s=dc.timeout_s))

        effects = await asyncio.gather(statuspage(), slack(), page(), telegram(), discord())
        return [e for e in effects if e is not None]


@task(name="report-to-team", cache_policy=NO_CACHE, tags=["emergency"])
async def report_to_team(settings: Settings, text: str) -> str:
    """The outcome, once every effect was checked, on the team's Slack channel."""
    sent = await post_to_team(settings, text)
    return sent.detail if sent else "slack: not configured"


@task(name="plan-withdrawal", cache_policy=NO_CACHE, tags=["emergency"])
async def plan_withdrawal(settings: Settings, chain: str) -> WithdrawalPlan:
    """The collector's balance, the configured destination, and a simulation; no key is read."""
    cfg = emergency_config(settings)
    async with make_client(4) as client:
        return await emergency.plan_withdrawal(cfg, chain, settings.chains[chain], client)


@task(name="withdraw-to-secure-wallet", cache_policy=NO_CACHE, tags=["emergency", "funds"])
async def withdraw_to_secure_wallet(settings: Settings, plan: WithdrawalPlan) -> ChainOutcome:
    """Move the approved amount. The only place the treasury key is ever read, and only after approval."""
    cfg = emergency_config(settings)
    failed = ChainOutcome(plan.chain, plan.contract, "withdraw", "failed", "", amount_wei=plan.amount_wei,
                          destination=plan.destination, verification="not verified")
    try:
        key = signing_key(settings, cfg.treasury_key, "emergency.treasury_key")
    except SecretError as exc:
        failed.detail = str(exc)
        return failed
    log = get_run_logger()
    async with make_client(4) as client:
        return await emergency.withdraw_chain(cfg, plan, settings.chains[plan.chain], client, key, PrefectJournal(),
                                              environment=settings.environment, on_event=log.info,
                                              gas=await stored_fees(settings, plan.chain))
