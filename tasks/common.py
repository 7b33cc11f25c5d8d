"""What every task needs: settings from a file, secrets resolved at the edge, one shared client."""

from __future__ import annotations

from prefect.blocks.system import Secret
from pydantic import SecretStr

from runbook.clients import slack
from runbook.clients.http_probe import make_client
from runbook.config_types import SecretRef
from runbook.secrets import SecretError, SecretResolver
from runbook.settings import Settings


def read_prefect_secret(name: str) -> str:
    block = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    return str(block.get())


def resolver_for(settings: Settings) -> SecretResolver:
    return SecretResolver(settings.base_dir, block_reader=read_prefect_secret)


def signing_key(settings: Settings, ref: SecretRef | None, field: str) -> SecretStr:
    """A signing key, read only when a transaction is about to be sent; SecretError names `field`
    when it is not configured or cannot be read."""
    if ref is None:
        raise SecretError(f"no {field} configured")
    try:
        return resolver_for(settings).resolve(ref)
    except SecretError as exc:
        raise SecretError(f"cannot read {field}: {exc}") from exc


async def post_slack(settings: Settings, webhook_url: SecretRef, text: str, *, timeout_s: float) -> slack.Delivery:
    """The text on a Slack webhook; a URL that cannot be read is a delivery not sent, saying why."""
    try:
        url = resolver_for(settings).resolve(webhook_url)
    except SecretError as exc:
        return slack.Delivery(False, f"slack: not sent ({exc})")
    async with make_client(2) as client:
        return await slack.post_webhook(client, url, text, timeout_s=timeout_s)


async def post_to_team(settings: Settings, text: str) -> slack.Delivery | None:
    """The text on the team's Slack channel (the [notifications.slack] webhook); None when there is none."""
    n = settings.notifications.slack
    if n is None:
        return None
    return await post_slack(settings, n.webhook_url, text, timeout_s=n.timeout_s)
