"""The building blocks of configuration models: strict models, URLs, names, severities, secret refs.

Kept apart from `runbook.settings` so that each section's model can live beside the procedure it
configures while `Settings` gathers them all, without an import cycle.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class Severity(StrEnum):
    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"

    @property
    def rank(self) -> int:
        """Lower is more severe, as in the runbook's table."""
        return int(self.value[1])

    @property
    def pages(self) -> bool:
        return self.rank <= 1


class SecretRef(Strict):
    """Where a secret lives: exactly one of an environment variable, a file, or a Prefect Secret block.

    A `file` path is relative to the environment file's folder unless absolute.
    """

    env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = None
    prefect_secret: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]*$")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [k for k in ("env", "file", "prefect_secret") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a secret reference needs exactly one of env, file, prefect_secret")
        return self

    def describe(self) -> str:
        if self.env is not None:
            return f"env:{self.env}"
        if self.file is not None:
            return f"file:{self.file}"
        return f"prefect-secret:{self.prefect_secret}"




class ChainKind(StrEnum):
    evm = "evm"
    solana = "solana"


EVM_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]{32,44}$")


class Chain(Strict):
    kind: ChainKind
    symbol: str = Field(pattern=r"^[A-Z]{2,6}$")
    chain_id: Annotated[int, Field(gt=0)] | None = None
    genesis_hash: str | None = None
    rpc_urls: Annotated[list[HttpUrl], Field(min_length=1)]
    rpc_names: list[Name] | None = Field(
        default=None, description="short names for the RPC URLs, same order (e.g. eth-rpc-1)"
    )
    max_head_age_s: Annotated[float, Field(gt=0)] = 60
    max_latency_ms: Annotated[float, Field(gt=0)] = 2000
    severity: Severity = Severity.P1
    fee_collector: str | None = Field(default=None, description="the FeeCollector contract's address")
    token_factory: str | None = Field(
        default=None, description="the TokenFactory contract's address (its TokenCreated events count launches)")

    @model_validator(mode="after")
    def _identity(self) -> Chain:
        if self.kind is ChainKind.evm and self.chain_id is None:
            raise ValueError("an evm chain needs chain_id")
        if self.kind is ChainKind.solana:
            if self.genesis_hash is None:
                raise ValueError("a solana chain needs genesis_hash")
            if not BASE58.match(self.genesis_hash):
                raise ValueError("genesis_hash: not a base58 hash")
        for field in ("fee_collector", "token_factory"):
            address = getattr(self, field)
            if address is not None and (self.kind is not ChainKind.evm or not EVM_ADDRESS.match(address)):
                raise ValueError(f"{field}: not an EVM address (0x + 40 hex digits) on an evm chain")
        if self.rpc_names is not None and len(self.rpc_names) != len(self.rpc_urls):
            raise ValueError("rpc_names must name every rpc_url, in order")
        return self

    def endpoint_names(self, chain: str) -> list[str]:
        return list(self.rpc_names or [f"{chain}-rpc-{i + 1}" for i in range(len(self.rpc_urls))])
