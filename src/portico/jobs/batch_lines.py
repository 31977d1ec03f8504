"""A batch's lines: its input file read and checked line by line, and its output and error files, appended to as
lines finish and read back on restart, so that a line already answered is never run again, and committed as file
rows when the batch ends.

While a batch runs, its results live at ``<project id>/<batch id>_output.jsonl`` and ``..._error.jsonl`` in the
files directory, with no file row: nobody sees them until the batch ends and its rows are committed. Each result
line is written whole, in one ``write`` on the event loop (a few KB into the page cache), so a cancelled line
can never leave half a line behind or be answered twice; only a crash mid-write can tear the last line, and
reading back cuts a torn last line off (that line runs again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from portico.constants import PREFIX_BATCH_REQUEST, PREFIX_FILE, FilePurpose, new_id
from portico.errors import PorticoError
from portico.schemas.batches import BatchLineError, BatchLineResponse, BatchRequestLine, BatchResultLine
from portico.storage.files import FileStore
from portico.storage.resources import File

READ_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class RequestLine:
    number: int  # the input file's line, from 1
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InvalidLine:
    number: int
    custom_id: str | None  # when the line had one
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class UnusableInput:
    """Why a batch's input file cannot be used at all (the batch fails with this, in its ``errors``)."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


async def iter_lines(path: Path) -> AsyncGenerator[tuple[int, bytes, bool]]:
    """(line number from 1, the line without its newline, whether a newline ended it), read off the event loop.

    Iterate it inside ``contextlib.aclosing``, so the file is closed at once when the caller stops early or is
    cancelled. The file is opened and closed on the loop (both are quick locally): on a worker thread, a
    cancellation during either would leave the handle to the garbage collector, unclosed.
    """
    handle = path.open("rb")
    try:
        number = 0
        rest = b""
        while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line, True
        if rest:
            yield number + 1, rest, False
    finally:
        handle.close()


def parse_line(raw: bytes, number: int, endpoint: str) -> RequestLine | InvalidLine:
    """A non-blank input line checked as OpenAI's batch line ``{"custom_id", "method": "POST", "url", "body"}``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return InvalidLine(number, None, "invalid_json_line", f"Line {number} is not valid JSON.")
    if not isinstance(data, dict):
        return InvalidLine(number, None, "invalid_json_line", f"Line {number} is not a JSON object.")
    custom_id = data.get("custom_id") if isinstance(data.get("custom_id"), str) and data["custom_id"] else None
    try:
        line = BatchRequestLine.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "line"
        message = (
            f"Line {number}: {where}: {first.get('msg')}. Each line must be "
            '{"custom_id": "...", "method": "POST", "url": "<the batch\'s endpoint>", "body": {...}}.'
        )
        return InvalidLine(number, custom_id, "invalid_request_line", message)
    if line.url != endpoint:
        message = (
            f"Line {number}: url '{line.url}' is not the batch's endpoint '{endpoint}'; every line of a batch "
            "must use its endpoint."
        )
        return InvalidLine(number, custom_id, "mismatched_endpoint", message)
    return RequestLine(number, line.custom_id, line.body)


async def check_input(path: Path, endpoint: str, results: ResultFiles) -> int | UnusableInput:
    """Check every line of the input file, answering the invalid ones in ``results``' error file; the number of
    requests (blank lines are not counted), or why the file cannot be used."""
    seen: dict[str, int] = {}
    total = 0
    async with contextlib.aclosing(iter_lines(path)) as lines:
        async for number, raw, _ in lines:
            if not raw.strip():
                continue
            total += 1
            line = parse_line(raw, number, endpoint)
            if line.custom_id is not None:
                if line.custom_id in seen:
                    message = (
                        f"Line {number} repeats the custom_id '{line.custom_id}' of line "
                        f"{seen[line.custom_id]}; each line needs its own custom_id."
                    )
                    return UnusableInput("duplicate_custom_id", message, param="custom_id", line=number)
                seen[line.custom_id] = number
            if isinstance(line, InvalidLine):
                results.add(invalid(line))
    if total == 0:
        return UnusableInput("empty_file", "The input file has no lines; put one request on each line.")
    return total


async def answer_unanswered(path: Path, endpoint: str, results: ResultFiles, code: str, message: str) -> None:
    """Answer every request line without a result with the error ``code`` (the batch stopped before it ran)."""
    async with contextlib.aclosing(iter_lines(path)) as lines:
        async for number, raw, _ in lines:
            if not raw.strip():
                continue
            line = parse_line(raw, number, endpoint)
            if isinstance(line, RequestLine) and line.custom_id not in results.done:
                results.add(not_run(line.custom_id, code, message))


def answered(line: RequestLine, request_id: str, body: BaseModel) -> BatchResultLine:
    response = BatchLineResponse(status_code=200, request_id=request_id, body=body.model_dump(mode="json"))
    return BatchResultLine(id=new_id(PREFIX_BATCH_REQUEST), custom_id=line.custom_id, response=response, error=None)


def failed(line: RequestLine, request_id: str, exc: PorticoError) -> BatchResultLine:
    """The line as the endpoint answered it: its status and error envelope, and the error's code and message."""
    envelope = exc.envelope(request_id)
    return BatchResultLine(
        id=new_id(PREFIX_BATCH_REQUEST),
        custom_id=line.custom_id,
        response=BatchLineResponse(status_code=exc.status_code, request_id=request_id, body=envelope),
        error=BatchLineError(code=exc.code, message=exc.message),
    )


