"""The typed configuration of one environment, loaded from a TOML file.

Secrets are never values here: a `SecretRef` names where the value lives, and it is resolved at
the edge (`runbook.secrets`). Every model forbids unknown keys so that a typo is an error, not a
silently ignored setting.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from runbook.clients.healthchecks import Heartbeat
from runbook.clients.vercel import VercelConfig
from runbook.config_types import BASE58, EVM_ADDRESS, Chain, ChainKind, HttpUrl, Name, SecretRef, Severity, Strict
from runbook.procedures.api_usage import ApiUsage
from runbook.procedures.backup import Backup
from runbook.procedures.db_maintenance import DatabaseMaintenance
from runbook.procedures.dependencies import Dependencies
from runbook.procedures.emergency import Emergency
from runbook.procedures.error_logs import ErrorLogs
from runbook.procedures.fees import FeeReview
from runbook.procedures.gas import GasStrategy
from runbook.procedures.incidents import Incidents
from runbook.procedures.key_rotation import SecurityAudit
from runbook.procedures.metrics import MetricsReview
from runbook.procedures.noise import AlertPolicy
from runbook.procedures.performance import PerformanceReview
from runbook.procedures.rate_limit import Breakers
from runbook.procedures.recovery import Recovery
from runbook.procedures.security_scan import SecurityScan

__all__ = ["Chain", "ChainKind", "HttpUrl", "Name", "SecretRef", "Severity", "Strict"]


class Component(StrEnum):
    """The runbook's System Health items."""

    frontend = "frontend"
    backend = "backend"
    api = "api"


COMPONENT_TITLES = {
    Component.frontend: "Frontend responsive",
    Component.backend: "Convex backend healthy",
    "chains": "Blockchain connections active",
    Component.api: "API endpoints responding",
}


class Expectation(Strict):
    """What a healthy answer looks like. Every field is a condition checked on each probe."""

    status: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200])
    max_latency_ms: Annotated[float, Field(gt=0)] = 2000
    body_contains: str | None = None
    json_field: str | None = Field(
        default=None, description="dotted path into a JSON body that must equal json_value"
    )
    json_value: str | int | float | bool | None = None
    min_tls_days: Annotated[int, Field(ge=0)] = 14

    @model_validator(mode="after")
    def _json_pair(self) -> Expectation:
        if (self.json_field is None) != (self.json_value is None):
            raise ValueError("json_field and json_value go together")
        return self


class Endpoint(Strict):
    name: Name
    component: Component
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST"] = "GET"
    body: str | None = Field(default=None, description="request body for POST, sent as JSON")
    timeout_s: Annotated[float, Field(gt=0, le=120)] | None = None
    severity: Severity = Severity.P1
    auth_header: SecretRef | None = Field(
        default=None, description="value of the Authorization header, e.g. 'Bearer ...'"
    )
    expect: Expectation = Field(default_factory=Expectation)


class Wallet(Strict):
    chain: Name
    address: str
    label: str = "deployer"
    min_balance: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="floor in the chain's native unit; default from [wallet_floors]"
    )
    severity: Severity = Field(default=Severity.P1, description="a deployer below its floor blocks token launches")


class SlackTarget(Strict):
    webhook_url: SecretRef
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5


class PagerDutyTarget(Strict):
    events_url: HttpUrl = "https://events.pagerduty.com/v2/enqueue"
    routing_key: SecretRef
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5


class Notifications(Strict):
    slack: SlackTarget | None = None
    pagerduty: PagerDutyTarget | None = None
    page_at: Severity = Field(
        default=Severity.P1, description="severities at or above this also page PagerDuty"
    )
    source: str = Field(default="tokenforge-ops", description="who the alerts say they come from")


