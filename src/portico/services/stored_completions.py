"""Chat completions made with ``store: true``: kept with their request, then read, listed, re-labelled, deleted.

Storing is best-effort: the completion has been generated and billed by then, so a database failure while
storing is logged and the client still gets its answer (a later GET finds nothing). A stream is stored when it
finishes, before its ``[DONE]``; a stream the client left half-way is not stored (it has no whole response).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Mapping

from portico.auth.principal import Principal
from portico.engines.registry import ModelRegistry
from portico.errors import InvalidRequest, ModelNotFound, ModelRetired, NotFound
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.stored_completions import StoredChatCompletion, StoredMessage
from portico.services.generation.chunks import chat_body
from portico.services.generation.types import Answer, Event, Origin, Transcript, UsageReport
from portico.storage import stored_completions as queries
from portico.storage.database import Database
from portico.storage.paging import Order, Page, page_in_memory
from portico.storage.resources import StoredCompletion
from portico.usage.meter import Charge

logger = logging.getLogger("portico.stored_completions")

# SQLite addresses a JSON key as $."key": a quote or backslash in the key would break the path.
_UNFILTERABLE_KEY_CHARS = frozenset('"\\')


def _not_found(completion_id: str) -> NotFound:
    return NotFound(
        f"No stored chat completion '{completion_id}'. Only completions created with store: true are kept.",
        param="completion_id",
    )


def stored_view(row: StoredCompletion) -> StoredChatCompletion:
    return StoredChatCompletion.model_validate({**row.response, "metadata": row.completion_metadata})


def _message(completion_id: str, index: int, raw: dict[str, object]) -> StoredMessage:
    content = raw.get("content")
    parts = content if isinstance(content, list) else None
    text = content if isinstance(content, str) else "".join(str(part.get("text", "")) for part in parts or [])
    return StoredMessage.model_validate(
        {"id": f"{completion_id}-{index}", "role": raw["role"], "content": text, "name": raw.get("name")}
        | {"content_parts": parts}
    )


class StoredCompletionService:
    def __init__(self, database: Database, registry: ModelRegistry) -> None:
        self._database = database
        self._registry = registry

    async def save(self, principal: Principal, request: ChatCompletionRequest, response: ChatCompletion) -> None:
        row = StoredCompletion(
            id=response.id,
            project_id=principal.project_id,
            model=response.model,
            request=request.model_dump(mode="json", by_alias=True, exclude_unset=True),
            response=response.model_dump(mode="json"),
            completion_metadata=dict(request.metadata or {}),
            created_at=response.created,
        )
        try:
            async with self._database.session() as session:
                session.add(row)
                await session.commit()
        except Exception:  # best-effort: see the module docstring
            logger.exception("could not store chat completion %s", response.id)

    async def recorded(
        self,
        events: AsyncGenerator[Event, None],
        principal: Principal,
        request: ChatCompletionRequest,
        charge: Charge,
        *,
        completion_id: str,
        model: str,
    ) -> AsyncGenerator[Event, None]:
        """``events`` passed through. The usage report is held back until the generation has ended and the
        assembled completion is stored, so a client that saw ``[DONE]`` finds it stored."""
        transcript = Transcript(logprobs=bool(request.logprobs))
        report: UsageReport | None = None
        async for event in events:
            if isinstance(event, UsageReport):
                report = event
                continue
            transcript.add(event)
            yield event
        if report is None:
            return
        answer = Answer(transcript.choices(), report.usage, Origin(model, model))
        await self.save(principal, request, chat_body(answer, charge, request, completion_id=completion_id))
        yield report

    async def get(self, principal: Principal, completion_id: str) -> StoredCompletion:
        async with self._database.session() as session:
            row = await queries.get_completion(session, principal.project_id, completion_id)
        if row is None:
            raise _not_found(completion_id)
        return row

    async def list_completions(
        self,
        principal: Principal,
        *,
        model: str | None,
        metadata: Mapping[str, str],
        limit: int,
        after: str | None,
        order: Order,
    ) -> Page[StoredCompletion]:
        for key in metadata:
            if _UNFILTERABLE_KEY_CHARS & set(key):
                raise InvalidRequest("A metadata filter key may not contain '\"' or '\\'.", param=f"metadata[{key}]")
        async with self._database.session() as session:
            return await queries.list_completions(
                session,
                principal.project_id,
                models=self._model_names(model),
                metadata=metadata,
                limit=limit,
                after=after,
                order=order,
            )

    def _model_names(self, model: str | None) -> list[str]:
        """Completions keep the snapshot that answered; a served alias also finds its current snapshot's."""
        if model is None:
            return []
        try:
            return [model, self._registry.resolve(model).snapshot]
        except (ModelNotFound, ModelRetired):  # a retired snapshot's completions are still listed
            return [model]

    async def messages(
        self, principal: Principal, completion_id: str, *, limit: int, after: str | None, order: Order
    ) -> Page[StoredMessage]:
        row = await self.get(principal, completion_id)
        messages = [_message(completion_id, index, raw) for index, raw in enumerate(row.request.get("messages", []))]
        return page_in_memory(messages, limit=limit, after=after, order=order)

    async def update(
        self, principal: Principal, completion_id: str, metadata: dict[str, str] | None
    ) -> StoredCompletion:
        async with self._database.session() as session:
            row = await queries.get_completion(session, principal.project_id, completion_id)
            if row is None:
                raise _not_found(completion_id)
            row.completion_metadata = dict(metadata or {})
            await session.commit()
        return row

    async def delete(self, principal: Principal, completion_id: str) -> None:
        async with self._database.session() as session:
            deleted = await queries.delete_completion(session, principal.project_id, completion_id)
            await session.commit()
        if not deleted:
            raise _not_found(completion_id)
