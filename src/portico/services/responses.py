"""The Responses API: a response runs as a chat completion through the generation pipeline (so it has the
cache, fallbacks, limits and metering of any chat request), is stored unless ``store: false``, continues a
stored one with ``previous_response_id``, and with ``background: true`` runs as a durable job.

A background response's row names its job. Reading the response brings the row up to date from the job (the
job's worker knows nothing of responses), so every server sharing the database answers the same.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from portico.auth.principal import Principal
from portico.constants import CacheMode, FinishReason, JobEventType, JobStatus, JobType, new_id
from portico.errors import Conflict, ContextLengthExceeded, InvalidRequest, NotFound, TooManyMessages
from portico.schemas.chat import ChatCompletion, ChatCompletionRequest
from portico.schemas.jobs import JobCreateRequest, JobObject
from portico.schemas.responses import ResponseCreateRequest, ResponseError, ResponseObject, ResponseStatus, StoredItem
from portico.services.generation.chunks import chat_body
from portico.services.generation.pipeline import Generated, Pipeline, Streamed
from portico.services.generation.response_request import (
    PREFIX_RESPONSE,
    Message,
    chat_request,
    input_messages,
    output_messages,
    stored_input_items,
)
from portico.services.generation.responses import ResponseStream, answered, response_object
from portico.services.generation.types import (
    ENDPOINT_RESPONSES,
    Answer,
    Call,
    ChoiceEnd,
    Event,
    Origin,
    TextDelta,
    ToolCallDelta,
    Transcript,
)
from portico.services.jobs import JobEventView, JobService
from portico.storage.database import Database
from portico.storage.paging import Order, Page, page_in_memory
from portico.storage.resources import StoredResponse

logger = logging.getLogger("portico.responses")

_JOB_STATUSES: dict[str, ResponseStatus] = {
    JobStatus.QUEUED: "queued",
    JobStatus.RUNNING: "in_progress",
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.EXPIRED: "failed",
    JobStatus.CANCELLED: "cancelled",
}
_UNFINISHED = frozenset({"queued", "in_progress"})


async def _job_answer(job_events: AsyncIterator[JobEventView]) -> AsyncIterator[Event]:
    """A chat job's events as the pipeline's: its text deltas as they were written, then, once it succeeded,
    its tool calls and how it finished. A job that failed or was cancelled just ends (the response says how)."""
    async for view in job_events:
        if view.type == JobEventType.DELTA:
            for choice in view.data["choices"]:
                yield TextDelta(choice["index"], choice["text"])
        elif view.type == JobEventType.COMPLETED:
            choice = ChatCompletion.model_validate(view.data["result"]).choices[0]
            for n, call in enumerate(choice.message.tool_calls or ()):
                yield ToolCallDelta(0, n, call.id, call.function.name, call.function.arguments)
            yield ChoiceEnd(0, FinishReason(choice.finish_reason))


def _without_first_turn(history: list[Message]) -> list[Message]:
    """``history`` from its second user message on (a turn's tool calls and results go with it)."""
    rest = history[1:]
    while rest and rest[0]["role"] != "user":
        rest = rest[1:]
    return rest


def _not_found(response_id: str) -> NotFound:
    return NotFound(
        f"No stored response '{response_id}'. Responses created with store: false are not kept.",
        param="response_id",
    )


@dataclass(frozen=True, slots=True)
class ResponseEvents:
    """A response's typed events (``events``, rendered by ``stream``), and the pipeline's stream behind them
    (None when they are replayed from a background response's job)."""

    stream: ResponseStream
    events: AsyncIterator[dict[str, Any]]
    streamed: Streamed | None = None


class ResponseService:
    def __init__(self, database: Database, pipeline: Pipeline, jobs: JobService, *, max_messages: int) -> None:
        self._database = database
        self._pipeline = pipeline
        self._jobs = jobs
        self._max_messages = max_messages

    # -- creating ------------------------------------------------------------------------------------------
    async def _prepared(self, principal: Principal, body: ResponseCreateRequest) -> tuple[list[Message], Call]:
        """The history the response continues and the chat call that answers it. With ``truncation: "auto"``
        the oldest turns are dropped until the conversation fits the model's context window."""
        history = await self._history(principal, body.previous_response_id)
        chat = chat_request(body, history)
        if body.truncation == "auto":
            while history and not await self._fits(chat):
                history = _without_first_turn(history)
                chat = chat_request(body, history)
        if len(chat.messages) > self._max_messages:
            hint = 'Send truncation: "auto" to drop the oldest turns.'
            raise TooManyMessages(len(chat.messages), self._max_messages, param="input", hint=hint)
        return history, Call(chat, ENDPOINT_RESPONSES)

    async def _fits(self, chat: ChatCompletionRequest) -> bool:
        if len(chat.messages) > self._max_messages:
            return False
        try:
            await self._pipeline.check(chat)
        except ContextLengthExceeded:
            return False
        return True

    async def create(
        self, principal: Principal, body: ResponseCreateRequest, *, cache: CacheMode, semantic: bool | None
    ) -> Generated:
        """The whole response (``Generated.body`` is the response object), stored unless ``store: false``."""
        history, call = await self._prepared(principal, body)
        generated = await self._pipeline.complete(call, principal, cache=cache, semantic=semantic)
        assert isinstance(generated.body, ChatCompletion)
        response = answered(body, new_id(PREFIX_RESPONSE), int(time.time()), generated.body)
        if body.store:
            await self._save(principal, body, response, history, generated.body)
        return Generated(response, generated.charge, generated.cache, generated.served_by, generated.similarity)

    async def stream(self, principal: Principal, body: ResponseCreateRequest) -> ResponseEvents:
        history, call = await self._prepared(principal, body)
        streamed = await self._pipeline.stream(call, principal)
        chat = call.body
        assert isinstance(chat, ChatCompletionRequest)
        response_id, created_at = new_id(PREFIX_RESPONSE), int(time.time())

        async def finish(transcript: Transcript) -> ResponseObject:
            answer = Answer(transcript.choices(), transcript.usage, Origin(streamed.model, streamed.model))
            completion = chat_body(answer, streamed.charge, chat)
            response = answered(body, response_id, created_at, completion)
            if body.store:
                await self._save(principal, body, response, history, completion)
            return response

        stream = ResponseStream(body, response_id, created_at, streamed.model, bool(chat.logprobs), finish)
        return ResponseEvents(stream, stream.events(streamed.events), streamed)

    async def create_background(self, principal: Principal, body: ResponseCreateRequest) -> ResponseObject:
        """Queued as a job (visible in /v1/jobs too); the response is read back, or cancelled, by its id."""
        history, call = await self._prepared(principal, body)
        request = call.body.model_dump(mode="json", exclude_unset=True, exclude={"stream", "stream_options"})
        await self._jobs.validate(JobType.CHAT_COMPLETION, call.body)
        job = await self._jobs.create(
            principal, JobCreateRequest(type="chat.completion", request=request, metadata=body.metadata)
        )
        response = response_object(body, new_id(PREFIX_RESPONSE), job.created_at, model=body.model, status="queued")
        await self._save(principal, body, response, history, None, job_id=job.id)
        return response

    async def _save(
        self,
        principal: Principal,
        body: ResponseCreateRequest,
        response: ResponseObject,
        history: list[Message],
        completion: ChatCompletion | None,
        *,
        job_id: str | None = None,
    ) -> None:
        """Best-effort like stored chat completions: the response was generated and billed already, so a
        database failure is logged and the client still gets its answer. A background response's row is its
        only record, so there the failure is the client's to see."""
        turn = input_messages(body.input) + (output_messages(completion) if completion is not None else [])
        row = StoredResponse(
            id=response.id,
            project_id=principal.project_id,
            status=response.status,
            request=body.model_dump(mode="json", by_alias=True, exclude_unset=True),
            response=response.model_dump(mode="json"),
            input_items=stored_input_items(body),
            history=history,
            turn=turn,
            job_id=job_id,
            created_at=response.created_at,
        )
        try:
            async with self._database.session() as session:
                session.add(row)
                await session.commit()
        except Exception:
            if job_id is not None:
                raise
            logger.exception("could not store response %s", response.id)

    async def _history(self, principal: Principal, previous_response_id: str | None) -> list[Message]:
        """The chat messages of every turn up to and including the previous response."""
        if previous_response_id is None:
            return []
        try:
            row = await self._row(principal, previous_response_id)
        except NotFound:
            raise NotFound(
                f"previous_response_id '{previous_response_id}' names no stored response of this project.",
                param="previous_response_id",
            ) from None
        if row.status in _UNFINISHED:
            raise Conflict(
                f"Response '{previous_response_id}' is still {row.status}; continue from it once it completes.",
                param="previous_response_id",
            )
        if row.status != "completed" and row.status != "incomplete":
            raise InvalidRequest(
                f"Response '{previous_response_id}' {row.status}; it has no answer to continue from.",
                param="previous_response_id",
            )
        return [*row.history, *row.turn]

    # -- reading -------------------------------------------------------------------------------------------
    async def _row(self, principal: Principal, response_id: str) -> StoredResponse:
        async with self._database.session() as session:
            row = await session.get(StoredResponse, response_id)
            if row is None or row.project_id != principal.project_id:
                raise _not_found(response_id)
            if row.job_id is not None and row.status in _UNFINISHED:
                await self._catch_up(principal, row, await self._jobs.get(principal, row.job_id))
                await session.commit()
            return row

    async def _catch_up(self, principal: Principal, row: StoredResponse, job: JobObject) -> None:
        """``row`` as its job now stands: its status, and once the job has ended, its answer or error."""
        status = _JOB_STATUSES[job.status]
        if status == row.status:
            return
        body = ResponseCreateRequest.model_validate(row.request)
        created_at = row.created_at
        if status == "completed" and job.result is not None:
            completion = ChatCompletion.model_validate(job.result)
            response = answered(body, row.id, created_at, completion)
            row.turn = [*row.turn, *output_messages(completion)]
        elif status == "failed" and job.error is not None:
            error = ResponseError(code=job.error.error.code, message=job.error.error.message)
            response = response_object(body, row.id, created_at, model=body.model, status="failed", error=error)
        else:
            response = response_object(body, row.id, created_at, model=body.model, status=status)
        row.status, row.response = response.status, response.model_dump(mode="json")

    async def replay(
        self, principal: Principal, response_id: str, *, starting_after: int, heartbeat_s: float
    ) -> ResponseEvents:
        """A background response's typed events after ``starting_after`` (a sequence number), live until it
        ends: rebuilt from its job's events, so any server can resume it, with the same numbers and ids."""
        row = await self._row(principal, response_id)
        if row.job_id is None:
            raise InvalidRequest("Only a background response can be streamed again.", param="stream")
        body = ResponseCreateRequest.model_validate(row.request)
        job_events = await self._jobs.events(principal, row.job_id, after=0, heartbeat_s=heartbeat_s)

        async def finish(_: Transcript) -> ResponseObject:
            return await self.get(principal, response_id)

        stream = ResponseStream(body, row.id, row.created_at, body.model, False, finish)

        async def after() -> AsyncIterator[dict[str, Any]]:
            async for event in stream.events(_job_answer(job_events)):
                if event["sequence_number"] > starting_after:
                    yield event

        return ResponseEvents(stream, after())

    async def get(self, principal: Principal, response_id: str) -> ResponseObject:
        return ResponseObject.model_validate((await self._row(principal, response_id)).response)

    async def input_items(
        self, principal: Principal, response_id: str, *, limit: int, after: str | None, order: Order
    ) -> Page[StoredItem]:
        row = await self._row(principal, response_id)
        items = [StoredItem.model_validate(item) for item in row.input_items]
        return page_in_memory(items, limit=limit, after=after, order=order)

    async def delete(self, principal: Principal, response_id: str) -> None:
        async with self._database.session() as session:
            row = await session.get(StoredResponse, response_id)
            if row is None or row.project_id != principal.project_id:
                raise _not_found(response_id)
            await session.delete(row)
            await session.commit()

    async def cancel(self, principal: Principal, response_id: str) -> ResponseObject:
        """Only a background response can be cancelled; cancelling a finished one answers it as it is."""
        row = await self._row(principal, response_id)
        if row.job_id is None:
            raise InvalidRequest("Only background responses can be cancelled.", param="response_id")
        if row.status in _UNFINISHED:
            with contextlib.suppress(Conflict):  # it finished meanwhile: answer it as it ended
                await self._jobs.cancel(principal, row.job_id)
        return await self.get(principal, response_id)
