"""The emergency flows on a real Prefect server against the sandbox: pauses on chain, broadcasts
received, the report artifacts, the approval in the flow run's form, and keys kept out of reach."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fee_collector_calls import balance, is_paused, nonce, send
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from prefect_runs import artifacts_of, env_variant, form_of, paused_run, resume_and_wait, toml_table

from flows.emergency import emergency_shutdown_flow, financial_emergency_flow
from runbook import secrets as secret_store
from runbook.procedures import emergency as em
from sandbox import evm_setup
from sandbox.vendors import social, statuspage, telegram

pytestmark = [pytest.mark.sandbox]

ADMIN, PAUSER, TREASURY, DEPLOYER, OUTSIDER, PAYER = evm_setup.ANVIL_DEV_ACCOUNTS
CHAINS = ("ethereum", "bsc")


@pytest.fixture
def sandbox(sandbox_session):
    """The session's sandbox, no faults, receivers emptied (vendor knobs: only the status page's)."""
    sandbox_session.clear_faults()
    sandbox_session.clear_received()
    sandbox_session.vendor("statuspage", "DELETE", "incidents")
    return sandbox_session


@pytest.fixture
def restore(sandbox) -> Iterator[None]:
    yield

    def unpause(chain: str) -> None:
        if is_paused(sandbox, chain):
            send(sandbox, chain, ADMIN, "unpause")

    with ThreadPoolExecutor(len(CHAINS)) as pool:
        list(pool.map(unpause, CHAINS))


def env_file(sb, tmp_path: Path, **emergency: Any) -> Path:
    """The sandbox's environment file plus an [emergency] section whose treasury key does not exist."""
    (tmp_path / "pauser_key").write_text(PAUSER.private_key + "\n")
    section: dict[str, Any] = {
        "pauser_key": {"file": str(tmp_path / "pauser_key")},
        "treasury_key": {"file": str(tmp_path / "no-such-folder" / "treasury_key")},
        "treasury_address": TREASURY.address,
        "max_fee_gwei": 50, "tx_timeout_s": 20, "replace_after_s": 10, "poll_s": 0.1, "rpc_timeout_s": 5,
        "approval_poll_s": 1, "broadcast_message": "Drill: launches and fee payments are paused.",
        **emergency,
    }
    (tmp_path / "statuspage_key").write_text(statuspage.SANDBOX_API_KEY)
    statuspage_section = {"base_url": sb.url("statuspage") + "/v1", "page_id": statuspage.SANDBOX_PAGE_ID,
                          "api_key": {"file": str(tmp_path / "statuspage_key")}, "status_url": sb.url("statuspage"),
                          "component_ids": list(statuspage.SANDBOX_COMPONENTS)}
    tables = {k: v for k, v in section.items() if isinstance(v, dict) and k != "pauser_key" and "file" not in v
              and "env" not in v}
    plain = {k: v for k, v in section.items() if k not in tables}
    text = toml_table("[emergency]", plain)
    for name, table in tables.items():
        text += toml_table(f"[emergency.{name}]", table)
    text += toml_table("[emergency.statuspage]", statuspage_section)
    (tmp_path / "telegram_token").write_text(telegram.SANDBOX_BOT_TOKEN)
    (tmp_path / "discord_webhook").write_text(f"{sb.url('discord')}/api/v10/webhooks/{social.DISCORD_WEBHOOK_ID}/"
                                              f"{social.DISCORD_WEBHOOK_TOKEN}")
    text += (f'\n[emergency.telegram]\nbase_url = "{sb.url("telegram")}"\nchat_id = "{telegram.SANDBOX_CHAT_ID}"\n'
             f'bot_token = {{ file = "{tmp_path / "telegram_token"}" }}\n'
             f'\n[emergency.discord]\nwebhook_url = {{ file = "{tmp_path / "discord_webhook"}" }}\n')
    return env_variant(sb, tmp_path, text, replacing=("emergency",))


@pytest.fixture
def info_logs() -> Iterator[None]:
    """The suite logs warnings only; the secret canary needs the runs' info lines (the transactions)."""
    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)  # setLevel, not the attribute: it also clears logging's level cache
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


