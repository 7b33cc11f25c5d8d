"""Morning Checklist step 2, "Wallet Balance Check": every deployer wallet against its floor.

Balances are read in batches, all of a chain's from one block (or slot), through the first RPC
endpoint that is on the right chain with a fresh head. A balance that cannot be read is unknown,
never zero. Burn per day and runway come from earlier runs' readings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx

from runbook.checks import CheckResult, Status
from runbook.clients import evm, solana
from runbook.clients.http_probe import describe_error
from runbook.settings import Chain, ChainKind, Settings, Wallet, floor_of

ITEM = "Wallet Balance Check"
DECIMALS = {ChainKind.evm: 18, ChainKind.solana: 9}
EVM_BATCH = 500  # getEthBalance calls per aggregate3 eth_call (or eth_getBalance per JSON-RPC batch)


def wallet_key(wallet: Wallet) -> str:
    return f"{wallet.chain}:{wallet.address}"


@dataclass
class ChainRead:
    chain: str
    unit: str = "block"  # what the chain's reads are pinned to: a block, or a Solana slot
    endpoint: str | None = None
    block: int | None = None
    slots: tuple[int, ...] = ()
    method: str = ""
    requests: int = 0
    balances: dict[str, int] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)  # "endpoint: why it was not used"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "unit": self.unit,
            "endpoint": self.endpoint,
            "block": self.block,
            "slots": list(self.slots),
            "method": self.method,
            "requests": self.requests,
            "failed_over": list(self.tried),
        }


async def read_chain(
    chain_name: str, chain: Chain, addresses: list[str], client: httpx.AsyncClient, deadline_s: float
) -> ChainRead:
    """Try the chain's endpoints in order; the first usable one answers for every wallet."""
    read = ChainRead(chain_name, unit="slot" if chain.kind is ChainKind.solana else "block")
    for name, url in zip(chain.endpoint_names(chain_name), chain.rpc_urls, strict=True):
        try:
            if chain.kind is ChainKind.evm:
                assert chain.chain_id is not None
                got: evm.BalanceRead | solana.BalanceRead = await evm.read_native_balances(
                    client, url, addresses, chain_id=chain.chain_id, max_head_age_s=chain.max_head_age_s,
                    batch_size=EVM_BATCH, deadline_s=deadline_s,
                )
            else:
                assert chain.genesis_hash is not None
                got = await solana.read_native_balances(
                    client, url, addresses, genesis_hash=chain.genesis_hash,
                    max_head_age_s=chain.max_head_age_s, deadline_s=deadline_s,
                )
        except (evm.EndpointUnusable, solana.EndpointUnusable, evm.RpcTransportError) as exc:
            read.tried.append(f"{name}: {exc}")
            continue
        except (httpx.HTTPError, TimeoutError, OSError, ValueError, KeyError, TypeError) as exc:
            read.tried.append(f"{name}: {describe_error(exc)}")
            continue
        read.endpoint, read.block, read.method = name, got.block, got.method
        read.slots = getattr(got, "slots", (got.block,))
        read.requests, read.balances = got.requests, got.balances
        return read
    return read


def to_units(raw: int, kind: ChainKind) -> Decimal:
    return Decimal(raw).scaleb(-DECIMALS[kind])


def fmt(amount: Decimal | float, symbol: str) -> str:
    return f"{Decimal(amount):,.4f} {symbol}"


@dataclass(frozen=True)
class Runway:
    burn_per_day: Decimal | None
    days_left: float | None
    note: str


def runway(
    history: Sequence[tuple[datetime, Decimal]], balance: Decimal, floor: Decimal, now: datetime
) -> Runway:
    """Burn per day from the oldest reading of the last week to now; days until the floor at that burn."""
    week = [(t, b) for t, b in history if 0 < (now - t).total_seconds() <= 7 * 86400]
    if not week:
        return Runway(None, None, "no earlier reading this week")
    then, earlier = min(week, key=lambda s: s[0])
    days = Decimal((now - then).total_seconds()) / Decimal(86400)
    burn = (earlier - balance) / days
    if burn <= 0:
        return Runway(burn, None, "not burning")
    return Runway(burn, float((balance - floor) / burn), "")


