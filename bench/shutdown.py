"""Benchmark: the emergency shutdown's pauses, every chain at once against one chain after another.

Run:  .venv/bin/python bench/shutdown.py [--chains 2] [--rounds 10] [--block-time 1] [--seed N]

Starts its own anvil nodes on 127.0.0.1 (one per chain, each in its own process group, stopped at
the end), each mining a block every `--block-time` seconds like the sandbox, and deploys a
FeeCollector on each. A round times `runbook.procedures.emergency.pause_all` from the trigger to
"every FeeCollector paused and `paused()` read back as true", once with the chains at once and
once one after another (the order alternates between rounds), unpausing with the admin key between
runs. Before each run every chain's block clock is restarted at a random point of its interval
(`evm_setIntervalMining`): chains started together on one machine would otherwise tick in step,
which real chains do not, and a chain ticking just after another would make one after another look
as fast as at once. Each run is checked:
every chain must report `paused` and verified, and the pauser's nonce must have risen by exactly
one per chain, so a fast wrong answer cannot pass for a fast one.

What dominates is waiting for blocks: a pause is mined at the next block of its chain, so at once
costs the longest of the chains' waits for their next block, and one after another the sum of them
(about half an interval each). The ratio is the number
to read; absolute times depend on where in the block interval the trigger falls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runbook.clients import evm_tx  # noqa: E402
from runbook.clients.http_probe import make_client  # noqa: E402
from runbook.config_types import Chain, ChainKind  # noqa: E402
from runbook.procedures import emergency  # noqa: E402
from sandbox import evm_setup  # noqa: E402
from sandbox.stack import HOST, anvil_binary, free_port  # noqa: E402

ADMIN, PAUSER, TREASURY = evm_setup.ANVIL_DEV_ACCOUNTS[:3]
RESULTS_FILE = Path(__file__).resolve().parent / "results" / "shutdown.json"
HTTP = httpx.Client(timeout=10, trust_env=False)


def rpc(url: str, method: str, *params: Any) -> Any:
    answer = HTTP.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def start_chain(workdir: Path, chain_id: int, block_time: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / f"anvil-{chain_id}.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - fixed argument list
        [str(anvil_binary()), "--host", HOST, "--port", str(port), "--chain-id", str(chain_id),
         "--block-time", str(block_time), "--accounts", "3", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    log.close()
    url = f"http://{HOST}:{port}"
    evm_setup.wait_for_rpc(url, timeout_s=30)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


def shift_block_clock(url: str, block_time: int, rng: random.Random) -> None:
    """Restart the chain's interval mining after a random part of an interval, at a new phase."""
    rpc(url, "evm_setIntervalMining", 0)
    time.sleep(rng.uniform(0, block_time))
    rpc(url, "evm_setIntervalMining", block_time)


def unpause(url: str, contract: str) -> None:
    """The admin resumes intake, mined at once (evm_mine) so that setting up a round costs no block wait."""
    if int(rpc(url, "eth_call", {"to": contract, "data": evm_tx.encode_call("paused()")}, "latest"), 16) == 0:
        return
    chain_id = int(rpc(url, "eth_chainId"), 16)
    base = int(rpc(url, "eth_getBlockByNumber", "latest", False)["baseFeePerGas"], 16)
    tx = {"type": 2, "chainId": chain_id, "to": contract, "value": 0, "gas": 100_000,
          "nonce": int(rpc(url, "eth_getTransactionCount", ADMIN.address, "pending"), 16),
          "data": evm_tx.encode_call("unpause()"), "maxFeePerGas": 2 * base + 10**9, "maxPriorityFeePerGas": 10**9}
    raw = "0x" + bytes(Account.sign_transaction(tx, ADMIN.private_key).raw_transaction).hex()
    tx_hash = rpc(url, "eth_sendRawTransaction", raw)
    rpc(url, "evm_mine")
    if rpc(url, "eth_getTransactionReceipt", tx_hash)["status"] != "0x1":
        raise RuntimeError(f"unpause on {url} reverted")


