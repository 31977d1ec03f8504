"""multipart/form-data uploads read as they arrive: the file part goes straight to disk and is never held in memory.

``BodyLimitMiddleware`` lets upload paths through unbuffered, capped at the file limit plus
``MULTIPART_OVERHEAD_BYTES``; the staged file enforces the exact limit on the file's own bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from portico.errors import InvalidRequest, UnsupportedMediaType
from portico.storage.files import StagedFile

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# The multipart framing and the small fields around the file: how far a body may exceed the file limit.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16
FILE_FIELD = "file"


@dataclass
class Upload:
    fields: dict[str, str]
    file: StagedFile | None
    filename: str | None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _FormReader:
    """python-multipart's callbacks (synchronous) queue the file's bytes; ``drain()`` writes them to disk."""

    def __init__(self, stage: Callable[[], Awaitable[StagedFile]]) -> None:
        self.stage = stage
        self.fields: dict[str, str] = {}
        self.file: StagedFile | None = None
        self.filename: str | None = None
        self._part = _Part()
        self._header_name = b""
        self._header_value = b""
        self._pending: list[bytes] = []

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        }

    def _on_part_begin(self) -> None:
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._part.headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._part.headers.get(b"content-disposition"))
        self._part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise InvalidRequest(f"The form has more than {MAX_FIELDS} fields; send only 'file' and 'purpose'.")
            return
        if self._part.name != FILE_FIELD or self.filename is not None:
            raise InvalidRequest(
                f"Send exactly one file, in the form field '{FILE_FIELD}' (this one is '{self._part.name}').",
                param=FILE_FIELD,
            )
        self.filename = self._part.filename = options[b"filename"].decode("utf-8", "replace")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part.filename is not None:
            self._pending.append(data[start:end])
            return
        self._part.data += data[start:end]
        if len(self._part.data) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"The form field '{self._part.name}' is longer than {MAX_FIELD_BYTES} bytes.")

    def _on_part_end(self) -> None:
        if self._part.filename is None:
            self.fields[self._part.name] = self._part.data.decode("utf-8", "replace")

    async def drain(self) -> None:
        if self.filename is not None and self.file is None:
            self.file = await self.stage()
        if self.file is not None:
            for chunk in self._pending:
                await self.file.write(chunk)
        self._pending.clear()


async def receive_upload(request: Request, stage: Callable[[], Awaitable[StagedFile]]) -> Upload:
    """Read a multipart form whose file part (field ``file``) is written, as it arrives, to ``stage()``'s file.

    Any failure (a malformed form, a file over the limit, the client leaving) discards the partial file.
    """
    media_type, options = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        raise UnsupportedMediaType(
            "Upload files as multipart/form-data with the fields 'file' (the JSONL file) and 'purpose' "
            "(e.g. curl -F purpose=batch -F file=@requests.jsonl)."
        )
    boundary = options.get(b"boundary")
    if not boundary:
        raise InvalidRequest("The multipart/form-data Content-Type has no boundary parameter.")
    reader = _FormReader(stage)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
            await reader.drain()
        parser.finalize()
        await reader.drain()
    except ValueError as exc:  # python-multipart's FormParserError, or a boundary it refuses
        await _discard(reader)
        raise InvalidRequest("The multipart/form-data body is malformed; send it as an HTTP client builds it.") from exc
    except BaseException:
        await _discard(reader)
        raise
    return Upload(reader.fields, reader.file, reader.filename)


async def _discard(reader: _FormReader) -> None:
    if reader.file is not None:
        await reader.file.discard()