def judge_wallet(
    settings: Settings, wallet: Wallet, read: ChainRead, history: Sequence[tuple[datetime, Decimal]], now: datetime
) -> tuple[CheckResult, dict[str, Any]]:
    chain = settings.chains[wallet.chain]
    floor = floor_of(settings, wallet)
    at = f"{'slot' if chain.kind is ChainKind.solana else 'block'} {read.block}" if read.block is not None else ""
    name = f"{wallet.chain}:{wallet.label}"
    row: dict[str, Any] = {
        "key": wallet_key(wallet), "chain": wallet.chain, "wallet": wallet.label, "address": wallet.address,
        "balance": None, "floor": floor, "shortfall": None, "burn_per_day": None, "runway_days": None, "at": at,
    }
    raw = read.balances.get(wallet.address)
    if raw is None:
        why = "; ".join(read.tried) or "no usable RPC endpoint"
        result = CheckResult(name, ITEM, Status.unknown, f"unknown: balance not read ({why})",
                             f">= {floor} {chain.symbol}" if floor is not None else "a floor",
                             detail=why, severity=wallet.severity.value, target=f"{name} ({wallet.address})",
                             group=wallet.chain)
        return result, row
    balance = to_units(raw, chain.kind)
    row["balance"] = float(balance)
    if floor is None:
        result = CheckResult(name, ITEM, Status.unknown, f"{fmt(balance, chain.symbol)} at {at}",
                             "a floor configured", detail=f"no floor for {wallet.chain}",
                             severity=wallet.severity.value, target=f"{name} ({wallet.address})",
                             group=wallet.chain)
        return result, row
    floor_d = Decimal(str(floor))
    shortfall = max(Decimal(0), floor_d - balance)
    row["shortfall"] = float(shortfall)
    way = runway(history, balance, floor_d, now)
    row["burn_per_day"] = None if way.burn_per_day is None else float(way.burn_per_day)
    row["runway_days"] = way.days_left
    observed = f"{fmt(balance, chain.symbol)} at {at}"
    if shortfall > 0:
        observed += f", {fmt(shortfall, chain.symbol)} short"
    if way.days_left is not None:
        observed += f"; burn {fmt(way.burn_per_day or 0, chain.symbol)}/day, {max(way.days_left, 0):.1f} days to floor"
    status = Status.fail if shortfall > 0 else Status.ok
    if status is Status.ok and way.days_left is not None and way.days_left < settings.wallet_runway_warn_days:
        status = Status.warn
    result = CheckResult(name, ITEM, status, observed, f">= {fmt(floor_d, chain.symbol)}",
                         detail="" if status is Status.ok else observed, severity=wallet.severity.value,
                         target=f"{name} ({wallet.address})", group=wallet.chain)
    return result, row


async def check_wallets(
    settings: Settings,
    client: httpx.AsyncClient,
    now: datetime,
    history: dict[str, list[tuple[datetime, Decimal]]] | None = None,
) -> tuple[list[CheckResult], list[dict[str, Any]], list[ChainRead]]:
    """Read every chain concurrently; judge each wallet. Returns (results, table rows, chain reads)."""
    by_chain: dict[str, list[Wallet]] = {}
    for w in settings.wallets:
        by_chain.setdefault(w.chain, []).append(w)
    deadline = settings.probes.timeout_s * 3  # a chain read is a few requests, each bounded by the probe deadline
    reads = await asyncio.gather(
        *(
            read_chain(name, settings.chains[name], sorted({w.address for w in ws}), client, deadline)
            for name, ws in by_chain.items()
        )
    )
    read_of = {r.chain: r for r in reads}
    results, rows = [], []
    for w in settings.wallets:
        result, row = judge_wallet(settings, w, read_of[w.chain], (history or {}).get(wallet_key(w), []), now)
        results.append(result)
        rows.append(row)
    return results, rows, list(reads)


def render_markdown(results: Sequence[CheckResult], rows: Sequence[dict[str, Any]], reads: Sequence[ChainRead]) -> str:
    from runbook.checks import worst

    status = worst(r.status for r in results)
    lines = [f"## Wallet Balance Check: {status.value.upper()}", ""]
    for read in reads:
        where = (f"{read.endpoint}, {read.unit} {read.block}, {read.method}, "
                 f"{read.requests} requests") if read.endpoint else "no usable RPC endpoint"
        lines.append(f"- {read.chain}: {where}" + (f" (skipped: {'; '.join(read.tried)})" if read.tried else ""))
    lines += ["", "| wallet | chain | balance | floor | shortfall | burn/day | runway (days) | status |",
              "|---|---|---|---|---|---|---|---|"]
    for result, row in zip(results, rows, strict=True):
        def cell(v: Any, digits: int = 4, missing: str = "unknown") -> str:
            return missing if v is None else f"{v:,.{digits}f}"
        lines.append(
            f"| {row['wallet']} `{row['address'][:10]}…` | {row['chain']} | {cell(row['balance'])} | "
            f"{cell(row['floor'])} | {cell(row['shortfall'])} | {cell(row['burn_per_day'], missing='n/a')} | "
            f"{cell(row['runway_days'], 1, missing='n/a')} | {result.status.value.upper()} |"
        )
    return "\n".join(lines) + "\n"
