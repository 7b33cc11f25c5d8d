import pytest

from flows.environment import ENV_VAR, env_path


def test_the_parameter_wins_then_the_job_variable(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "/etc/tokenforge/production.toml")
    assert env_path("/tmp/staging.toml") == "/tmp/staging.toml"
    assert env_path(None) == "/etc/tokenforge/production.toml"


def test_no_environment_file_names_both_ways_to_give_one(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="pass env_file, or set TFOPS_ENV_FILE"):
        env_path(None)
