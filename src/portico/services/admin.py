"""Organizations, projects, tiers and API keys: what the admin API and ``portico keys`` do.

Every call is scoped to one organization: another organization's project, key or tier is "not found".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from portico.auth.authenticator import Authenticator
from portico.auth.keys import KeyParts, hash_secret, new_key
from portico.auth.principal import LIMIT_FIELDS
from portico.constants import PREFIX_ORGANIZATION, PREFIX_PROJECT, PREFIX_TIER, Scope, new_id
from portico.errors import Conflict, InvalidRequest, NotFound
from portico.safety.policy import ContentPolicy
from portico.settings import TierSettings
from portico.storage import control
from portico.storage.database import Database
from portico.storage.models import ApiKey, Organization, Project, Tier
from portico.storage.paging import Page

logger = logging.getLogger("portico.admin")

DEFAULT_NAME = "default"
DEFAULT_ORGANIZATION_ID = f"{PREFIX_ORGANIZATION}default"
MAX_GRACE_S = 30 * 86400


@dataclass(frozen=True, slots=True)
class CreatedKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


def _default_project_id(organization_id: str) -> str:
    """Each organization's `default` project has a derived id, so concurrent bootstraps cannot make two."""
    return PREFIX_PROJECT + organization_id.removeprefix(PREFIX_ORGANIZATION) + "_default"


def _check_scopes(scopes: Sequence[str]) -> list[str]:
    known = {scope.value for scope in Scope}
    unknown = sorted(set(scopes) - known)
    if unknown:
        raise InvalidRequest(
            f"Unknown scope(s): {', '.join(unknown)}. Scopes are: {', '.join(sorted(known))}.", param="scopes"
        )
    return sorted(set(scopes))


def _check_limits(limits: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(limits) - set(LIMIT_FIELDS))
    if unknown:
        raise InvalidRequest(
            f"Unknown limit(s): {', '.join(unknown)}. Limits are: {', '.join(LIMIT_FIELDS)}.", param="limits"
        )
    return limits


def _tier_columns(tier: TierSettings) -> dict[str, Any]:
    """The tier's fields as its row's columns: not ``model_dump``, the policy's column takes a ``ContentPolicy``."""
    return dict(tier)


async def _project_or_404(session: AsyncSession, organization_id: str, project: str) -> Project:
    found = await control.get_project(session, organization_id, project)
    if found is None:
        raise NotFound(f"No project '{project}' in this organization.", param="project")
    return found


async def _tier_or_404(session: AsyncSession, organization_id: str, name: str) -> Tier:
    found = await control.get_tier(session, organization_id, name)
    if found is None:
        raise NotFound(f"No tier '{name}'. GET /v1/admin/tiers lists the tiers.", param="tier")
    return found


async def _key_or_404(session: AsyncSession, organization_id: str, key_id: str) -> ApiKey:
    key = await control.get_key(session, key_id)
    if key is None or key.project.organization_id != organization_id:
        raise NotFound(f"No API key '{key_id}' in this organization.", param="key_id")
    return key


