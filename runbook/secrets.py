"""Resolve secret references into SecretStr at the edge; nothing else ever holds a secret value."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import SecretStr

from runbook.config_types import SecretRef


class SecretError(Exception):
    """A secret reference that cannot be resolved. The message names the reference, never a value."""


BlockReader = Callable[[str], str]


class SecretResolver:
    """Reads env and file references itself; Prefect Secret blocks through an injected reader,
    because this layer never imports Prefect."""

    def __init__(
        self,
        base_dir: Path,
        environ: Mapping[str, str] | None = None,
        block_reader: BlockReader | None = None,
    ) -> None:
        self._base_dir = base_dir
        self._environ = os.environ if environ is None else environ
        self._block_reader = block_reader
        self._cache: dict[SecretRef, SecretStr] = {}

    def resolve(self, ref: SecretRef) -> SecretStr:
        if ref not in self._cache:
            self._cache[ref] = SecretStr(self._read(ref))
        return self._cache[ref]

    def _read(self, ref: SecretRef) -> str:
        if ref.env is not None:
            value = self._environ.get(ref.env)
            if not value:
                raise SecretError(f"secret {ref.describe()}: environment variable is not set")
            return value
        if ref.file is not None:
            path = Path(ref.file)
            path = path if path.is_absolute() else self._base_dir / path
            try:
                value = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SecretError(f"secret {ref.describe()}: {exc.strerror or 'unreadable'}") from None
            if not value:
                raise SecretError(f"secret {ref.describe()}: the file is empty")
            return value
        assert ref.prefect_secret is not None
        if self._block_reader is None:
            raise SecretError(f"secret {ref.describe()}: no Prefect Secret reader in this context")
        try:
            return self._block_reader(ref.prefect_secret)
        except Exception as exc:  # noqa: BLE001 - the reader's own errors may quote the block
            raise SecretError(f"secret {ref.describe()}: cannot be read ({type(exc).__name__})") from None

    def values(self) -> list[str]:
        """Every secret value resolved so far, for scrubbing text that leaves the process."""
        return [s.get_secret_value() for s in self._cache.values()]


def scrub(text: str, secrets: list[str]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    return text
