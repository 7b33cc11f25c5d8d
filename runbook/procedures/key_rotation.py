"""Monthly Maintenance 3, Security Audit: "Rotate API keys".

For each configured service the live key sits in a Prefect Secret block. A rotation:

1. inspect: read the live key from the block and ask the provider which token it is (its id, its
   age). A key younger than `min_key_age_days` is not rotated, so a re-run in the same month does
   nothing twice. Tokens left by an interrupted rotation (named with this service's prefix, not the
   live one) are revoked first.
2. issue: create the new key with the admin credential, write it into the block and read the block
   back. Both effects are undone together if anything later in the rotation fails.
3. verify: the key read back from the block authenticates, and is the token just created.
4. revoke the old key, and read back that the provider no longer has it.

Steps 2-3 are one transaction (the flow's Prefect transaction; this module's `undo_issue` is the
rollback): on failure the block gets the old value back and the new key is revoked. Step 4 comes
after the commit and is never rolled back: a revoke that failed may still have taken effect (a
timeout after the provider acted), so putting the old key back could leave the service with a dead
key, while the new one is stored and verified. A failed revoke is reported as "old key still
active: revoke it by hand" instead.

Keys are never logged or reported: only token ids and the last four characters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import httpx
from pydantic import Field, SecretStr, field_validator

from runbook.checks import CheckResult, Status
from runbook.clients.vercel_tokens import CreatedToken, NotAuthenticated, TokenApiError, TokenMeta, VercelTokens
from runbook.config_types import HttpUrl, Name, SecretRef, Severity, Strict
from runbook.procedures.access_review import AccessReview

ITEM = "Security Audit"
GROUP = "security-audit"
DAY_MS = 86_400_000


class RotatedService(Strict):
    name: Name
    provider: Literal["vercel"]
    api_url: HttpUrl
    admin_token: SecretRef = Field(description="the credential that creates, lists and revokes keys")
    secret_block: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$",
                              description="the Prefect Secret block holding the live key")
    team_id: str | None = Field(default=None, description="Vercel teamId, when the tokens belong to a team")
    expires_days: Annotated[int, Field(ge=1, le=3650)] | None = Field(
        default=None, description="new keys expire after this many days (default: no expiry)")


class SecurityAudit(Strict):
    services: list[RotatedService] = Field(default_factory=list)
    min_key_age_days: Annotated[float, Field(ge=0, le=3650)] = Field(
        default=25, description="a live key younger than this is not rotated (a re-run in the same month)")
    token_prefix: str = Field(default="tfops-rotation-", pattern=r"^[A-Za-z0-9_.-]{3,40}$",
                              description="names of the keys this flow creates start with it; reserved")
    verify_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    verify_delay_s: Annotated[float, Field(ge=0, le=60)] = 2
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10
    severity: Severity = Severity.P2
    access_review: AccessReview | None = None

    @field_validator("services")
    @classmethod
    def _unique(cls, services: list[RotatedService]) -> list[RotatedService]:
        seen: set[str] = set()
        for s in services:
            if s.name in seen:
                raise ValueError(f"service name {s.name!r} is used twice")
            if s.secret_block in {o.secret_block for o in services if o.name != s.name}:
                raise ValueError(f"secret_block {s.secret_block!r} is used by two services")
            seen.add(s.name)
        return services

    def service(self, name: str) -> RotatedService:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(f"no service {name!r} in security_audit.services ({', '.join(self.names())})")

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def secret_refs(self) -> list[SecretRef]:
        refs = [s.admin_token for s in self.services]
        if self.access_review and self.access_review.convex_deploy_key:
            refs.append(self.access_review.convex_deploy_key)
        return refs


# ---- ports: what a step needs from the outside ---------------------------------------------------

class KeyProvider(Protocol):
    async def create(self, admin: SecretStr, name: str, expires_at_ms: int | None = None) -> CreatedToken: ...
    async def whoami(self, token: SecretStr) -> TokenMeta: ...
    async def get(self, admin: SecretStr, token_id: str) -> TokenMeta | None: ...
    async def delete(self, admin: SecretStr, token_id: str) -> bool: ...
    async def list(self, admin: SecretStr) -> list[TokenMeta]: ...


class SecretStore(Protocol):
    """The secret store (a Prefect Secret block in production); None when the block does not exist."""

    async def read(self, name: str) -> SecretStr | None: ...
    async def write(self, name: str, value: SecretStr) -> None: ...


def make_provider(svc: RotatedService, client: httpx.AsyncClient, timeout_s: float) -> KeyProvider:
    """The client of the service's provider kind (one per kind; a new kind adds a branch here)."""
    if svc.provider == "vercel":
        return VercelTokens(client, svc.api_url, timeout_s, svc.team_id)
    raise ValueError(f"security_audit.services.{svc.name}.provider: unknown provider {svc.provider!r}")


