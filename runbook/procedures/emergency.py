"""Emergency Procedures 1 and 3: the emergency shutdown (Security Breach) and the Financial Emergency.

Shutdown, per the runbook's `emergencyShutdown()`:
1. pause every FeeCollector on every EVM chain, all chains at once; pausing is pre-authorized;
2. disable public API access: the backend's maintenance switch, a Convex mutation called through
   the documented `POST /api/mutation` with the deploy key (Convex has no built-in switch; the
   function is the platform's own), then probe the public endpoints until they refuse;
3. broadcast the emergency message: the status page (a Statuspage incident), the team's Slack
   channel, and PagerDuty when configured.
Every effect is read back: `paused()` is true, the public endpoints answer a refusal status, the
incident is listed on the public status page, each delivery was accepted.

Financial emergency: pause the chains, then move each FeeCollector's whole balance to the secure
wallet configured for its chain, only after a person approves the exact amounts; then check that
the collector's balance fell, and the wallet's rose, by exactly that amount.

Keys: the pauser key can only pause; the treasury key can move funds and is resolved only by the
withdrawal step, after approval. Neither is ever a parameter, a result or a log line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import httpx
from eth_utils import to_checksum_address
from pydantic import AfterValidator, Field, SecretStr, model_validator

from runbook.clients import convex_query, evm_tx
from runbook.clients.evm import EndpointUnusable, RpcTransportError
from runbook.clients.evm_logs import RpcError
from runbook.clients.http_probe import describe_error
from runbook.clients.slack import Delivery, post_webhook
from runbook.config_types import EVM_ADDRESS, Chain, ChainKind, HttpUrl, Name, SecretRef, Strict

PAUSE = evm_tx.encode_call("pause()")
WEI_PER_UNIT = 10**18

DEFAULT_MESSAGE = ("We are investigating a security incident. Token launches and fee payments are paused and "
                   "the public API is in maintenance while we do. Updates will follow here.")


def _evm_address(value: str) -> str:
    if not EVM_ADDRESS.match(value):
        raise ValueError("not an EVM address (0x + 40 hex digits)")
    return to_checksum_address(value)


EvmAddress = Annotated[str, AfterValidator(_evm_address)]


class StatusPageTarget(Strict):
    """The Statuspage page that tells users (shared/vendors/statuspage.md)."""

    base_url: HttpUrl = "https://api.statuspage.io/v1"
    page_id: str = Field(pattern=r"^[A-Za-z0-9]{4,40}$")
    api_key: SecretRef = Field(description="sent as `Authorization: OAuth <key>`; needs Incident Manager")
    status_url: HttpUrl = Field(description="the public page, e.g. https://status.tokenforge.com; the incident is "
                                            "read back from its /api/v2/incidents/unresolved.json")
    incident_name: str = Field(default="Emergency maintenance", min_length=1, max_length=200)
    component_ids: list[str] = Field(default_factory=list)
    component_status: Literal["degraded_performance", "partial_outage", "major_outage", "under_maintenance"] = (
        "major_outage")
    impact: Literal["none", "minor", "major", "critical"] = "critical"
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10


class TelegramTarget(Strict):
    """A Telegram channel the bot may post to (shared/vendors/telegram.md)."""

    base_url: HttpUrl = "https://api.telegram.org"
    bot_token: SecretRef = Field(description="the bot's token; it goes in the URL path, never in logs")
    chat_id: str = Field(pattern=r"^(@[A-Za-z0-9_]{5,32}|-?[0-9]{1,20})$",
                         description="@channelusername or the numeric chat id")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10


class DiscordTarget(Strict):
    """A Discord channel's incoming webhook (Execute Webhook)."""

    webhook_url: SecretRef = Field(description="https://discord.com/api/webhooks/<id>/<token>: the URL is the secret")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10


class MaintenanceSwitch(Strict):
    """How public API access is switched off: a Convex mutation, then probes that must be refused."""

    convex_url: HttpUrl
    function: str = Field(default="admin:setMaintenance", pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$",
                          description='called with {"enabled": true, "reason": ...}')
    deploy_key: SecretRef = Field(description="sent as `Authorization: Convex <deploy key>`")
    probe_urls: Annotated[list[HttpUrl], Field(min_length=1)] = Field(
        description="public endpoints that must refuse while in maintenance")
    probe_auth_header: SecretRef | None = Field(default=None, description="Authorization header for the probes")
    refused_statuses: Annotated[list[Annotated[int, Field(ge=400, le=599)]], Field(min_length=1)] = Field(
        default_factory=lambda: [503])
    settle_s: Annotated[float, Field(ge=0, le=120)] = Field(
        default=10, description="how long the probes may take to see the switch (caches, replicas)")
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10


