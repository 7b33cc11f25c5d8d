"""Fault modes the sandbox can inject, parsed from the words of `tfops sandbox fault`."""

from __future__ import annotations

from dataclasses import dataclass

# What each mode does, as `tfops sandbox fault --help` shows it.
MODES = {
    "ok": "clear any fault: the endpoint answers normally",
    "down": "connection refused: the port is closed and open connections are dropped",
    "hang": "accepts the connection and reads the request, never answers",
    "slow:SECONDS": "answers normally after SECONDS",
    "status:CODE": "answers every request with HTTP CODE",
    "stale": "RPC endpoints only: the head stops advancing (the chain stops producing blocks)",
    "wrong-chain": "RPC endpoints only: answers with another chain id / genesis hash",
    "low": "wallets only: the deployer wallet is drained below its floor",
}

RPC_ONLY = {"stale", "wrong-chain"}
WALLET_ONLY = {"low"}


class FaultError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    mode: str
    seconds: float = 0.0
    status: int = 0

    def __str__(self) -> str:
        if self.mode == "slow":
            return f"slow:{self.seconds:g}"
        if self.mode == "status":
            return f"status:{self.status}"
        return self.mode


OK = Fault("ok")


def parse(text: str) -> Fault:
    word, _, arg = text.strip().partition(":")
    if word in ("ok", "down", "hang", "stale", "wrong-chain", "low"):
        if arg:
            raise FaultError(f"mode {word!r} takes no argument")
        return Fault(word)
    if word == "slow":
        try:
            seconds = float(arg)
        except ValueError:
            raise FaultError(f"mode slow:SECONDS needs a number of seconds, got {arg!r}") from None
        if not 0 <= seconds <= 3600:
            raise FaultError("mode slow:SECONDS takes 0 to 3600 seconds")
        return Fault("slow", seconds=seconds)
    if word == "status":
        if not arg.isdigit() or not 100 <= int(arg) <= 599:
            raise FaultError(f"mode status:CODE needs an HTTP status code 100-599, got {arg!r}")
        return Fault("status", status=int(arg))
    raise FaultError(f"unknown fault mode {text!r}; modes: {', '.join(MODES)}")


def check_applies(target_kind: str, fault: Fault) -> None:
    """`target_kind` is 'http', 'rpc' or 'wallet'."""
    if target_kind == "wallet":
        if fault.mode not in WALLET_ONLY | {"ok"}:
            raise FaultError("a wallet target takes only the modes 'low' and 'ok'")
    elif fault.mode in WALLET_ONLY:
        raise FaultError(f"mode {fault.mode!r} applies only to wallet targets")
    elif fault.mode in RPC_ONLY and target_kind != "rpc":
        raise FaultError(f"mode {fault.mode!r} applies only to RPC endpoints")