class RotationFailed(Exception):
    """A step did not complete; the message says what was done and undone (no key in it)."""


# ---- small pure helpers -------------------------------------------------------------------------

def last4(value: SecretStr | str) -> str:
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    return "..." + raw[-4:] if len(raw) >= 12 else "...(short)"


def key_label(token_id: str | None, tail: str) -> str:
    return f"{token_id or 'unknown id'} ({tail})"


def token_name(prefix: str, service: str, now: datetime) -> str:
    return f"{prefix}{service}-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


def age_days(created_ms: int | None, now: datetime) -> float | None:
    return None if created_ms is None else (now.timestamp() * 1000 - created_ms) / DAY_MS


def leftovers(tokens: Sequence[TokenMeta], prefix: str, service: str, keep: set[str]) -> list[TokenMeta]:
    """Keys an interrupted rotation of `service` created and never finished with."""
    mine = f"{prefix}{service}-"
    return [t for t in tokens if t.name.startswith(mine) and t.id not in keep]


# ---- the steps ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveKey:
    service: str
    block: str
    id: str | None = None  # None: the stored key does not authenticate (nothing to revoke later)
    tail: str = ""
    created_ms: int | None = None
    problem: str | None = None  # the block cannot be read: nothing can be rotated

    @property
    def label(self) -> str:
        return key_label(self.id, self.tail)


async def inspect_live(provider: KeyProvider, store: SecretStore, svc: RotatedService) -> LiveKey:
    try:
        value = await store.read(svc.secret_block)
    except Exception as exc:  # noqa: BLE001 - the store's own errors; no value in them
        return LiveKey(svc.name, svc.secret_block, problem=f"Secret block {svc.secret_block!r} not readable "
                                                          f"({type(exc).__name__})")
    if value is None:
        return LiveKey(svc.name, svc.secret_block,
                       problem=f"Secret block {svc.secret_block!r} does not exist; create it with the live key")
    try:
        meta = await provider.whoami(value)
    except NotAuthenticated:
        return LiveKey(svc.name, svc.secret_block, None, last4(value))
    except TokenApiError as exc:
        return LiveKey(svc.name, svc.secret_block, None, last4(value), problem=f"provider not reachable: {exc}")
    return LiveKey(svc.name, svc.secret_block, meta.id, last4(value), meta.created_at_ms)


@dataclass(frozen=True)
class IssuedKey:
    id: str
    tail: str
    name: str

    @property
    def label(self) -> str:
        return key_label(self.id, self.tail)


