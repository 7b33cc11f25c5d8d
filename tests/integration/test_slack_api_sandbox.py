"""The Slack Web API client against the sandbox's double: channels, messages, Slack's errors inside
HTTP 200, and 429 with Retry-After."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from runbook.clients.http_probe import make_client
from runbook.clients.slack_api import SlackApi, SlackApiError
from sandbox.vendors import slack_api

pytestmark = [pytest.mark.sandbox]


def api(sandbox, client, token: str = slack_api.SANDBOX_BOT_TOKEN, **kw) -> SlackApi:
    return SlackApi(client, SecretStr(token), sandbox.url("slack-api") + "/api", timeout_s=5, **kw)


async def test_a_channel_is_created_once_and_takes_messages_by_id_or_name(sandbox):
    async with make_client(2) as client:
        slack = api(sandbox, client)
        made = await slack.create_channel("inc-20240601-0930-abc123-p0")
        assert made.created and made.id and made.id.startswith("C")
        again = await slack.create_channel("inc-20240601-0930-abc123-p0")  # a re-run: name_taken, reused
        assert (again.created, again.id, again.name) == (False, None, "inc-20240601-0930-abc123-p0")
        by_id = await slack.post_message(made.id, "first")
        by_name = await slack.post_message("#inc-20240601-0930-abc123-p0", "second")
    assert by_id.channel == by_name.channel == made.id and by_id.ts != by_name.ts
    [channel] = sandbox.vendor("slack-api", "GET", "channels")
    assert channel["name"] == "inc-20240601-0930-abc123-p0"
    assert [m["text"] for m in channel["messages"]] == ["first", "second"]
    calls = sandbox.vendor("slack-api", "GET", "calls")
    assert [(c["method"], c["error"]) for c in calls] == [
        ("conversations.create", None), ("conversations.create", "name_taken"), ("chat.postMessage", None),
        ("chat.postMessage", None)]


async def test_slacks_errors_come_back_with_their_code(sandbox):
    async with make_client(2) as client:
        with pytest.raises(SlackApiError) as bad_token:
            await api(sandbox, client, token="xoxb-revoked").create_channel("inc-x")
        with pytest.raises(SlackApiError) as bad_name:
            await api(sandbox, client).create_channel("Incident Channel")
        with pytest.raises(SlackApiError) as nowhere:
            await api(sandbox, client).post_message("C0NOSUCH", "hello")
    assert (bad_token.value.code, bad_name.value.code, nowhere.value.code) == (
        "invalid_auth", "invalid_name_specials", "channel_not_found")
    assert "xoxb-revoked" not in str(bad_token.value)
    assert sandbox.vendor("slack-api", "GET", "channels") == []


async def test_a_failure_set_on_the_workspace_reaches_every_call(sandbox):
    sandbox.vendor("slack-api", "POST", "config", {"fail": "account_inactive"})
    async with make_client(2) as client:
        with pytest.raises(SlackApiError) as err:
            await api(sandbox, client).create_channel("inc-y")
    assert err.value.code == "account_inactive"


async def test_a_short_retry_after_is_waited_out_and_a_long_one_is_reported(sandbox):
    sandbox.vendor("slack-api", "POST", "config", {"ratelimit": 1, "retry_after_s": 1})
    async with make_client(2) as client:
        started = time.monotonic()
        made = await api(sandbox, client).create_channel("inc-rate")
        waited = time.monotonic() - started
        assert made.created and waited >= 1
        sandbox.vendor("slack-api", "POST", "config", {"ratelimit": 1, "retry_after_s": 30})
        with pytest.raises(SlackApiError) as err:
            await api(sandbox, client, max_retry_wait_s=5).post_message(made.id or "", "hello")
    assert (err.value.code, err.value.retry_after_s) == ("ratelimited", 30)


async def test_an_unreachable_api_is_a_transport_error_within_the_deadline(sandbox):
    sandbox.fault("slack-api", "hang")
    async with make_client(2) as client:
        started = time.monotonic()
        with pytest.raises(SlackApiError) as err:
            await SlackApi(client, SecretStr("t"), sandbox.url("slack-api") + "/api", timeout_s=1).create_channel("x")
    assert err.value.code == "transport" and time.monotonic() - started < 3
