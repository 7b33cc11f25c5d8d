"""Simulated platform activity: users logging in and trading, Convex functions running, tokens launched.

Runs inside the hub process as one asyncio task, so that the Metrics Review, the Error Log Review and
the Security Scan read numbers that something actually produced: logins, trades and failed logins
land in the Convex double's stores, executions in the same function log `/api/stream_function_logs`
serves, and tokens are launched by real `createToken` transactions on each anvil chain, which emit
the `TokenCreated` events the metrics count.

Knobs, on the hub's control port: `GET /vendors/activity` shows the settings and the totals since the
last reset; `POST /vendors/activity` `{"preset": "high", "tick_s": 0.5, ...}` picks a preset and/or
overrides fields (without a preset, the overrides apply to the current settings); `DELETE` switches
it off and zeroes the totals.

A tick is a handful of in-memory appends and at most one transaction per chain, so the default
two-second tick costs nothing noticeable on a small machine. Amounts, users and failures come from
a seeded random generator (re-seeded on reset), so two runs with the same settings are comparable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import httpx

from sandbox.httpserver import Request, Response
from sandbox.services import ConvexDeployment

log = logging.getLogger("sandbox.activity")

SEED = 20_240_601
RPC_TIMEOUT_S = 5.0
# Per Convex store; at the normal preset the function log reaches this after about 3 hours, and
# dropping the oldest entries is what the real deployment's bounded log buffer does too.
KEEP_ITEMS = 50_000
UNMINED_AFTER_S = 60.0  # anvil mines every second; a transaction not mined by then was dropped
TOKEN_SUPPLY = 1_000_000 * 10**18
CREATE_SIGNATURE = "createToken(string,string,uint256)"

# Failed logins come from a few addresses of the documentation range (RFC 5737), the first far more
# often than the rest, so the Security Scan's top sources show one obvious offender.
FAILED_LOGIN_SOURCES = ("203.0.113.66", "203.0.113.18", "203.0.113.140", "203.0.113.201")
FAILED_LOGIN_WEIGHTS = (8, 3, 2, 1)

# (function, udfType, share of executions, errors it fails with)
FUNCTIONS: tuple[tuple[str, str, int, tuple[str, ...]], ...] = (
    ("tokens:list", "Query", 5,
     ("Uncaught Error: Too many documents read in a single function execution (limit: 32000)",)),
    ("trades:execute", "Mutation", 3,
     ("Uncaught Error: insufficient liquidity", "Uncaught Error: slippage tolerance exceeded")),
    ("users:login", "Mutation", 2, ("Uncaught Error: session store unavailable",)),
    ("tokens:create", "Mutation", 1,
     ("Uncaught ConvexError: symbol already taken", "Uncaught Error: launch fee not received")),
)

ADJECTIVES = ("Lunar", "Solar", "Rapid", "Quiet", "Golden", "Brave", "Crimson", "Frozen")
NOUNS = ("Otter", "Falcon", "Comet", "Maple", "Harbor", "Ember", "Orbit", "Willow")


class ActivityError(ValueError):
    """Settings that cannot be applied; the message names the bad preset, field or value."""


@dataclass(frozen=True)
class Settings:
    """What one tick does. Per-tick rates may be fractional: 0.3 means a 30% chance each tick."""

    preset: str = "off"
    tick_s: float = 2.0
    active_users: int = 1  # the pool users are drawn from: user-0001 ... user-<active_users>
    trades_per_tick: float = 0.0
    trade_usd: float = 0.0  # mean trade size
    logins_per_tick: float = 0.0  # login attempts, failed ones included
    failed_login_share: float = 0.0
    executions_per_tick: float = 0.0
    error_share: float = 0.0
    tokens_every_ticks: int = 0  # one createToken per EVM chain every N ticks; 0 = never

    @property
    def idle(self) -> bool:
        rates = (self.trades_per_tick, self.logins_per_tick, self.executions_per_tick, self.tokens_every_ticks)
        return not any(rates)


# A healthy day has no failed logins and no failed executions: the runbook flags any (the Error Log
# Review warns on one failed execution, the Security Scan fails past 20 failed logins a day), so a
# steady trickle would make every healthy sandbox report a problem. The spikes add them.
NORMAL = Settings("normal", tick_s=2.0, active_users=120, trades_per_tick=3, trade_usd=250.0,
                  logins_per_tick=2, executions_per_tick=8, tokens_every_ticks=15)
PRESETS: dict[str, Settings] = {
    "off": Settings(),
    "normal": NORMAL,
    "high": replace(NORMAL, preset="high", active_users=600, trades_per_tick=15, logins_per_tick=10,
                    executions_per_tick=40, tokens_every_ticks=3),
    "error-spike": replace(NORMAL, preset="error-spike", error_share=0.3),
    "login-spike": replace(NORMAL, preset="login-spike", logins_per_tick=52, failed_login_share=0.96),
    "volume-drop": replace(NORMAL, preset="volume-drop", trade_usd=25.0),
}

# field -> (type, lowest, highest); the ceilings keep a typo from loading the machine.
LIMITS: dict[str, tuple[type, float, float]] = {
    "tick_s": (float, 0.05, 3600),
    "active_users": (int, 1, 100_000),
    "trades_per_tick": (float, 0, 1000),
    "trade_usd": (float, 0, 1e9),
    "logins_per_tick": (float, 0, 1000),
    "failed_login_share": (float, 0, 1),
    "executions_per_tick": (float, 0, 1000),
    "error_share": (float, 0, 1),
    "tokens_every_ticks": (int, 0, 1_000_000),
}
assert set(LIMITS) == {f.name for f in fields(Settings)} - {"preset"}


def configure(current: Settings, body: Any) -> Settings:
    """`current` changed by a control request's body: `{"preset": name, field: value, ...}`."""
    if not isinstance(body, dict):
        raise ActivityError(f"expected a JSON object like {{'preset': 'normal'}}, got {type(body).__name__}")
    unknown = sorted(set(body) - set(LIMITS) - {"preset"})
    if unknown:
        raise ActivityError(f"unknown field {unknown[0]!r}; fields: preset, {', '.join(LIMITS)}")
    base = current
    if "preset" in body:
        preset = body["preset"]
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ActivityError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        base = PRESETS[preset]
    return replace(base, **{name: check(name, value) for name, value in body.items() if name != "preset"})


