"""Contract Maintenance tasks: the gas strategy's recommendations kept in Prefect Variables (where
the platform and the emergency transactions read them), and the fee review and its approved change."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.variables import Variable

from runbook.checks import Status
from runbook.clients import coingecko
from runbook.clients.evm_tx import Fees, gwei
from runbook.clients.http_probe import make_client
from runbook.procedures import fees, gas
from runbook.procedures.fees import ChainFees, FeeChange, FeeOutcome, FeeReview
from runbook.procedures.gas import ChainGas, GasStrategy, Recommendation
from runbook.procedures.rate_limit import guarded_price_reader
from runbook.secrets import SecretError
from runbook.settings import ConfigError, Settings
from tasks.breaker_store import guard_for
from tasks.common import resolver_for, signing_key


def gas_config(settings: Settings) -> GasStrategy:
    cfg = settings.gas
    if cfg is None:
        raise ConfigError(f"environment {settings.environment}", ["gas: no [gas] section"])
    return cfg


def fees_config(settings: Settings) -> FeeReview:
    """The `[fees]` section, with what the fee review also needs from elsewhere; ConfigError names the field."""
    cfg = settings.fees
    problems = []
    if cfg is None:
        problems.append("fees: no [fees] section")
    if settings.gas is None:
        problems.append("gas: the fee review prices gas with the gas strategy; no [gas] section")
    emergency = settings.emergency
    if cfg is not None and cfg.fee_setter_key is not None and emergency is not None and (
            cfg.fee_setter_key in (emergency.treasury_key, emergency.pauser_key)):
        problems.append("fees.fee_setter_key: is an emergency key; setFee needs the DEFAULT_ADMIN_ROLE holder's key")
    if problems:
        raise ConfigError(f"environment {settings.environment}", problems)
    assert cfg is not None
    return cfg


# ---- gas -------------------------------------------------------------------------------------------------------------


def _variable(settings: Settings, chain: str) -> str:
    return gas.variable_name(settings.environment, chain)


async def stored_recommendation(settings: Settings, chain: str) -> tuple[Recommendation | None, str]:
    """The chain's stored recommendation when it is usable now, else None and why not."""
    cfg = settings.gas
    spec = settings.chains.get(chain)
    if cfg is None or spec is None or spec.chain_id is None:
        return None, "no [gas] section" if cfg is None else f"{chain} is not an EVM chain"
    try:
        value = await Variable.aget(_variable(settings, chain), default=None)
    except Exception as exc:  # noqa: BLE001 - unreadable means live fee history, not a failed transaction
        return None, f"the stored gas recommendation is not readable ({type(exc).__name__})"
    return gas.usable(value, chain_id=spec.chain_id, now=time.time(), max_age_s=cfg.max_age_s)


async def stored_fees(settings: Settings, chain: str) -> Fees | None:
    """Fees for a transaction on `chain` from the gas strategy, when its recommendation is fresh.
    The transaction layer still checks it against its own cap and the next base fee."""
    rec, why = await stored_recommendation(settings, chain)
    get_run_logger().info("%s fees: %s", chain, why if rec else f"{why}; using live fee history")
    return rec.fees if rec else None


@task(name="recommend-gas", cache_policy=NO_CACHE, tags=["contracts", "gas"])
async def recommend_gas(settings: Settings, chain: str) -> ChainGas:
    """One chain's recommendation from its fee history, stored in its Prefect Variable and read back.
    A chain that cannot be read stores nothing: the previous recommendation ages out instead."""
    cfg = gas_config(settings)
    async with make_client(4) as client:
        result = await gas.read_chain(cfg, chain, settings.chains[chain], client)
    rec = result.recommendation
    if rec is None:
        result.stored = "nothing stored"
        return result
    name = _variable(settings, chain)
    value = rec.to_variable()
    try:
        await Variable.aset(name, value, overwrite=True)  # type: ignore[arg-type]
        back = await Variable.aget(name, default=None)
    except Exception as exc:  # noqa: BLE001 - the recommendation is still reported; storing it failed
        result.stored = f"NOT stored ({type(exc).__name__})"
        result.status = Status.fail
        return result
    result.stored = f"stored in {name}" if back == value else f"NOT stored: {name} reads back differently"
    if back != value:
        result.status = Status.fail
    return result


# ---- fees ------------------------------------------------------------------------------------------------------------


