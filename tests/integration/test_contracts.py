"""FeeCollector, TokenFactory and Multicall3 on a real anvil node, set up through sandbox/evm_setup.py."""

from __future__ import annotations

import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_account import Account
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from sandbox import evm_setup
from sandbox.evm_setup import (
    ANVIL_DEV_ACCOUNTS,
    DEFAULT_ADMIN_ROLE,
    MULTICALL3_ADDRESS,
    PAUSER_ROLE,
    TREASURY_ROLE,
)

pytestmark = pytest.mark.sandbox

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL = REPO_ROOT / "node_modules" / ".bin" / "anvil"
CHAIN_ID = 56
ETHER = 10**18

DEPLOYER, ADMIN, PAUSER, TREASURY, PAYER, RECIPIENT = ANVIL_DEV_ACCOUNTS


def _selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def _unauthorized(account: str, role: bytes) -> bytes:
    """Revert data of OpenZeppelin's AccessControlUnauthorizedAccount(account, role)."""
    return _selector("AccessControlUnauthorizedAccount(address,bytes32)") + encode(
        ["address", "bytes32"], [account, role]
    )


ENFORCED_PAUSE = _selector("EnforcedPause()")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def rpc_url() -> Iterator[str]:
    if not ANVIL.exists():
        pytest.fail(f"{ANVIL} is missing: run `npm ci` in the repo root")
    port = _free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [str(ANVIL), "--port", str(port), "--chain-id", str(CHAIN_ID), "--host", "127.0.0.1", "--silent"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            assert evm_setup.wait_for_rpc(url, timeout_s=30) == CHAIN_ID
        except evm_setup.EvmSetupError:
            log.seek(0)
            pytest.fail(
                f"anvil (exit code {proc.poll()}) never answered: {log.read().decode(errors='replace')}"
            )
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def w3(rpc_url: str) -> Web3:
    evm_setup.install_multicall3(rpc_url)
    return evm_setup.web3_for(rpc_url)


@dataclass
class Chain:
    url: str
    w3: Web3
    collector: Contract
    multicall: Contract


@pytest.fixture
def chain(rpc_url: str, w3: Web3) -> Chain:
    """A fresh FeeCollector per test, so pausing in one test can't leak into the next."""
    address = evm_setup.deploy_fee_collector(
        rpc_url, DEPLOYER.private_key, ADMIN.address, PAUSER.address, TREASURY.address
    )
    abi = evm_setup.load_artifact("FeeCollector")["abi"]
    return Chain(rpc_url, w3, w3.eth.contract(address=address, abi=abi), evm_setup.multicall3(w3))


def _send(w3: Web3, key: str, tx: dict[str, Any]) -> Any:
    """Sign ``tx`` with ``key``, send it and return the mined receipt (whatever its status)."""
    sender = Account.from_key(key)
    tx = {"from": sender.address, "chainId": CHAIN_ID, **tx}
    if "nonce" not in tx:
        tx["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
    if "gas" not in tx:
        tx["gas"] = w3.eth.estimate_gas(tx)
    if "maxFeePerGas" not in tx and "gasPrice" not in tx:
        tx["maxPriorityFeePerGas"] = 10**9
        tx["maxFeePerGas"] = 2 * w3.eth.get_block("latest")["baseFeePerGas"] + 10**9
    tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)


def _transact(w3: Web3, key: str, fn: Any, value: int = 0, gas: int | None = None) -> Any:
    sender = Account.from_key(key)
    params: dict[str, Any] = {"from": sender.address, "value": value}
    if gas is not None:
        params["gas"] = gas  # skips estimation, so a reverting call is mined (status 0) instead of refused
    return _send(w3, key, dict(fn.build_transaction(params)))


def _revert_data(fn: Any, sender: str, value: int = 0) -> bytes:
    with pytest.raises(ContractLogicError) as excinfo:
        fn.call({"from": sender, "value": value})
    data = excinfo.value.data
    assert isinstance(data, str), f"no revert data in {excinfo.value!r}"
    return bytes.fromhex(data.removeprefix("0x"))


def test_dev_accounts_are_anvils_own(w3: Web3) -> None:
    assert [a.address for a in ANVIL_DEV_ACCOUNTS] == w3.eth.accounts[:6]
    for account in ANVIL_DEV_ACCOUNTS:
        assert Account.from_key(account.private_key).address == account.address


def test_multicall3_installed_at_canonical_address(w3: Web3) -> None:
    artifact = evm_setup.load_artifact("Multicall3")
    assert "0x" + w3.eth.get_code(MULTICALL3_ADDRESS).hex() == artifact["deployedBytecode"]
    multicall = evm_setup.multicall3(w3)
    assert multicall.functions.getChainId().call() == CHAIN_ID
    assert multicall.functions.getBlockNumber().call() == w3.eth.block_number


def test_deployment_grants_each_role_to_its_holder_only(chain: Chain) -> None:
    has_role = chain.collector.functions.hasRole
    holders = {DEFAULT_ADMIN_ROLE: ADMIN, PAUSER_ROLE: PAUSER, TREASURY_ROLE: TREASURY}
    for role, holder in holders.items():
        for account in (DEPLOYER, ADMIN, PAUSER, TREASURY):
            assert has_role(role, account.address).call() is (account == holder)
    assert chain.collector.functions.PAUSER_ROLE().call() == PAUSER_ROLE
    assert chain.collector.functions.TREASURY_ROLE().call() == TREASURY_ROLE
    assert chain.collector.functions.platformFee().call() == 10**16
    assert chain.collector.functions.paused().call() is False


def test_pauser_pauses_and_intake_stops(chain: Chain) -> None:
    receipt = _transact(chain.w3, PAUSER.private_key, chain.collector.functions.pause())
    assert receipt["status"] == 1
    assert chain.collector.functions.paused().call() is True
    (event,) = chain.collector.events.Paused().process_receipt(receipt)
    assert event["args"]["account"] == PAUSER.address
    assert _revert_data(chain.collector.functions.collectFee(), PAYER.address, ETHER) == ENFORCED_PAUSE
    plain = _send(
        chain.w3, PAYER.private_key, {"to": chain.collector.address, "value": ETHER, "gas": 100_000}
    )
    assert plain["status"] == 0
    assert chain.w3.eth.get_balance(chain.collector.address) == 0


def test_treasury_cannot_pause(chain: Chain) -> None:
    pause = chain.collector.functions.pause()
    assert _revert_data(pause, TREASURY.address) == _unauthorized(TREASURY.address, PAUSER_ROLE)
    receipt = _transact(chain.w3, TREASURY.private_key, pause, gas=100_000)
    assert receipt["status"] == 0
    assert chain.collector.functions.paused().call() is False


def test_pauser_cannot_withdraw_or_unpause(chain: Chain) -> None:
    assert (
        _transact(chain.w3, PAYER.private_key, chain.collector.functions.collectFee(), ETHER)["status"] == 1
    )
    withdraw = chain.collector.functions.withdraw(PAUSER.address, ETHER)
    assert _revert_data(withdraw, PAUSER.address) == _unauthorized(PAUSER.address, TREASURY_ROLE)
    assert _transact(chain.w3, PAUSER.private_key, withdraw, gas=100_000)["status"] == 0
    assert chain.w3.eth.get_balance(chain.collector.address) == ETHER

    assert _transact(chain.w3, PAUSER.private_key, chain.collector.functions.pause())["status"] == 1
    unpause = chain.collector.functions.unpause()
    assert _revert_data(unpause, PAUSER.address) == _unauthorized(PAUSER.address, DEFAULT_ADMIN_ROLE)
    assert _transact(chain.w3, ADMIN.private_key, unpause)["status"] == 1
    assert chain.collector.functions.paused().call() is False


def test_treasury_withdraws_exact_amount_while_paused(chain: Chain) -> None:
    w3, collector = chain.w3, chain.collector
    paid = _transact(w3, PAYER.private_key, collector.functions.collectFee(), 3 * ETHER // 10)
    (fee_event,) = collector.events.FeeCollected().process_receipt(paid)
    assert dict(fee_event["args"]) == {"payer": PAYER.address, "amount": 3 * ETHER // 10}
    sent = _send(w3, PAYER.private_key, {"to": collector.address, "value": 2 * ETHER // 10})
    assert sent["status"] == 1
    (plain_event,) = collector.events.FeeCollected().process_receipt(sent)
    assert dict(plain_event["args"]) == {"payer": PAYER.address, "amount": 2 * ETHER // 10}
    assert w3.eth.get_balance(collector.address) == 5 * ETHER // 10

    assert _transact(w3, PAUSER.private_key, collector.functions.pause())["status"] == 1
    assert collector.functions.paused().call() is True

    too_much = collector.functions.withdraw(RECIPIENT.address, ETHER)
    assert _revert_data(too_much, TREASURY.address) == _selector(
        "InsufficientBalance(uint256,uint256)"
    ) + encode(["uint256", "uint256"], [ETHER, 5 * ETHER // 10])

    recipient_before = w3.eth.get_balance(RECIPIENT.address)
    amount = 35 * ETHER // 100
    receipt = _transact(w3, TREASURY.private_key, collector.functions.withdraw(RECIPIENT.address, amount))
    assert receipt["status"] == 1
    assert w3.eth.get_balance(RECIPIENT.address) - recipient_before == amount
    assert w3.eth.get_balance(collector.address) == 15 * ETHER // 100
    (event,) = collector.events.Withdrawn().process_receipt(receipt)
    assert dict(event["args"]) == {"to": RECIPIENT.address, "amount": amount, "by": TREASURY.address}
    assert collector.functions.paused().call() is True


def test_admin_sets_fee_and_others_cannot(chain: Chain) -> None:
    set_fee = chain.collector.functions.setFee(2 * 10**16)
    assert _revert_data(set_fee, TREASURY.address) == _unauthorized(TREASURY.address, DEFAULT_ADMIN_ROLE)
    receipt = _transact(chain.w3, ADMIN.private_key, set_fee)
    (event,) = chain.collector.events.FeeChanged().process_receipt(receipt)
    assert dict(event["args"]) == {"oldFee": 10**16, "newFee": 2 * 10**16}
    assert chain.collector.functions.platformFee().call() == 2 * 10**16


def test_aggregate3_reads_real_balances(rpc_url: str, w3: Web3) -> None:
    wanted = {
        Account.create().address: 1,
        Account.create().address: 123_456_789_012_345_678_901,
        Account.create().address: 7 * ETHER + 3,
    }
    for address, wei in wanted.items():
        evm_setup.fund(rpc_url, address, wei)
    multicall = evm_setup.multicall3(w3)
    calls = [
        (MULTICALL3_ADDRESS, False, multicall.encode_abi("getEthBalance", [address])) for address in wanted
    ]
    results = multicall.functions.aggregate3(calls).call()
    assert [success for success, _ in results] == [True, True, True]
    balances = [decode(["uint256"], data)[0] for _, data in results]
    assert balances == list(wanted.values())
    assert balances == [w3.eth.get_balance(address) for address in wanted]


def test_aggregate3_failing_call_is_reported_in_its_slot(chain: Chain) -> None:
    multicall, collector = chain.multicall, chain.collector
    # Multicall3 is msg.sender of the inner call and holds no role, so withdraw must revert.
    failing = collector.encode_abi("withdraw", [RECIPIENT.address, 1])
    calls = [
        (MULTICALL3_ADDRESS, False, multicall.encode_abi("getChainId", [])),
        (collector.address, True, failing),
        (collector.address, False, collector.encode_abi("platformFee", [])),
    ]
    results = multicall.functions.aggregate3(calls).call()
    assert [success for success, _ in results] == [True, False, True]
    assert decode(["uint256"], results[0][1]) == (CHAIN_ID,)
    assert results[1][1] == _unauthorized(MULTICALL3_ADDRESS, TREASURY_ROLE)
    assert decode(["uint256"], results[2][1]) == (10**16,)

    strict = [(collector.address, False, failing)]
    assert _revert_data(multicall.functions.aggregate3(strict), PAYER.address) == _selector(
        "Error(string)"
    ) + encode(["string"], ["Multicall3: call failed"])


TOKEN_FEE = 10**16
TOKEN_CREATED = "TokenCreated(address,address,string,string,uint256,uint256)"
# LaunchedToken has no artifact of its own (the factory deploys it); these are ERC-20's standard views.
ERC20_VIEWS = [
    {"name": name, "type": "function", "stateMutability": "view", "inputs": inputs,
     "outputs": [{"name": "", "type": out}]}
    for name, inputs, out in [
        ("name", [], "string"), ("symbol", [], "string"), ("totalSupply", [], "uint256"),
        ("balanceOf", [{"name": "account", "type": "address"}], "uint256"),
    ]
]


@pytest.fixture
def factory(chain: Chain) -> Contract:
    address = evm_setup.deploy_token_factory(chain.url, ADMIN.private_key, chain.collector.address, TOKEN_FEE)
    return chain.w3.eth.contract(address=address, abi=evm_setup.load_artifact("TokenFactory")["abi"])


def test_create_token_mints_to_the_creator_and_forwards_the_whole_payment(chain: Chain, factory: Contract) -> None:
    w3, collector = chain.w3, chain.collector
    assert factory.functions.fee().call() == TOKEN_FEE
    assert factory.functions.feeCollector().call() == collector.address
    supply = 1_000_000 * ETHER
    paid = TOKEN_FEE + 12_345  # more than the fee: the collector gets all of it, and the event says so
    before = w3.eth.get_balance(collector.address)
    receipt = _transact(w3, PAYER.private_key, factory.functions.createToken("Lunar Otter", "LOTR", supply), paid)
    assert receipt["status"] == 1

    (created,) = factory.events.TokenCreated().process_receipt(receipt, errors=DISCARD)
    args = dict(created["args"])
    token_address = args.pop("token")
    assert args == {"creator": PAYER.address, "name": "Lunar Otter", "symbol": "LOTR",
                    "initialSupply": supply, "fee": paid}
    # A receipt holds the token's Transfer and the collector's FeeCollected too, hence DISCARD above.
    # The raw log, as eth_getLogs returns it: the signature other tools decode, and both indexed addresses.
    raw = next(log for log in receipt["logs"] if log["address"] == factory.address)
    assert bytes(raw["topics"][0]) == bytes(Web3.keccak(text=TOKEN_CREATED))
    assert [Web3.to_checksum_address(bytes(t)[12:]) for t in raw["topics"][1:]] == [token_address, PAYER.address]

    token = w3.eth.contract(address=token_address, abi=ERC20_VIEWS)
    assert (token.functions.name().call(), token.functions.symbol().call()) == ("Lunar Otter", "LOTR")
    assert token.functions.totalSupply().call() == supply
    assert token.functions.balanceOf(PAYER.address).call() == supply
    assert token.functions.balanceOf(factory.address).call() == 0

    assert w3.eth.get_balance(collector.address) - before == paid
    assert w3.eth.get_balance(factory.address) == 0
    (fee_event,) = collector.events.FeeCollected().process_receipt(receipt, errors=DISCARD)
    assert dict(fee_event["args"]) == {"payer": factory.address, "amount": paid}


def test_create_token_refuses_too_low_a_fee_and_a_paused_collector(chain: Chain, factory: Contract) -> None:
    w3, collector = chain.w3, chain.collector
    create = factory.functions.createToken("Cheap", "CHP", 1)
    assert _revert_data(create, PAYER.address, TOKEN_FEE - 1) == _selector("FeeTooLow(uint256,uint256)") + encode(
        ["uint256", "uint256"], [TOKEN_FEE - 1, TOKEN_FEE]
    )
    mined = _transact(w3, PAYER.private_key, create, TOKEN_FEE - 1, gas=2_000_000)
    assert mined["status"] == 0
    assert factory.events.TokenCreated().process_receipt(mined) == ()
    assert w3.eth.get_balance(collector.address) == 0

    assert _transact(w3, PAUSER.private_key, collector.functions.pause())["status"] == 1
    assert _revert_data(create, PAYER.address, TOKEN_FEE) == ENFORCED_PAUSE
