"""Evening Checklist step 2, "Security Scan": suspicious on-chain activity, failed logins, unauthorized access.

On chain: every EVM chain's FeeCollector events of the window (`Paused`, `Unpaused`, role grants and
revokes, role-admin and ownership changes, `Withdrawn`, `FeeChanged`; not the routine
`FeeCollected`) are read with `eth_getLogs` in block ranges the endpoint accepts, through the first
endpoint on the right chain with a fresh head, decoded with the contract's ABI and judged:

- `Paused` by an account outside `expected_pausers` -> suspicious; by an expected pauser -> listed.
- `Unpaused`, `FeeChanged`, a role grant or revoke by a principal outside `admin_allowlist` ->
  suspicious and unauthorized access (the principal is named).
- A role granted to an account outside `admin_allowlist` + `expected_pausers` +
  `expected_role_holders` -> suspicious.
- A role-admin change, an ownership transfer to an address outside the allow-list -> suspicious.
- `Withdrawn` above `withdrawal_threshold` (native units) -> suspicious; below -> listed.

Every finding names its evidence: tx hash, block, principal, time. Suspicious activity fails at
`raised_severity`; a chain whose logs cannot be read is `unknown` with the reason, never "quiet".

Failed logins come from a Convex query function (`failed_login_function`), answered as
`{"count": n, "top_sources": [{"source": ip, "count": n}, ...]}` for the window; above
`failed_login_threshold` fails at `severity`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import httpx
from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from runbook.checks import CheckResult, Status
from runbook.clients import convex_query, evm_logs
from runbook.clients.evm import RpcTransportError
from runbook.config_types import Chain, ChainKind, Severity, Strict

ITEM = "Security Scan"
GROUP = "security"

def _event(name: str, *inputs: tuple[str, str, bool]) -> dict[str, Any]:
    return {"type": "event", "name": name, "anonymous": False,
            "inputs": [{"name": n, "type": t, "indexed": ix} for n, t, ix in inputs]}


# The events of contracts/build/FeeCollector.json (a unit test keeps them equal), carried here so a
# worker installed without the contracts folder still decodes them.
FEE_COLLECTOR_EVENTS = [
    _event("FeeChanged", ("oldFee", "uint256", False), ("newFee", "uint256", False)),
    _event("FeeCollected", ("payer", "address", True), ("amount", "uint256", False)),
    _event("Paused", ("account", "address", False)),
    _event("RoleAdminChanged", ("role", "bytes32", True), ("previousAdminRole", "bytes32", True),
           ("newAdminRole", "bytes32", True)),
    _event("RoleGranted", ("role", "bytes32", True), ("account", "address", True), ("sender", "address", True)),
    _event("RoleRevoked", ("role", "bytes32", True), ("account", "address", True), ("sender", "address", True)),
    _event("Unpaused", ("account", "address", False)),
    _event("Withdrawn", ("to", "address", True), ("amount", "uint256", False), ("by", "address", True)),
]

# Not in FeeCollector's ABI (it uses AccessControl), but a contract moved to Ownable emits it.
OWNERSHIP_TRANSFERRED = _event("OwnershipTransferred", ("previousOwner", "address", True),
                               ("newOwner", "address", True))
WATCHED = ("Paused", "Unpaused", "RoleGranted", "RoleRevoked", "RoleAdminChanged", "Withdrawn", "FeeChanged",
           "OwnershipTransferred")
ROLE_NAMES = {
    "0x" + "00" * 32: "DEFAULT_ADMIN_ROLE",
    "0x" + keccak(text="PAUSER_ROLE").hex(): "PAUSER_ROLE",
    "0x" + keccak(text="TREASURY_ROLE").hex(): "TREASURY_ROLE",
}
WEI = Decimal(10) ** 18


def _address(value: str) -> str:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise PydanticCustomError("address", "not an EVM address: {value}", {"value": value}) from None


class SecurityScan(Strict):
    admin_allowlist: list[str] = Field(
        description="addresses allowed to grant/revoke roles, pause, unpause and set fees")
    expected_pausers: list[str] = Field(default_factory=list, description="accounts whose Paused is expected")
    expected_role_holders: list[str] = Field(
        default_factory=list,
        description="accounts that may receive roles besides the allow-list and expected pausers (the treasury)")
    withdrawal_threshold: Annotated[float, Field(ge=0)] = Field(
        description="a Withdrawn above this many native units is suspicious")
    window_hours: Annotated[int, Field(gt=0, le=24 * 31)] = 24
    max_block_range: Annotated[int, Field(ge=1, le=1_000_000)] = 2000
    failed_login_function: str = Field(default="security:failedLogins", pattern=r"^[A-Za-z0-9_/.-]+:[A-Za-z0-9_]+$")
    failed_login_threshold: Annotated[int, Field(ge=0)] = 20
    severity: Severity = Severity.P2
    raised_severity: Severity = Severity.P1
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    deadline_s: Annotated[float, Field(gt=0, le=900)] = 60

    @field_validator("admin_allowlist", "expected_pausers", "expected_role_holders")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [_address(v) for v in values]


# ---- decoding -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventSpec:
    name: str
    signature: str
    topic: str
    inputs: tuple[tuple[str, str, bool], ...]  # (name, type, indexed)


def event_specs(abi: Sequence[Mapping[str, Any]]) -> dict[str, EventSpec]:
    """topic0 -> event, for every non-anonymous event of `abi` (plus OwnershipTransferred)."""
    specs: dict[str, EventSpec] = {}
    for item in [*abi, OWNERSHIP_TRANSFERRED]:
        if item.get("type") != "event" or item.get("anonymous"):
            continue
        inputs = tuple((i["name"], i["type"], bool(i.get("indexed"))) for i in item["inputs"])
        signature = f"{item['name']}({','.join(t for _, t, _ in inputs)})"
        topic = "0x" + keccak(text=signature).hex()
        specs[topic] = EventSpec(item["name"], signature, topic, inputs)
    return specs


_SPECS: dict[str, EventSpec] | None = None


def fee_collector_events() -> dict[str, EventSpec]:
    global _SPECS
    if _SPECS is None:
        _SPECS = event_specs(FEE_COLLECTOR_EVENTS)
    return _SPECS


def watched_topics() -> list[str]:
    return sorted(s.topic for s in fee_collector_events().values() if s.name in WATCHED)


@dataclass(frozen=True)
class Event:
    name: str
    args: dict[str, Any]
    block: int
    tx_hash: str
    log_index: int
    address: str
    time: datetime | None = None
    tx_from: str | None = None


def _normalise(typ: str, value: Any) -> Any:
    if typ == "address":
        return to_checksum_address(value)
    if typ.startswith("bytes") and isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def decode_log(log: Mapping[str, Any], specs: Mapping[str, EventSpec] | None = None) -> Event | None:
    """One raw log as an Event; None for an event not in the ABI. Malformed logs raise ValueError."""
    specs = fee_collector_events() if specs is None else specs
    topics = [str(t).lower() for t in log.get("topics", [])]
    if not topics or topics[0] not in specs:
        return None
    spec = specs[topics[0]]
    indexed = [(n, t) for n, t, ix in spec.inputs if ix]
    plain = [(n, t) for n, t, ix in spec.inputs if not ix]
    if len(topics) != 1 + len(indexed):
        raise ValueError(f"{spec.name}: {len(topics) - 1} indexed topics, expected {len(indexed)}")
    args: dict[str, Any] = {}
    try:
        for (name, typ), topic in zip(indexed, topics[1:], strict=True):
            (args[name],) = abi_decode([typ], bytes.fromhex(topic.removeprefix("0x")))
        values = abi_decode([t for _, t in plain], bytes.fromhex(str(log.get("data", "0x")).removeprefix("0x")))
    except Exception as exc:  # eth_abi raises its own DecodingError family
        raise ValueError(f"{spec.name}: cannot decode: {exc}") from None
    args.update({n: v for (n, _), v in zip(plain, values, strict=True)})
    args = {n: _normalise(t, args[n]) for n, t, _ in spec.inputs}
    return Event(spec.name, args, int(log["blockNumber"], 16), str(log["transactionHash"]),
                 int(log["logIndex"], 16), to_checksum_address(log["address"]))


# ---- judging ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    chain: str
    event: str
    summary: str
    principal: str | None
    tx_hash: str
    block: int
    time: datetime | None
    suspicious: bool
    unauthorized: bool = False

    def evidence(self) -> str:
        when = self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if self.time else "time unknown"
        return f"{self.summary} (tx {self.tx_hash}, block {self.block}, by {self.principal or 'unknown'}, at {when})"

    def to_dict(self) -> dict[str, Any]:
        return {"chain": self.chain, "event": self.event, "summary": self.summary, "principal": self.principal,
                "tx_hash": self.tx_hash, "block": self.block,
                "time": self.time.isoformat() if self.time else None, "suspicious": self.suspicious,
                "unauthorized": self.unauthorized}


def role_name(role: str) -> str:
    return ROLE_NAMES.get(role.lower(), role)


def assess(event: Event, cfg: SecurityScan, chain: str, symbol: str) -> Finding:
    """What one event means under the configuration: listed (expected) or suspicious."""
    admins = set(cfg.admin_allowlist)
    known_holders = admins | set(cfg.expected_pausers) | set(cfg.expected_role_holders)
    a = event.args

    def finding(summary: str, principal: str | None, suspicious: bool, unauthorized: bool = False) -> Finding:
        return Finding(chain, event.name, summary, principal, event.tx_hash, event.block, event.time,
                       suspicious, unauthorized)

    if event.name == "Paused":
        who = a["account"]
        expected = who in cfg.expected_pausers
        return finding(f"Paused by {who}" + ("" if expected else " (not an expected pauser)"), who, not expected,
                       unauthorized=not expected and who not in admins)
    if event.name == "Unpaused":
        who = a["account"]
        ok = who in admins
        return finding(f"Unpaused by {who}" + ("" if ok else " (not on the admin allow-list)"), who, not ok, not ok)
    if event.name in ("RoleGranted", "RoleRevoked"):
        role, account, sender = role_name(a["role"]), a["account"], a["sender"]
        verb = "granted to" if event.name == "RoleGranted" else "revoked from"
        reasons = []
        unauthorized = sender not in admins
        if event.name == "RoleRevoked" and sender == account:
            unauthorized = False  # renounceRole: an account can always give up its own role
            verb = "renounced by"
            if role == "DEFAULT_ADMIN_ROLE":
                reasons.append("the admin role was renounced")
        if unauthorized:
            reasons.append(f"{sender} is not on the admin allow-list")
        if event.name == "RoleGranted" and account not in known_holders:
            reasons.append(f"{account} is not an expected role holder")
        summary = f"{role} {verb} {account}" + (f" by {sender}" if verb != "renounced by" else "")
        if reasons:
            summary += " (" + "; ".join(reasons) + ")"
        return finding(summary, sender, bool(reasons), unauthorized)
    if event.name == "RoleAdminChanged":
        role = role_name(a["role"])
        summary = (f"admin of {role} changed from {role_name(a['previousAdminRole'])} "
                   f"to {role_name(a['newAdminRole'])}")
        return finding(summary, event.tx_from, True, event.tx_from is not None and event.tx_from not in admins)
    if event.name == "OwnershipTransferred":
        new = a["newOwner"]
        ok = new in admins
        return finding(f"ownership transferred from {a['previousOwner']} to {new}"
                       + ("" if ok else " (not on the admin allow-list)"), a["previousOwner"], not ok)
    if event.name == "Withdrawn":
        amount = Decimal(a["amount"]) / WEI
        above = amount > Decimal(str(cfg.withdrawal_threshold))
        summary = f"withdrawal of {amount.normalize():f} {symbol} to {a['to']} by {a['by']}"
        if above:
            summary += f" (above the {cfg.withdrawal_threshold:g} {symbol} threshold)"
        return finding(summary, a["by"], above, unauthorized=False)
    if event.name == "FeeChanged":
        who = event.tx_from
        bad = who is not None and who not in admins
        summary = (f"fee changed from {Decimal(a['oldFee']) / WEI:f} to {Decimal(a['newFee']) / WEI:f} {symbol}"
                   + (" (sender not on the admin allow-list)" if bad else ""))
        return finding(summary, who, bad, bad)
    return finding(f"{event.name} {a}", event.tx_from, False)


@dataclass
class ChainActivity:
    chain: str
    endpoint: str | None = None
    from_block: int | None = None
    to_block: int | None = None
    events: list[Event] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)  # "endpoint: why it was not used"
    error: str | None = None  # set when the chain was not read at all (e.g. no FeeCollector configured)

    @property
    def read(self) -> bool:
        return self.endpoint is not None

    def reason(self) -> str:
        return self.error or "; ".join(self.tried) or "no usable RPC endpoint"


def judge_chain(activity: ChainActivity, cfg: SecurityScan, symbol: str) -> tuple[CheckResult, list[Finding]]:
    name = f"security:onchain:{activity.chain}"
    expected = "no unexpected pause, role change, ownership change or large withdrawal"
    if not activity.read:
        why = activity.reason()
        return CheckResult(name, ITEM, Status.unknown, f"unknown: FeeCollector logs not read ({why})", expected,
                           detail=why, severity=cfg.raised_severity.value, target=f"{activity.chain} FeeCollector",
                           group=activity.chain), []
    findings = [assess(e, cfg, activity.chain, symbol) for e in activity.events]
    bad = [f for f in findings if f.suspicious]
    span = f"blocks {activity.from_block}-{activity.to_block} via {activity.endpoint}"
    if bad:
        observed = f"{len(bad)} suspicious: " + "; ".join(f.evidence() for f in bad)
        detail = "; ".join(f.evidence() for f in findings)
        return CheckResult(name, ITEM, Status.fail, observed, expected, detail=f"{span}: {detail}",
                           severity=cfg.raised_severity.value, target=f"{activity.chain} FeeCollector",
                           group=activity.chain), findings
    if findings:
        observed = f"nothing suspicious in {span}; {len(findings)} expected: " + "; ".join(
            f.evidence() for f in findings)
    else:
        observed = f"no admin activity in {span}"
    return CheckResult(name, ITEM, Status.ok, observed, expected, detail="; ".join(f.evidence() for f in findings),
                       severity=cfg.raised_severity.value, target=f"{activity.chain} FeeCollector",
                       group=activity.chain), findings


def judge_unauthorized(
    findings: Sequence[Finding], unread: Sequence[ChainActivity], cfg: SecurityScan
) -> CheckResult:
    name = "security:unauthorized-access"
    expected = "admin actions only by principals on the allow-list"
    bad = [f for f in findings if f.unauthorized]
    if bad:
        principals = sorted({f.principal or "unknown" for f in bad})
        observed = f"{len(bad)} admin action(s) by {', '.join(principals)}: " + "; ".join(
            f"{f.chain}: {f.evidence()}" for f in bad)
        return CheckResult(name, ITEM, Status.fail, observed, expected, detail=observed,
                           severity=cfg.raised_severity.value, target=", ".join(principals), group=GROUP)
    if unread:
        why = "; ".join(f"{a.chain}: {a.reason()}" for a in unread)
        return CheckResult(name, ITEM, Status.unknown, f"unknown: not every chain was read ({why})", expected,
                           detail=why, severity=cfg.raised_severity.value, group=GROUP)
    admin = [f for f in findings if f.principal is not None]
    return CheckResult(name, ITEM, Status.ok, f"{len(admin)} admin action(s), all by allowed principals", expected,
                       severity=cfg.raised_severity.value, group=GROUP)


@dataclass(frozen=True)
class FailedLogins:
    count: int
    top_sources: tuple[tuple[str, int], ...]


def parse_failed_logins(value: Any) -> FailedLogins:
    if not isinstance(value, dict) or not isinstance(value.get("count"), int) or isinstance(value["count"], bool):
        raise ValueError("expected {'count': int, 'top_sources': [...]}")
    sources = value.get("top_sources", [])
    if not isinstance(sources, list):
        raise ValueError("top_sources is not a list")
    top = []
    for s in sources:
        if not isinstance(s, dict) or not isinstance(s.get("source"), str) or not isinstance(s.get("count"), int):
            raise ValueError("a top_sources item is not {'source': str, 'count': int}")
        top.append((s["source"], s["count"]))
    return FailedLogins(value["count"], tuple(top))


def judge_failed_logins(got: FailedLogins | str, cfg: SecurityScan) -> CheckResult:
    name = "security:failed-logins"
    expected = f"<= {cfg.failed_login_threshold} failed logins in {cfg.window_hours} h"
    if isinstance(got, str):
        return CheckResult(name, ITEM, Status.unknown, f"unknown: failed logins not read ({got})", expected,
                           detail=got, severity=cfg.severity.value, target=cfg.failed_login_function, group=GROUP)
    top = ", ".join(f"{s} ({n})" for s, n in got.top_sources[:5]) or "none"
    observed = f"{got.count} failed logins in {cfg.window_hours} h; top sources: {top}"
    status = Status.fail if got.count > cfg.failed_login_threshold else Status.ok
    return CheckResult(name, ITEM, status, observed, expected, detail="" if status is Status.ok else observed,
                       severity=cfg.severity.value, target=cfg.failed_login_function, group=GROUP)


# ---- reading ------------------------------------------------------------------------------------

async def _read_endpoint(
    client: httpx.AsyncClient, url: str, chain: Chain, cfg: SecurityScan, since: datetime, since_block: int | None,
) -> tuple[int, int, list[Event]]:
    t = cfg.timeout_s
    assert chain.chain_id is not None
    window = await evm_logs.open_window(client, url, chain_id=chain.chain_id, max_head_age_s=chain.max_head_age_s,
                                        since=since.timestamp(), timeout_s=t, deadline_s=cfg.deadline_s)
    start, head = window.from_block, window.to_block
    if since_block is not None:
        start = max(start, since_block)
    assert chain.fee_collector is not None
    logs = await evm_logs.get_logs(
        client, url, address=chain.fee_collector, topics=[watched_topics()], from_block=start, to_block=head,
        max_range=cfg.max_block_range, deadline_s=cfg.deadline_s)
    try:
        decoded = [e for e in (decode_log(log) for log in logs) if e is not None]
    except ValueError as exc:
        raise RpcTransportError(f"undecodable FeeCollector log: {exc}") from None
    # When each event happened, and who sent the transactions whose events do not name a principal.
    blocks = sorted({e.block for e in decoded})
    need_from = sorted({e.tx_hash for e in decoded if e.name in ("FeeChanged", "RoleAdminChanged")})
    times: dict[int, datetime] = {}
    senders: dict[str, str] = {}
    calls = [("eth_getBlockByNumber", [hex(b), False]) for b in blocks]
    calls += [("eth_getTransactionByHash", [h]) for h in need_from]
    answers: list[Any] = []
    for i in range(0, len(calls), 100):
        answers += await evm_logs.call_batch(client, url, calls[i:i + 100], t)
    for b, block in zip(blocks, answers[: len(blocks)], strict=True):
        if isinstance(block, dict) and "timestamp" in block:
            times[b] = datetime.fromtimestamp(int(block["timestamp"], 16), UTC)
    for h, tx in zip(need_from, answers[len(blocks):], strict=True):
        if isinstance(tx, dict) and tx.get("from"):
            senders[h] = to_checksum_address(tx["from"])
    events = [Event(e.name, e.args, e.block, e.tx_hash, e.log_index, e.address, times.get(e.block),
                    senders.get(e.tx_hash)) for e in decoded]
    return start, head, events


async def read_chain_activity(
    chain_name: str, chain: Chain, cfg: SecurityScan, client: httpx.AsyncClient, now: datetime,
    since_block: int | None = None,
) -> ChainActivity:
    """Try the chain's endpoints in order; the first usable one answers for the whole window."""
    activity = ChainActivity(chain_name)
    if chain.fee_collector is None:
        activity.error = "no fee_collector configured"
        return activity
    since = now - timedelta(hours=cfg.window_hours)
    got = await evm_logs.first_usable(
        list(zip(chain.endpoint_names(chain_name), chain.rpc_urls, strict=True)),
        lambda url: _read_endpoint(client, url, chain, cfg, since, since_block), cfg.deadline_s * 2)
    if isinstance(got, list):
        activity.tried = got
    else:
        activity.endpoint, (activity.from_block, activity.to_block, activity.events) = got
    return activity