async def undo_issue(provider: KeyProvider, store: SecretStore, svc: RotatedService, admin: SecretStr,
                     new_id: str | None, previous: SecretStr | None, block_written: bool) -> list[str]:
    """The rollback of `issue`: the old value back in the block, the new key revoked. Never raises;
    returns what it did and what it could not do."""
    notes: list[str] = []
    if block_written and previous is not None:
        try:
            await store.write(svc.secret_block, previous)
            back = await store.read(svc.secret_block)
            ok = back is not None and back.get_secret_value() == previous.get_secret_value()
            notes.append(f"Secret block {svc.secret_block!r} restored to the old key ({last4(previous)})" if ok
                         else f"Secret block {svc.secret_block!r} NOT restored: reading it back gave another value")
        except Exception as exc:  # noqa: BLE001 - report and go on to revoke the new key
            notes.append(f"Secret block {svc.secret_block!r} NOT restored ({type(exc).__name__})")
    if new_id is not None:
        try:
            await provider.delete(admin, new_id)
            gone = await provider.get(admin, new_id) is None
            notes.append(f"new key {new_id} revoked" if gone else f"new key {new_id} NOT revoked: it still exists")
        except TokenApiError as exc:
            notes.append(f"new key {new_id} NOT revoked ({exc})")
    return notes


@dataclass
class Issue:
    """What `issue` did, kept by the caller for the rollback; `previous` is the old key's value."""

    key: IssuedKey | None = None
    previous: SecretStr | None = None
    block_written: bool = False


async def issue(provider: KeyProvider, store: SecretStore, svc: RotatedService, admin: SecretStr,
                prefix: str, now: datetime, done: Issue) -> IssuedKey:
    """Create the new key and store it in the block, read back. `done` is filled as effects happen,
    so that whoever rolls back knows what to undo. On failure this undoes its own effects (a step
    that fails is not part of the transaction's rollback) and raises RotationFailed."""
    done.previous = await store.read(svc.secret_block)
    if done.previous is None:
        raise RotationFailed(f"Secret block {svc.secret_block!r} does not exist")
    expires = int(now.timestamp() * 1000) + svc.expires_days * DAY_MS if svc.expires_days else None
    try:
        created = await provider.create(admin, token_name(prefix, svc.name, now), expires)
    except TokenApiError as exc:
        raise RotationFailed(f"new key not created: {exc}") from None
    done.key = IssuedKey(created.meta.id, last4(created.value), created.meta.name)
    try:
        await store.write(svc.secret_block, created.value)
        done.block_written = True
        back = await store.read(svc.secret_block)
        if back is None or back.get_secret_value() != created.value.get_secret_value():
            raise RotationFailed("reading the block back did not give the new key")
    except Exception as exc:  # noqa: BLE001 - whatever the store raised, undo and say so
        why = str(exc) if isinstance(exc, RotationFailed) else type(exc).__name__
        notes = await undo_issue(provider, store, svc, admin, done.key.id, done.previous, True)
        raise RotationFailed(f"new key {done.key.label} not stored in {svc.secret_block!r} ({why}); "
                             + "; ".join(notes)) from None
    return done.key


async def verify(provider: KeyProvider, store: SecretStore, svc: RotatedService, expected: IssuedKey,
                 attempts: int, delay_s: float) -> str:
    """The key now in the block authenticates and is the new one; RotationFailed otherwise."""
    value = await store.read(svc.secret_block)
    if value is None:
        raise RotationFailed(f"Secret block {svc.secret_block!r} is gone")
    why = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay_s)  # a new token may take a moment to be accepted everywhere
        try:
            meta = await provider.whoami(value)
        except TokenApiError as exc:
            why = str(exc)
            continue
        if meta.id != expected.id:
            raise RotationFailed(f"the stored key authenticates as {meta.id}, not as the new key {expected.id}")
        return f"the key in {svc.secret_block!r} authenticates as {meta.id} ({last4(value)})"
    raise RotationFailed(f"new key {expected.label} does not work: {why} (after {attempts} attempts)")


@dataclass(frozen=True)
class Revocation:
    done: bool
    detail: str


