"""Queries for organizations, projects, tiers and API keys. Callers own the session and its commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.models import ApiKey, Organization, Project, Tier
from portico.storage.paging import Page, page


async def first_organization(session: AsyncSession) -> Organization | None:
    result = await session.execute(select(Organization).order_by(Organization.created_at, Organization.id).limit(1))
    return result.scalar_one_or_none()


async def get_organization(session: AsyncSession, organization_id: str) -> Organization | None:
    return await session.get(Organization, organization_id)


async def get_project(session: AsyncSession, organization_id: str, project: str) -> Project | None:
    """A project of the organization by id, or else by name."""
    query = select(Project).where(Project.organization_id == organization_id)
    by_id = (await session.execute(query.where(Project.id == project))).scalar_one_or_none()
    if by_id is not None:
        return by_id
    by_name = query.where(Project.name == project).order_by(Project.created_at).limit(1)
    return (await session.execute(by_name)).scalar_one_or_none()


async def list_projects(session: AsyncSession, organization_id: str, *, limit: int, after: str | None) -> Page[Project]:
    in_organization = Project.organization_id == organization_id
    query = select(Project).where(in_organization)
    key = [Project.created_at, Project.id]
    return await page(session, query, key=key, scope=in_organization, limit=limit, after=after)


async def get_key(session: AsyncSession, key_id: str) -> ApiKey | None:
    """The key with its project and tier (joined eagerly: the result is used after the session closes)."""
    return await session.get(ApiKey, key_id)


async def list_keys(
    session: AsyncSession, organization_id: str, *, project_id: str | None, limit: int, after: str | None
) -> Page[ApiKey]:
    in_organization = ApiKey.project_id.in_(select(Project.id).where(Project.organization_id == organization_id))
    query = select(ApiKey).where(in_organization)
    if project_id is not None:
        query = query.where(ApiKey.project_id == project_id)
    key = [ApiKey.created_at, ApiKey.id]
    return await page(session, query, key=key, scope=in_organization, limit=limit, after=after)


async def has_keys(session: AsyncSession) -> bool:
    result = await session.execute(select(ApiKey.id).limit(1))
    return result.first() is not None


async def touch_keys(session: AsyncSession, last_used: Mapping[str, int]) -> None:
    """Record when keys were last used: one UPDATE per key, batched by the caller every few seconds."""
    for key_id, at in last_used.items():
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))


async def get_tier(session: AsyncSession, organization_id: str, name: str) -> Tier | None:
    query = select(Tier).where(Tier.organization_id == organization_id, Tier.name == name)
    return (await session.execute(query)).scalar_one_or_none()


async def list_tiers(session: AsyncSession, organization_id: str) -> Sequence[Tier]:
    query = select(Tier).where(Tier.organization_id == organization_id).order_by(Tier.name)
    return (await session.execute(query)).scalars().all()


async def tier_in_use(session: AsyncSession, tier_id: str) -> bool:
    result = await session.execute(select(ApiKey.id).where(ApiKey.tier_id == tier_id).limit(1))
    return result.first() is not None
