"""Conversations, their messages and turns as the API shows them."""

from __future__ import annotations

from portico.schemas.common import Usage
from portico.schemas.conversations import ConversationObject, ConversationUsage, MessageObject, TurnObject
from portico.services.conversations import Turn
from portico.storage.resources import Conversation, ConversationMessage


def conversation_view(row: Conversation) -> ConversationObject:
    return ConversationObject(
        id=row.id,
        created_at=row.created_at,
        model=row.model,
        system=row.system,
        metadata=row.conversation_metadata,
        context_strategy=row.context_strategy,
        usage=ConversationUsage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.prompt_tokens + row.completion_tokens,
            cost=row.cost_usd,
        ),
    )


def turn_view(turn: Turn) -> TurnObject:
    return TurnObject(**message_view(turn.assistant).model_dump(), user_message_id=turn.user.id, context=turn.context)


def message_view(row: ConversationMessage) -> MessageObject:
    record = row.usage or {}
    usage = None
    if "cost" in record:
        usage = Usage.model_validate({name: record[name] for name in Usage.model_fields if name in record})
    return MessageObject(
        id=row.id,
        conversation_id=row.conversation_id,
        created_at=row.created_at,
        role=row.role,
        content=row.content,
        tokens=row.tokens,
        in_context=row.in_context,
        status=record.get("status", "completed"),
        model=record.get("model"),
        finish_reason=record.get("finish_reason"),
        usage=usage,
    )
