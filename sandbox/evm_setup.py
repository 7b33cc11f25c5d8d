"""Prepare a local anvil chain for the sandbox.

Puts Multicall3 at its canonical address, deploys a FeeCollector and a TokenFactory, and funds
wallets, using the artifacts committed under ``contracts/build/`` (rebuilt with ``node
contracts/build.mjs``), so no Solidity compiler is needed at run time. Plain synchronous web3; no Prefect here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

import rlp
from eth_account import Account
from web3 import Web3
from web3.contract import Contract

BUILD_DIR = Path(__file__).resolve().parents[1] / "contracts" / "build"

MULTICALL3_ADDRESS = Web3.to_checksum_address("0xcA11bde05977b3631167028862bE2a173976CA11")

DEFAULT_ADMIN_ROLE = b"\x00" * 32
PAUSER_ROLE = bytes(Web3.keccak(text="PAUSER_ROLE"))
TREASURY_ROLE = bytes(Web3.keccak(text="TREASURY_ROLE"))


class DevAccount(NamedTuple):
    address: str
    private_key: str


# anvil's default dev accounts (mnemonic "test test ... junk", m/44'/60'/0'/0/i). Public knowledge,
# funded only on local dev chains: never send anything of value to them on a real network.
ANVIL_DEV_ACCOUNTS: tuple[DevAccount, ...] = (
    DevAccount(
        "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
        "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    ),
    DevAccount(
        "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
        "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    ),
    DevAccount(
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    ),
    DevAccount(
        "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
        "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    ),
    DevAccount(
        "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
        "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    ),
    DevAccount(
        "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",
        "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    ),
)


class EvmSetupError(RuntimeError):
    """The chain did not end up in the state a setup step promised."""


def web3_for(rpc_url: str) -> Web3:
    """A synchronous Web3 client for ``rpc_url`` with a 10 s per-request timeout."""
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 10}))


def load_artifact(name: str) -> dict[str, Any]:
    """The compiled artifact ``contracts/build/<name>.json`` (contractName, compiler, abi, bytecode, ...)."""
    path = BUILD_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; rebuild with `node contracts/build.mjs`")
    return json.loads(path.read_text(encoding="utf-8"))


def wait_for_rpc(rpc_url: str, timeout_s: float = 30) -> int:
    """Poll ``eth_chainId`` until the node answers; return the chain id."""
    w3 = web3_for(rpc_url)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return w3.eth.chain_id
        except Exception as exc:  # connection refused / reset while the node starts
            if time.monotonic() >= deadline:
                raise EvmSetupError(f"no JSON-RPC answer from {rpc_url} within {timeout_s}s: {exc}") from exc
            time.sleep(0.1)


def _anvil(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if response.get("error"):
        raise EvmSetupError(f"{method} failed: {response['error']}")
    return response.get("result")


def multicall3(w3: Web3) -> Contract:
    """A contract handle for Multicall3 at its canonical address."""
    return w3.eth.contract(address=MULTICALL3_ADDRESS, abi=load_artifact("Multicall3")["abi"])


def install_multicall3(rpc_url: str) -> None:
    """Place Multicall3's runtime code at the canonical address (anvil_setCode) and check it answers.

    setCode instead of replaying the canonical keyless deployment (a presigned pre-EIP-155 transaction
    this repo does not ship); the tools that use Multicall3 only care about the address and the ABI.
    """
    w3 = web3_for(rpc_url)
    code = load_artifact("Multicall3")["deployedBytecode"]
    _anvil(w3, "anvil_setCode", [MULTICALL3_ADDRESS, code])
    if w3.eth.get_code(MULTICALL3_ADDRESS).hex() != code.removeprefix("0x"):
        raise EvmSetupError(f"code at {MULTICALL3_ADDRESS} differs from the Multicall3 artifact")
    chain_id = w3.eth.chain_id
    via_multicall = multicall3(w3).functions.getChainId().call()
    if via_multicall != chain_id:
        raise EvmSetupError(f"Multicall3.getChainId() returned {via_multicall}, node says {chain_id}")


def _deploy(rpc_url: str, name: str, deployer_key: str, args: list[Any], timeout_s: float) -> tuple[Web3, Contract]:
    """Deploy artifact ``name`` with constructor ``args``; return the client and a handle at its address."""
    w3 = web3_for(rpc_url)
    artifact = load_artifact(name)
    deployer = Account.from_key(deployer_key)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*args).build_transaction(
        {
            "from": deployer.address,
            "nonce": w3.eth.get_transaction_count(deployer.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        raise EvmSetupError(f"{name} deployment {tx_hash.to_0x_hex()} failed: status {receipt['status']}")
    address = Web3.to_checksum_address(receipt["contractAddress"])
    if not w3.eth.get_code(address):
        raise EvmSetupError(f"no code at {name} address {address}")
    return w3, w3.eth.contract(address=address, abi=artifact["abi"])


def create_address(sender: str, nonce: int) -> str:
    """The address a contract deployed by ``sender``'s transaction number ``nonce`` gets (CREATE).

    Lets the sandbox tell its hub where a contract will be before the deployment is mined.
    """
    if nonce < 0:
        raise ValueError(f"nonce must be >= 0, got {nonce}")
    return Web3.to_checksum_address(
        Web3.keccak(rlp.encode([bytes.fromhex(Web3.to_checksum_address(sender)[2:]), nonce]))[12:]
    )


def deploy_fee_collector(
    rpc_url: str,
    deployer_key: str,
    admin: str,
    pauser: str,
    treasury: str,
    timeout_s: float = 30,
) -> str:
    """Deploy FeeCollector(admin, pauser, treasury) from ``deployer_key``; return its checksummed address.

    Waits for the receipt, then checks that code is there and that each role landed on its holder,
    so a sandbox never starts against a half-configured collector.
    """
    holders = {
        "DEFAULT_ADMIN_ROLE": (DEFAULT_ADMIN_ROLE, Web3.to_checksum_address(admin)),
        "PAUSER_ROLE": (PAUSER_ROLE, Web3.to_checksum_address(pauser)),
        "TREASURY_ROLE": (TREASURY_ROLE, Web3.to_checksum_address(treasury)),
    }
    _, collector = _deploy(rpc_url, "FeeCollector", deployer_key, [h for _, h in holders.values()], timeout_s)
    for role_name, (role, holder) in holders.items():
        if not collector.functions.hasRole(role, holder).call():
            raise EvmSetupError(f"FeeCollector {collector.address}: {holder} lacks {role_name} after deployment")
    return str(collector.address)


def deploy_token_factory(
    rpc_url: str,
    deployer_key: str,
    fee_collector: str,
    fee_wei: int,
    timeout_s: float = 30,
) -> str:
    """Deploy TokenFactory(fee_collector, fee_wei) from ``deployer_key``; return its checksummed address.

    Checks that the factory pays the intended collector and quotes the intended fee, so launches in
    the sandbox never send their fees somewhere the Security Scan and the metrics do not look.
    """
    if fee_wei < 0:
        raise ValueError(f"fee_wei must be >= 0, got {fee_wei}")
    collector = Web3.to_checksum_address(fee_collector)
    w3, factory = _deploy(rpc_url, "TokenFactory", deployer_key, [collector, fee_wei], timeout_s)
    if not w3.eth.get_code(collector):
        raise EvmSetupError(f"TokenFactory {factory.address}: no contract at fee collector {collector}")
    got_collector, got_fee = factory.functions.feeCollector().call(), factory.functions.fee().call()
    if (got_collector, got_fee) != (collector, fee_wei):
        raise EvmSetupError(
            f"TokenFactory {factory.address}: pays {got_collector} a fee of {got_fee} wei, "
            f"expected {collector} and {fee_wei}"
        )
    return str(factory.address)


def fund(rpc_url: str, address: str, wei: int) -> None:
    """Set ``address``'s balance to exactly ``wei`` (anvil_setBalance; replaces, does not add)."""
    if wei < 0:
        raise ValueError(f"balance must be >= 0, got {wei}")
    w3 = web3_for(rpc_url)
    checksummed = Web3.to_checksum_address(address)
    _anvil(w3, "anvil_setBalance", [checksummed, hex(wei)])
    balance = w3.eth.get_balance(checksummed)
    if balance != wei:
        raise EvmSetupError(f"balance of {checksummed} is {balance} after anvil_setBalance({wei})")