class Emergency(Strict):
    """The `[emergency]` section."""

    pauser_key: SecretRef = Field(description="private key of a PAUSER_ROLE holder; signs pause() only")
    treasury_key: SecretRef | None = Field(
        default=None, description="private key of the TREASURY_ROLE holder; read only by the financial emergency, "
                                  "after approval")
    treasury_address: EvmAddress | None = Field(
        default=None, description="the treasury key's address, for the simulation before approval (the key is not "
                                  "read until then)")
    secure_wallets: dict[Name, EvmAddress] = Field(default_factory=dict,
                                            description="per chain, the only address funds may be moved to")
    max_fee_gwei: Annotated[float, Field(gt=0)] = Field(description="cap on maxFeePerGas, every chain")
    chain_max_fee_gwei: dict[Name, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="cap on maxFeePerGas per chain, instead of max_fee_gwei")
    priority_percentile: Annotated[float, Field(ge=0, le=100)] = 50
    fee_history_blocks: Annotated[int, Field(ge=1, le=1024)] = 10
    min_priority_fee_gwei: Annotated[float, Field(ge=0)] = 0.1
    tx_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300
    replace_after_s: Annotated[float, Field(gt=0, le=600)] = 30
    max_replacements: Annotated[int, Field(ge=0, le=20)] = 5
    poll_s: Annotated[float, Field(gt=0, le=30)] = 1
    rpc_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    maintenance: MaintenanceSwitch | None = None
    statuspage: StatusPageTarget | None = None
    telegram: TelegramTarget | None = Field(default=None, description="also broadcast to this Telegram channel")
    discord: DiscordTarget | None = Field(default=None, description="also broadcast to this Discord channel")
    broadcast_message: str = Field(default=DEFAULT_MESSAGE, min_length=1, max_length=2000)
    approval_timeout_s: Annotated[int, Field(ge=60, le=86_400)] = 3600
    approval_poll_s: Annotated[int, Field(ge=1, le=60)] = 5

    @model_validator(mode="after")
    def _consistent(self) -> Emergency:
        if (self.treasury_key is None) != (self.treasury_address is None):
            raise ValueError("treasury_key and treasury_address go together")
        if self.replace_after_s >= self.tx_timeout_s:
            raise ValueError("replace_after_s must be shorter than tx_timeout_s, or nothing is ever replaced")
        for chain, cap in {"(every chain)": self.max_fee_gwei, **self.chain_max_fee_gwei}.items():
            if self.min_priority_fee_gwei >= cap:
                raise ValueError(f"min_priority_fee_gwei ({self.min_priority_fee_gwei:g}) must be below the fee cap "
                                 f"of {chain} ({cap:g} gwei)")
        if self.treasury_key is not None and self.treasury_key == self.pauser_key:
            raise ValueError("treasury_key and pauser_key must be different secrets")
        return self

    def problems_with(self, chains: Mapping[str, Chain]) -> list[str]:
        """What does not fit the environment's chains, each naming its field."""
        problems = []
        for section in ("secure_wallets", "chain_max_fee_gwei"):
            for name in getattr(self, section):
                chain = chains.get(name)
                if chain is None:
                    problems.append(f"emergency.{section}.{name}: unknown chain")
                elif chain.kind is not ChainKind.evm:
                    problems.append(f"emergency.{section}.{name}: not an EVM chain")
        for name, wallet in self.secure_wallets.items():
            chain = chains.get(name)
            if chain is not None and chain.fee_collector and wallet.lower() == chain.fee_collector.lower():
                problems.append(f"emergency.secure_wallets.{name}: is the FeeCollector itself")
        return problems

    def secret_refs(self) -> list[SecretRef]:
        """The secrets the environment uses, for backups and canaries. Not the treasury key: nothing
        but the withdrawal step may ever read it."""
        refs = [self.pauser_key]
        if self.maintenance:
            refs.append(self.maintenance.deploy_key)
            if self.maintenance.probe_auth_header:
                refs.append(self.maintenance.probe_auth_header)
        if self.statuspage:
            refs.append(self.statuspage.api_key)
        if self.telegram:
            refs.append(self.telegram.bot_token)
        if self.discord:
            refs.append(self.discord.webhook_url)
        return refs

    def tx_policy(self, chain: str, preset: evm_tx.Fees | None = None) -> evm_tx.TxPolicy:
        """`preset`: the gas strategy's stored recommendation, used while it fits (evm_tx.initial_fees)."""
        cap = self.chain_max_fee_gwei.get(chain, self.max_fee_gwei)
        return evm_tx.TxPolicy(preset=preset,
            cap_wei=int(Decimal(str(cap)) * evm_tx.GWEI),
            min_priority_wei=int(Decimal(str(self.min_priority_fee_gwei)) * evm_tx.GWEI),
            percentile=self.priority_percentile, history_blocks=self.fee_history_blocks,
            replace_after_s=self.replace_after_s, max_replacements=self.max_replacements,
            timeout_s=self.tx_timeout_s, poll_s=self.poll_s,
        )


def fee_collector_chains(chains: Mapping[str, Chain]) -> list[str]:
    """Every EVM chain with a FeeCollector, in the environment file's order."""
    return [name for name, c in chains.items() if c.kind is ChainKind.evm and c.fee_collector]


def journal_key(environment: str, action: str, chain: str, contract: str) -> str:
    return f"{environment}:{action}:{chain}:{contract.lower()}"


