"""Write the environment file (and its secret files) that points the project at a running sandbox."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_utils import keccak, to_checksum_address

from sandbox.convex_envvars import SANDBOX_ENVIRONMENT
from sandbox.services import ConvexDeployment
from sandbox.vendors import (
    alchemy,
    coingecko,
    healthchecks,
    sentry,
    slack_api,
    social,
    statuspage,
    telegram,
    vercel,
    vercel_tokens,
)
from sandbox.vendors.vercel_env import SANDBOX_PROJECT_ENV

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

REPO = Path(__file__).resolve().parents[1]
SECURITY_AUDIT_BLOCK = "tfops-sandbox-vercel-token"
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
    convex_deploy_key = write_secret(d, "convex_deploy_key", ConvexDeployment.SANDBOX_DEPLOY_KEY)
    parts.append(_table("[error_logs]", {
        "sentry_url": sandbox.url("sentry"), "sentry_org": sentry.SANDBOX_ORG,
        "sentry_projects": list(sentry.SANDBOX_PROJECTS),
        "sentry_token": write_secret(d, "sentry_token", sentry.SANDBOX_TOKEN),
        "convex_url": sandbox.url("convex"),
        "convex_deploy_key": convex_deploy_key,
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
    fee_setter = (roles["admin"][0], write_secret(d, "fee_setter_key", roles["admin"][1]))  # DEFAULT_ADMIN_ROLE
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
        "convex_deploy_key": convex_deploy_key,
        "encryption_passphrase": write_secret(d, "backup_passphrase", secrets.token_urlsafe(24)),
        # the compiled contracts stand in for the deployment artifacts a real backup would carry
        "artifacts_dir": str(REPO / "contracts" / "build"),
        "part_size_mb": 8, "timeout_s": 10.0, "export_deadline_s": 60.0, "export_poll_s": 0.2,
        "retention_days": 90, "max_rpo_minutes": 15,
    }))
    parts.append(_table("[database]", {
        "convex_url": sandbox.url("convex"),
        "convex_deploy_key": convex_deploy_key,
        # small batches so that a few hundred old rows take several, as millions would in production
        "retention_days": 30, "batch_size": 50, "max_batches": 1000, "timeout_s": 5.0, "deadline_s": 120.0,
        "slow_query_ms": 500.0, "min_executions": 5, "log_window_hours": 24, "log_deadline_s": 10.0,
        "log_settle_s": 0.5,
    }))
    for table, days in (("logins", None), ("failedLogins", None), ("trades", 90)):
        parts.append(_table("[[database.tables]]", {"name": table} | ({"retention_days": days} if days else {})))
    parts.append(_table("[performance]", {"window_days": 30, "change_warn": 0.5, "chart": True}))
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
        "deploy_key": convex_deploy_key,
        "probe_urls": [sandbox.url("api") + "/health"], "probe_auth_header": api_token, "settle_s": 2.0,
        "timeout_s": 3.0,
    }))
    parts.append(_table("[emergency.statuspage]", {
        "base_url": sandbox.url("statuspage") + "/v1", "page_id": statuspage.SANDBOX_PAGE_ID,
        "api_key": write_secret(d, "statuspage_api_key", statuspage.SANDBOX_API_KEY),
        "status_url": sandbox.url("statuspage"), "component_ids": list(statuspage.SANDBOX_COMPONENTS),
    }))
    parts.append(_table("[breakers]", {
        "notice_component_ids": [c for c, name in statuspage.SANDBOX_COMPONENTS.items() if name == "API"],
    }))
    parts.append(_table("[breakers.apis.coingecko]", {
        "title": "CoinGecko", "failures_to_open": 3, "window_s": 60.0, "open_s": 10.0, "max_open_s": 120.0,
        "successes_to_close": 2, "limit_increase": "https://www.coingecko.com/en/api/pricing",
    }))
    parts.append(_table("[emergency.telegram]", {
        "base_url": sandbox.url("telegram"), "chat_id": telegram.SANDBOX_CHAT_ID,
        "bot_token": write_secret(d, "telegram_bot_token", telegram.SANDBOX_BOT_TOKEN),
    }))
    parts.append(_table("[emergency.discord]", {
        "webhook_url": write_secret(d, "discord_webhook_url", f"{sandbox.url('discord')}/api/v10/webhooks/"
                                    f"{social.DISCORD_WEBHOOK_ID}/{social.DISCORD_WEBHOOK_TOKEN}"),
    }))
    parts.append(_table("[vercel]", {
        "api_url": sandbox.url("vercel"), "token": write_secret(d, "vercel_token", vercel.SANDBOX_TOKEN),
        "project_id": vercel.SANDBOX_PROJECT_ID, "team_id": vercel.SANDBOX_TEAM_ID,
        "production_domain": vercel.PRODUCTION_DOMAIN, "status_url": sandbox.url("vercel") + "/api/v2/status.json",
        "timeout_s": 5.0, "max_rate_limit_wait_s": 5.0, "verify_deadline_s": 20.0, "verify_poll_s": 0.3,
    }))
    parts.append(_table("[heartbeat]", {
        "ping_url": write_secret(d, "heartbeat_ping_url",
                                 f"{sandbox.url('healthchecks')}/ping/{healthchecks.SANDBOX_CHECK}"),
        "timeout_s": 5.0, "attempts": 2,
    }))
    # Recovery: the drills break the sandbox through its control port, and the backend's "redeploy" is the
    # sandbox's stand-in for `npx convex deploy`: it puts the Convex double's functions back (clears the fault).
    control = sandbox.control_url
    parts.append(_table("[recovery]", {"import_timeout_s": 60.0, "export_deadline_s": 60.0, "approval_poll_s": 1}))
    parts.append(_table("[recovery.backend]", {
        "convex_url": sandbox.url("convex"),
        "deploy_key": convex_deploy_key,
        "critical_functions": ["system:health", "security:failedLogins"], "settle_s": 10.0, "timeout_s": 5.0,
    }))
    parts.append(_table("[recovery.backend.redeploy]", {
        "http": {"method": "POST", "url": control + "/faults", "json_body": {"target": "convex", "mode": "ok"}},
        "timeout_s": 10.0, "description": "redeploy the sandbox's Convex functions (stand-in for npx convex deploy)",
    }))
    # The deployment's environment variables, restored from references holding the double's own values.
    parts.append(_table("[recovery.backend.environment.variables]", {
        name: write_secret(d, f"convex_env_{name.lower()}", value) for name, value in SANDBOX_ENVIRONMENT.items()}))
    parts.append(_table("[recovery.frontend.environment.variables]", {
        name: write_secret(d, f"vercel_env_{name.lower()}", value) for name, value in SANDBOX_PROJECT_ENV.items()}))
    parts.append(_table("[recovery.monitoring]", {"checklist_flow": "morning-checklist", "max_checklist_age_h": 24}))
    parts.append(_table("[recovery.drill]", {"settle_s": 5.0}))
    parts.append(_table("[recovery.drill.break_backend]", {
        "http": {"method": "POST", "url": control + "/faults", "json_body": {"target": "convex", "mode": "status:500"}},
        "timeout_s": 10.0, "description": "the Convex functions fail (HTTP 500)"}))
    parts.append(_table("[recovery.drill.break_frontend]", {
        "http": {"method": "POST", "url": control + "/vendors/vercel/deployments",
                 "json_body": {"bad": True, "promote": True}},
        "timeout_s": 10.0, "description": "a bad Vercel deployment promoted to production"}))
    parts.append(_table("[recovery.drill.break_data]", {
        "http": {"method": "POST", "url": control + "/vendors/convex/tables",
                 "json_body": {"delete": {"trades": 40, "users": 5}}},
        "timeout_s": 10.0, "description": "45 records deleted (40 trades, 5 users)"}))
    parts.append(_table("[recovery.drill.break_environment]", {
        "http": {"method": "POST", "url": control + "/vendors/convex/environment",
                 "json_body": {"remove": ["ALCHEMY_API_KEY"]}},
        "timeout_s": 10.0, "description": "the Convex variable ALCHEMY_API_KEY removed"}))
    parts.append(_table("[recovery.drill.channel]", {
        "slack_webhook_url": slack,
        "pagerduty_routing_key": write_secret(d, "drill_pagerduty_routing_key", secrets.token_hex(16)),
        "pagerduty_events_url": sandbox.url("pagerduty") + "/v2/enqueue",
    }))
    parts.append(_table("[recovery.database]", {"support_contact": "support@convex.dev",
                                                "deployment_name": "tokenforge-sandbox"}))
    # The live key's Secret block is not created here (the sandbox does not talk to Prefect): create
    # it with vercel_tokens.SANDBOX_LIVE_TOKEN before running security-audit (the flow tests do).
    parts.append(_table("[security_audit]", {
        "min_key_age_days": 25, "verify_attempts": 2, "verify_delay_s": 0.2, "timeout_s": 5.0,
    }))
    parts.append(_table("[[security_audit.services]]", {
        "name": "vercel", "provider": "vercel", "api_url": sandbox.url("vercel-tokens"),
        "admin_token": write_secret(d, "vercel_admin_token", vercel_tokens.SANDBOX_ADMIN_TOKEN),
        "secret_block": SECURITY_AUDIT_BLOCK,
    }))
    parts.append(_table("[security_audit.access_review]", {
        "convex_url": sandbox.url("convex"),
        "convex_deploy_key": convex_deploy_key,
        "window_days": 30, "baseline_days": 90, "timeout_s": 5.0,
    }))
    # Contract maintenance: anvil's base fee sinks to a few wei when idle, so the caps are the runbook's 50 gwei.
    parts.append(_table("[gas]", {
        "max_fee_gwei": 50.0, "blocks": 20, "reward_percentiles": [10.0, 50.0, 90.0], "priority_percentile": 50.0,
        "min_priority_fee_gwei": 0.1, "max_age_minutes": 60.0, "rpc_timeout_s": 5.0,
    }))
    parts.append(_table("[fees]", {
        "target_margin_usd": 5.0, "target_margin_ratio": 0.5, "fee_step": 0.0001,
        "price_ids": {"ethereum": "ethereum", "bsc": "binancecoin"},
        "fee_setter_key": fee_setter[1], "fee_setter_address": fee_setter[0],
        "sample_blocks": 5000, "rpc_timeout_s": 5.0, "deadline_s": 20.0, "tx_timeout_s": 60.0,
        "replace_after_s": 10.0, "poll_s": 0.2, "approval_poll_s": 1,
    }))
    parts.append(_table("[fees.coingecko]", {
        "base_url": sandbox.url("coingecko") + "/api/v3",
        "api_key": write_secret(d, "coingecko_api_key", coingecko.SANDBOX_KEY), "timeout_s": 5.0,
    }))
    # Incident response: the runbook's windows (L1 15 min, L2 30 min, L3 1 h); L2 and L3 page their own services.
    parts.append(_table("[incidents]", {"poll_s": 2}))
    for level, contact, methods, window_s in (("L1", "On-call Dev", ["slack", "pagerduty"], 900.0),
                                              ("L2", "Tech Lead", ["pagerduty"], 1800.0),
                                              ("L3", "CTO", ["pagerduty"], 3600.0)):
        own_key = {} if level == "L1" else {"pagerduty_routing_key": write_secret(
            d, f"pagerduty_routing_key_{level.lower()}", secrets.token_hex(16))}
        parts.append(_table("[[incidents.levels]]", {"level": level, "contact": contact, "methods": methods,
                                                     "window_s": window_s, **own_key}))
    parts.append(_table("[incidents.slack]", {
        "api_url": sandbox.url("slack-api") + "/api",
        "bot_token": write_secret(d, "slack_bot_token", slack_api.SANDBOX_BOT_TOKEN), "timeout_s": 5.0,
        "max_retry_wait_s": 5.0,
    }))
    path = d / "environment.toml"
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
