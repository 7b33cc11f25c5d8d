"""Write the environment file (and its secret files) that points the project at a running sandbox."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import keccak, to_checksum_address

from sandbox.services import ConvexDeployment
from sandbox.vendors import alchemy, coingecko, sentry, social, statuspage

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

REPO = Path(__file__).resolve().parents[1]
FLOORS = {"ethereum": 0.5, "bsc": 0.5, "solana": 1}


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table(header: str, values: dict[str, Any]) -> str:
    return "\n".join([header, *(f"{k} = {_value(v)}" for k, v in values.items())]) + "\n"


def write_secret(directory: Path, name: str, value: str) -> dict[str, str]:
    folder = directory / "secrets"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return {"file": f"secrets/{name}"}


def write(sandbox: Sandbox, roles: dict[str, tuple[str, str]]) -> Path:
    d = sandbox.dir
    state = sandbox.state
    slack = write_secret(d, "slack_webhook_url", sandbox.url("slack") + state.get("slack_path", "") )
    pagerduty = write_secret(d, "pagerduty_routing_key", secrets.token_hex(16))
    api_token = write_secret(d, "api_token", "Bearer " + state["api_token"])
    parts = [
        "# The local sandbox, written by `tfops sandbox up`. Secrets are files beside this one.\n",
        'environment = "sandbox"\n',
        _table("[probes]", {"timeout_s": 3.0}),
        _table("[[endpoints]]", {"name": "frontend", "component": "frontend", "url": sandbox.url("frontend") + "/",
                                 "severity": "P0"}),
        _table("[endpoints.expect]", {"status": [200], "body_contains": "TokenForge", "max_latency_ms": 1500}),
        _table("[[endpoints]]", {"name": "convex", "component": "backend", "url": sandbox.url("convex") + "/api/query",
                                 "method": "POST", "body": '{"path": "system:health", "args": {}, "format": "json"}',
                                 "severity": "P0"}),
        _table("[endpoints.expect]", {"status": [200], "json_field": "status", "json_value": "success",
                                      "max_latency_ms": 1500}),
        _table("[[endpoints]]", {"name": "api", "component": "api", "url": sandbox.url("api") + "/health",
                                 "severity": "P1", "auth_header": api_token}),
        _table("[endpoints.expect]", {"status": [200], "json_field": "status", "json_value": "ok",
                                      "max_latency_ms": 1500}),
    ]
    for chain, spec in state["chains"].items():
        prefix = {"ethereum": "eth", "bsc": "bsc"}[chain]
        names = [f"{prefix}-rpc-1", f"{prefix}-rpc-2"]
        parts.append(_table(f"[chains.{chain}]", {
            "kind": "evm", "symbol": {"ethereum": "ETH", "bsc": "BNB"}[chain], "chain_id": spec["chain_id"],
            "rpc_urls": [sandbox.url(n) for n in names], "rpc_names": names, "max_head_age_s": 5.0,
            "fee_collector": spec["fee_collector"], "token_factory": spec["token_factory"],
        }))
    parts.append(_table("[chains.solana]", {
        "kind": "solana", "symbol": "SOL", "genesis_hash": state["solana"]["genesis_hash"],
        "rpc_urls": [sandbox.url("sol-rpc-1"), sandbox.url("sol-rpc-2")], "rpc_names": ["sol-rpc-1", "sol-rpc-2"],
        "max_head_age_s": 5.0,
    }))
    parts.append(_table("[wallet_floors]", FLOORS))
    for w in state["wallets"]:
        parts.append(_table("[[wallets]]", {"chain": w["chain"], "address": w["address"], "label": w["target"]}))
    parts.append(_table("[notifications]", {"page_at": "P1", "source": "tokenforge-ops sandbox"}))
    parts.append(_table("[notifications.slack]", {"webhook_url": slack}))
    parts.append(_table("[notifications.pagerduty]", {
        "events_url": sandbox.url("pagerduty") + "/v2/enqueue", "routing_key": pagerduty,
    }))
    parts.append(_table("[error_logs]", {
        "sentry_url": sandbox.url("sentry"), "sentry_org": sentry.SANDBOX_ORG,
        "sentry_projects": list(sentry.SANDBOX_PROJECTS),
        "sentry_token": write_secret(d, "sentry_token", sentry.SANDBOX_TOKEN),
        "convex_url": sandbox.url("convex"),
        "convex_deploy_key": write_secret(d, "convex_deploy_key", ConvexDeployment.SANDBOX_DEPLOY_KEY),
        # The Convex log endpoint holds a caught-up request open (as the real one does for 60 s).
        "window_hours": 24, "new_error_threshold": 3, "timeout_s": 5.0, "convex_settle_s": 0.5,
    }))
    parts.append(_table("[api_usage]", {"warn_at": 0.8, "fail_at": 0.95, "severity": "P2", "timeout_s": 5.0}))
    parts.append(_table("[api_usage.coingecko]", {
        "base_url": sandbox.url("coingecko") + "/api/v3",
        "api_key": write_secret(d, "coingecko_api_key", coingecko.SANDBOX_KEY),
    }))
    parts.append(_table("[api_usage.alchemy]", {
        "admin_url": sandbox.url("alchemy") + "/v1",
        "access_key": write_secret(d, "alchemy_access_key", alchemy.SANDBOX_ACCESS_KEY),
        "monthly_cu_limit": 30_000_000, "used_cu_field": alchemy.PLACEHOLDER_FIELD,
    }))
    parts.append(_table("[api_usage.x]", {
        "base_url": sandbox.url("x-api") + "/2", "user_token": write_secret(d, "x_user_token", social.X_SANDBOX_TOKEN),
    }))
    parts.append(_table("[api_usage.discord]", {
        "base_url": sandbox.url("discord") + "/api/v10",
        "bot_token": write_secret(d, "discord_bot_token", social.DISCORD_SANDBOX_TOKEN),
    }))
    pauser_key = write_secret(d, "pauser_key", roles["pauser"][1])
    treasury_key = write_secret(d, "treasury_key", roles["treasury"][1])
    treasury_address = roles["treasury"][0]
    roles = state["roles"]
    parts.append(_table("[security_scan]", {
        "admin_allowlist": [roles["admin"]], "expected_pausers": [roles["pauser"]],
        "expected_role_holders": [roles["treasury"]], "withdrawal_threshold": 1.0, "window_hours": 24,
        "failed_login_threshold": 20, "timeout_s": 5.0, "deadline_s": 20.0,
    }))
    parts.append(_table("[metrics]", {
        "convex_url": sandbox.url("convex"), "window_hours": 24, "baseline_days": 7, "band": 0.5, "timeout_s": 5.0,
    }))
    parts.append(_table("[metrics.functions]", {
        "daily_active_users": "metrics:dailyActiveUsers", "transaction_volume": "metrics:transactionVolume",
        "error_rate": "metrics:errorRate",
    }))
    parts.append(_table("[[alerts.rules]]", {
        "metric": "error_rate", "op": ">", "threshold": 0.05, "severity": "P1", "message": "Error rate exceeded 5%",
    }))
    parts.append(_table("[storage]", {
        "endpoint_url": state["s3"]["endpoint_url"], "region": "us-east-1", "bucket": "tokenforge-backups",
        "access_key_id": write_secret(d, "aws_access_key_id", "testing"),
        "secret_access_key": write_secret(d, "aws_secret_access_key", "testing"),
    }))
    parts.append(_table("[backup]", {
        "convex_url": sandbox.url("convex"),
        "convex_deploy_key": write_secret(d, "convex_deploy_key", ConvexDeployment.SANDBOX_DEPLOY_KEY),
        "encryption_passphrase": write_secret(d, "backup_passphrase", secrets.token_urlsafe(24)),
        # the compiled contracts stand in for the deployment artifacts a real backup would carry
        "artifacts_dir": str(REPO / "contracts" / "build"),
        "part_size_mb": 8, "timeout_s": 10.0, "export_deadline_s": 60.0, "export_poll_s": 0.2,
        "retention_days": 90, "max_rpo_minutes": 15,
    }))
    # funds moved in a financial emergency go to an address nobody holds a key to in the sandbox
    secure = to_checksum_address("0x" + keccak(b"tokenforge-sandbox-secure-wallet")[12:].hex())
    parts.append(_table("[emergency]", {
        "pauser_key": pauser_key, "treasury_key": treasury_key, "treasury_address": treasury_address,
        "max_fee_gwei": 50.0, "tx_timeout_s": 60.0, "replace_after_s": 10.0, "poll_s": 0.2, "rpc_timeout_s": 5.0,
        "approval_poll_s": 2,
    }))
    parts.append(_table("[emergency.secure_wallets]", dict.fromkeys(state["chains"], secure)))
    parts.append(_table("[emergency.maintenance]", {
        "convex_url": sandbox.url("convex"),
        "deploy_key": write_secret(d, "convex_deploy_key", ConvexDeployment.SANDBOX_DEPLOY_KEY),
        "probe_urls": [sandbox.url("api") + "/health"], "probe_auth_header": api_token, "settle_s": 2.0,
        "timeout_s": 3.0,
    }))
    parts.append(_table("[emergency.statuspage]", {
        "base_url": sandbox.url("statuspage") + "/v1", "page_id": statuspage.SANDBOX_PAGE_ID,
        "api_key": write_secret(d, "statuspage_api_key", statuspage.SANDBOX_API_KEY),
        "status_url": sandbox.url("statuspage"), "component_ids": list(statuspage.SANDBOX_COMPONENTS),
    }))
    path = d / "environment.toml"
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
