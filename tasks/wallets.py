"""Wallet Balance Check task: every chain read concurrently inside one task."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from runbook.checks import CheckResult
from runbook.clients.http_probe import make_client
from runbook.procedures import wallets
from runbook.settings import Settings


@task(name="read-wallet-balances", cache_policy=NO_CACHE, tags=["wallets"])
async def read_wallet_balances(
    settings: Settings, now: datetime, history: dict[str, list[tuple[datetime, Decimal]]]
) -> tuple[list[CheckResult], list[dict[str, Any]], list[dict[str, Any]], str]:
    async with make_client(settings.probes.max_connections) as client:
        results, rows, reads = await wallets.check_wallets(settings, client, now, history)
    return results, rows, [r.to_dict() for r in reads], wallets.render_markdown(results, rows, reads)
