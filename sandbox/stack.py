"""Start, stop and steer the local sandbox: two anvil chains, moto's S3, and the service hub.

`up` starts every process in its own process group, waits until each part answers, deploys the
contracts (a FeeCollector and a TokenFactory per chain), starts the activity generator at the
preset asked for, and writes `DIR/environment.toml`; `down` stops every process it recorded, by pid, and
checks that no port is left bound. A failed `up` stops what it started and leaves no state behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sandbox import envfile
from sandbox.vendors import REGISTRY as VENDORS

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STATE = "sandbox.json"
BACKUP_BUCKET = "tokenforge-backups"
SLACK_PATH = "/services/T0SANDBOX/B0SANDBOX/sandboxwebhooktoken"

CHAINS = {
    "ethereum": {"chain_id": 1, "wrong_chain_id": 11155111, "symbol": "ETH", "prefix": "eth"},
    "bsc": {"chain_id": 56, "wrong_chain_id": 97, "symbol": "BNB", "prefix": "bsc"},
}
HTTP_ENDPOINTS = ["frontend", "convex", "api"]
RECEIVERS = ["slack", "pagerduty"]
# Healthy and drained balances of the deployer wallets, in wei / lamports.
ETHER = 10**18
SOL = 10**9
WALLET_AMOUNTS = {"ethereum": (2 * ETHER, ETHER // 10), "bsc": (2 * ETHER, ETHER // 10), "solana": (5 * SOL, SOL // 5)}


# What a launch pays the TokenFactory, in wei (the FeeCollector's quoted platform fee).
TOKEN_FEE_WEI = ETHER // 100

# The knobs of the vendor doubles and the activity generator; DELETE on each restores its default.
# Activity goes first, so nothing it adds lands in a store after that store was cleared.
VENDOR_KNOBS = [
    ("activity", ""),
    ("coingecko", "usage"), ("coingecko", "prices"),
    ("alchemy", "usage"),
    ("x-api", "ratelimit"),
    ("discord", "ratelimit"), ("discord", "webhook"),
    ("sentry", "issues"), ("sentry", "config"),
    ("convex", "logs"), ("convex", "logs/config"), ("convex", "logins"), ("convex", "users"), ("convex", "trades"),
    ("convex", "exports"), ("convex", "maintenance"),
    ("convex", "tables"),  # deletions and imports of a data-loss drill
    ("convex", "deletions"),
    ("convex", "environment"), ("vercel", "environment"),  # variables a drill removed
    ("statuspage", "incidents"), ("statuspage", "config"),
    ("telegram", "messages"),
    ("slack-api", "calls"), ("slack-api", "config"),
    ("vercel", "deployments"), ("vercel", "status"), ("vercel", "config"),
    ("vercel-tokens", "tokens"), ("vercel-tokens", "config"),
    ("healthchecks", "pings"),
]


class SandboxError(Exception):
    pass


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


# Ports already given to a caller of this process: one `up` asks for twenty-odd ports before any is
# bound, and the bind check alone cannot see that an earlier answer is still waiting to be bound.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port below the kernel's ephemeral range, never the same one twice in a process.

    A port the kernel hands out for binding to port 0 comes from the same range as the source
    ports of outgoing connections, so between choosing it and the hub binding it, a client's
    connection may take it. Below that range only listeners compete, and the bind check sees them.
    """
    low = _ephemeral_range()[0]
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise SandboxError("no free port below the ephemeral range")


