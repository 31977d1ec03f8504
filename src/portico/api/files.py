"""/v1/files: upload (multipart, streamed to disk), list, get, download and delete a project's files."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import FileResponse, Response

from portico.api.deps import FilesDep, PrincipalDep, require_scope
from portico.api.rendering import error_responses, json_response
from portico.api.uploads import receive_upload
from portico.constants import Scope
from portico.errors import InvalidRequest
from portico.schemas.files import FileDeleted, FileList, FileObject
from portico.storage.resources import File

UPLOAD_PATH = "/v1/files"

router = APIRouter(tags=["files"], responses=error_responses(401, 403, 404))
READ = [require_scope(Scope.FILES_READ)]
WRITE = [require_scope(Scope.FILES_WRITE)]

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JSONL, one request a line."},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        },
    }
}


def file_object(row: File) -> FileObject:
    return FileObject(id=row.id, bytes=row.bytes, created_at=row.created_at, filename=row.filename, purpose=row.purpose)


@router.post(
    UPLOAD_PATH,
    response_model=FileObject,
    dependencies=WRITE,
    responses=error_responses(400, 413, 415),
    openapi_extra=UPLOAD_BODY,
)
async def upload_file(request: Request, principal: PrincipalDep, files: FilesDep) -> Response:
    """The upload is written to disk as it arrives; over `files.max_bytes` it is dropped and answered 413."""
    upload = await receive_upload(request, lambda: files.stage(principal.project_id))
    if upload.file is None or upload.filename is None:
        raise InvalidRequest("Missing required parameter: 'file' (a multipart file field).", param="file")
    purpose = upload.fields.get("purpose")
    if purpose is None:
        await upload.file.discard()
        raise InvalidRequest("Missing required parameter: 'purpose' (use 'batch').", param="purpose")
    row = await files.create(principal.project_id, upload.file, filename=upload.filename, purpose=purpose)
    return json_response(file_object(row))


@router.get("/v1/files", response_model=FileList, dependencies=READ)
async def list_files(
    principal: PrincipalDep,
    files: FilesDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 20,
    after: str | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> Response:
    """Oldest first unless `order=desc`; `after=last_id` fetches the next page."""
    page = await files.list(principal.project_id, purpose=purpose, limit=limit, after=after, order=order)
    return json_response(FileList.of([file_object(row) for row in page.items], has_more=page.has_more))


@router.get("/v1/files/{file_id}", response_model=FileObject, dependencies=READ)
async def get_file(file_id: str, principal: PrincipalDep, files: FilesDep) -> Response:
    return json_response(file_object(await files.get(principal.project_id, file_id)))


@router.get(
    "/v1/files/{file_id}/content",
    dependencies=READ,
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes."}},
)
async def file_content(file_id: str, principal: PrincipalDep, files: FilesDep) -> Response:
    row, path = await files.content(principal.project_id, file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=row.filename)


@router.delete("/v1/files/{file_id}", response_model=FileDeleted, dependencies=WRITE, responses=error_responses(409))
async def delete_file(file_id: str, principal: PrincipalDep, files: FilesDep) -> Response:
    row = await files.delete(principal.project_id, file_id)
    return json_response(FileDeleted(id=row.id))
