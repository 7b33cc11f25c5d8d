"""Benchmark: the Wallet Balance Check's batched reads against one request per wallet.

Run:  .venv/bin/python bench/wallets.py [--wallets 1000]

Starts a sandbox, then reads the balances of N wallets on each of Ethereum, BSC and Solana:
  batched      the project's reads (Multicall3 aggregate3 per 500 wallets; one JSON-RPC batch of
               getMultipleAccounts per 100 keys), requests counted at the sandbox's endpoints;
  per wallet   one eth_getBalance / getBalance request per wallet, 50 in flight at once (a
               reasonable unbatched client), counted the same way.
Both are checked to read the same balances, so a fast wrong answer cannot pass for a fast one.
Every number printed is measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from solders.keypair import Keypair

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runbook import settings as config  # noqa: E402
from runbook.clients.http_probe import make_client  # noqa: E402
from runbook.procedures import wallets  # noqa: E402
from sandbox import stack  # noqa: E402

ENDPOINT = {"ethereum": "eth-rpc-1", "bsc": "bsc-rpc-1", "solana": "sol-rpc-1"}


def wallet_set(n: int) -> list[config.Wallet]:
    evm = [config.Wallet(chain=c, address="0x" + f"{i + 1:040x}", label=f"w{i}") for c in ("ethereum", "bsc")
           for i in range(n)]
    return evm + [config.Wallet(chain="solana", address=str(Keypair().pubkey()), label=f"s{i}") for i in range(n)]


async def batched(settings: config.Settings) -> dict[str, float]:
    async with make_client(50) as client:
        _, rows, _ = await wallets.check_wallets(settings, client, datetime.now(UTC))
    return {row["key"]: row["balance"] for row in rows}


async def per_wallet(sb: stack.Sandbox, settings: config.Settings) -> dict[str, float]:
    limit = asyncio.Semaphore(50)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50,
                                                                 max_keepalive_connections=10)) as client:

        async def one(w: config.Wallet) -> tuple[str, float]:
            if w.chain == "solana":
                body = {"jsonrpc": "2.0", "id": 1, "method": "getBalance", "params": [w.address]}
            else:
                body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [w.address, "latest"]}
            async with limit:
                answer = (await client.post(sb.url(ENDPOINT[w.chain]), json=body)).json()["result"]
            raw = answer["value"] if w.chain == "solana" else int(answer, 16)
            return wallets.wallet_key(w), float(wallets.to_units(raw, settings.chains[w.chain].kind))

        return dict(await asyncio.gather(*(one(w) for w in settings.wallets)))


def measure(sb: stack.Sandbox, label: str, run) -> tuple[float, dict[str, int], dict[str, float]]:  # noqa: ANN001
    before = sb.stats()
    started = time.perf_counter()
    balances = asyncio.run(run())
    wall = time.perf_counter() - started
    after = sb.stats()
    requests = {chain: after[name] - before[name] for chain, name in ENDPOINT.items()}
    print(f"  {label:<11} {wall:7.2f} s   requests: " + ", ".join(f"{c} {n}" for c, n in requests.items()),
          flush=True)
    return wall, requests, balances


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wallets", type=int, default=1000, help="wallets per chain (default 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tfops-bench-wallets-") as tmp:
        print("starting the sandbox ...", flush=True)
        sb = stack.up(Path(tmp) / "sandbox")
        try:
            settings = config.load(sb.env_file).model_copy(update={"wallets": wallet_set(args.wallets)})
            print(f"{args.wallets} wallets on each of ethereum, bsc, solana:")
            b_wall, b_req, b_bal = measure(sb, "batched", lambda: batched(settings))
            n_wall, n_req, n_bal = measure(sb, "per wallet", lambda: per_wallet(sb, settings))
        finally:
            stack.down(Path(tmp) / "sandbox")
    if b_bal != n_bal:
        wrong = [k for k in n_bal if b_bal.get(k) != n_bal[k]]
        print(f"MISMATCH: {len(wrong)} balances differ, e.g. {wrong[:3]}")
        return 1
    print(f"same {len(b_bal)} balances both ways")
    print(f"requests: batched {sum(b_req.values())}, per wallet {sum(n_req.values())} "
          f"({sum(n_req.values()) / max(1, sum(b_req.values())):.0f}x fewer batched)")
    print(f"wall time: batched {b_wall:.2f} s, per wallet {n_wall:.2f} s ({n_wall / b_wall:.1f}x faster batched)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