class AdminService:
    def __init__(
        self,
        database: Database,
        server_secret: bytes,
        tiers: Sequence[TierSettings],
        authenticator: Authenticator | None,
    ) -> None:
        self._database = database
        self._server_secret = server_secret
        self._default_tiers = tiers
        self._authenticator = authenticator

    # -- organizations ----------------------------------------------------------------------------------
    async def create_organization(self, name: str, *, organization_id: str | None = None) -> Organization:
        """A new organization with a `default` project and the configured tiers."""
        now = int(time.time())
        organization_id = organization_id or new_id(PREFIX_ORGANIZATION)
        organization = Organization(id=organization_id, name=name, created_at=now)
        async with self._database.session() as session:
            session.add(organization)
            await session.flush()  # the organization row first: the project and tiers refer to it
            session.add(
                Project(
                    id=_default_project_id(organization_id),
                    organization_id=organization_id,
                    name=DEFAULT_NAME,
                    created_at=now,
                )
            )
            for tier in self._default_tiers:
                session.add(
                    Tier(id=new_id(PREFIX_TIER), organization_id=organization_id, created_at=now, **_tier_columns(tier))
                )
            await session.commit()
        return organization

    async def default_organization(self) -> Organization:
        """The first organization; on a fresh database it is created (by one process, if several start)."""
        async with self._database.session() as session:
            organization = await control.first_organization(session)
        if organization is not None:
            return organization
        try:
            return await self.create_organization(DEFAULT_NAME, organization_id=DEFAULT_ORGANIZATION_ID)
        except IntegrityError:  # another process created it at the same moment
            async with self._database.session() as session:
                organization = await control.get_organization(session, DEFAULT_ORGANIZATION_ID)
            assert organization is not None
            return organization

    async def ensure_key(self, organization_id: str, parts: KeyParts, *, tier: str) -> None:
        """Make ``parts`` a working key with every scope (the bootstrap admin key), if it is not one yet."""
        async with self._database.session() as session:
            existing = await control.get_key(session, parts.key_id)
        if existing is not None:
            if existing.secret_hash != hash_secret(self._server_secret, parts.secret):
                raise InvalidRequest(f"PORTICO_ADMIN_KEY names the existing key {parts.key_id} with another secret.")
            return
        with contextlib.suppress(IntegrityError):  # another process made it at the same moment
            await self.create_key(
                organization_id,
                project=_default_project_id(organization_id),
                name="admin (PORTICO_ADMIN_KEY)",
                scopes=list(Scope),
                tier=tier,
                parts=parts,
            )

    async def has_keys(self) -> bool:
        async with self._database.session() as session:
            return await control.has_keys(session)

    # -- projects ---------------------------------------------------------------------------------------
    async def create_project(self, organization_id: str, name: str) -> Project:
        now = int(time.time())
        project = Project(id=new_id(PREFIX_PROJECT), organization_id=organization_id, name=name, created_at=now)
        async with self._database.session() as session:
            session.add(project)
            await session.commit()
        return project

    async def get_project(self, organization_id: str, project: str) -> Project:
        """By id or name; 404 for another organization's."""
        async with self._database.session() as session:
            return await _project_or_404(session, organization_id, project)

    async def list_projects(self, organization_id: str, *, limit: int, after: str | None) -> Page[Project]:
        async with self._database.session() as session:
            return await control.list_projects(session, organization_id, limit=limit, after=after)

    async def archive_project(self, organization_id: str, project: str) -> Project:
        """Archive a project: its keys stop working (401 revoked_api_key) on every process within a second."""
        async with self._database.session() as session:
            found = await _project_or_404(session, organization_id, project)
            found.archived_at = found.archived_at or int(time.time())
            await session.commit()
        return found

    async def set_content_policy(self, organization_id: str, project: str, policy: ContentPolicy | None) -> Project:
        """Set the project's own content policy, or clear it (``None``: its keys follow their tiers' default);
        its keys follow on every process within a second."""
        async with self._database.session() as session:
            found = await _project_or_404(session, organization_id, project)
            found.content_policy = policy
            await session.commit()
        return found

    # -- tiers ------------------------------------------------------------------------------------------
    async def put_tier(self, organization_id: str, tier: TierSettings) -> Tier:
        """Create the tier, or replace its limits and default policy (keys on it follow within a second)."""
        async with self._database.session() as session:
            found = await control.get_tier(session, organization_id, tier.name)
            if found is None:
                found = Tier(id=new_id(PREFIX_TIER), organization_id=organization_id, created_at=int(time.time()))
                session.add(found)
            for name, value in _tier_columns(tier).items():
                setattr(found, name, value)
            await session.commit()
        return found

    async def get_tier(self, organization_id: str, name: str) -> Tier:
        async with self._database.session() as session:
            return await _tier_or_404(session, organization_id, name)

    async def list_tiers(self, organization_id: str) -> Sequence[Tier]:
        async with self._database.session() as session:
            return await control.list_tiers(session, organization_id)

    async def delete_tier(self, organization_id: str, name: str) -> None:
        async with self._database.session() as session:
            found = await _tier_or_404(session, organization_id, name)
            if await control.tier_in_use(session, found.id):
                raise Conflict(f"Tier '{name}' is used by API keys; move them to another tier first.")
            await session.delete(found)
            await session.commit()

    # -- keys -------------------------------------------------------------------------------------------
    async def create_key(
        self,
        organization_id: str,
        *,
        project: str,
        name: str,
        scopes: Sequence[str],
        tier: str,
        limits: dict[str, Any] | None = None,
        expires_at: int | None = None,
        parts: KeyParts | None = None,
    ) -> CreatedKey:
        """A new key; ``parts`` makes it a given key (the bootstrap admin key from PORTICO_ADMIN_KEY)."""
        parts = parts or new_key()
        async with self._database.session() as session:
            found_project = await control.get_project(session, organization_id, project)
            if found_project is None or found_project.archived_at is not None:
                raise NotFound(f"No active project '{project}' in this organization.", param="project")
            found_tier = await _tier_or_404(session, organization_id, tier)
            key = ApiKey(
                id=parts.key_id,
                project_id=found_project.id,
                tier_id=found_tier.id,
                name=name,
                secret_hash=hash_secret(self._server_secret, parts.secret),
                scopes=_check_scopes(scopes),
                limits=_check_limits(limits or {}),
                created_at=int(time.time()),
                expires_at=expires_at,
            )
            session.add(key)
            await session.commit()
            key = await self._reload(session, key.id)
        return CreatedKey(key, parts.plaintext)

    async def get_key(self, organization_id: str, key_id: str) -> ApiKey:
        async with self._database.session() as session:
            return await _key_or_404(session, organization_id, key_id)

    async def list_keys(
        self, organization_id: str, *, project_id: str | None, limit: int, after: str | None
    ) -> Page[ApiKey]:
        async with self._database.session() as session:
            return await control.list_keys(session, organization_id, project_id=project_id, limit=limit, after=after)

    async def rotate_key(self, organization_id: str, key_id: str, *, grace_period_s: int) -> CreatedKey:
        """A new secret for the key; the old one keeps working for ``grace_period_s`` (0: stops at once)."""
        if not 0 <= grace_period_s <= MAX_GRACE_S:
            raise InvalidRequest(f"grace_period_s must be between 0 and {MAX_GRACE_S}.", param="grace_period_s")
        parts = new_key(key_id)
        async with self._database.session() as session:
            key = await _key_or_404(session, organization_id, key_id)
            if key.revoked_at is not None:
                raise Conflict("This key is revoked; create a new key instead of rotating it.")
            key.previous_secret_hash = key.secret_hash if grace_period_s else None
            key.previous_valid_until = int(time.time()) + grace_period_s if grace_period_s else None
            key.secret_hash = hash_secret(self._server_secret, parts.secret)
            await session.commit()
            key = await self._reload(session, key_id)
        self._forget(key_id)
        return CreatedKey(key, parts.plaintext)

    async def revoke_key(self, organization_id: str, key_id: str) -> ApiKey:
        async with self._database.session() as session:
            key = await _key_or_404(session, organization_id, key_id)
            key.revoked_at = key.revoked_at or int(time.time())
            await session.commit()
            key = await self._reload(session, key_id)
        self._forget(key_id)
        return key

    async def _reload(self, session: AsyncSession, key_id: str) -> ApiKey:
        """The key as stored, with its project and tier loaded for use after the session closes."""
        key = await control.get_key(session, key_id)
        assert key is not None
        await session.refresh(key, attribute_names=["project", "tier"])
        return key

    def _forget(self, key_id: str) -> None:
        if self._authenticator is not None:
            self._authenticator.forget(key_id)
