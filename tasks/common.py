"""What every task needs: settings from a file, secrets resolved at the edge, one shared client."""

from __future__ import annotations

from prefect.blocks.system import Secret

from runbook.secrets import SecretResolver
from runbook.settings import Settings


def read_prefect_secret(name: str) -> str:
    block = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    return str(block.get())


def resolver_for(settings: Settings) -> SecretResolver:
    return SecretResolver(settings.base_dir, block_reader=read_prefect_secret)