async def read_failed_logins(
    cfg: SecurityScan, convex_url: str, client: httpx.AsyncClient, now: datetime,
    deploy_key: SecretStr | None = None,
) -> FailedLogins | str:
    """The Convex query's answer for the window, or why it could not be read."""
    since_ms = int((now - timedelta(hours=cfg.window_hours)).timestamp() * 1000)
    try:
        value = await convex_query.query(client, convex_url, cfg.failed_login_function, {"sinceMs": since_ms},
                                         cfg.timeout_s, deploy_key)
    except convex_query.QueryFailed as exc:
        return str(exc).removeprefix(f"{cfg.failed_login_function}: ")
    try:
        return parse_failed_logins(value)
    except ValueError as exc:
        return f"{cfg.failed_login_function} answered an unexpected shape: {exc}"


async def scan(
    cfg: SecurityScan,
    settings_chains: Mapping[str, Chain],
    convex_url: str,
    client: httpx.AsyncClient,
    now: datetime,
    *,
    deploy_key: SecretStr | None = None,
    since_block: Mapping[str, int] | None = None,
) -> list[CheckResult]:
    """The Security Scan: one result per EVM chain, one for failed logins, one for unauthorized access.

    `since_block` (optional, per chain) starts that chain's scan no earlier than that block: for a
    run that resumes where the previous one stopped, so the same findings are not reported twice.
    """
    evm = {n: c for n, c in settings_chains.items() if c.kind is ChainKind.evm}
    reads = asyncio.gather(*(read_chain_activity(n, c, cfg, client, now, (since_block or {}).get(n))
                             for n, c in evm.items()))
    activities, logins = await asyncio.gather(reads, read_failed_logins(cfg, convex_url, client, now, deploy_key))
    results: list[CheckResult] = []
    findings: list[Finding] = []
    for activity in activities:
        result, found = judge_chain(activity, cfg, evm[activity.chain].symbol)
        results.append(result)
        findings += found
    results.append(judge_failed_logins(logins, cfg))
    results.append(judge_unauthorized(findings, [a for a in activities if not a.read], cfg))
    return results