def not_run(custom_id: str | None, code: str, message: str, *, number: int | None = None) -> BatchResultLine:
    """A line that never reached the endpoint: invalid, or the batch was cancelled or expired first."""
    return BatchResultLine(
        id=new_id(PREFIX_BATCH_REQUEST),
        custom_id=custom_id,
        response=None,
        error=BatchLineError(code=code, message=message, line=number),
    )


def invalid(line: InvalidLine) -> BatchResultLine:
    return not_run(line.custom_id, line.code, line.message, number=line.number)


class _ResultFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self.size = 0
        self._fd: int | None = None

    async def open(self, *, fresh: bool, done: set[str]) -> None:
        """Start empty (``fresh``) or read back what an earlier run wrote, cutting off a torn last line."""
        if not fresh and await asyncio.to_thread(self.path.exists):
            async with contextlib.aclosing(iter_lines(self.path)) as lines:
                async for _, raw, complete in lines:
                    if not complete:  # torn by a crash mid-write: cut off below, and that line runs again
                        continue
                    self.lines += 1
                    self.size += len(raw) + 1
                    custom_id = _custom_id(raw)
                    if custom_id is not None:
                        done.add(custom_id)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if fresh else 0)

        def open_for_append() -> int:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, 0o644)
            os.ftruncate(fd, self.size)
            return fd

        self._fd = await asyncio.to_thread(open_for_append)

    def append(self, line: BatchResultLine) -> None:
        assert self._fd is not None, "open() the result file first"
        encoded = line.model_dump_json().encode() + b"\n"
        remaining = memoryview(encoded)
        while remaining:
            remaining = remaining[os.write(self._fd, remaining) :]
        self.lines += 1
        self.size += len(encoded)

    async def sync(self) -> None:
        if self._fd is not None:
            await asyncio.to_thread(os.fsync, self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _custom_id(raw: bytes) -> str | None:
    try:
        value = orjson.loads(raw).get("custom_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


class ResultFiles:
    """A running batch's output and error files; ``done`` holds the custom_ids answered in either."""

    def __init__(self, store: FileStore, project_id: str, batch_id: str) -> None:
        self.project_id = project_id
        self.batch_id = batch_id
        self.output_path = f"{project_id}/{batch_id}_output.jsonl"
        self.error_path = f"{project_id}/{batch_id}_error.jsonl"
        self.output = _ResultFile(store.path(self.output_path))
        self.errors = _ResultFile(store.path(self.error_path))
        self.done: set[str] = set()

    @property
    def completed(self) -> int:
        return self.output.lines

    @property
    def failed(self) -> int:
        return self.errors.lines

    async def open(self, *, fresh: bool) -> None:
        await self.output.open(fresh=fresh, done=self.done)
        await self.errors.open(fresh=fresh, done=self.done)

    def add(self, line: BatchResultLine) -> None:
        """Append the line to the output file (no error) or the error file."""
        (self.output if line.error is None else self.errors).append(line)
        if line.custom_id is not None:
            self.done.add(line.custom_id)

    async def sync(self) -> None:
        await self.output.sync()
        await self.errors.sync()

    def file_rows(self, now: int) -> dict[str, File | None]:
        """The rows that make the files visible, by the batch's column; None for an empty file (it gets none)."""
        rows: dict[str, File | None] = {}
        for column, kind, result in (
            ("output_file_id", "output", self.output),
            ("error_file_id", "error", self.errors),
        ):
            rows[column] = None
            if result.size:
                rows[column] = File(
                    id=new_id(PREFIX_FILE),
                    project_id=self.project_id,
                    filename=f"{self.batch_id}_{kind}.jsonl",
                    purpose=FilePurpose.BATCH_OUTPUT,
                    bytes=result.size,
                    path=self.output_path if result is self.output else self.error_path,
                    created_at=now,
                )
        return rows

    def close(self) -> None:
        self.output.close()
        self.errors.close()

    async def remove(self) -> None:
        self.close()
        for result in (self.output, self.errors):
            await asyncio.to_thread(result.path.unlink, missing_ok=True)
