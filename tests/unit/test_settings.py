from pathlib import Path

import pytest

from runbook import settings as config

REPO = Path(__file__).resolve().parents[2]


def minimal(**extra):
    data = {
        "environment": "test",
        "chains": {
            "bsc": {"kind": "evm", "symbol": "BNB", "chain_id": 56, "rpc_urls": ["http://a", "http://b"]},
        },
    }
    data.update(extra)
    return data


def problems(data) -> list[str]:
    with pytest.raises(config.ConfigError) as info:
        config.parse(data)
    return info.value.problems


def test_the_production_example_is_valid_and_carries_the_runbook_floors():
    s = config.load(REPO / "deployments" / "production.example.toml")
    assert s.wallet_floors == {"ethereum": 0.5, "bsc": 0.5, "solana": 1}
    assert [w.chain for w in s.wallets] == ["ethereum", "bsc", "solana"]
    assert all(config.floor_of(s, w) == s.wallet_floors[w.chain] for w in s.wallets)
    assert s.chains["ethereum"].rpc_urls[2] == "https://eth.llamarpc.com"


def test_a_bad_rpc_url_is_named_by_its_path():
    data = minimal()
    data["chains"]["bsc"]["rpc_urls"][1] = "ftp://b"
    assert problems(data) == ["chains.bsc.rpc_urls[1]: not an http(s) URL"]


def test_every_bad_field_is_reported_at_once():
    data = minimal(endpoints=[{"name": "Web", "component": "web", "url": "nope", "colour": "red"}])
    data["chains"]["bsc"]["rpc_urls"] = ["http://a", "b"]
    found = problems(data)
    assert "endpoints[0].url: not an http(s) URL" in found
    assert "endpoints[0].colour: unknown key" in found
    assert any(p.startswith("endpoints[0].name:") for p in found)
    assert any(p.startswith("endpoints[0].component:") for p in found)
    assert "chains.bsc.rpc_urls[1]: not an http(s) URL" in found


def test_unknown_top_level_key_is_an_error():
    assert problems(minimal(chainz={})) == ["chainz: unknown key"]


def test_a_secret_reference_needs_exactly_one_source():
    bad = minimal(notifications={"slack": {"webhook_url": {"env": "A", "file": "b"}}})
    assert problems(bad) == [
        "notifications.slack.webhook_url: a secret reference needs exactly one of env, file, prefect_secret"
    ]
    literal = minimal(notifications={"slack": {"webhook_url": "https://hooks.slack.com/services/x"}})
    assert problems(literal)[0].startswith("notifications.slack.webhook_url:")


def test_wallets_must_name_a_configured_chain_and_a_valid_address():
    assert problems(minimal(wallets=[{"chain": "eth", "address": "0x" + "1" * 40}])) == [
        "wallets[0].chain: unknown chain 'eth'"
    ]
    assert problems(minimal(wallets=[{"chain": "bsc", "address": "0x123"}])) == [
        "wallets[0].address: not an EVM address (0x + 40 hex digits)"
    ]


def test_chain_identity_is_required_per_kind():
    data = minimal()
    del data["chains"]["bsc"]["chain_id"]
    assert problems(data) == ["chains.bsc: an evm chain needs chain_id"]
    sol = minimal(chains={"solana": {"kind": "solana", "symbol": "SOL", "rpc_urls": ["http://s"]}})
    assert problems(sol) == ["chains.solana: a solana chain needs genesis_hash"]


def test_endpoint_names_are_unique_across_endpoints_and_rpcs():
    data = minimal(endpoints=[{"name": "bsc-rpc-1", "component": "api", "url": "http://x"}])
    assert problems(data) == ["chains.bsc: endpoint name 'bsc-rpc-1' is used twice"]


def test_load_names_the_file_when_it_is_not_toml(tmp_path):
    bad = tmp_path / "env.toml"
    bad.write_text("environment = \n")
    with pytest.raises(config.ConfigError) as info:
        config.load(bad)
    assert info.value.source == str(bad)
    assert info.value.problems[0].startswith("not valid TOML")


def test_load_sets_base_dir_for_relative_secret_files(tmp_path):
    f = tmp_path / "env.toml"
    f.write_text('environment = "x"\n')
    assert config.load(f).base_dir == tmp_path.resolve()
    assert problems({"environment": "x", "base_dir": "/"}) == ["base_dir: unknown key"]
