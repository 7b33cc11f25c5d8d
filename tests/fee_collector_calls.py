"""Test helpers that talk to a sandbox chain's anvil node directly, past the fault-injecting
endpoints: read a FeeCollector, and send it admin calls mined at once."""

from __future__ import annotations

from typing import Any

import httpx
from eth_account import Account
from web3 import Web3

from sandbox import evm_setup

# One client for every caller: a new httpx client per call costs tens of milliseconds.
HTTP = httpx.Client(timeout=10, trust_env=False)
FEE_COLLECTOR = Web3().eth.contract(abi=evm_setup.load_artifact("FeeCollector")["abi"])


def rpc(sb, chain: str, method: str, *params: Any) -> Any:  # noqa: ANN001
    answer = HTTP.post(sb.state["chains"][chain]["upstream"],
                       json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).json()
    assert "error" not in answer, f"{method}: {answer['error']}"
    return answer["result"]


def nonce(sb, chain: str, address: str, tag: str = "latest") -> int:  # noqa: ANN001
    return int(rpc(sb, chain, "eth_getTransactionCount", address, tag), 16)


def balance(sb, chain: str, address: str) -> int:  # noqa: ANN001
    return int(rpc(sb, chain, "eth_getBalance", address, "latest"), 16)


def is_paused(sb, chain: str) -> bool:  # noqa: ANN001
    call = {"to": sb.state["chains"][chain]["fee_collector"], "data": FEE_COLLECTOR.encode_abi("paused", [])}
    return int(rpc(sb, chain, "eth_call", call, "latest"), 16) == 1


def send(sb, chain: str, account: evm_setup.DevAccount, fn: str, *args: Any, value: int = 0) -> None:  # noqa: ANN001
    """A FeeCollector call from `account`, mined at once (evm_mine) instead of at the next 1 s block."""
    base = int(rpc(sb, chain, "eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
    tx = {"type": 2, "chainId": sb.state["chains"][chain]["chain_id"], "to": sb.state["chains"][chain]["fee_collector"],
          "nonce": nonce(sb, chain, account.address, "pending"), "value": value,
          "data": FEE_COLLECTOR.encode_abi(fn, list(args)), "gas": 300_000,
          "maxFeePerGas": 2 * base + 10**9, "maxPriorityFeePerGas": 10**9}
    signed = Account.sign_transaction(tx, account.private_key)
    tx_hash = rpc(sb, chain, "eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
    rpc(sb, chain, "evm_mine")
    assert rpc(sb, chain, "eth_getTransactionReceipt", tx_hash)["status"] == "0x1", fn
