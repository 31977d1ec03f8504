"""Asynchronous work: jobs (and their resumable events), files, batches, and the webhook signing secret."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import IO, TYPE_CHECKING, Any, Unpack, cast, overload

import httpx

from portico_client._base_client import Call, RequestOptions, StreamCall, get, parse_model, post
from portico_client._params import BatchCreateParams, FileListParams, JobCreateParams, JobListParams, ListParams
from portico_client._streaming import AsyncStream, JobEventReader, Stream
from portico_client.resources._resource import ClientT, Resource
from portico_client.types import Batch, Deleted, FileObject, Job, JobEvent, Page, WebhookSecret

if TYPE_CHECKING:
    from portico_client._client import AsyncPortico, Portico


def _events_call(job_id: str, options: RequestOptions) -> StreamCall[JobEvent]:
    path = f"jobs/{job_id}/events"
    return StreamCall(method="GET", path=path, options=options, reader=JobEventReader, resumable=True)


class Jobs(Resource[ClientT]):
    @overload
    def create(self: Jobs[Portico], **params: Unpack[JobCreateParams]) -> Job: ...
    @overload
    def create(self: Jobs[AsyncPortico], **params: Unpack[JobCreateParams]) -> Awaitable[Job]: ...
    def create(self, **params: Any) -> Any:
        """Queue a job (``type`` and the sync endpoint's ``request``); the answer is the job, ``queued``."""
        return self._client._request(post("jobs", params, Job))

    @overload
    def get(self: Jobs[Portico], job_id: str) -> Job: ...
    @overload
    def get(self: Jobs[AsyncPortico], job_id: str) -> Awaitable[Job]: ...
    def get(self, job_id: str) -> Any:
        return self._client._request(get(f"jobs/{job_id}", Job))

    @overload
    def list(self: Jobs[Portico], **params: Unpack[JobListParams]) -> Page[Job]: ...
    @overload
    def list(self: Jobs[AsyncPortico], **params: Unpack[JobListParams]) -> Awaitable[Page[Job]]: ...
    def list(self, **params: Any) -> Any:
        """The project's jobs, newest first."""
        return self._client._request(get("jobs", Page[Job], params))

    @overload
    def events(self: Jobs[Portico], job_id: str, **options: Unpack[RequestOptions]) -> Stream[JobEvent]: ...
    @overload
    def events(
        self: Jobs[AsyncPortico], job_id: str, **options: Unpack[RequestOptions]
    ) -> Awaitable[AsyncStream[JobEvent]]: ...
    def events(self, job_id: str, **options: Any) -> Any:
        """The job's events, from the first, until its terminal one. A dropped connection is resumed where it
        broke (``Last-Event-ID``), so no event is missed or repeated."""
        return self._client._stream(_events_call(job_id, cast(RequestOptions, options)))

    @overload
    def wait(self: Jobs[Portico], job_id: str, **options: Unpack[RequestOptions]) -> Job: ...
    @overload
    def wait(self: Jobs[AsyncPortico], job_id: str, **options: Unpack[RequestOptions]) -> Awaitable[Job]: ...
    def wait(self, job_id: str, **options: Any) -> Any:
        """The job once it has ended (follows its events, so it answers as soon as the job ends)."""
        return self._client._follow(_events_call(job_id, cast(RequestOptions, options)), get(f"jobs/{job_id}", Job))

    @overload
    def cancel(self: Jobs[Portico], job_id: str) -> Job: ...
    @overload
    def cancel(self: Jobs[AsyncPortico], job_id: str) -> Awaitable[Job]: ...
    def cancel(self, job_id: str) -> Any:
        """A queued job never starts; a running one stops (the call waits up to 5 s for it)."""
        return self._client._request(post(f"jobs/{job_id}/cancel", {}, Job))


class Files(Resource[ClientT]):
    @overload
    def create(
        self: Files[Portico],
        *,
        file: bytes | IO[bytes],
        filename: str,
        purpose: str = "batch",
        **options: Unpack[RequestOptions],
    ) -> FileObject: ...
    @overload
    def create(
        self: Files[AsyncPortico],
        *,
        file: bytes | IO[bytes],
        filename: str,
        purpose: str = "batch",
        **options: Unpack[RequestOptions],
    ) -> Awaitable[FileObject]: ...
    def create(self, *, file: bytes | IO[bytes], filename: str, purpose: str = "batch", **options: Any) -> Any:
        """Upload a file (a batch's JSONL input: ``purpose="batch"``). A binary file object is read from its
        start again on each retry."""
        call = Call(
            method="POST",
            path="files",
            files={"file": (filename, file, "application/jsonl")},
            form={"purpose": purpose},
            options=cast(RequestOptions, options),
            parse=parse_model(FileObject),
        )
        return self._client._request(call)

    @overload
    def get(self: Files[Portico], file_id: str) -> FileObject: ...
    @overload
    def get(self: Files[AsyncPortico], file_id: str) -> Awaitable[FileObject]: ...
    def get(self, file_id: str) -> Any:
        return self._client._request(get(f"files/{file_id}", FileObject))

    @overload
    def list(self: Files[Portico], **params: Unpack[FileListParams]) -> Page[FileObject]: ...
    @overload
    def list(self: Files[AsyncPortico], **params: Unpack[FileListParams]) -> Awaitable[Page[FileObject]]: ...
    def list(self, **params: Any) -> Any:
        return self._client._request(get("files", Page[FileObject], params))

    @overload
    def content(self: Files[Portico], file_id: str) -> bytes: ...
    @overload
    def content(self: Files[AsyncPortico], file_id: str) -> Awaitable[bytes]: ...
    def content(self, file_id: str) -> Any:
        """The file's bytes (a batch's output file: one JSON result a line)."""
        return self._client._request(Call(method="GET", path=f"files/{file_id}/content", parse=_content))

    @overload
    def delete(self: Files[Portico], file_id: str) -> Deleted: ...
    @overload
    def delete(self: Files[AsyncPortico], file_id: str) -> Awaitable[Deleted]: ...
    def delete(self, file_id: str) -> Any:
        return self._client._request(Call(method="DELETE", path=f"files/{file_id}", parse=parse_model(Deleted)))


def _content(response: httpx.Response) -> bytes:
    return response.content


class Batches(Resource[ClientT]):
    @overload
    def create(self: Batches[Portico], **params: Unpack[BatchCreateParams]) -> Batch: ...
    @overload
    def create(self: Batches[AsyncPortico], **params: Unpack[BatchCreateParams]) -> Awaitable[Batch]: ...
    def create(self, **params: Any) -> Any:
        """Run every line of an uploaded file (``input_file_id``) against ``endpoint``, at batch priority."""
        return self._client._request(post("batches", {"completion_window": "24h", **params}, Batch))

    @overload
    def get(self: Batches[Portico], batch_id: str) -> Batch: ...
    @overload
    def get(self: Batches[AsyncPortico], batch_id: str) -> Awaitable[Batch]: ...
    def get(self, batch_id: str) -> Any:
        return self._client._request(get(f"batches/{batch_id}", Batch))

    @overload
    def list(self: Batches[Portico], **params: Unpack[ListParams]) -> Page[Batch]: ...
    @overload
    def list(self: Batches[AsyncPortico], **params: Unpack[ListParams]) -> Awaitable[Page[Batch]]: ...
    def list(self, **params: Any) -> Any:
        return self._client._request(get("batches", Page[Batch], params))

    @overload
    def cancel(self: Batches[Portico], batch_id: str) -> Batch: ...
    @overload
    def cancel(self: Batches[AsyncPortico], batch_id: str) -> Awaitable[Batch]: ...
    def cancel(self, batch_id: str) -> Any:
        return self._client._request(post(f"batches/{batch_id}/cancel", {}, Batch))


class Webhooks(Resource[ClientT]):
    @overload
    def secret(self: Webhooks[Portico]) -> str: ...
    @overload
    def secret(self: Webhooks[AsyncPortico]) -> Awaitable[str]: ...
    def secret(self) -> Any:
        """The project's ``whsec_...`` secret: verify webhooks with ``portico_client.verify_webhook``."""
        return self._client._request(Call(method="GET", path="webhooks/secret", parse=_secret))


def _secret(response: httpx.Response) -> str:
    return WebhookSecret.model_validate_json(response.content).secret
