"""Telegram and Discord broadcast clients against the sandbox doubles: delivery is confirmed by the
answer, failures say why, and the credentials (both in the URL) never reach a message."""

from __future__ import annotations

from pydantic import SecretStr

from runbook.clients.chat_broadcast import send_discord, send_telegram
from runbook.clients.http_probe import make_client
from runbook.procedures.emergency import post_chat
from sandbox.vendors import social, telegram


def webhook(sandbox, token: str = social.DISCORD_WEBHOOK_TOKEN) -> SecretStr:  # noqa: ANN001
    return SecretStr(f"{sandbox.url('discord')}/api/v10/webhooks/{social.DISCORD_WEBHOOK_ID}/{token}")


async def test_telegram_delivers_and_explains_each_refusal(sandbox):
    base, token = sandbox.url("telegram"), SecretStr(telegram.SANDBOX_BOT_TOKEN)
    async with make_client(4) as client:
        sent = await send_telegram(client, base, token, telegram.SANDBOX_CHAT_ID, "Launches are paused.", timeout_s=5)
        wrong_chat = await send_telegram(client, base, token, "@nobody_here", "x", timeout_s=5)
        bad_token = await send_telegram(client, base, SecretStr("999:not-the-token"), telegram.SANDBOX_CHAT_ID, "x",
                                        timeout_s=5)
        sandbox.vendor("telegram", "POST", "config", {"flood_retry_after": 7})
        flooded = await send_telegram(client, base, token, telegram.SANDBOX_CHAT_ID, "x", timeout_s=5)
    assert sent.ok and sent.detail == "telegram: delivered to @tokenforge_status (message 1)"
    assert [m["text"] for m in sandbox.vendor("telegram", "GET", "messages")] == ["Launches are paused."]
    assert not wrong_chat.ok and wrong_chat.detail == "telegram: HTTP 400: Bad Request: chat not found"
    assert not bad_token.ok and bad_token.detail == "telegram: HTTP 401: Unauthorized"
    assert not flooded.ok and flooded.detail.startswith("telegram: rate limited, retry after 7 s")
    assert all(telegram.SANDBOX_BOT_TOKEN not in d.detail and "not-the-token" not in d.detail
               for d in (sent, wrong_chat, bad_token, flooded))


async def test_telegram_unreachable_names_no_token():
    async with make_client(1) as client:
        down = await send_telegram(client, "http://127.0.0.1:9", SecretStr("123:secret-token"), "@chan_name", "x",
                                   timeout_s=2)
    assert not down.ok and down.detail.startswith("telegram: connection failed") and "secret-token" not in down.detail


async def test_discord_webhook_confirms_the_saved_message(sandbox):
    async with make_client(4) as client:
        sent = await send_discord(client, webhook(sandbox), "Launches are paused.", timeout_s=5)
        unknown = await send_discord(client, webhook(sandbox, "revoked-token"), "x", timeout_s=5)
        dry = await post_chat("discord", lambda: send_discord(client, webhook(sandbox), "x", timeout_s=5),
                              dry_run=True)
    assert sent.ok and sent.detail.startswith("discord: delivered (message ")
    assert [m["content"] for m in sandbox.vendor("discord", "GET", "webhook")] == ["Launches are paused."]
    assert not unknown.ok and unknown.detail == "discord: HTTP 404: Unknown Webhook"
    assert "revoked-token" not in unknown.detail
    assert dry.status == "dry-run" and len(sandbox.vendor("discord", "GET", "webhook")) == 1