def check(name: str, value: Any) -> float | int:
    """`value` for field `name`, or ActivityError naming both."""
    kind, low, high = LIMITS[name]
    wanted = "a whole number" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ActivityError(f"{name} takes {wanted} from {low:g} to {high:g}, got {value!r}")
    if kind is int and value != int(value):
        raise ActivityError(f"{name} takes a whole number, got {value!r}")
    if not low <= value <= high:
        raise ActivityError(f"{name} takes {wanted} from {low:g} to {high:g}, got {value!r}")
    return int(value) if kind is int else float(value)


@dataclass
class Totals:
    """What the generator did since its last reset."""

    chains: list[str]
    since: float = field(default_factory=time.time)
    ticks: int = 0
    tokens_created: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    volume_usd: float = 0.0
    logins: int = 0
    failed_logins: int = 0
    executions: int = 0
    errors: int = 0
    tx_failures: int = 0
    last_error: str | None = None

    def __post_init__(self) -> None:
        self.tokens_created = dict.fromkeys(self.chains, 0)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("chains")
        out["volume_usd"] = round(self.volume_usd, 2)
        return out


class RpcError(Exception):
    pass


def token_name(n: int) -> tuple[str, str]:
    """The n-th launched token's (name, symbol): readable, and unique per sandbox run."""
    adjective, noun = ADJECTIVES[n % len(ADJECTIVES)], NOUNS[(n // len(ADJECTIVES)) % len(NOUNS)]
    series = n // (len(ADJECTIVES) * len(NOUNS))
    suffix = f" {series + 1}" if series else ""
    return f"{adjective} {noun}{suffix}", f"{adjective[0]}{noun[:3]}{series or ''}".upper()


class ActivityGenerator:
    """Adds activity every `tick_s` while its settings are not idle.

    `chains` maps each EVM chain to `{"upstream": anvil URL, "token_factory": address}`; tokens are
    launched from `creators` (anvil dev accounts, which anvil signs for), paying `fee_wei`. Launches
    go straight to anvil, not through the faultable RPC endpoints: a fault on a probe's endpoint
    should not stop the platform's users.
    """

    def __init__(
        self,
        convex: ConvexDeployment | None,
        chains: dict[str, dict[str, str]],
        creators: list[str],
        fee_wei: int,
        client: httpx.AsyncClient,
    ) -> None:
        # Imported here, not at the top: eth_abi takes about a second to import, which the hub pays
        # once at start, while `tfops sandbox activity` only needs the settings above.
        from eth_abi import encode
        from eth_utils import keccak

        self._encode = encode
        self._selector = keccak(text=CREATE_SIGNATURE)[:4]
        self.convex = convex
        # Without a factory or an account to launch from, a chain gets no on-chain activity.
        self.chains = {name: spec for name, spec in chains.items() if spec.get("token_factory") and creators}
        self.creators = creators
        self.fee_wei = fee_wei
        self.client = client
        self.settings = PRESETS["off"]
        self.totals = Totals(list(self.chains))
        self.rng = random.Random(SEED)
        self._launched = 0
        self._pending: dict[str, list[tuple[str, float]]] = {name: [] for name in self.chains}
        self._factory_ready: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def snapshot(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "running": self.running, "totals": self.totals.as_dict()}

    async def apply(self, settings: Settings) -> None:
        """Switch to `settings`; the loop restarts so a new tick_s takes effect at once."""
        await self.stop()
        self.settings = settings
        if not settings.idle:
            self._task = asyncio.create_task(self._run(), name="sandbox-activity")

    async def reset(self) -> None:
        """Off, totals zeroed and the random generator re-seeded: the state a test starts from."""
        await self.apply(PRESETS["off"])
        self.totals = Totals(list(self.chains))
        self.rng = random.Random(SEED)
        self._pending = {name: [] for name in self.chains}

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def control(self, request: Request) -> Response:
        if request.method == "DELETE":
            await self.reset()
        elif request.method == "POST":
            try:
                settings = configure(self.settings, request.json())
            except ValueError as exc:  # ActivityError, or a body that is not JSON
                return Response.json({"error": f"activity: {exc}"}, 400)
            await self.apply(settings)
            log.info("activity -> %s", settings)
        elif request.method != "GET":
            return Response.json({"error": "activity: GET, POST or DELETE"}, 405)
        return Response.json(self.snapshot())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.tick()
            await asyncio.sleep(max(0.0, self.settings.tick_s - (loop.time() - started)))

    async def tick(self) -> None:
        """One tick. Never raises: a failure is logged and shown as `last_error` in the totals."""
        settings = self.settings
        self.totals.ticks += 1
        try:
            self._simulate_users(settings)
        except Exception as exc:  # noqa: BLE001 - the generator outlives a bad tick
            log.exception("activity tick failed")
            self.totals.last_error = f"tick: {type(exc).__name__}: {exc}"
        launch = settings.tokens_every_ticks > 0 and (self.totals.ticks - 1) % settings.tokens_every_ticks == 0
        if self.chains:
            await asyncio.gather(*(self._chain_tick(name, launch) for name in self.chains))

    def _rate(self, per_tick: float) -> int:
        whole = math.floor(per_tick)
        return whole + (1 if self.rng.random() < per_tick - whole else 0)

    def _user(self, settings: Settings) -> str:
        return f"user-{self.rng.randrange(settings.active_users) + 1:04d}"

    def _simulate_users(self, s: Settings) -> None:
        convex, rng, totals = self.convex, self.rng, self.totals
        if convex is None:
            return
        for _ in range(self._rate(s.trades_per_tick)):
            # lognormal with mean 1 (mu = -sigma^2 / 2): mostly near the mean, a few large trades
            amount = round(s.trade_usd * rng.lognormvariate(-0.125, 0.5), 2)
            convex.add_trades({"user": self._user(s), "amount_usd": amount})
            totals.trades += 1
            totals.volume_usd += amount
        for _ in range(self._rate(s.logins_per_tick)):
            if rng.random() < s.failed_login_share:
                source = rng.choices(FAILED_LOGIN_SOURCES, FAILED_LOGIN_WEIGHTS)[0]
                convex.add_failed_logins({"source": source})
                totals.failed_logins += 1
            else:
                convex.add_logins({"user": self._user(s)})
                totals.logins += 1
        runs: dict[tuple[str, str, str | None], int] = {}
        for _ in range(self._rate(s.executions_per_tick)):
            function, udf_type, _, errors = rng.choices(FUNCTIONS, [f[2] for f in FUNCTIONS])[0]
            error = rng.choice(errors) if rng.random() < s.error_share else None
            runs[(function, udf_type, error)] = runs.get((function, udf_type, error), 0) + 1
        for (function, udf_type, error), count in runs.items():
            spec: dict[str, Any] = {"function": function, "udfType": udf_type, "count": count}
            if error is not None:
                spec["error"] = error
                totals.errors += count
            convex.add_log_entries(spec)
            totals.executions += count
        convex.trim(KEEP_ITEMS)

    async def _chain_tick(self, chain: str, launch: bool) -> None:
        spec = self.chains[chain]
        try:
            if chain not in self._factory_ready:
                # The sandbox deploys the factories after the hub starts; until then there is nothing to call.
                if await self._rpc(spec["upstream"], "eth_getCode", [spec["token_factory"], "latest"]) in ("0x", None):
                    return
                self._factory_ready.add(chain)
            await self._settle(chain)
            if launch:
                await self._launch(chain)
        except Exception as exc:  # noqa: BLE001 - a node that answers nonsense must not end the generator
            log.warning("activity on %s: %s", chain, exc)
            self.totals.last_error = f"{chain}: {exc}"

    async def _launch(self, chain: str) -> None:
        spec = self.chains[chain]
        n, self._launched = self._launched, self._launched + 1
        name, symbol = token_name(n)
        data = self._selector + self._encode(["string", "string", "uint256"], [name, symbol, TOKEN_SUPPLY])
        tx = {"from": self.creators[n % len(self.creators)], "to": spec["token_factory"],
              "value": hex(self.fee_wei), "data": "0x" + data.hex()}
        try:
            tx_hash = await self._rpc(spec["upstream"], "eth_sendTransaction", [tx])
        except (httpx.HTTPError, RpcError) as exc:
            # anvil estimates gas before accepting, so a launch that would revert (a paused
            # collector, a fee below the factory's) is refused here with the reason.
            self.totals.tx_failures += 1
            raise RpcError(f"createToken({name!r}) refused: {exc}") from None
        self._pending[chain].append((str(tx_hash), time.monotonic()))

    async def _settle(self, chain: str) -> None:
        """Count the launches mined since the last tick: a token only counts once its event exists."""
        pending = self._pending[chain]
        if not pending:
            return
        batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [h]}
                 for i, (h, _) in enumerate(pending)]
        response = await self.client.post(self.chains[chain]["upstream"], json=batch, timeout=RPC_TIMEOUT_S)
        response.raise_for_status()
        answer = response.json()
        if not isinstance(answer, list):
            raise RpcError(f"eth_getTransactionReceipt: a batch of {len(batch)} was answered by {str(answer)[:200]}")
        answers = {a.get("id"): a for a in answer if isinstance(a, dict)}
        still: list[tuple[str, float]] = []
        for i, (tx_hash, sent) in enumerate(pending):
            receipt = answers.get(i, {}).get("result")
            if receipt is None:
                if time.monotonic() - sent < UNMINED_AFTER_S:
                    still.append((tx_hash, sent))
                else:
                    self.totals.tx_failures += 1
                    self.totals.last_error = f"{chain}: createToken {tx_hash} not mined in {UNMINED_AFTER_S:.0f} s"
            elif receipt.get("status") == "0x1":
                self.totals.tokens_created[chain] += 1
            else:
                self.totals.tx_failures += 1
                self.totals.last_error = f"{chain}: createToken {tx_hash} reverted"
        self._pending[chain] = still

    async def _rpc(self, url: str, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        response = await self.client.post(url, json=body, timeout=RPC_TIMEOUT_S)
        response.raise_for_status()
        answer = response.json()
        if not isinstance(answer, dict):
            raise RpcError(f"{method}: not a JSON-RPC answer: {str(answer)[:200]}")
        if answer.get("error"):
            error = answer["error"]
            raise RpcError(f"{method}: {error.get('message', error) if isinstance(error, dict) else error}")
        return answer.get("result")