def chain_rpc(cfg: Emergency, name: str, chain: Chain, client: httpx.AsyncClient) -> evm_tx.ChainRpc:
    assert chain.chain_id is not None
    return evm_tx.ChainRpc(name, chain.chain_id, list(zip(chain.endpoint_names(name), chain.rpc_urls, strict=True)),
                           client, timeout_s=cfg.rpc_timeout_s, max_head_age_s=chain.max_head_age_s)


# ---- outcomes ----------------------------------------------------------------------------------------------------

Outcome = Literal["paused", "already-paused", "would-pause", "withdrawn", "already-withdrawn", "nothing-to-move",
                  "would-withdraw", "failed", "skipped"]


@dataclass
class ChainOutcome:
    """What one action did on one chain, and what reading it back showed."""

    chain: str
    contract: str
    action: Literal["pause", "withdraw"]
    outcome: Outcome
    detail: str
    verified: bool = False
    verification: str = ""
    tx_hash: str | None = None
    block: int | None = None
    nonce: int | None = None
    replacements: int = 0
    endpoint: str = ""
    elapsed_s: float = 0.0
    amount_wei: int | None = None
    destination: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verified and self.outcome != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "amount_wei": None if self.amount_wei is None else str(self.amount_wei)}


EffectStatus = Literal["done", "already", "failed", "not-configured", "dry-run"]


@dataclass
class Effect:
    """A non-chain effect: the maintenance switch or one broadcast channel."""

    name: str
    status: EffectStatus
    detail: str
    verified: bool = False

    @property
    def ok(self) -> bool:
        return self.status in ("not-configured", "dry-run") or (self.status != "failed" and self.verified)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _failure(exc: BaseException) -> str:
    if isinstance(exc, evm_tx.TxError | EndpointUnusable | RpcTransportError | RpcError):
        return str(exc)
    return describe_error(exc)


_EXPECTED = (evm_tx.TxError, EndpointUnusable, RpcTransportError, RpcError, httpx.HTTPError, TimeoutError, OSError)


# ---- pause --------------------------------------------------------------------------------------------------------


async def pause_chain(
    cfg: Emergency,
    name: str,
    chain: Chain,
    client: httpx.AsyncClient,
    pauser_key: SecretStr,
    journal: evm_tx.Journal,
    *,
    environment: str,
    dry_run: bool = False,
    on_event: evm_tx.Event = lambda _: None,
    gas: evm_tx.Fees | None = None,
) -> ChainOutcome:
    """Pause the chain's FeeCollector once: skip it when already paused, wait for (never duplicate)
    a pause sent by an earlier attempt, and read `paused()` back afterwards."""
    started = time.monotonic()
    contract = chain.fee_collector
    if chain.kind is not ChainKind.evm or not contract:
        return ChainOutcome(name, contract or "", "pause", "skipped", "no FeeCollector configured", verified=True)
    out = ChainOutcome(name, contract, "pause", "failed", "")
    rpc = chain_rpc(cfg, name, chain, client)
    try:
        out.endpoint = await rpc.connect()
        pauser = evm_tx.address_of(pauser_key)
        key = journal_key(environment, "pause", name, contract)
        landed: evm_tx.Landed | None = None
        for _ in range(3):  # the chain moved under us (a nonce taken, a pause mined meanwhile): look again
            if await evm_tx.read_bool(rpc, contract, "paused()"):
                break
            try:
                # eth_estimateGas executes the call: it is the simulation, and a revert names what is missing
                limit = await evm_tx.estimate_gas(rpc, pauser, contract, PAUSE)
            except evm_tx.Reverted as exc:
                if exc.reason.startswith("EnforcedPause"):
                    continue  # a pause, perhaps an earlier attempt's, was mined since paused() was read
                hint = (f"; the pauser key (emergency.pauser_key) belongs to {pauser}"
                        if "AccessControl" in exc.reason else "")
                raise evm_tx.TxError(f"pause() from {pauser} would revert: {exc.reason}{hint}") from None
            state = await evm_tx.account_state(rpc, pauser)
            entry = await journal.get(key)
            plan = evm_tx.plan_nonce(state.latest_nonce, state.pending_nonce, entry, to=contract, data=PAUSE)
            if dry_run:
                fees, source = await evm_tx.initial_fees(rpc, cfg.tx_policy(name, gas))
                out.outcome, out.verified = "would-pause", True
                out.detail = (f"simulated pause() from {pauser}: ok; would {plan.action} at nonce {plan.nonce} "
                              f"with {fees.describe()} (from {source})" + (f" ({plan.note})" if plan.note else ""))
                out.verification = "dry run: nothing sent"
                return out
            try:
                landed = await evm_tx.land(rpc, pauser_key, plan, sender=pauser, to=contract, data=PAUSE, gas=limit,
                                           policy=cfg.tx_policy(name, gas), journal=journal, journal_key=key,
                                           what="pause()", on_event=on_event)
            except evm_tx.NonceTaken as exc:
                on_event(f"{name}: {exc}; looking again")
                continue
            out.notes.extend(landed.notes)
            if landed.succeeded is False:
                raise evm_tx.TxError(f"pause() transaction {landed.hash} was mined in block {landed.block} "
                                     "but reverted")
            if landed.succeeded is None and not await evm_tx.read_bool(rpc, contract, "paused()"):
                continue  # the nonce went to some other transaction of the pauser: pause at the next one
            break
        paused = await evm_tx.read_bool(rpc, contract, "paused()")
        out.verified = paused
        out.verification = "paused() is true" if paused else "paused() is FALSE"
        if landed is None:
            if not paused:
                raise evm_tx.TxError("no pause landed in three attempts (the pauser's nonce kept being taken); "
                                     "run again")
            out.outcome, out.detail = "already-paused", "already paused; nothing sent"
            earlier = await _mined_from_journal(rpc, await journal.get(key))
            if earlier:
                out.tx_hash, out.block = earlier
                out.detail += f" (paused by tx {earlier[0]} in block {earlier[1]}, sent by an earlier attempt)"
        elif paused:
            out.outcome = "paused"
            out.tx_hash, out.block, out.nonce, out.replacements = (landed.hash, landed.block, landed.nonce,
                                                                   landed.replacements)
            by = f"tx {landed.hash}" if landed.hash else f"a transaction at nonce {landed.nonce} not seen here"
            out.detail = f"paused by {by}" + (f" in block {landed.block}" if landed.block else "")
            if landed.replacements:
                out.detail += f" ({landed.replacements} fee bump{'s' if landed.replacements > 1 else ''}, same nonce)"
        else:
            out.detail = f"nonce {landed.nonce} was used, yet the contract is not paused"
    except _EXPECTED as exc:
        out.detail = _failure(exc)
        if out.verification == "":
            out.verification = "not verified"
    finally:
        out.elapsed_s = time.monotonic() - started
    return out