async def test_shutdown_pauses_broadcasts_reports_and_never_reads_the_treasury_key(prefect_api, sandbox, tmp_path,
                                                                                 restore, monkeypatch, info_logs):
    resolved: list[str] = []
    original = secret_store.SecretResolver.resolve

    def spy(self, ref):  # noqa: ANN001
        resolved.append(ref.describe())
        return original(self, ref)

    monkeypatch.setattr(secret_store.SecretResolver, "resolve", spy)
    env = env_file(sandbox, tmp_path)
    before = {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS}
    state = await emergency_shutdown_flow(env_file=str(env), reason="drill: leaked deploy key", return_state=True)
    assert state.is_completed(), state
    report = await state.result()
    assert report["passed"] is True, report["markdown"]
    assert [(c["chain"], c["outcome"], c["verification"]) for c in report["chains"]] == [
        ("ethereum", "paused", "paused() is true"), ("bsc", "paused", "paused() is true")]
    assert all(is_paused(sandbox, c) for c in CHAINS)
    assert {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS} == {c: n + 1 for c, n in before.items()}
    effects = {e["name"]: (e["status"], e["verified"]) for e in report["effects"]}
    assert effects == {"API maintenance": ("not-configured", False), "status page": ("done", True),
                       "slack": ("done", True), "pagerduty": ("done", True), "telegram": ("done", True),
                       "discord": ("done", True)}
    # The treasury key's file does not exist: reading it would have failed. It was never asked for.
    assert not any("treasury" in r for r in resolved) and f"file:{tmp_path / 'pauser_key'}" in resolved

    slack = sandbox.received("slack")
    assert slack[0]["text"].startswith(":rotating_light: EMERGENCY SHUTDOWN (sandbox): drill: leaked deploy key")
    assert slack[-1]["text"].startswith("Emergency shutdown (sandbox): complete, every effect verified")
    pages = sandbox.received("pagerduty")
    assert len(pages) == 1 and pages[0]["event"]["payload"]["severity"] == "critical"
    incidents = sandbox.vendor("statuspage", "GET", "incidents")
    assert len(incidents) == 1 and incidents[0]["incident"]["body"] == "Drill: launches and fee payments are paused."
    assert "leaked deploy key" not in json.dumps(incidents)  # the reason stays with the team
    [tg] = sandbox.vendor("telegram", "GET", "messages")
    [dc] = sandbox.vendor("discord", "GET", "webhook")
    # Telegram and Discord channels are public, like the status page: the users' message, not the reason
    assert tg["text"] == dc["content"] == "Drill: launches and fee payments are paused."

    artifacts = await artifacts_of(state.state_details.flow_run_id)
    markdown = artifacts["markdown"]
    assert markdown.startswith("## Emergency Shutdown: COMPLETE")
    for c in report["chains"]:
        assert f"paused by tx {c['tx_hash']} in block {c['block']}" in markdown

    async with get_client() as client:  # the journal a re-run on another worker would read
        journal = {v.name: v.value for v in await client.read_variables()
                   if v.name.startswith("tfops-tx-sandbox-pause")}
    for c in report["chains"]:
        [entry] = [value for name, value in journal.items() if f"-{c['chain']}-" in name]
        assert entry["hashes"] == [c["tx_hash"]] and entry["nonce"] == before[c["chain"]]

    again = await emergency_shutdown_flow(env_file=str(env), reason="drill: leaked deploy key", return_state=True)
    assert again.is_completed(), again
    second = await again.result()
    assert [c["outcome"] for c in second["chains"]] == ["already-paused", "already-paused"]
    assert {e["name"]: e["status"] for e in second["effects"]}["status page"] == "already"
    assert {c: nonce(sandbox, c, PAUSER.address) for c in CHAINS} == {c: n + 1 for c, n in before.items()}
    assert len(sandbox.vendor("statuspage", "GET", "incidents")) == 1

    await APILogHandler.aflush()
    async with get_client() as client:
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    written = [json.dumps(report), markdown, artifacts["table"], *(log.message for log in logs)]
    assert any("sent pause()" in log.message for log in logs)
    for key in (PAUSER.private_key, PAUSER.private_key.removeprefix("0x")):
        assert not any(key in str(text) for text in written)


async def test_an_unverified_pause_fails_the_run_and_says_why(prefect_api, sandbox, tmp_path):
    env = env_file(sandbox, tmp_path)
    (tmp_path / "pauser_key").write_text(OUTSIDER.private_key)  # a key without PAUSER_ROLE
    state = await emergency_shutdown_flow(env_file=str(env), reason="drill", dry_run=True, return_state=True)
    assert state.is_failed()
    message = str(state.message or "") + repr(await state.result(raise_on_failure=False))
    assert "INCOMPLETE" in message and f"{OUTSIDER.address} lacks PAUSER_ROLE" in message
    assert not any(is_paused(sandbox, c) for c in CHAINS)
    assert sandbox.received("slack") == []  # a dry run tells nobody


async def test_funds_move_after_the_amount_is_retyped_in_the_flow_runs_form(prefect_api, sandbox, tmp_path, restore):
    chain = "ethereum"
    wallet = Account.create(secrets.token_hex(8)).address
    send(sandbox, chain, PAYER, "collectFee", value=2 * 10**16)
    send(sandbox, chain, PAUSER, "pause")  # paused by hand already: the flow must see it and go on
    contract = sandbox.state["chains"][chain]["fee_collector"]
    held = balance(sandbox, chain, contract)
    (tmp_path / "treasury_key").write_text(TREASURY.private_key)
    env = env_file(sandbox, tmp_path, treasury_key={"file": str(tmp_path / "treasury_key")},
                   secure_wallets={chain: wallet})
    run = asyncio.create_task(financial_emergency_flow(env_file=str(env), reason="drill: drained hot wallet",
                                                       chains=[chain], return_state=True))
    flow_run = await paused_run("financial-emergency", 20)
    assert balance(sandbox, chain, wallet) == 0  # nothing moves before the approval
    form = await form_of(flow_run)
    assert f"| {chain} | `{contract}` | **{em.amount_text(held)} ETH** | `{wallet}` | paused() is true |" in form
    schema = await form_of(flow_run, "schema")
    assert {"approve", "approver", f"amount_{chain}"} <= set(schema["properties"])
    state = await resume_and_wait(flow_run, {"approve": True, "approver": "on-call engineer",
                                             f"amount_{chain}": em.amount_text(held)}, run, 30)
    assert state.is_completed(), state
    report = await state.result()
    assert report["passed"] is True and report["approved_by"] == "on-call engineer"
    assert [p["outcome"] for p in report["pauses"]] == ["already-paused"]
    [withdrawal] = report["withdrawals"]
    assert (withdrawal["outcome"], withdrawal["verified"], withdrawal["destination"]) == ("withdrawn", True, wallet)
    assert balance(sandbox, chain, wallet) == held and balance(sandbox, chain, contract) == 0
    markdown = (await artifacts_of(state.state_details.flow_run_id))["markdown"]
    assert markdown.startswith("## Financial Emergency incident report: FUNDS SECURED")
    assert withdrawal["tx_hash"] in markdown and "approved (by on-call engineer)" in markdown
