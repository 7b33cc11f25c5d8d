"""Circuit breakers kept in Prefect Variables, so every flow run on any worker sees the same one.

One Variable per API, `tfops-breaker-<env>-<api>`, holding the breaker's state, the last good
value of each guarded call and the queued calls as one JSON object. A Variable holds at most
5,000 characters: the guard keeps the record under that (few, small cached values: the CoinGecko
credit read is about 200 characters; anything that does not fit is left out and noted in the
record, never stored elsewhere).
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.variables import Variable

from runbook.clients.guarded import Guard, breaker_key
from runbook.settings import Settings


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tfops.breakers")


class PrefectVariableStore:
    """`BreakerStore` over Prefect Variables.

    `strict` stores raise when the Prefect API cannot be read or written: the rate-limit flow must
    not report a breaker it could not read. Lenient stores (for callers such as the checklists)
    log a warning and let the call through as if the breaker were closed: losing the breaker for
    one run costs less than losing the check."""

    def __init__(self, *, strict: bool = True) -> None:
        self.strict = strict

    async def load(self, key: str) -> Any:
        try:
            return await Variable.aget(key, default=None)
        except Exception as exc:
            if self.strict:
                raise
            _logger().warning("breaker %s not readable (%s); calling as if closed", key, type(exc).__name__)
            return None

    async def save(self, key: str, value: dict[str, Any]) -> None:
        try:
            await Variable.aset(key, value, overwrite=True)  # type: ignore[arg-type]
        except Exception as exc:
            if self.strict:
                raise
            _logger().warning("breaker %s not saved (%s)", key, type(exc).__name__)


def guard_for(settings: Settings, api: str, *, strict: bool = True) -> Guard | None:
    """The guard of `api` as `[breakers.apis.<api>]` configures it; None when it has no breaker."""
    section = getattr(settings, "breakers", None)
    if section is None or api not in section.apis:
        return None
    return Guard(PrefectVariableStore(strict=strict), breaker_key(settings.environment, api), api, section.apis[api],
                 max_cache=section.max_cache_entries, max_queue=section.max_queue)