async def one_run(cfg: emergency.Emergency, chains: dict[str, Chain], urls: dict[str, str],
                  concurrently: bool) -> float:
    before = {name: int(rpc(urls[name], "eth_getTransactionCount", PAUSER.address, "latest"), 16) for name in chains}
    async with make_client(4 * len(chains)) as client:
        started = time.perf_counter()
        outcomes = await emergency.pause_all(cfg, chains, client, SecretStr(PAUSER.private_key),
                                             evm_tx.MemoryJournal(), environment="bench", concurrently=concurrently)
        elapsed = time.perf_counter() - started
    wrong = [f"{o.chain}: {o.outcome} ({o.detail})" for o in outcomes if o.outcome != "paused" or not o.verified]
    for name in chains:
        after = int(rpc(urls[name], "eth_getTransactionCount", PAUSER.address, "latest"), 16)
        if after != before[name] + 1:
            wrong.append(f"{name}: the pauser sent {after - before[name]} transactions, expected 1")
    if wrong:
        raise RuntimeError("a run did not pause every chain exactly once: " + "; ".join(wrong))
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=2, help="anvil chains to pause (default 2)")
    parser.add_argument("--rounds", type=int, default=10, help="runs of each mode (default 10)")
    parser.add_argument("--block-time", type=int, default=1,
                        help="whole seconds between blocks (anvil's interval mining takes whole seconds; default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the block clocks' random phases")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    if args.chains < 1 or args.rounds < 1 or args.block_time <= 0:
        parser.error("--chains, --rounds and --block-time take 1 or more")
    cfg = emergency.Emergency.model_validate({
        "pauser_key": {"env": "UNUSED_HERE"}, "max_fee_gwei": 50, "tx_timeout_s": 60, "replace_after_s": 30,
        "poll_s": 0.05, "rpc_timeout_s": 5})
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="tfops-bench-shutdown-") as tmp:
        try:
            urls: dict[str, str] = {}
            for i in range(args.chains):
                proc, url = start_chain(Path(tmp), 31337 + i, args.block_time)
                procs.append(proc)
                urls[f"chain{i + 1}"] = url

            def deploy(url: str) -> str:
                return evm_setup.deploy_fee_collector(url, ADMIN.private_key, ADMIN.address, PAUSER.address,
                                                      TREASURY.address)

            with ThreadPoolExecutor(args.chains) as pool:
                collectors = dict(zip(urls, pool.map(deploy, urls.values()), strict=True))
            chains = {name: Chain(kind=ChainKind.evm, symbol="ETH", chain_id=31337 + i, rpc_urls=[urls[name]],
                                  fee_collector=collectors[name], max_head_age_s=5.0 * args.block_time + 5)
                      for i, name in enumerate(urls)}
            times: dict[str, list[float]] = {"at once": [], "one after another": []}
            for r in range(args.rounds):
                order = [True, False] if r % 2 == 0 else [False, True]
                for concurrently in order:
                    seeds = [rng.random() for _ in urls]
                    with ThreadPoolExecutor(args.chains) as pool:
                        list(pool.map(lambda n: unpause(urls[n], collectors[n]), urls))
                        list(pool.map(lambda n, s: shift_block_clock(urls[n], args.block_time, random.Random(s)),
                                      urls, seeds))
                    # The trigger falls at a random point too: right after the shifts, the chain shifted
                    # last would always be a whole interval from its next block.
                    time.sleep(args.block_time + rng.uniform(0, args.block_time))
                    elapsed = asyncio.run(one_run(cfg, chains, urls, concurrently))
                    times["at once" if concurrently else "one after another"].append(elapsed)
        finally:
            for proc in procs:
                stop(proc)
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    ratio = medians["one after another"] / medians["at once"]
    print(f"Emergency shutdown pauses: {args.chains} anvil chains, a block every {args.block_time} s, "
          f"{args.rounds} rounds; trigger -> every FeeCollector paused and paused() read back")
    print(f"{'mode':<20} {'median s':>9} {'min s':>7} {'max s':>7}")
    for mode, values in times.items():
        print(f"{mode:<20} {medians[mode]:>9.3f} {min(values):>7.3f} {max(values):>7.3f}")
    print(f"one after another / at once (medians): {ratio:.2f}x")
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps({
        "measured_at": datetime.now(UTC).isoformat(), "chains": args.chains, "rounds": args.rounds,
        "block_time_s": args.block_time, "seconds": times, "medians": medians, "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
