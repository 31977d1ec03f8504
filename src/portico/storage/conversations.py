"""Queries for conversations and their messages. Callers own the session and its commit.

Conversations are always looked up with their project, and messages only through a conversation found that way,
so another project's conversation is simply not found.

Assistant and summary messages keep in their ``usage`` column the generation's token counts and ``cost``, and
also its ``model`` snapshot, ``finish_reason`` and ``status`` (``completed`` or ``incomplete``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from portico.storage.paging import Order, Page, page
from portico.storage.resources import Conversation, ConversationMessage


async def get_conversation(session: AsyncSession, project_id: str, conversation_id: str) -> Conversation | None:
    query = select(Conversation).where(Conversation.id == conversation_id, Conversation.project_id == project_id)
    return (await session.execute(query)).scalar_one_or_none()


async def list_conversations(
    session: AsyncSession, project_id: str, *, limit: int, after: str | None, order: Order
) -> Page[Conversation]:
    in_project = Conversation.project_id == project_id
    query = select(Conversation).where(in_project)
    key = [Conversation.created_at, Conversation.id]
    return await page(session, query, key=key, scope=in_project, limit=limit, after=after, order=order)


async def delete_conversation(session: AsyncSession, project_id: str, conversation_id: str) -> bool:
    found = await get_conversation(session, project_id, conversation_id)
    if found is None:
        return False
    await session.execute(delete(ConversationMessage).where(ConversationMessage.conversation_id == conversation_id))
    await session.execute(delete(Conversation).where(Conversation.id == conversation_id))
    return True


async def context_messages(session: AsyncSession, conversation_id: str) -> list[ConversationMessage]:
    """The messages still in the model's context, in order."""
    query = (
        select(ConversationMessage)
        .where(ConversationMessage.conversation_id == conversation_id, ConversationMessage.in_context.is_(True))
        .order_by(ConversationMessage.seq)
    )
    return list((await session.scalars(query)).all())


async def last_seq(session: AsyncSession, conversation_id: str) -> int:
    query = select(func.max(ConversationMessage.seq)).where(ConversationMessage.conversation_id == conversation_id)
    return (await session.execute(query)).scalar_one_or_none() or 0


async def list_messages(
    session: AsyncSession, conversation_id: str, *, limit: int, after: str | None, order: Order
) -> Page[ConversationMessage]:
    """In the order they were appended (``seq``), including those no longer in the model's context."""
    in_conversation = ConversationMessage.conversation_id == conversation_id
    query = select(ConversationMessage).where(in_conversation)
    key = [ConversationMessage.seq, ConversationMessage.id]
    return await page(session, query, key=key, scope=in_conversation, limit=limit, after=after, order=order)


async def lock_for_append(
    session: AsyncSession,
    project_id: str,
    conversation_id: str,
    *,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    cost_usd: float = 0.0,
) -> int | None:
    """Add to the conversation's totals, which write-locks its row until the commit (PostgreSQL: the row lock;
    SQLite: the database's one writer), then return the last message's seq as it is now; None when it is gone.

    Whoever appends messages calls this first in its transaction and compares the seq with the one it read
    before generating: a different one means another process appended meanwhile."""
    changed = await session.execute(
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.project_id == project_id)
        .values(
            prompt_tokens=Conversation.prompt_tokens + prompt_tokens,
            completion_tokens=Conversation.completion_tokens + completion_tokens,
            cost_usd=Conversation.cost_usd + cost_usd,
        )
    )
    if changed.rowcount == 0:  # type: ignore[attr-defined]
        return None
    return await last_seq(session, conversation_id)


async def take_out_of_context(session: AsyncSession, conversation_id: str, message_ids: Sequence[str]) -> None:
    if not message_ids:
        return
    await session.execute(
        update(ConversationMessage)
        .where(ConversationMessage.conversation_id == conversation_id, ConversationMessage.id.in_(message_ids))
        .values(in_context=False)
    )
