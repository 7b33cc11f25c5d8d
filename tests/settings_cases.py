"""Settings sections checked against a configuration with one EVM and one Solana chain, so tests
can show that a bad field is named in the error."""

from __future__ import annotations

from typing import Any

import pytest

from runbook import settings as config

CHAINS = {
    "ethereum": {"kind": "evm", "symbol": "ETH", "chain_id": 1, "rpc_urls": ["https://eth.example"]},
    "solana": {"kind": "solana", "symbol": "SOL", "genesis_hash": "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d",
               "rpc_urls": ["https://sol.example"]},
}


def assert_section_problem(name: str, section: dict[str, Any], problem: str) -> None:
    """Loading `section` as settings section `name` fails with a problem starting with `problem`."""
    with pytest.raises(config.ConfigError) as err:
        config.parse({"environment": "t", name: section, "chains": CHAINS})
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
