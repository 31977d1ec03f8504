"""DELETE /v1/projects/{id}/data erases one project's stored content and nothing of another project's."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from portico.constants import Scope
from portico.services.admin import AdminService
from portico.services.data_deletion import count_project_rows
from portico.settings import Settings
from portico.storage.database import Database
from portico.storage.resources import (
    Batch,
    Conversation,
    ConversationMessage,
    File,
    IdempotencyRecord,
    Job,
    JobEvent,
    StoredCompletion,
    StoredResponse,
    WebhookDelivery,
)
from tests.conftest import asgi_client, auth_settings, bearer, make_key


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    async with asgi_client(auth_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


async def _store_content(app: FastAPI, project_id: str) -> Path:
    """One of everything a project can store, written straight to the tables; returns its file on disk."""
    settings: Settings = app.state.settings
    database: Database = app.state.runtime.control.database
    now = int(time.time())
    tag = project_id[-6:]
    relative = f"{project_id}/file-{tag}"
    on_disk = settings.files_directory / relative
    on_disk.parent.mkdir(parents=True, exist_ok=True)
    on_disk.write_text('{"custom_id": "1"}\n')
    async with database.session() as session:
        session.add(
            StoredCompletion(
                id=f"chatcmpl-{tag}",
                project_id=project_id,
                model="echo",
                request={"m": 1},
                response={"r": 1},
                created_at=now,
            )
        )
        session.add(
            StoredResponse(
                id=f"resp_{tag}",
                project_id=project_id,
                status="completed",
                request={"input": "secret question"},
                response={"output": "secret answer"},
                input_items=[],
                history=[],
                turn=[],
                created_at=now,
            )
        )
        session.add(
            Conversation(
                id=f"conv_{tag}", project_id=project_id, model="echo", context_strategy="error", created_at=now
            )
        )
        session.add(
            Job(
                id=f"job_{tag}",
                project_id=project_id,
                type="completion",
                status="succeeded",
                priority=1,
                request={"prompt": "secret words"},
                result={"text": "secret answer"},
                created_at=now,
            )
        )
        session.add(
            File(
                id=f"file-{tag}",
                project_id=project_id,
                filename="in.jsonl",
                purpose="batch",
                bytes=on_disk.stat().st_size,
                path=relative,
                created_at=now,
            )
        )
        session.add(
            Batch(
                id=f"batch_{tag}",
                project_id=project_id,
                endpoint="/v1/completions",
                input_file_id=f"file-{tag}",
                completion_window="24h",
                status="completed",
                created_at=now,
                expires_at=now + 86400,
            )
        )
        session.add(
            IdempotencyRecord(
                project_id=project_id,
                key="k",
                request_hash="h",
                status="completed",
                response_body=b"secret",
                locked_until=0,
                created_at=now,
                expires_at=now + 60,
            )
        )
        session.add(
            WebhookDelivery(
                id=f"msg_{tag}",
                project_id=project_id,
                url="http://127.0.0.1:9/hook",
                payload={"result": "secret"},
                next_attempt_at=now,
                created_at=now,
            )
        )
        await session.flush()
        session.add(
            ConversationMessage(
                id=f"msg_m{tag}",
                conversation_id=f"conv_{tag}",
                seq=0,
                role="user",
                content="secret question",
                tokens=2,
                created_at=now,
            )
        )
        session.add(JobEvent(job_id=f"job_{tag}", type="delta", data={"text": "secret"}, created_at=now))
        await session.commit()
    return on_disk


async def test_erases_the_projects_content_and_leaves_others_alone(
    served: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    organization = app.state.runtime.control.local_principal.organization_id
    doomed = await admin.create_project(organization, "doomed")
    kept = await admin.create_project(organization, "kept")
    doomed_file = await _store_content(app, doomed.id)
    kept_file = await _store_content(app, kept.id)
    admin_key = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))

    response = await client.delete(f"/v1/projects/{doomed.id}/data", headers=admin_key)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "project.data_deletion" and body["project_id"] == doomed.id
    assert body["deleted"] == {
        "stored_completions": 1,
        "responses": 1,
        "conversations": 1,
        "conversation_messages": 1,
        "jobs": 1,
        "job_events": 1,
        "batches": 1,
        "files": 1,
        "file_bytes": len('{"custom_id": "1"}\n'),
        "idempotency_records": 1,
        "webhook_deliveries": 1,
    }
    assert await count_project_rows(app.state.runtime.control.database, doomed.id) == 0
    assert not doomed_file.exists() and not doomed_file.parent.exists()
    assert await count_project_rows(app.state.runtime.control.database, kept.id) == 8
    assert kept_file.exists()
    # The project and its keys stay usable.
    assert (await client.get(f"/v1/admin/projects/{doomed.id}", headers=admin_key)).json()["status"] == "active"


async def test_another_organizations_project_is_404(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    theirs = await admin.create_organization("theirs")
    their_project = (await admin.list_projects(theirs.id, limit=1, after=None)).items[0]
    await _store_content(app, their_project.id)
    ours = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
    assert (await client.delete(f"/v1/projects/{their_project.id}/data", headers=ours)).status_code == 404
    assert await count_project_rows(app.state.runtime.control.database, their_project.id) == 8
