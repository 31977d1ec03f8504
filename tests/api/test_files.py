"""/v1/files: multipart uploads streamed to disk with a size limit, listing, download, delete, project isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI

from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import FilesSettings, Settings
from tests.conftest import asgi_client, auth_settings, bearer, echo_settings, make_key

LINE = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "echo"}}\n'


async def upload(
    client: httpx.AsyncClient,
    content: bytes,
    *,
    purpose: str | None = "batch",
    filename: str = "requests.jsonl",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    data = {"purpose": purpose} if purpose is not None else {}
    files = {"file": (filename, content, "application/jsonl")}
    return await client.post("/v1/files", files=files, data=data, headers=headers)


def stored_paths(settings: Settings) -> list[Path]:
    """Every file under the files directory, temporary ones included."""
    root = settings.files_directory
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(echo_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


async def test_upload_get_list_download_and_delete(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    content = LINE * 3
    created = await upload(client, content, filename="dir/requests.jsonl")
    assert created.status_code == 200, created.text
    file = created.json()
    assert file["id"].startswith("file-")
    assert {k: file[k] for k in ("object", "bytes", "filename", "purpose", "status")} == {
        "object": "file",
        "bytes": len(content),
        "filename": "requests.jsonl",
        "purpose": "batch",
        "status": "processed",
    }
    assert isinstance(file["created_at"], int)

    assert (await client.get(f"/v1/files/{file['id']}")).json() == file
    listing = (await client.get("/v1/files")).json()
    assert (listing["object"], [f["id"] for f in listing["data"]], listing["has_more"]) == ("list", [file["id"]], False)
    assert (listing["first_id"], listing["last_id"]) == (file["id"], file["id"])
    assert (await client.get("/v1/files", params={"purpose": "batch_output"})).json()["data"] == []

    download = await client.get(f"/v1/files/{file['id']}/content")
    assert download.status_code == 200
    assert download.content == content

    deleted = await client.delete(f"/v1/files/{file['id']}")
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    for path in (f"/v1/files/{file['id']}", f"/v1/files/{file['id']}/content"):
        missing = await client.get(path)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (await client.delete(f"/v1/files/{file['id']}")).status_code == 404
    assert (await client.get("/v1/files")).json()["data"] == []
    assert stored_paths(app.state.settings) == []  # the bytes are gone from disk too


async def test_pages_follow_after_and_order(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, _ = served
    ids = [(await upload(client, LINE, filename=f"{n}.jsonl")).json()["id"] for n in range(3)]

    first = (await client.get("/v1/files", params={"limit": 2})).json()
    assert (len(first["data"]), first["has_more"]) == (2, True)
    rest = (await client.get("/v1/files", params={"limit": 2, "after": first["last_id"]})).json()
    assert (len(rest["data"]), rest["has_more"]) == (1, False)
    oldest_first = [f["id"] for f in first["data"] + rest["data"]]
    assert sorted(oldest_first) == sorted(ids)  # every file once (uploads of one second share created_at)
    newest_first = (await client.get("/v1/files", params={"order": "desc"})).json()
    assert [f["id"] for f in newest_first["data"]] == oldest_first[::-1]


async def test_a_file_over_the_limit_is_413_and_leaves_nothing_behind() -> None:
    settings = echo_settings(files=FilesSettings(max_bytes=1000))
    async with asgi_client(settings) as (client, _):
        exactly = await upload(client, b"x" * 1000)
        assert exactly.status_code == 200, exactly.text
        too_large = await upload(client, b"x" * 1001)
        assert too_large.status_code == 413
        error = too_large.json()["error"]
        assert error["code"] == "payload_too_large"
        assert "1000 bytes" in error["message"]
        assert [f["id"] for f in (await client.get("/v1/files")).json()["data"]] == [exactly.json()["id"]]
        assert [path.name for path in stored_paths(settings)] == [exactly.json()["id"]]  # no partial upload left


async def test_a_body_far_over_the_limit_is_413_however_it_is_read() -> None:
    settings = echo_settings(files=FilesSettings(max_bytes=1000))
    huge = b"x" * 200_000  # over the file limit plus the multipart allowance: the body itself is refused
    boundary = "portico-test-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n\r\n'
        ).encode()
        + huge
        + f"\r\n--{boundary}--\r\n".encode()
    )

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit is found while reading
        for start in range(0, len(form), 16_384):
            yield form[start : start + 16_384]

    async with asgi_client(settings) as (client, _):
        with_length = await upload(client, huge)
        assert (with_length.status_code, with_length.json()["error"]["code"]) == (413, "payload_too_large")
        headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
        streamed = await client.post("/v1/files", content=chunked(), headers=headers)
        assert (streamed.status_code, streamed.json()["error"]["code"]) == (413, "payload_too_large")
        # With an Idempotency-Key the body is read before the route: still a 413.
        keyed = await client.post("/v1/files", content=chunked(), headers={**headers, "idempotency-key": "up-1"})
        assert (keyed.status_code, keyed.json()["error"]["code"]) == (413, "payload_too_large")
        assert (await client.get("/v1/files")).json()["data"] == []
        assert stored_paths(settings) == []


async def test_uploads_are_not_held_to_the_request_body_limit() -> None:
    settings = echo_settings(max_body_bytes=1024)
    async with asgi_client(settings) as (client, _):
        big = LINE * 1000  # ~100 KB: far over max_body_bytes, well under files.max_bytes
        created = await upload(client, big)
        assert created.status_code == 200, created.text
        assert (await client.get(f"/v1/files/{created.json()['id']}/content")).content == big
        # Other POSTs still are.
        chat = {"model": "echo", "messages": [{"role": "user", "content": "x" * 2000}]}
        assert (await client.post("/v1/chat/completions", json=chat)).status_code == 413


async def test_malformed_uploads_are_4xx_and_leave_nothing_behind(client: httpx.AsyncClient) -> None:
    as_json = await client.post("/v1/files", json={"file": "x", "purpose": "batch"})
    assert (as_json.status_code, as_json.json()["error"]["code"]) == (415, "unsupported_media_type")

    no_purpose = await upload(client, LINE, purpose=None)
    assert (no_purpose.status_code, no_purpose.json()["error"]["param"]) == (400, "purpose")

    other_purpose = await upload(client, LINE, purpose="fine-tune")
    assert (other_purpose.status_code, other_purpose.json()["error"]["param"]) == (400, "purpose")
    assert "'batch'" in other_purpose.json()["error"]["message"]

    no_file = await client.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x.jsonl", LINE)})
    assert (no_file.status_code, no_file.json()["error"]["param"]) == (400, "file")

    only_field = await client.post("/v1/files", data={"purpose": "batch"}, files={"purpose2": (None, "x")})
    assert (only_field.status_code, only_field.json()["error"]["param"]) == (400, "file")

    assert (await client.get("/v1/files")).json()["data"] == []


async def test_the_openai_sdk_uploads_lists_downloads_and_deletes(client: httpx.AsyncClient) -> None:
    sdk = openai.AsyncOpenAI(api_key="unused", base_url="http://portico.test/v1", http_client=client, max_retries=0)
    created = await sdk.files.create(file=("requests.jsonl", LINE * 2), purpose="batch")
    assert (created.purpose, created.bytes, created.filename) == ("batch", len(LINE) * 2, "requests.jsonl")
    assert [f.id async for f in sdk.files.list(purpose="batch")] == [created.id]
    assert (await sdk.files.retrieve(created.id)).id == created.id
    assert (await sdk.files.content(created.id)).content == LINE * 2
    assert (await sdk.files.delete(created.id)).deleted is True
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)


async def test_another_projects_file_is_404_on_every_route(database_url: str, database_schema: str | None) -> None:
    settings = auth_settings(database_url=database_url, database_schema=database_schema)
    async with asgi_client(settings) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        other_project = await admin.create_project(app.state.runtime.control.local_principal.organization_id, "other")
        owner = bearer(await make_key(app, scopes=[Scope.FILES_READ, Scope.FILES_WRITE]))
        stranger = bearer(await make_key(app, scopes=[Scope.FILES_READ, Scope.FILES_WRITE], project=other_project.id))
        file_id = (await upload(client, LINE, headers=owner)).json()["id"]

        for method, path in [
            ("GET", f"/v1/files/{file_id}"),
            ("GET", f"/v1/files/{file_id}/content"),
            ("DELETE", f"/v1/files/{file_id}"),
        ]:
            response = await client.request(method, path, headers=stranger)
            assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found"), (method, path)
        assert (await client.get("/v1/files", headers=stranger)).json()["data"] == []
        paged = await client.get("/v1/files", params={"after": file_id}, headers=stranger)
        assert paged.json()["data"] == []

        assert (await client.get(f"/v1/files/{file_id}/content", headers=owner)).content == LINE


async def test_reading_needs_files_read_and_writing_files_write() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        reader = bearer(await make_key(app, scopes=[Scope.FILES_READ]))
        writer = bearer(await make_key(app, scopes=[Scope.FILES_WRITE]))
        refused = await upload(client, LINE, headers=reader)
        assert (refused.status_code, refused.json()["error"]["required_scope"]) == (403, "files:write")
        file_id = (await upload(client, LINE, headers=writer)).json()["id"]
        assert (await client.get(f"/v1/files/{file_id}", headers=writer)).status_code == 403
        assert (await client.get(f"/v1/files/{file_id}/content", headers=reader)).content == LINE
        assert (await client.delete(f"/v1/files/{file_id}", headers=reader)).status_code == 403
