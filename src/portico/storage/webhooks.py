"""Queries of the webhook outbox and of the projects' signing secrets. Callers own the session and its commit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.resources import ProjectSecret, WebhookDelivery


async def project_secret(session: AsyncSession, project_id: str, candidate: str, now: int) -> str:
    """The project's webhook secret; ``candidate`` becomes it if it has none yet (the first writer wins)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(ProjectSecret)
        .values(project_id=project_id, webhook_secret=candidate, created_at=now)
        .on_conflict_do_nothing(index_elements=["project_id"])
    )
    await session.execute(statement)
    query = select(ProjectSecret.webhook_secret).where(ProjectSecret.project_id == project_id)
    return str((await session.execute(query)).scalar_one())


async def due_deliveries(session: AsyncSession, now: float, limit: int) -> Sequence[WebhookDelivery]:
    """Undelivered messages whose next attempt is due, oldest first; rows other senders hold are skipped."""
    query = (
        select(WebhookDelivery)
        .where(
            WebhookDelivery.delivered_at.is_(None),
            WebhookDelivery.failed_at.is_(None),
            WebhookDelivery.next_attempt_at <= now,
        )
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (await session.scalars(query)).all()


async def hold_delivery(session: AsyncSession, delivery: WebhookDelivery, until: float) -> bool:
    """Take a due delivery for one attempt (compare-and-set on its due time): no other sender sends it until
    ``until``, by when this attempt has ended (or its sender died, and it is due again)."""
    query = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.next_attempt_at == delivery.next_attempt_at)
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], await session.execute(query)).rowcount == 1


async def record_attempt(session: AsyncSession, delivery_id: str, values: dict[str, Any]) -> None:
    query = (
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.execute(query)


async def purge_deliveries(session: AsyncSession, before: int) -> None:
    """Forget deliveries that ended (delivered or given up) before ``before``."""
    ended = or_(WebhookDelivery.delivered_at < before, WebhookDelivery.failed_at < before)
    await session.execute(delete(WebhookDelivery).where(ended))