async def _mined_from_journal(rpc: evm_tx.ChainRpc, entry: evm_tx.JournalEntry | None) -> tuple[str, int] | None:
    """The journal's version that was mined successfully, as (hash, block)."""
    if entry is None:
        return None
    receipts = await rpc.batch([("eth_getTransactionReceipt", [h]) for h in entry.hashes])
    for h, receipt in zip(entry.hashes, receipts, strict=True):
        if isinstance(receipt, dict) and receipt.get("status") == "0x1":
            return h, int(receipt["blockNumber"], 16)
    return None


async def pause_all(
    cfg: Emergency,
    chains: Mapping[str, Chain],
    client: httpx.AsyncClient,
    pauser_key: SecretStr,
    journal: evm_tx.Journal,
    *,
    environment: str,
    concurrently: bool = True,
    on_event: evm_tx.Event = lambda _: None,
) -> list[ChainOutcome]:
    """Every FeeCollector paused, all chains at once (or one after another, for comparison)."""
    names = fee_collector_chains(chains)

    def one(n: str) -> Awaitable[ChainOutcome]:
        return pause_chain(cfg, n, chains[n], client, pauser_key, journal, environment=environment,
                           on_event=on_event)

    if concurrently:
        return list(await asyncio.gather(*(one(n) for n in names)))
    return [await one(n) for n in names]


# ---- the maintenance switch ---------------------------------------------------------------------------------------


async def enable_maintenance(
    m: MaintenanceSwitch,
    client: httpx.AsyncClient,
    deploy_key: SecretStr,
    probe_auth: SecretStr | None,
    reason: str,
    *,
    dry_run: bool = False,
) -> Effect:
    """Turn the backend's maintenance switch on, then probe the public endpoints until each refuses
    (or `settle_s` passes). Setting it twice is harmless: the mutation sets, it does not toggle."""
    name = "API maintenance"
    if dry_run:
        return Effect(name, "dry-run", f"would call {m.function} on {m.convex_url}")
    try:
        value = await convex_query.query(client, m.convex_url, m.function, {"enabled": True, "reason": reason},
                                         m.timeout_s, deploy_key, kind="mutation")
    except convex_query.QueryFailed as exc:
        return Effect(name, "failed", str(exc))
    already = isinstance(value, dict) and value.get("was_enabled") is True
    probes = await probe_until_settled(m, client, probe_auth, refused=True)
    refused = all(ok for ok, _ in probes)
    detail = ("switch was already on" if already else "switch turned on") + "; " + "; ".join(d for _, d in probes)
    return Effect(name, "already" if already else "done", detail, verified=refused)


async def probe_until_settled(m: MaintenanceSwitch, client: httpx.AsyncClient, auth: SecretStr | None, *,
                              refused: bool) -> list[tuple[bool, str]]:
    """Probe the public endpoints until each has settled (or `settle_s` passes): refusing with one of
    `refused_statuses` after the switch went on (`refused=True`), answering again after it went off."""
    headers = {"Authorization": auth.get_secret_value()} if auth else {}
    deadline = time.monotonic() + m.settle_s

    async def probe(url: str) -> tuple[bool, str]:
        while True:
            try:
                async with asyncio.timeout(m.timeout_s):
                    response = await client.get(url, headers=headers, timeout=httpx.Timeout(m.timeout_s))
                seen = f"HTTP {response.status_code}"
                if (response.status_code in m.refused_statuses) == refused:
                    return True, f"{url} {'refuses' if refused else 'answers again'} ({seen})"
            except Exception as exc:  # noqa: BLE001 - unreachable is neither a verified refusal nor "open again"
                seen = describe_error(exc).split(" (")[0]
            if time.monotonic() >= deadline:
                expected = " (expected HTTP " + "/".join(str(s) for s in m.refused_statuses) + ")" if refused else ""
                return False, f"{url} still answers {seen}{expected}"
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    return list(await asyncio.gather(*(probe(u) for u in m.probe_urls)))