class Storage(Strict):
    """S3 (or an S3-compatible store) for backups."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    region: str = "us-east-1"
    endpoint_url: HttpUrl | None = None
    access_key_id: SecretRef | None = None
    secret_access_key: SecretRef | None = None


class Probes(Strict):
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 5
    max_connections: Annotated[int, Field(ge=1, le=10_000)] = 500


class Settings(Strict):
    environment: Name
    probes: Probes = Field(default_factory=Probes)
    endpoints: list[Endpoint] = Field(default_factory=list)
    chains: dict[Name, Chain] = Field(default_factory=dict)
    wallet_floors: dict[Name, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="default floor per chain, in its native unit"
    )
    wallets: list[Wallet] = Field(default_factory=list)
    wallet_runway_warn_days: Annotated[float, Field(ge=0)] = Field(
        default=7, description="warn when a wallet reaches its floor within this many days at its burn"
    )
    notifications: Notifications = Field(default_factory=Notifications)
    alerts: AlertPolicy = Field(default_factory=AlertPolicy)
    storage: Storage | None = None
    error_logs: ErrorLogs | None = None
    api_usage: ApiUsage | None = None
    security_scan: SecurityScan | None = None
    metrics: MetricsReview | None = None
    backup: Backup | None = None
    dependencies: Dependencies | None = None
    emergency: Emergency | None = None
    security_audit: SecurityAudit | None = None
    breakers: Breakers | None = None
    database: DatabaseMaintenance | None = None
    performance: PerformanceReview | None = None
    heartbeat: Heartbeat | None = None
    vercel: VercelConfig | None = None
    recovery: Recovery | None = None
    incidents: Incidents | None = None
    gas: GasStrategy | None = None
    fees: FeeReview | None = None
    base_dir: Path = Field(default=Path("."), exclude=True, description="set by load(); not in files")

    @field_validator("endpoints")
    @classmethod
    def _unique_endpoints(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        seen: set[str] = set()
        for e in endpoints:
            if e.name in seen:
                raise ValueError(f"endpoint name {e.name!r} is used twice")
            seen.add(e.name)
        return endpoints

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        for i, w in enumerate(self.wallets):
            if w.chain not in self.chains:
                raise ValueError(f"wallets[{i}].chain: unknown chain {w.chain!r}")
            kind = self.chains[w.chain].kind
            if kind is ChainKind.evm and not EVM_ADDRESS.match(w.address):
                raise ValueError(f"wallets[{i}].address: not an EVM address (0x + 40 hex digits)")
            if kind is ChainKind.solana and not BASE58.match(w.address):
                raise ValueError(f"wallets[{i}].address: not a base58 Solana address")
        for floor_chain in self.wallet_floors:
            if floor_chain not in self.chains:
                raise ValueError(f"wallet_floors.{floor_chain}: unknown chain")
        if self.emergency is not None:
            problems = self.emergency.problems_with(self.chains)
            if problems:
                raise ValueError("; ".join(problems))
        if self.backup is not None and self.storage is None:
            raise ValueError("backup: needs a [storage] section (the bucket to back up to)")
        contract_problems = [*(self.gas.problems_with(self.chains) if self.gas else []),
                             *(self.fees.problems_with(self.chains) if self.fees else [])]
        if contract_problems:
            raise ValueError("; ".join(contract_problems))
        names: set[str] = {e.name for e in self.endpoints}
        for chain_name, chain in self.chains.items():
            for n in chain.endpoint_names(chain_name):
                if n in names:
                    raise ValueError(f"chains.{chain_name}: endpoint name {n!r} is used twice")
                names.add(n)
        return self

    def probe_timeout(self, endpoint: Endpoint) -> float:
        return endpoint.timeout_s or self.probes.timeout_s

    def secret_refs(self) -> list[SecretRef]:
        refs = [e.auth_header for e in self.endpoints if e.auth_header]
        if self.notifications.slack:
            refs.append(self.notifications.slack.webhook_url)
        if self.notifications.pagerduty:
            refs.append(self.notifications.pagerduty.routing_key)
        if self.error_logs:
            refs.extend(self.error_logs.secret_refs())
        if self.api_usage:
            refs.extend(self.api_usage.secret_refs())
        if self.metrics and self.metrics.convex_deploy_key:
            refs.append(self.metrics.convex_deploy_key)
        if self.storage:
            refs.extend(r for r in (self.storage.access_key_id, self.storage.secret_access_key) if r)
        if self.backup:
            refs.extend(self.backup.secret_refs())
        if self.emergency:
            refs.extend(self.emergency.secret_refs())  # never the treasury key: only the withdrawal loads it
        if self.security_audit:
            refs.extend(self.security_audit.secret_refs())
        if self.breakers and self.breakers.statuspage:
            refs.append(self.breakers.statuspage.api_key)
        if self.database:
            refs.extend(self.database.secret_refs())
        if self.heartbeat:
            refs.append(self.heartbeat.ping_url)
        if self.vercel:
            refs.append(self.vercel.token)
        if self.recovery:
            refs.extend(self.recovery.secret_refs())
        if self.incidents:
            refs.extend(self.incidents.secret_refs())
        if self.fees and self.fees.coingecko:
            refs.append(self.fees.coingecko.api_key)  # never the fee-setter key: only the approved change loads it
        return refs


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` names each bad field by its path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before")) or part in (
            "str",
            "int",
            "float",
            "constrained-int",
            "constrained-float",
        ):
            continue  # pydantic's internal step names are noise to the reader
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if error.get("type") == "extra_forbidden":
        msg = "unknown key"
    return msg


def problems_of(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = tuple(e["loc"])
        # cross-field checks on the whole file already name their own path
        out.append(_message(e) if not loc else f"{_path(loc)}: {_message(e)}")
    return out


def parse(data: dict, source: str = "<settings>", base_dir: Path | None = None) -> Settings:
    if "base_dir" in data:
        raise ConfigError(source, ["base_dir: unknown key"])
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, problems_of(exc)) from None
    if base_dir is not None:
        settings = settings.model_copy(update={"base_dir": base_dir})
    return settings


def load(path: str | Path) -> Settings:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(p), [f"not valid TOML: {exc}"]) from None
    return parse(data, str(p), p.resolve().parent)


def floor_of(settings: Settings, wallet: Wallet) -> float | None:
    if wallet.min_balance is not None:
        return wallet.min_balance
    return settings.wallet_floors.get(wallet.chain)
