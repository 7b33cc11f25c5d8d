"""API Rate Limit Hit on a real Prefect server against the sandbox: the API Usage Review's CoinGecko
read opens the breaker run after run (kept in a Prefect Variable), later runs get the cached value
with its age, and the api-rate-limit flow tells users and the team, flags the provider, then
replays the queued read and withdraws the notice once CoinGecko answers again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.rate_limit import api_rate_limit_flow
from flows.reviews import api_usage_flow
from runbook.clients.guarded import breaker_key
from sandbox import stack
from sandbox.vendors import statuspage

pytestmark = [pytest.mark.sandbox]

VARIABLE = breaker_key("sandbox", "coingecko")
OPEN_S = 3.0
API_COMPONENT = next(c for c, name in statuspage.SANDBOX_COMPONENTS.items() if name == "API")


def forget_breaker() -> None:
    with get_client(sync_client=True) as client:
        for variable in client.read_variables():
            if variable.name.startswith("tfops-breaker-"):
                client.delete_variable_by_name(variable.name)


@pytest.fixture
def sb(prefect_api: str, sandbox: stack.Sandbox) -> Iterator[stack.Sandbox]:
    """No breaker stored, CoinGecko at its defaults, no incidents, nothing received."""
    forget_breaker()
    sandbox.vendor("statuspage", "DELETE", "incidents")
    yield sandbox
    forget_breaker()  # an open breaker must not leak into later tests of the session
    sandbox.vendor("statuspage", "DELETE", "incidents")


def env_file(sb: stack.Sandbox, tmp_path: Path) -> Path:
    """The sandbox's environment with a breaker that cools down in OPEN_S seconds."""
    kept, skipping = [], False
    for line in sb.env_file.read_text().splitlines(keepends=True):
        if line.startswith("["):
            skipping = line.startswith(("[breakers]", "[breakers."))
        if not skipping:
            kept.append(line)
    text = "".join(kept).replace('file = "secrets/', f'file = "{sb.dir}/secrets/')
    text += (f'\n[breakers]\nnotice_component_ids = ["{API_COMPONENT}"]\n'
             f'\n[breakers.apis.coingecko]\ntitle = "CoinGecko"\nfailures_to_open = 3\nwindow_s = 60\n'
             f'open_s = {OPEN_S}\nsuccesses_to_close = 2\n'
             f'limit_increase = "https://www.coingecko.com/en/api/pricing"\n')
    path = tmp_path / "environment.toml"
    path.write_text(text)
    return path


async def coingecko_line(env: Path) -> dict[str, Any]:
    report = await api_usage_flow(env_file=str(env), alert=False)
    return next(c for c in report["checks"] if c["name"] == "coingecko")


async def stored() -> dict[str, Any]:
    async with get_client() as client:
        variable = await client.read_variable_by_name(VARIABLE)
    assert variable is not None, f"no Prefect Variable {VARIABLE}"
    return dict(variable.value)  # type: ignore[arg-type]


async def rate_limit_run(env: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    state = await api_rate_limit_flow(env_file=str(env), return_state=True)
    assert state.is_completed(), state
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    return await state.aresult(), {str(a.type): a.data for a in found}


async def test_429s_open_the_breaker_across_runs_then_notice_flag_replay_and_close(sb, tmp_path):
    env = env_file(sb, tmp_path)
    sb.vendor("coingecko", "POST", "usage", {"used": 40_000, "limit": 100_000})
    assert (await coingecko_line(env))["status"] == "ok"  # closed: the review's result as ever

    sb.vendor("coingecko", "POST", "usage", {"throttle": True})
    for _ in range(3):  # three separate flow runs: each one sees the failures the others counted
        line = await coingecko_line(env)
        assert line["status"] == "unknown" and "rate limited (HTTP 429" in line["observed"]
    record = await stored()
    assert record["state"]["phase"] == "open" and record["state"]["trips"] == 1

    before = sb.stats()["coingecko"]
    line = await coingecko_line(env)
    assert sb.stats()["coingecko"] == before  # cache-only: no request sent
    assert line["status"] == "unknown"
    assert "circuit open (cache-only mode)" in line["observed"] and " s old" in line["observed"]
    assert "it said 40,000 of 100,000 credits used" in line["observed"]
    assert [q["op"] for q in (await stored())["queue"]] == ["coingecko.key-usage"]

    report, artifacts = await rate_limit_run(env)
    assert report["open"] == ["CoinGecko"]
    [api] = report["apis"]
    assert api["phase"] == "open" and api["queue_after"] == 1
    assert api["provider_flag"].startswith(
        "ACTION: contact CoinGecko for a higher rate limit: https://www.coingecko.com/en/api/pricing")
    incidents = sb.vendor("statuspage", "GET", "incidents")
    assert len(incidents) == 1
    assert incidents[0]["incident"]["components"] == {API_COMPONENT: "degraded_performance"}
    assert incidents[0]["incident"]["name"] == "Degraded service: CoinGecko data may be delayed"
    slack = sb.received("slack")
    assert len(slack) == 1 and "ACTION: contact CoinGecko" in slack[0]["text"]
    assert artifacts["markdown"].startswith("## API Rate Limit Hit: DEGRADED")
    assert "**Contact the API provider:**" in artifacts["markdown"]
    assert json.loads(artifacts["table"])[0]["breaker"] == "open"

    again, _ = await rate_limit_run(env)  # told once per open period
    assert [e["status"] for e in again["apis"][0]["effects"]] == ["already"]
    assert len(sb.vendor("statuspage", "GET", "incidents")) == 1 and len(sb.received("slack")) == 1

    sb.vendor("coingecko", "POST", "usage", {"throttle": False, "used": 41_000})
    await asyncio.sleep(max(0.0, (await stored())["state"]["open_until"] - time.time()) + 0.2)
    closed, artifacts = await rate_limit_run(env)
    [api] = closed["apis"]
    assert api["phase"] == "closed" and closed["open"] == []
    assert [(r["op"], r["outcome"]) for r in api["replayed"]] == [("coingecko.key-usage", "done")]
    assert api["probes"] == ["coingecko.key-usage: HTTP 200, breaker now closed"]
    assert {e["name"]: e["status"] for e in api["effects"]} == {"status page": "done", "slack": "done"}
    resolved = sb.vendor("statuspage", "GET", "incidents")[-1]
    assert resolved["action"] == "update" and resolved["incident"]["status"] == "resolved"
    assert "answers normally again" in sb.received("slack")[-1]["text"]
    record = await stored()
    assert record["state"]["phase"] == "closed" and record["queue"] == [] and record["announced_open_at"] is None
    assert record["cache"]["coingecko.key-usage"]["value"]["used"] == 41_000  # refreshed by the replay
    assert artifacts["markdown"].startswith("## API Rate Limit Hit: NORMAL")

    line = await coingecko_line(env)
    assert line["status"] == "ok" and "41,000" in line["observed"]


async def test_a_missing_breakers_section_is_named(sb, tmp_path):
    env = tmp_path / "environment.toml"
    env.write_text(env_file(sb, tmp_path).read_text().split("\n[breakers]")[0])
    state = await api_rate_limit_flow(env_file=str(env), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"breakers: no \[breakers\] section"):
        await state.aresult()