async def revoke_old(provider: KeyProvider, admin: SecretStr, old: LiveKey) -> Revocation:
    """Revoke the key that was live before, and read back that the provider no longer has it."""
    if old.id is None:
        return Revocation(True, f"nothing to revoke: the old key ({old.tail}) no longer authenticated")
    why = ""
    try:
        await provider.delete(admin, old.id)
    except TokenApiError as exc:
        why = str(exc)
    try:
        still = await provider.get(admin, old.id)
    except TokenApiError as exc:
        return Revocation(False, f"old key {old.label}: revoke {why or 'sent'}; could not read back ({exc}); "
                                 "check it and revoke it by hand")
    if still is None:
        return Revocation(True, f"old key {old.label} revoked (read back: gone)"
                          + (f"; the revoke call itself reported {why}" if why else ""))
    return Revocation(False, f"old key {old.label} is STILL ACTIVE ({why or 'the provider still lists it'}); "
                             "the new key is stored and verified: revoke the old one by hand")


@dataclass(frozen=True)
class AfterRollback:
    """What a read-back found after a rollback."""

    block_holds: str  # "the old key", "another key", "unknown: ..."
    stray: list[str]  # ids of keys this flow created that are still active

    @property
    def clean(self) -> bool:
        return self.block_holds == "the old key" and not self.stray


async def read_back_rollback(provider: KeyProvider, store: SecretStore, svc: RotatedService, admin: SecretStr,
                             old: LiveKey, prefix: str) -> AfterRollback:
    try:
        value = await store.read(svc.secret_block)
    except Exception as exc:  # noqa: BLE001
        holds = f"unknown: block not readable ({type(exc).__name__})"
    else:
        if value is None:
            holds = "unknown: the block is gone"
        elif old.id is None:
            holds = "the old key" if last4(value) == old.tail else "another key"
        else:
            try:
                holds = "the old key" if (await provider.whoami(value)).id == old.id else "another key"
            except NotAuthenticated:
                holds = "another key (it does not authenticate)"
            except TokenApiError as exc:
                holds = f"unknown: {exc}"
    try:
        stray = [t.id for t in leftovers(await provider.list(admin), prefix, svc.name, {old.id or ""})]
    except TokenApiError as exc:
        stray = [f"unknown ({exc})"]
    return AfterRollback(holds, stray)


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class Rotation:
    service: str
    block: str
    outcome: Literal["rotated", "rotated, old key still active", "not due", "planned", "rolled back",
                     "rolled back, needs a person", "not rotated"]
    old: str = ""
    new: str = ""
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, ok|failed|skipped|done, detail)

    def step(self, name: str, status: str, detail: str) -> None:
        self.steps.append((name, status, detail))

    def check(self, severity: Severity) -> CheckResult:
        status = {"rotated": Status.ok, "not due": Status.ok, "planned": Status.ok,
                  "rotated, old key still active": Status.fail, "rolled back": Status.fail,
                  "rolled back, needs a person": Status.fail, "not rotated": Status.fail}[self.outcome]
        if self.outcome == "not rotated" and any("provider not reachable" in d for _, _, d in self.steps):
            status = Status.unknown
        detail = "; ".join(f"{s}: {st}, {d}" for s, st, d in self.steps)
        observed = f"{self.outcome}: " + (self.steps[-1][2] if self.steps else "nothing done")
        sev = Severity.P1 if self.outcome.endswith("needs a person") else severity
        return CheckResult(f"security:rotate:{self.service}", ITEM, status, observed,
                           "new key created, stored, verified; old key revoked", detail=detail,
                           severity=sev.value, target=f"{self.service} API key", group=GROUP)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "secret_block": self.block, "outcome": self.outcome, "old_key": self.old,
                "new_key": self.new, "steps": [{"step": s, "status": st, "detail": d} for s, st, d in self.steps]}


def rotations_markdown(rotations: Sequence[Rotation]) -> str:
    lines: list[str] = []
    for r in rotations:
        lines += [f"#### {r.service} (Secret block `{r.block}`): {r.outcome}", "",
                  "| Step | Status | Detail |", "|---|---|---|"]
        lines += [f"| {s} | {st} | {d.replace('|', '/')} |" for s, st, d in r.steps]
        lines.append("")
    return "\n".join(lines) or "No services configured for key rotation.\n"
