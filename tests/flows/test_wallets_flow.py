"""The Wallet Balance Check flow on a real Prefect server: history read back for burn and runway."""

from __future__ import annotations

import pytest

from flows.wallets import wallet_balances_flow

pytestmark = [pytest.mark.sandbox]


def row(report, chain):
    return next(r for r in report["wallets"] if r["chain"] == chain)


async def test_a_second_run_sees_the_first_and_reports_burn_and_the_drained_wallet(prefect_api, sandbox):
    first = await wallet_balances_flow(env_file=str(sandbox.env_file))
    assert first["passed"] is True
    assert "| eth-deployer" in first["markdown"]
    sandbox.fault("eth-deployer", "low")
    second = await wallet_balances_flow(env_file=str(sandbox.env_file))
    eth = row(second, "ethereum")
    assert second["passed"] is False
    assert eth["balance"] == 0.1 and eth["shortfall"] == 0.4
    assert eth["burn_per_day"] > 0  # 1.9 ETH gone since the first run, moments ago
    # BSC's history is read back too; earlier runs in the session may have drained it, so it is
    # level or refilled since: not burning, and no runway to the floor.
    bsc = row(second, "bsc")
    assert bsc["burn_per_day"] is not None and bsc["burn_per_day"] <= 0
    assert bsc["runway_days"] is None
    slack = sandbox.received("slack")
    assert len(slack) == 1 and "ethereum:eth-deployer" in slack[0]["text"]
