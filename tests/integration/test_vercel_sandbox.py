"""The Vercel client against the sandbox's Vercel double, and the frontend that serves its current deployment."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from pydantic import SecretStr

from runbook import settings as config
from runbook.clients.vercel import VercelClient, VercelConfig, VercelError, VercelRateLimited, previous_good
from sandbox.vendors import vercel as double

pytestmark = pytest.mark.sandbox


def vercel_config(sandbox, **over) -> VercelConfig:
    base = config.load(sandbox.env_file).vercel
    assert base is not None
    return base.model_copy(update=over)


def client_for(sandbox, token: str = double.SANDBOX_TOKEN, **over) -> tuple[httpx.AsyncClient, VercelClient]:
    http = httpx.AsyncClient(trust_env=False)
    return http, VercelClient(http, vercel_config(sandbox, **over), SecretStr(token))


async def test_lists_production_deployments_newest_first_and_reads_the_current_one(sandbox):
    http, vc = client_for(sandbox)
    async with http:
        deployments = await vc.list_production_deployments(limit=10)
        current = await vc.current_production()
        by_id = await vc.get_deployment(deployments[1].id)
        by_url = await vc.get_deployment(deployments[1].url or "")
    assert len(deployments) == 3
    assert [d.created_ms for d in deployments] == sorted((d.created_ms for d in deployments), reverse=True)
    assert all(d.ready and d.target == "production" for d in deployments)
    assert current.id == deployments[0].id
    assert by_id.id == by_url.id == deployments[1].id
    assert previous_good(deployments, current) == deployments[1]


async def test_pages_with_the_until_cursor(sandbox):
    http, vc = client_for(sandbox)
    async with http:
        first, cursor = await vc.list_page(limit=2)
        assert cursor is not None
        second, last = await vc.list_page(limit=2, until_ms=cursor)
    assert len(first) == 2 and len(second) == 1 and last is None
    assert {d.id for d in first}.isdisjoint(d.id for d in second)


async def test_a_bad_deploy_makes_the_frontend_fail_and_a_promote_fixes_it(sandbox):
    frontend = sandbox.url("frontend") + "/"
    before = sandbox.vendor("vercel", "GET", "deployments")["current"]
    added = sandbox.vendor("vercel", "POST", "deployments", {"bad": True, "promote": True})["added"]
    http, vc = client_for(sandbox)
    async with http:
        assert (await http.get(frontend)).status_code == 500
        assert (await vc.current_production()).id == added
        assert await vc.promote(before) == 201
        assert (await vc.current_production()).id == before
        page = await http.get(frontend)
    assert page.status_code == 200 and "TokenForge" in page.text
    assert [p["deployment"] for p in sandbox.vendor("vercel", "GET", "deployments")["promotions"]] == [before]


async def test_a_delayed_promote_is_accepted_and_lands_later(sandbox):
    sandbox.vendor("vercel", "POST", "config", {"promote_delay_s": 0.5})
    http, vc = client_for(sandbox)
    async with http:
        older = (await vc.list_production_deployments())[2]
        assert await vc.promote(older.id) == 202
        assert (await vc.current_production()).id != older.id
        await asyncio.sleep(0.7)
        assert (await vc.current_production()).id == older.id


async def test_errors_carry_vercels_envelope_and_never_the_token(sandbox):
    http, vc = client_for(sandbox, token="not-the-token")
    async with http:
        with pytest.raises(VercelError) as denied:
            await vc.list_production_deployments()
    assert denied.value.code == "forbidden" and denied.value.status == 403
    assert "not-the-token" not in str(denied.value)
    http, vc = client_for(sandbox)
    async with http:
        with pytest.raises(VercelError) as missing:
            await vc.get_deployment("dpl_doesnotexist")
        with pytest.raises(VercelError) as wrong_team:
            await VercelClient(http, vercel_config(sandbox, team_id="team_other"),
                               SecretStr(double.SANDBOX_TOKEN)).current_production()
    assert missing.value.code == "not_found" and "dpl_doesnotexist" in missing.value.message
    assert wrong_team.value.code == "forbidden"


async def test_a_short_rate_limit_is_waited_out_and_a_long_one_fails_with_its_reset(sandbox):
    sandbox.vendor("vercel", "POST", "config", {"rate_limited": 1})
    http, vc = client_for(sandbox)
    async with http:
        started = time.monotonic()
        assert len(await vc.list_production_deployments()) == 3  # waited ~2 s for the window
        assert time.monotonic() - started >= 1
    sandbox.vendor("vercel", "POST", "config", {"rate_limited": 1})
    http, vc = client_for(sandbox, max_rate_limit_wait_s=0)
    async with http:
        with pytest.raises(VercelRateLimited) as limited:
            await vc.list_production_deployments()
    assert limited.value.code == "rate_limited" and limited.value.status == 429
    assert limited.value.reset_epoch is not None and limited.value.reset_epoch > time.time() - 1


async def test_status_page_indicator_and_an_unreachable_vercel(sandbox):
    http, vc = client_for(sandbox)
    async with http:
        assert (await vc.status()).operational
        sandbox.vendor("vercel", "POST", "status", {"indicator": "major"})
        status = await vc.status()
        assert status.indicator == "major" and not status.operational
        sandbox.fault("vercel", "down")
        with pytest.raises(VercelError) as down:
            await vc.status()
    assert down.value.code == "unreachable"


async def test_a_hung_vercel_fails_within_the_deadline(sandbox):
    sandbox.fault("vercel", "hang")
    http, vc = client_for(sandbox, timeout_s=0.5)
    async with http:
        started = time.monotonic()
        with pytest.raises(VercelError) as hung:
            await vc.current_production()
    assert hung.value.code == "timeout" and time.monotonic() - started < 3