# ---- broadcasting ------------------------------------------------------------------------------------------------


async def unresolved_incidents(sp: StatusPageTarget, client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """The incidents users see on the public status page (its unresolved.json): how every status page
    action reads its effect back. Raises when the page cannot be read; it is never taken for empty."""
    url = sp.status_url.rstrip("/") + "/api/v2/incidents/unresolved.json"
    async with asyncio.timeout(sp.timeout_s):
        response = await client.get(url, timeout=httpx.Timeout(sp.timeout_s))
    if response.status_code != 200:
        raise RpcTransportError(f"{url}: HTTP {response.status_code}")
    incidents = response.json().get("incidents")
    if not isinstance(incidents, list):
        raise RpcTransportError(f"{url}: no incidents list")
    return [i for i in incidents if isinstance(i, dict)]


async def post_status_incident(sp: StatusPageTarget, client: httpx.AsyncClient, api_key: SecretStr, message: str,
                               *, dry_run: bool = False) -> Effect:
    """Open the emergency incident on the status page, unless one of that name is already open;
    then find it among the page's public unresolved incidents."""
    name = "status page"
    if dry_run:
        return Effect(name, "dry-run", f"would open incident {sp.incident_name!r} on page {sp.page_id}")
    unread = ""
    try:
        for incident in await unresolved_incidents(sp, client):
            if incident.get("name") == sp.incident_name:
                return Effect(name, "already", f"incident {incident.get('id')} ({sp.incident_name!r}) is already "
                                               "open on the public page", verified=True)
    except (httpx.HTTPError, TimeoutError, ValueError, RpcTransportError) as exc:
        # Users must hear of the emergency: post anyway, at the risk of a second incident on a re-run.
        unread = f" (the public page could not be read first: {_failure(exc)})"
    body = {"incident": {
        "name": sp.incident_name, "status": "investigating", "impact_override": sp.impact, "body": message,
        "component_ids": sp.component_ids, "components": dict.fromkeys(sp.component_ids, sp.component_status),
        "deliver_notifications": True,
    }}
    url = f"{sp.base_url.rstrip('/')}/pages/{sp.page_id}/incidents"
    try:
        async with asyncio.timeout(sp.timeout_s):
            response = await client.post(url, json=body, timeout=httpx.Timeout(sp.timeout_s),
                                         headers={"Authorization": f"OAuth {api_key.get_secret_value()}"})
    except Exception as exc:  # noqa: BLE001 - the request carries a secret: describe, never repr
        return Effect(name, "failed", f"create incident: {describe_error(exc).split(' (')[0]}")
    if response.status_code in (420, 429):
        retry = response.headers.get("Retry-After", "?")
        return Effect(name, "failed", f"rate limited (HTTP {response.status_code}, Retry-After {retry} s)")
    try:
        created = response.json()
    except ValueError:
        created = None
    if response.status_code not in (200, 201) or not isinstance(created, dict) or not created.get("id"):
        error = created.get("error") if isinstance(created, dict) else None
        return Effect(name, "failed", f"create incident: HTTP {response.status_code} {error or ''}".rstrip())
    incident_id = created["id"]
    try:
        listed = any(i.get("id") == incident_id for i in await unresolved_incidents(sp, client))
    except (httpx.HTTPError, TimeoutError, ValueError, RpcTransportError) as exc:
        return Effect(name, "done", f"incident {incident_id} created{unread}; cannot read it back: {_failure(exc)}")
    shown = "; listed on the public page" if listed else "; NOT listed on the public page"
    return Effect(name, "done", f"incident {incident_id} created{unread}{shown}", verified=listed)


async def post_slack(client: httpx.AsyncClient, webhook_url: SecretStr, text: str, *, timeout_s: float,
                     dry_run: bool = False) -> Effect:
    if dry_run:
        return Effect("slack", "dry-run", "would post the emergency message")
    delivery = await post_webhook(client, webhook_url, text, timeout_s=timeout_s)
    return Effect("slack", "done" if delivery.ok else "failed", delivery.detail, verified=delivery.ok)


async def post_chat(name: str, send: Callable[[], Awaitable[Delivery]], dry_run: bool = False) -> Effect:
    """One more broadcast channel; `send` delivers and confirms (both channels answer the saved message)."""
    if dry_run:
        return Effect(name, "dry-run", "would post the emergency message")
    delivery = await send()
    return Effect(name, "done" if delivery.ok else "failed", delivery.detail, verified=delivery.ok)


def slack_text(environment: str, reason: str, message: str) -> str:
    return f":rotating_light: EMERGENCY SHUTDOWN ({environment}): {reason}\n{message}"


# ---- the shutdown report ------------------------------------------------------------------------------------------


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class ShutdownReport:
    environment: str
    reason: str
    started_at: float
    finished_at: float
    chains: list[ChainOutcome]
    effects: list[Effect]
    dry_run: bool = False

    @property
    def passed(self) -> bool:
        return bool(self.chains) and all(c.ok for c in self.chains) and all(e.ok for e in self.effects)

    @property
    def failures(self) -> list[str]:
        out = [f"{c.chain}: {c.detail or c.outcome} ({c.verification})" for c in self.chains if not c.ok]
        out += [f"{e.name}: {e.detail}" for e in self.effects if not e.ok]
        if not self.chains:
            out.append("no EVM chain with a fee_collector is configured: nothing was paused")
        return out

    def summary(self) -> str:
        took = self.finished_at - self.started_at
        if self.passed:
            what = "dry run passed" if self.dry_run else "complete, every effect verified"
            return f"Emergency shutdown ({self.environment}): {what} in {took:.1f} s"
        return f"Emergency shutdown ({self.environment}): INCOMPLETE after {took:.1f} s: " + "; ".join(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "reason": self.reason, "passed": self.passed,
                "dry_run": self.dry_run, "started_at": _utc(self.started_at), "finished_at": _utc(self.finished_at),
                "elapsed_s": round(self.finished_at - self.started_at, 3),
                "chains": [c.to_dict() for c in self.chains], "effects": [e.to_dict() for e in self.effects],
                "failures": self.failures, "markdown": self.markdown()}

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"item": f"pause {c.chain}", "outcome": c.outcome, "detail": c.detail, "verified": c.verification,
                 "ok": c.ok} for c in self.chains]
        rows += [{"item": e.name, "outcome": e.status, "detail": e.detail, "verified": "yes" if e.verified else "no",
                  "ok": e.ok} for e in self.effects]
        return rows

    def markdown(self) -> str:
        verdict = ("DRY RUN" if self.dry_run else "COMPLETE") if self.passed else "INCOMPLETE"
        lines = [f"## Emergency Shutdown: {verdict}", "",
                 f"- Environment: {self.environment}", f"- Reason: {self.reason}",
                 f"- Started: {_utc(self.started_at)}; took {self.finished_at - self.started_at:.1f} s", ""]
        if not self.passed:
            lines += ["**Not done or not verified:**", *(f"- {f}" for f in self.failures), ""]
        lines += ["### 1. Pause all contracts", "", "| Chain | FeeCollector | Outcome | Verified |",
                  "|---|---|---|---|"]
        for c in self.chains:
            mark = "yes" if c.ok else "**NO**"
            lines.append(f"| {c.chain} | `{c.contract}` | {c.detail or c.outcome} | {mark}: {c.verification} |")
        lines += ["", "### 2-3. Disable API endpoints, notify users", "", "| Effect | Outcome | Verified |",
                  "|---|---|---|"]
        for e in self.effects:
            mark = "yes" if e.verified else ("n/a" if e.ok else "**NO**")
            lines.append(f"| {e.name} | {e.status}: {e.detail} | {mark} |")
        notes = [f"- {c.chain}: {n}" for c in self.chains for n in c.notes]
        if notes:
            lines += ["", "### Transactions", "", *notes]
        return "\n".join(lines) + "\n"