def port_bound(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def anvil_binary() -> Path:
    native = sorted((REPO / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
    if native:
        return native[0]
    wrapper = REPO / "node_modules" / ".bin" / "anvil"
    if wrapper.exists():
        return wrapper
    raise SandboxError("anvil is not installed: run `make node_modules` (npm ci) first")


def solana_identity() -> tuple[str, str, str]:
    """(genesis hash, wrong-cluster genesis hash, deployer pubkey), fixed so runs are comparable."""
    from solders.hash import Hash
    from solders.keypair import Keypair

    genesis = str(Hash(hashlib.sha256(b"tokenforge-sandbox").digest()))
    wrong = str(Hash(hashlib.sha256(b"tokenforge-sandbox-devnet").digest()))
    deployer = Keypair.from_seed(hashlib.sha256(b"tokenforge-sandbox-sol-deployer").digest())
    return genesis, wrong, str(deployer.pubkey())


@dataclass
class Sandbox:
    """A running sandbox, as recorded in DIR/sandbox.json."""

    dir: Path
    state: dict[str, Any]

    @property
    def control_url(self) -> str:
        return f"http://{HOST}:{self.state['control_port']}"

    @property
    def env_file(self) -> Path:
        return self.dir / "environment.toml"

    def url(self, endpoint: str) -> str:
        return f"http://{HOST}:{self.state['endpoints'][endpoint]['port']}"

    def targets(self) -> list[str]:
        return sorted([*self.state["endpoints"], *(w["target"] for w in self.state["wallets"])])

    def target_kind(self, target: str) -> str:
        spec = self.state["endpoints"].get(target)
        if spec is None:
            return "wallet"
        return "rpc" if spec["kind"] in ("evm", "solana") else "http"

    def fault(self, target: str, mode: str) -> str:
        response = _control(self, "POST", "/faults", {"target": target, "mode": mode})
        return str(response["mode"])

    def faults(self) -> dict[str, str]:
        return dict(_control(self, "GET", "/faults"))

    def clear_faults(self) -> None:
        for target, mode in self.faults().items():
            if mode != "ok":
                self.fault(target, "ok")

    def received(self, receiver: str) -> list[dict[str, Any]]:
        return list(_control(self, "GET", f"/received/{receiver}"))

    def vendor(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """Turn a vendor double's knobs (usage, issues, logs...) through the control API."""
        return _control(self, method, f"/vendors/{name}/{path.lstrip('/')}", body)

    def reset_vendors(self) -> None:
        """Every vendor double's knobs back to their defaults (quiet logs, low usage, full windows)."""
        for name, path in VENDOR_KNOBS:
            self.vendor(name, "DELETE", path)

    def clear_received(self) -> None:
        for receiver in RECEIVERS:
            _control(self, "DELETE", f"/received/{receiver}")

    def stats(self) -> dict[str, int]:
        return dict(_control(self, "GET", "/stats"))

    def activity(self, change: dict[str, Any] | None = None) -> dict[str, Any]:
        """The activity generator's settings and totals; with `change` (`{"preset": ..., field: value}`),
        applied first."""
        if change is None:
            return dict(_control(self, "GET", "/vendors/activity"))
        return dict(_control(self, "POST", "/vendors/activity", change))


def _control(sandbox: Sandbox, method: str, path: str, body: Any = None) -> Any:
    try:
        response = httpx.request(method, sandbox.control_url + path, json=body, timeout=15, trust_env=False)
    except httpx.HTTPError as exc:
        raise SandboxError(f"the sandbox in {sandbox.dir} does not answer ({exc}); is it up?") from None
    if response.status_code >= 400:
        raise SandboxError(response.json().get("error", response.text))
    return response.json()


def load(directory: Path) -> Sandbox:
    path = directory / STATE
    if not path.exists():
        raise SandboxError(f"no sandbox is running from {directory} ({STATE} not found)")
    return Sandbox(directory, json.loads(path.read_text()))


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children so they do not linger
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def _spawn(name: str, argv: list[str], logs: Path, env: dict[str, str] | None = None) -> int:
    log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps the handle
    proc = subprocess.Popen(  # noqa: S603 - fixed argument lists, no shell
        argv,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        cwd=REPO,
        env=env,
    )
    log.close()
    return proc.pid


def _wait_until(what: str, ready, pids: dict[str, int], timeout_s: float = 30) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            if not _alive(pid):
                raise SandboxError(f"{name} exited during start-up; see its log")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.05)
    raise SandboxError(f"{what} did not answer within {timeout_s:.0f} s")


def _jsonrpc_ready(url: str) -> bool:
    r = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1)
    return r.status_code == 200 and "result" in r.json()


def up(directory: Path, activity: str = "normal") -> Sandbox:
    """Start a sandbox from `directory`; `activity` is the generator's preset at start (see sandbox/activity.py)."""
    from sandbox.activity import PRESETS

    if activity not in PRESETS:
        raise SandboxError(f"unknown activity preset {activity!r}; presets: {', '.join(PRESETS)}")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STATE).exists():
        existing = load(directory)
        if any(_alive(pid) for pid in existing.state["pids"].values()):
            raise SandboxError(f"a sandbox is already running from {directory}; `tfops sandbox down` first")
        (directory / STATE).unlink()
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    pids: dict[str, int] = {}
    try:
        return _start(directory, logs, pids, activity)
    except BaseException:
        _stop_pids(pids)
        with contextlib.suppress(FileNotFoundError):
            (directory / STATE).unlink()
        raise


def _start(directory: Path, logs: Path, pids: dict[str, int], activity: str) -> Sandbox:
    from sandbox import evm_setup  # web3 takes seconds to import; only `up` needs it

    anvil = anvil_binary()
    chains: dict[str, dict[str, Any]] = {}
    for chain, spec in CHAINS.items():
        port = free_port()
        pids[f"anvil-{chain}"] = _spawn(
            f"anvil-{chain}",
            [str(anvil), "--host", HOST, "--port", str(port), "--chain-id", str(spec["chain_id"]),
             "--block-time", "1", "--accounts", "6", "--silent"],
            logs,
        )
        chains[chain] = {**spec, "upstream": f"http://{HOST}:{port}", "port": port}
    s3_port = free_port()
    pids["s3"] = _spawn(
        "s3", [str(Path(sys.executable).parent / "moto_server"), "-H", HOST, "-p", str(s3_port)], logs
    )
    genesis, wrong_genesis, sol_deployer = solana_identity()
    endpoints: dict[str, dict[str, Any]] = {}
    for name in [*HTTP_ENDPOINTS, *RECEIVERS, *VENDORS]:
        endpoints[name] = {"kind": name, "port": free_port()}
    for spec in chains.values():
        for i in (1, 2):
            endpoints[f"{spec['prefix']}-rpc-{i}"] = {
                "kind": "evm", "port": free_port(), "upstream": spec["upstream"],
                "wrong_chain_id": spec["wrong_chain_id"],
            }
    for i in (1, 2):
        endpoints[f"sol-rpc-{i}"] = {"kind": "solana", "port": free_port(), "wrong_genesis": wrong_genesis}
    accounts = evm_setup.ANVIL_DEV_ACCOUNTS
    roles = {"admin": accounts[0], "pauser": accounts[1], "treasury": accounts[2], "deployer": accounts[3]}
    creators = [accounts[4].address, accounts[5].address]  # launch tokens for the activity generator
    wallets = [
        {"target": f"{CHAINS[c]['prefix']}-deployer", "chain": c, "address": roles["deployer"][0],
         "healthy": WALLET_AMOUNTS[c][0], "low": WALLET_AMOUNTS[c][1]}
        for c in CHAINS
    ]
    wallets.append({"target": "sol-deployer", "chain": "solana", "address": sol_deployer,
                    "healthy": WALLET_AMOUNTS["solana"][0], "low": WALLET_AMOUNTS["solana"][1]})
    for chain, spec in chains.items():
        _wait_until(f"anvil ({chain})", lambda u=spec["upstream"]: _jsonrpc_ready(u), pids)
        # The hub launches tokens through the factory, so it is told the factory's address before
        # the deployment is mined: the admin's next two transactions are the collector and the factory.
        nonce = evm_setup.web3_for(spec["upstream"]).eth.get_transaction_count(roles["admin"][0], "pending")
        spec["token_factory"] = evm_setup.create_address(roles["admin"][0], nonce + 1)
    plan = {
        "host": HOST, "control_port": free_port(), "endpoints": endpoints, "chains": chains,
        "wallets": wallets, "solana": {"genesis_hash": genesis}, "slack_path": SLACK_PATH,
        "api_token": secrets.token_urlsafe(24),
        "activity": {"preset": activity, "creators": creators, "token_fee_wei": TOKEN_FEE_WEI},
    }
    (directory / "hub.json").write_text(json.dumps(plan, indent=2))

    # The hub sets the wallets' balances on the chains at start, so it starts after anvil answers.
    pids["hub"] = _spawn("hub", [sys.executable, "-m", "sandbox.hub", str(directory / "hub.json")], logs)
    # Each deployment waits for its block (anvil mines every second): the chains go side by side.
    with ThreadPoolExecutor(len(chains)) as pool:
        contracts = dict(zip(chains, pool.map(lambda spec: _deploy_contracts(spec, roles), chains.values()),
                             strict=True))
    control = f"http://{HOST}:{plan['control_port']}/ready"
    _wait_until("the service hub", lambda: httpx.get(control, timeout=1).status_code == 200, pids)
    _wait_until("S3 (moto)", lambda: httpx.get(f"http://{HOST}:{s3_port}/", timeout=1).status_code < 500, pids)
    _create_backup_bucket(f"http://{HOST}:{s3_port}")
    for name, spec in endpoints.items():
        _wait_until(name, lambda p=spec["port"]: port_bound(p), pids, timeout_s=5)
    state = {
        "pids": pids,
        "control_port": plan["control_port"],
        "endpoints": endpoints,
        "chains": {c: {"upstream": s["upstream"], "chain_id": s["chain_id"], **contracts[c]}
                   for c, s in chains.items()},
        "s3": {"endpoint_url": f"http://{HOST}:{s3_port}", "port": s3_port},
        "solana": {"genesis_hash": genesis},
        "wallets": wallets,
        "slack_path": SLACK_PATH,
        "api_token": plan["api_token"],
        "roles": {role: address for role, (address, _) in roles.items()},
        "activity": plan["activity"],
        "started_at": time.time(),
    }
    sandbox = Sandbox(directory, state)
    envfile.write(sandbox, roles)
    (directory / STATE).write_text(json.dumps(state, indent=2))
    return sandbox


def _deploy_contracts(chain: dict[str, Any], roles: dict[str, Any]) -> dict[str, str]:
    """Multicall3, the FeeCollector and the TokenFactory on one chain; their addresses by state key."""
    from sandbox import evm_setup

    upstream, (admin, admin_key) = chain["upstream"], roles["admin"]
    evm_setup.install_multicall3(upstream)
    collector = evm_setup.deploy_fee_collector(upstream, admin_key, admin, roles["pauser"][0], roles["treasury"][0])
    factory = evm_setup.deploy_token_factory(upstream, admin_key, collector, TOKEN_FEE_WEI)
    if factory != chain["token_factory"]:
        raise SandboxError(f"TokenFactory landed at {factory}, not at {chain['token_factory']} where the hub "
                           f"expects it (did something else send from the admin account {admin}?)")
    return {"fee_collector": collector, "token_factory": factory}


def _create_backup_bucket(endpoint_url: str) -> None:
    """The bucket the environment file's [storage] names, versioned as the backup expects."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing",  # noqa: S106 - moto's fixed local credentials
                      config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3}))
    s3.create_bucket(Bucket=BACKUP_BUCKET)
    s3.put_bucket_versioning(Bucket=BACKUP_BUCKET, VersioningConfiguration={"Status": "Enabled"})


def _stop_pids(pids: dict[str, int], timeout_s: float = 10) -> list[str]:
    """SIGTERM each process group, then SIGKILL what is left. Returns the names still alive."""
    for pid in pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids.values()):
        time.sleep(0.05)
    for pid in pids.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    time.sleep(0.1)
    return [name for name, pid in pids.items() if _alive(pid)]


def down(directory: Path) -> list[str]:
    """Stop the sandbox; returns what is still bound or alive (empty when everything stopped)."""
    sandbox = load(directory.resolve())
    alive = _stop_pids(sandbox.state["pids"])
    ports = [spec["port"] for spec in sandbox.state["endpoints"].values()]
    ports += [sandbox.state["control_port"], sandbox.state["s3"]["port"]]
    ports += [int(c["upstream"].rsplit(":", 1)[1]) for c in sandbox.state["chains"].values()]
    deadline = time.monotonic() + 5
    bound = [p for p in ports if port_bound(p)]
    while bound and time.monotonic() < deadline:
        time.sleep(0.1)
        bound = [p for p in bound if port_bound(p)]
    (sandbox.dir / STATE).unlink()
    return [f"process {n}" for n in alive] + [f"port {p}" for p in bound]
