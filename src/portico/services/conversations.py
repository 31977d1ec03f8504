"""Conversations: history kept on the server, a turn at a time, inside the model's context window.

A turn (a user message and its answer) runs like this, under the conversation's lock:

1. The history still in context is read, with the seq of the last message.
2. If it, the new message and the room for the answer no longer fit the context window, the conversation's
   strategy applies (``context_window.ContextFitter``): drop the oldest turns, fold them into a summary the
   model writes (a generation of its own, billed to the conversation), or refuse with 400
   context_length_exceeded.
   Those changes are committed at once, so a failed answer does not repeat a summary that was paid for.
3. The answer is generated through the normal admission and usage metering (endpoint
   ``/v1/conversations/{id}/messages``), streamed or not.
4. The user message and the answer are stored together with the answer's usage, and the conversation's totals
   grow by it. A client that goes away mid-answer leaves the partial answer stored, marked ``incomplete``,
   with the usage that was billed for it.

Serialization: turns of one conversation never interleave. In a process, a per-conversation asyncio lock queues
them (a waiter that waits longer than ``request_timeout_s`` gets 409 conversation_busy). Across processes each
commit first write-locks the conversation's row and checks that the last message is still the one read in step
1; if another process appended meanwhile, the turn is refused with 409 conversation_busy (retryable) instead of
interleaving the history. No connection is held while generating.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from portico.auth.principal import Principal
from portico.constants import PREFIX_CONVERSATION, PREFIX_MESSAGE, CacheMode, Capability, FinishReason, new_id
from portico.engines.registry import ModelRegistry
from portico.errors import ContextLengthExceeded, ConversationBusy, NotFound
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.common import SamplingFields, Usage
from portico.schemas.conversations import ContextReport, ConversationCreateRequest, MessageCreateRequest
from portico.services import context_window as window_rules
from portico.services.context_window import ContextFitter, Fitting, usage_record
from portico.services.generation.chunks import charged_usage, wire_usage
from portico.services.generation.pipeline import Pipeline, Streamed
from portico.services.generation.types import (
    ENDPOINT_CONVERSATION_MESSAGES,
    Call,
    ChoiceEnd,
    Event,
    TextDelta,
    UsageReport,
)
from portico.services.locks import KeyedLocks
from portico.settings import Settings
from portico.storage import conversations as queries
from portico.storage.database import Database
from portico.storage.paging import Order, Page
from portico.storage.resources import Conversation, ConversationMessage
from portico.usage.meter import Charge, Settlement, Ticket

logger = logging.getLogger("portico.conversations")

_SAMPLING_FIELDS = set(SamplingFields.model_fields)


@dataclass(slots=True)
class OpenTurn:
    """A turn ready to generate; it holds the conversation's lock until it is stored or given up. A streamed
    turn is admitted and its stream opened (``streamed``); a whole one is admitted when it runs."""

    conversation: Conversation
    principal: Principal
    call: Call
    user: ConversationMessage  # stored with the answer
    assistant_id: str
    last_seq: int
    context: ContextReport
    release: Callable[[], None]
    streamed: Streamed | None = None
    ticket: Ticket | None = None  # a whole turn's, once admitted
    started: bool = False

    def admitted(self, ticket: Ticket) -> None:
        self.ticket = ticket

    @property
    def model(self) -> str:
        """The snapshot answering (a fallback's, if one took over)."""
        if self.streamed is not None:
            return self.streamed.model
        return self.conversation.model if self.ticket is None else self.ticket.model

    @property
    def settlement(self) -> Settlement | None:
        if self.streamed is not None:
            return self.streamed.charge.settlement
        return None if self.ticket is None else self.ticket.settlement


@dataclass(frozen=True, slots=True)
class Turn:
    user: ConversationMessage
    assistant: ConversationMessage
    context: ContextReport
    charge: Charge


def _not_found(conversation_id: str) -> NotFound:
    return NotFound(f"No conversation '{conversation_id}'.", param="conversation_id")


def _busy() -> ConversationBusy:
    return ConversationBusy(
        "Another message was added to this conversation (by another server process) while this one was being "
        "handled, so it was not added. Retry: the answer will then follow the whole history.",
        retry_after=1,
    )


class ConversationService:
    def __init__(self, database: Database, pipeline: Pipeline, registry: ModelRegistry, settings: Settings) -> None:
        self._database = database
        self._pipeline = pipeline
        self._registry = registry
        self._lock_timeout_s = settings.request_timeout_s
        self._locks = KeyedLocks()
        self._fitter = ContextFitter(pipeline, registry)
        self._background: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Wait for partial answers still being stored (their clients left mid-answer)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- conversations ------------------------------------------------------------------------------------
    async def create(self, principal: Principal, body: ConversationCreateRequest) -> Conversation:
        served = self._registry.resolve(body.model)
        served.generator(Capability.CHAT)  # a 400 unless the model can chat
        if body.system:
            tokens = await self._fitter.count_chat(body.model, window_rules.chat_messages(body.system, [], None))
            window = served.engine.context_window
            if tokens >= window:
                raise ContextLengthExceeded(limit=window, prompt_tokens=tokens, max_tokens=1, param="system")
        conversation = Conversation(
            id=new_id(PREFIX_CONVERSATION),
            project_id=principal.project_id,
            model=body.model,
            system=body.system,
            context_strategy=body.context_strategy,
            conversation_metadata=dict(body.metadata or {}),
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=0.0,
            created_at=int(time.time()),
        )
        async with self._database.session() as session:
            session.add(conversation)
            await session.commit()
        return conversation

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        async with self._database.session() as session:
            conversation = await queries.get_conversation(session, principal.project_id, conversation_id)
        if conversation is None:
            raise _not_found(conversation_id)
        return conversation

    async def list_conversations(
        self, principal: Principal, *, limit: int, after: str | None, order: Order
    ) -> Page[Conversation]:
        async with self._database.session() as session:
            return await queries.list_conversations(
                session, principal.project_id, limit=limit, after=after, order=order
            )

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        async with self._database.session() as session:
            deleted = await queries.delete_conversation(session, principal.project_id, conversation_id)
            await session.commit()
        if not deleted:
            raise _not_found(conversation_id)

    async def list_messages(
        self, principal: Principal, conversation_id: str, *, limit: int, after: str | None, order: Order
    ) -> Page[ConversationMessage]:
        async with self._database.session() as session:
            if await queries.get_conversation(session, principal.project_id, conversation_id) is None:
                raise _not_found(conversation_id)
            return await queries.list_messages(session, conversation_id, limit=limit, after=after, order=order)

    # -- turns --------------------------------------------------------------------------------------------
    async def post(self, principal: Principal, conversation_id: str, body: MessageCreateRequest) -> Turn:
        """A turn answered whole."""
        turn = await self.open_turn(principal, conversation_id, body)
        parts: list[str] = []
        call = replace(turn.call, on_delta=lambda _index, text: parts.append(text))
        handed_off = False
        try:
            generated = await self._pipeline.complete(
                call, principal, cache=CacheMode.SKIP, semantic=False, on_admit=turn.admitted
            )
            answer = generated.body
            assert isinstance(answer, ChatCompletion)
            (choice,) = answer.choices
            finish = FinishReason(choice.finish_reason)
            assistant = await self._store(
                turn, answer.model, choice.message.content or "", finish, answer.usage, "completed"
            )
            return Turn(turn.user, assistant, turn.context, generated.charge)
        except asyncio.CancelledError:
            handed_off = self._store_later(turn, "".join(parts))
            raise
        finally:
            if not handed_off:
                turn.release()

    def chunks(self, turn: OpenTurn) -> AsyncIterator[dict[str, Any]]:
        """A streamed turn's chunks (id: the answer's message id), the last with usage, the message ids and the
        context report."""
        assert turn.streamed is not None
        extras = {
            "conversation_id": turn.conversation.id,
            "message_id": turn.assistant_id,
            "user_message_id": turn.user.id,
            "context": turn.context.model_dump(),
        }
        events = self._events(turn, turn.streamed)
        return turn.streamed.chunks(events, include_usage=True, usage_extras=extras, completion_id=turn.assistant_id)

    async def _events(self, turn: OpenTurn, streamed: Streamed) -> AsyncGenerator[Event, None]:
        """A turn's events. The usage report is held back until the generation has ended (and settled) and the
        turn is stored, so a client that sees the report (and ``[DONE]``) finds the turn in the history."""
        turn.started = True
        parts: list[str] = []
        finish: FinishReason | None = None
        report: UsageReport | None = None
        handed_off = False
        try:
            async with aclosing(streamed.events) as events:
                async for event in events:
                    if isinstance(event, UsageReport):
                        report = event
                        continue
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif isinstance(event, ChoiceEnd):
                        finish = event.finish_reason
                    yield event
            if report is not None:
                usage = charged_usage(report.usage, streamed.charge)
                await self._store(turn, streamed.model, "".join(parts), finish, usage, "completed")
                yield report
        except (asyncio.CancelledError, GeneratorExit):
            handed_off = self._store_later(turn, "".join(parts), finish if report is not None else None)
            raise
        finally:
            if not handed_off:
                turn.release()

    def close_unstarted(self, turn: OpenTurn) -> None:
        """For a stream whose body never ran (the client left at once): nothing generated, nothing stored."""
        if turn.streamed is not None:
            turn.streamed.close()  # a no-op once the generation started: its own ending settles it
        if not turn.started:
            turn.release()

    async def open_turn(self, principal: Principal, conversation_id: str, body: MessageCreateRequest) -> OpenTurn:
        """Take the conversation's lock, fit the context (committing what the strategy changed), admit the
        answer. The returned turn holds the lock; ``post``/``stream``/``close_unstarted`` release it."""
        await self.get(principal, conversation_id)  # a 404 before waiting for the lock
        release = await self._locks.acquire(conversation_id, self._lock_timeout_s)
        try:
            async with self._database.session() as session:
                conversation = await queries.get_conversation(session, principal.project_id, conversation_id)
                if conversation is None:
                    raise _not_found(conversation_id)
                context = await queries.context_messages(session, conversation_id)
                last_seq = await queries.last_seq(session, conversation_id)
            text = body.text()
            fitting = await self._fitter.fit(principal, conversation, context, text, body.max_tokens)
            last_seq = await self._apply(principal, conversation, last_seq, fitting)
            sampling = body.model_dump(include=_SAMPLING_FIELDS, exclude_unset=True)
            messages = window_rules.chat_messages(conversation.system, fitting.context, text)
            request = ChatCompletionRequest(model=conversation.model, messages=messages, **sampling)
            user = ConversationMessage(
                id=new_id(PREFIX_MESSAGE),
                conversation_id=conversation_id,
                seq=0,  # set when stored
                role="user",
                content=text,
                tokens=await self._fitter.count_text(conversation.model, text),
                in_context=True,
                usage=None,
                created_at=int(time.time()),
            )
            turn = OpenTurn(
                conversation,
                principal,
                Call(request, ENDPOINT_CONVERSATION_MESSAGES),
                user,
                new_id(PREFIX_MESSAGE),
                last_seq,
                fitting.report(),
                release,
            )
            if body.stream:  # opened last: nothing may interrupt between its admission and the turn that settles it
                turn.streamed = await self._pipeline.stream(turn.call, principal)
            return turn
        except BaseException:
            release()
            raise

    async def _apply(self, principal: Principal, conversation: Conversation, last_seq: int, fitting: Fitting) -> int:
        """Commit what the strategy changed (messages out of context, new summaries and their usage)."""
        if not fitting.dropped and not fitting.summarized:
            return last_seq
        out = set(fitting.dropped) | set(fitting.summarized)
        spent = [Usage.model_validate(s.usage) for s in fitting.summaries if s.usage is not None]
        async with self._database.session() as session:
            seq = await queries.lock_for_append(
                session,
                principal.project_id,
                conversation.id,
                prompt_tokens=sum(u.prompt_tokens for u in spent),
                completion_tokens=sum(u.completion_tokens for u in spent),
                cost_usd=sum(u.cost for u in spent),
            )
            self._check_seq(conversation.id, seq, last_seq)
            new_ids = {s.id for s in fitting.summaries}
            await queries.take_out_of_context(session, conversation.id, sorted(out - new_ids))
            for summary in fitting.summaries:
                last_seq += 1
                summary.seq, summary.in_context = last_seq, summary.id not in out
                session.add(summary)
            await session.commit()
        return last_seq

    # -- storing a turn -------------------------------------------------------------------------------------
    async def _store(
        self, turn: OpenTurn, model: str, text: str, finish: FinishReason | None, usage: Usage, status: str
    ) -> ConversationMessage:
        conversation = turn.conversation
        assistant = ConversationMessage(
            id=turn.assistant_id,
            conversation_id=conversation.id,
            seq=0,
            role="assistant",
            content=text,
            tokens=await self._fitter.count_text(conversation.model, text),
            in_context=True,
            usage=usage_record(usage, model, finish, status),
            created_at=int(time.time()),
        )
        async with self._database.session() as session:
            seq = await queries.lock_for_append(
                session,
                turn.principal.project_id,
                conversation.id,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_usd=usage.cost,
            )
            self._check_seq(conversation.id, seq, turn.last_seq)
            turn.user.seq, assistant.seq = turn.last_seq + 1, turn.last_seq + 2
            session.add_all([turn.user, assistant])
            await session.commit()
        return assistant

    def _store_later(self, turn: OpenTurn, text: str, finish: FinishReason | None = None) -> bool:
        """Store what was made before the client left (``incomplete`` unless it had ``finish``ed), in a task of
        its own (the caller is being cancelled), which releases the turn's lock. False when nothing was
        generated: nothing to store, nothing billed."""
        settlement = turn.settlement
        if settlement is None or settlement.usage.prompt_tokens == 0:
            return False
        usage = wire_usage(settlement.usage, settlement.cost_usd)
        status = "incomplete" if finish is None else "completed"

        async def store() -> None:
            try:
                await self._store(turn, turn.model, text, finish, usage, status)
            except Exception:
                logger.exception("could not store the partial answer of conversation %s", turn.conversation.id)
            finally:
                turn.release()

        task = asyncio.create_task(store())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return True

    def _check_seq(self, conversation_id: str, seq: int | None, expected: int) -> None:
        if seq is None:
            raise _not_found(conversation_id)
        if seq != expected:
            raise _busy()