# ---- financial emergency -------------------------------------------------------------------------------------------


def withdraw_data(destination: str, amount_wei: int) -> str:
    return evm_tx.encode_call("withdraw(address,uint256)", ["address", "uint256"],
                              [to_checksum_address(destination), amount_wei])


def amount_text(wei: int) -> str:
    """Wei in the chain's native unit, exactly, without trailing zeros: 30000000000000000 -> '0.03'."""
    text = format(Decimal(wei).scaleb(-18), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parse_amount(text: str, symbol: str) -> int | None:
    """What an approver typed, in wei; None when it is not an exact amount in the native unit."""
    cleaned = text.strip().removesuffix(symbol).strip().replace(",", "")
    try:
        value = Decimal(cleaned).scaleb(18)
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value() or value < 0:
        return None
    return int(value)


def retyped_problems(rows: Iterable[tuple[str, str, int, str]], typed: Mapping[str, str], approved: bool) -> list[str]:
    """Why an approval does not count: not ticked, or an amount not retyped exactly. Each row is
    (chain, symbol, expected wei, what the amount is), e.g. ("ethereum", "ETH", 3 * 10**16, "the amount to move")."""
    problems = [] if approved else ["the approver did not tick 'approve'"]
    for chain, symbol, expected_wei, what in rows:
        got = typed.get(chain, "")
        if parse_amount(got, symbol) != expected_wei:
            problems.append(f"{chain}: typed {got!r}, {what} is {amount_text(expected_wei)}")
    return problems


@dataclass
class WithdrawalPlan:
    """One chain's move, as shown for approval. `problem` set: nothing can be moved on this chain."""

    chain: str
    symbol: str
    contract: str
    destination: str | None
    amount_wei: int
    block: int | None = None
    problem: str | None = None

    @property
    def amount(self) -> str:
        return f"{amount_text(self.amount_wei)} {self.symbol}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "amount_wei": str(self.amount_wei), "amount": self.amount}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WithdrawalPlan:
        return cls(d["chain"], d["symbol"], d["contract"], d.get("destination"), int(d["amount_wei"]), d.get("block"),
                   d.get("problem"))


async def plan_withdrawal(cfg: Emergency, name: str, chain: Chain, client: httpx.AsyncClient) -> WithdrawalPlan:
    """The collector's whole balance, to the configured secure wallet, simulated from the treasury
    address. The treasury key is not read here."""
    contract = chain.fee_collector or ""
    plan = WithdrawalPlan(name, chain.symbol, contract, cfg.secure_wallets.get(name), 0)
    if not contract:
        plan.problem = "no fee_collector configured"
        return plan
    if plan.destination is None:
        plan.problem = f"no secure wallet configured for {name} (emergency.secure_wallets.{name})"
        return plan
    if cfg.treasury_address is None:
        plan.problem = "no treasury configured (emergency.treasury_key and emergency.treasury_address)"
        return plan
    rpc = chain_rpc(cfg, name, chain, client)
    try:
        await rpc.connect()
        head = int(await rpc.call("eth_blockNumber", []), 16)
        plan.block = head
        plan.amount_wei = await evm_tx.balance_at(rpc, contract, head)
        if plan.amount_wei:
            await evm_tx.eth_call(rpc, contract, withdraw_data(plan.destination, plan.amount_wei),
                                  sender=cfg.treasury_address, block=hex(head))
    except evm_tx.Reverted as exc:
        plan.problem = f"withdraw() from {cfg.treasury_address} would revert: {exc.reason}"
    except _EXPECTED as exc:
        plan.problem = _failure(exc)
    return plan


def approval_problems(plans: Sequence[WithdrawalPlan], typed: Mapping[str, str], approved: bool) -> list[str]:
    """Why an approval does not count: not ticked, or an amount not retyped exactly."""
    return retyped_problems(((p.chain, p.symbol, p.amount_wei, "the amount to move") for p in plans), typed, approved)


async def withdraw_chain(
    cfg: Emergency,
    plan: WithdrawalPlan,
    chain: Chain,
    client: httpx.AsyncClient,
    treasury_key: SecretStr,
    journal: evm_tx.Journal,
    *,
    environment: str,
    on_event: evm_tx.Event = lambda _: None,
    gas: evm_tx.Fees | None = None,
) -> ChainOutcome:
    """Move exactly the approved amount to the configured wallet, once, and check both balances
    moved by exactly that amount in the block that mined it."""
    started = time.monotonic()
    out = ChainOutcome(plan.chain, plan.contract, "withdraw", "failed", "", amount_wei=plan.amount_wei,
                       destination=plan.destination)
    destination = cfg.secure_wallets.get(plan.chain)
    try:
        if plan.problem or destination is None or plan.amount_wei <= 0:
            raise evm_tx.TxError(plan.problem or "nothing approved to move")
        if destination.lower() != (plan.destination or "").lower():
            raise evm_tx.TxError(f"the approved destination {plan.destination} is not the configured secure wallet "
                                 f"{destination} (emergency.secure_wallets.{plan.chain})")
        treasury = evm_tx.address_of(treasury_key)
        if cfg.treasury_address is None or treasury.lower() != cfg.treasury_address.lower():
            raise evm_tx.TxError(f"the treasury key (emergency.treasury_key) belongs to {treasury}, not to "
                                 f"emergency.treasury_address {cfg.treasury_address}")
        rpc = chain_rpc(cfg, plan.chain, chain, client)
        out.endpoint = await rpc.connect()
        data = withdraw_data(destination, plan.amount_wei)
        key = journal_key(environment, "withdraw", plan.chain, plan.contract)
        entry = await journal.get(key)
        state = await evm_tx.account_state(rpc, treasury)
        if entry is not None and entry.data == data and entry.nonce < state.latest_nonce:
            earlier = await _mined_from_journal(rpc, entry)  # the nonce is mined: was it our withdrawal?
            if earlier:
                out.outcome, (out.tx_hash, out.block) = "already-withdrawn", earlier
                out.detail = f"already withdrawn by tx {earlier[0]} in block {earlier[1]} (an earlier attempt)"
                await _verify_withdrawal(rpc, out, plan.contract, destination, plan.amount_wei)
                return out
        balance = await evm_tx.balance_at(rpc, plan.contract)
        if balance < plan.amount_wei:
            raise evm_tx.TxError(f"the collector holds {amount_text(balance)} {plan.symbol}, less than the "
                                 f"{plan.amount} approved; nothing sent")
        await evm_tx.eth_call(rpc, plan.contract, data, sender=treasury)
        tx_plan = evm_tx.plan_nonce(state.latest_nonce, state.pending_nonce, entry, to=plan.contract, data=data)
        limit = await evm_tx.estimate_gas(rpc, treasury, plan.contract, data) if tx_plan.entry is None else None
        landed = await evm_tx.land(rpc, treasury_key, tx_plan, sender=treasury, to=plan.contract, data=data,
                                   gas=limit, policy=cfg.tx_policy(plan.chain, gas), journal=journal, journal_key=key,
                                   what="withdraw()", on_event=on_event)
        out.notes.extend(landed.notes)
        out.tx_hash, out.block, out.nonce, out.replacements = (landed.hash, landed.block, landed.nonce,
                                                               landed.replacements)
        if landed.succeeded is not True or landed.block is None:
            raise evm_tx.TxError(f"withdraw() transaction {landed.hash or '(unknown)'} did not succeed "
                                 f"(block {landed.block})")
        out.outcome = "withdrawn"
        out.detail = f"{plan.amount} to {destination} by tx {landed.hash} in block {landed.block}"
        await _verify_withdrawal(rpc, out, plan.contract, destination, plan.amount_wei)
    except evm_tx.Reverted as exc:
        out.detail = f"withdraw() would revert: {exc.reason}"
    except _EXPECTED as exc:
        out.detail = _failure(exc)
    finally:
        out.elapsed_s = time.monotonic() - started
    return out


async def _verify_withdrawal(rpc: evm_tx.ChainRpc, out: ChainOutcome, contract: str, destination: str,
                             amount: int) -> None:
    assert out.block is not None
    before, after = out.block - 1, out.block
    c0, c1, d0, d1 = await asyncio.gather(
        evm_tx.balance_at(rpc, contract, before), evm_tx.balance_at(rpc, contract, after),
        evm_tx.balance_at(rpc, destination, before), evm_tx.balance_at(rpc, destination, after))
    collector_ok, wallet_ok = c0 - c1 == amount, d1 - d0 == amount
    out.verified = collector_ok and wallet_ok
    out.verification = (f"in block {after}: collector {amount_text(c0)} -> {amount_text(c1)}"
                        f"{'' if collector_ok else ' (NOT down by the amount)'}, secure wallet {amount_text(d0)} -> "
                        f"{amount_text(d1)}{'' if wallet_ok else ' (NOT up by the amount)'}")


@dataclass
class IncidentReport:
    """The Financial Emergency's record: what was paused, what was approved by whom, what moved."""

    environment: str
    reason: str
    started_at: float
    finished_at: float
    pauses: list[ChainOutcome]
    plans: list[WithdrawalPlan]
    approval: str
    approved_by: str | None
    withdrawals: list[ChainOutcome]

    @property
    def passed(self) -> bool:
        moved = {w.chain for w in self.withdrawals if w.ok}
        to_move = {p.chain for p in self.plans if p.amount_wei > 0 and not p.problem}
        return (bool(self.pauses) and all(p.ok for p in self.pauses) and all(w.ok for w in self.withdrawals)
                and to_move <= moved and not any(p.problem for p in self.plans))

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "reason": self.reason, "passed": self.passed,
                "started_at": _utc(self.started_at), "finished_at": _utc(self.finished_at),
                "pauses": [p.to_dict() for p in self.pauses], "plans": [p.to_dict() for p in self.plans],
                "approval": self.approval, "approved_by": self.approved_by,
                "withdrawals": [w.to_dict() for w in self.withdrawals], "markdown": self.markdown()}

    def rows(self) -> list[dict[str, Any]]:
        rows = [{"step": f"pause {p.chain}", "outcome": p.outcome, "detail": p.detail, "verified": p.verification,
                 "ok": p.ok} for p in self.pauses]
        rows += [{"step": f"withdraw {w.chain}", "outcome": w.outcome, "detail": w.detail,
                  "verified": w.verification, "ok": w.ok} for w in self.withdrawals]
        return rows

    def markdown(self) -> str:
        verdict = "FUNDS SECURED" if self.passed else "INCOMPLETE"
        lines = [f"## Financial Emergency incident report: {verdict}", "",
                 f"- Environment: {self.environment}", f"- Reason: {self.reason}",
                 f"- Started: {_utc(self.started_at)}; finished: {_utc(self.finished_at)}",
                 f"- Approval: {self.approval}" + (f" (by {self.approved_by})" if self.approved_by else ""), "",
                 "### 1. Pause affected contracts", "", "| Chain | FeeCollector | Outcome | Verified |",
                 "|---|---|---|---|"]
        lines += [f"| {p.chain} | `{p.contract}` | {p.detail} | {p.verification} |" for p in self.pauses]
        lines += ["", "### 2. Move funds to the secure wallet", "", "| Chain | Amount | To | Outcome | Verified |",
                  "|---|---|---|---|---|"]
        done = {w.chain: w for w in self.withdrawals}
        for p in self.plans:
            w = done.get(p.chain)
            outcome = p.problem or (w.detail if w else ("nothing to move" if not p.amount_wei else "not moved"))
            lines.append(f"| {p.chain} | {p.amount} | `{p.destination}` | {outcome} | "
                         f"{w.verification if w else '-'} |")
        lines += ["", "### 3-4. Investigate, file the report", "",
                  "Attach this report to the incident; the transactions above are the on-chain record."]
        notes = [f"- {c.chain} {c.action}: {n}" for c in [*self.pauses, *self.withdrawals] for n in c.notes]
        if notes:
            lines += ["", "### Transactions", "", *notes]
        return "\n".join(lines) + "\n"


Approver = Callable[[Sequence[WithdrawalPlan]], Awaitable[tuple[bool, Mapping[str, str], str | None]]]
