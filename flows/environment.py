"""Which environment file a flow run reads: its parameter, or the deployment's job variable."""

from __future__ import annotations

import os

from runbook import settings as config

ENV_VAR = "TFOPS_ENV_FILE"


def env_path(env_file: str | None) -> str:
    path = env_file or os.environ.get(ENV_VAR)
    if not path:
        raise ValueError(f"no environment file: pass env_file, or set {ENV_VAR} (the deployment's job variable)")
    return path


def load_settings(env_file: str | None) -> config.Settings:
    return config.load(env_path(env_file))
