import pytest

from runbook.secrets import SecretError, SecretResolver, scrub
from runbook.settings import SecretRef


def test_env_file_and_block_references_resolve(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "hook").write_text("https://hooks.example/abc\n")
    r = SecretResolver(tmp_path, environ={"TOKEN": "t0k"}, block_reader=lambda name: f"block:{name}")
    assert r.resolve(SecretRef(env="TOKEN")).get_secret_value() == "t0k"
    assert r.resolve(SecretRef(file="secrets/hook")).get_secret_value() == "https://hooks.example/abc"
    assert r.resolve(SecretRef(prefect_secret="pd-key")).get_secret_value() == "block:pd-key"
    assert sorted(r.values()) == ["block:pd-key", "https://hooks.example/abc", "t0k"]


def test_errors_name_the_reference_never_a_value(tmp_path):
    r = SecretResolver(tmp_path, environ={})
    with pytest.raises(SecretError, match="env:MISSING: environment variable is not set"):
        r.resolve(SecretRef(env="MISSING"))
    with pytest.raises(SecretError, match="file:nope"):
        r.resolve(SecretRef(file="nope"))
    with pytest.raises(SecretError, match="no Prefect Secret reader"):
        r.resolve(SecretRef(prefect_secret="x"))


def test_a_resolved_secret_does_not_show_in_its_repr(tmp_path):
    r = SecretResolver(tmp_path, environ={"TOKEN": "canary-value-123"})
    value = r.resolve(SecretRef(env="TOKEN"))
    assert "canary-value-123" not in repr(value) and "canary-value-123" not in str(value)
    assert scrub("url canary-value-123 here", r.values()) == "url *** here"