def _launcher(settings: Settings, cfg: FeeReview, chain: str) -> str | None:
    if chain in cfg.estimate_from:
        return cfg.estimate_from[chain]
    return next((w.address for w in settings.wallets if w.chain == chain), None)


@task(name="read-token-prices", cache_policy=NO_CACHE, tags=["contracts", "fees"])
async def read_prices(settings: Settings, chains: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """USD prices of the chains' native tokens, one CoinGecko call; per chain why a price is missing."""
    cfg = fees_config(settings)
    ids = {c: cfg.price_ids[c] for c in chains if c in cfg.price_ids}
    notes = {c: f"no CoinGecko id configured (fees.price_ids.{c})" for c in chains if c not in ids}
    source = cfg.coingecko
    usage = settings.api_usage
    if source is None and usage is not None and usage.coingecko is not None:
        source = fees.CoinGeckoPrices(base_url=usage.coingecko.base_url, api_key=usage.coingecko.api_key)
    if not ids:
        return {}, notes
    if source is None:
        return {}, {**notes, **dict.fromkeys(ids, "no CoinGecko key ([fees.coingecko] or [api_usage.coingecko])")}
    try:
        key = resolver_for(settings).resolve(source.api_key)
    except SecretError as exc:
        return {}, {**notes, **dict.fromkeys(ids, str(exc))}
    guard = guard_for(settings, "coingecko", strict=False)
    read = guarded_price_reader(guard) if guard else coingecko.read_simple_prices
    async with make_client(2) as client:
        reading = await read(client, source.base_url, key, sorted(set(ids.values())), timeout_s=source.timeout_s)
    prices = {c: reading.prices[i] for c, i in ids.items() if i in reading.prices}
    for c, i in ids.items():
        if c not in prices:
            notes[c] = reading.error or f"CoinGecko has no USD price for {i!r}"
        elif reading.note:
            notes[c] = f"cached price ({reading.note})"
    return prices, notes


@task(name="review-chain-fees", cache_policy=NO_CACHE, tags=["contracts", "fees"])
async def review_chain(settings: Settings, chain: str, price_usd: float | None, price_note: str) -> ChainFees:
    """One chain's fees, gas per creation and gas price (the stored recommendation while fresh,
    else computed now), judged against the targets."""
    cfg, gas_cfg = fees_config(settings), gas_config(settings)
    spec = settings.chains[chain]
    rec, source = await stored_recommendation(settings, chain)
    async with make_client(4) as client:
        if rec is None:
            live = await gas.read_chain(gas_cfg, chain, spec, client)
            rec = live.recommendation
            source = (f"computed now from fee history ({source})" if rec else
                      f"{source}; and none computed now: {live.detail}")
        reading = await fees.read_chain(cfg, chain, spec, client, _launcher(settings, cfg, chain))
    gas_source = f"{source}: maxFeePerGas {gwei(rec.max_fee_wei)}" if rec else source
    return fees.judge(cfg, chain, spec, reading, rec, gas_source, price_usd, price_note)


@task(name="plan-fee-change", cache_policy=NO_CACHE, tags=["contracts", "fees"])
async def plan_fee_change(settings: Settings, chain: str, new_wei: int, minimum_wei: int | None) -> FeeChange:
    """The quoted fee now and a simulation of the change from the fee setter's address; no key is read."""
    cfg = fees_config(settings)
    async with make_client(4) as client:
        return await fees.plan_change(cfg, chain, settings.chains[chain], client, new_wei, minimum_wei)


@task(name="set-quoted-fee", cache_policy=NO_CACHE, tags=["contracts", "fees"])
async def set_quoted_fee(settings: Settings, change: FeeChange) -> FeeOutcome:
    """Send the approved change. The only place the fee-setter key is read, and only after approval."""
    from tasks.emergency import PrefectJournal  # the same journal as every signed transaction

    cfg, gas_cfg = fees_config(settings), gas_config(settings)
    failed = FeeOutcome(change.chain, change.contract, "failed", "", change.new_wei)
    try:
        key = signing_key(settings, cfg.fee_setter_key, "fees.fee_setter_key")
    except SecretError as exc:
        failed.detail = str(exc)
        return failed
    log = get_run_logger()
    preset = await stored_fees(settings, change.chain)
    async with make_client(4) as client:
        return await fees.set_fee(cfg, gas_cfg, change, settings.chains[change.chain], client, key, PrefectJournal(),
                                  environment=settings.environment, preset=preset, on_event=log.info)
