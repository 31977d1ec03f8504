"""API keys over HTTP: 401 per reason, 403 per scope on every route, rotation, revocation and cross-tenant 404s."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from portico.auth.keys import parse_key
from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import Settings, TierSettings
from portico.storage.database import Database
from portico.storage.models import ApiKey
from tests.conftest import asgi_client, auth_settings, bearer, make_key

CHAT = {"model": "echo", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}

# Every route and the scope it needs. A route missing here fails test_every_route_is_in_the_scope_table.
ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("POST", "/v1/chat/completions"): Scope.INFERENCE,
    ("POST", "/v1/completions"): Scope.INFERENCE,
    ("POST", "/v1/embeddings"): Scope.INFERENCE,
    ("POST", "/v1/moderations"): Scope.INFERENCE,
    ("POST", "/v1/tokenize"): Scope.INFERENCE,
    ("POST", "/v1/models/{model}/predict"): Scope.INFERENCE,
    ("GET", "/v1/models"): Scope.MODELS_READ,
    ("GET", "/v1/models/{model}"): Scope.MODELS_READ,
    ("GET", "/v1/usage"): Scope.USAGE_READ,
    ("POST", "/v1/admin/projects"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/projects"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/projects/{project_id}"): Scope.KEYS_ADMIN,
    ("DELETE", "/v1/admin/projects/{project_id}"): Scope.KEYS_ADMIN,
    ("PUT", "/v1/admin/projects/{project_id}/content_policy"): Scope.KEYS_ADMIN,
    ("DELETE", "/v1/admin/projects/{project_id}/content_policy"): Scope.KEYS_ADMIN,
    ("POST", "/v1/admin/keys"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/keys"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/keys/{key_id}"): Scope.KEYS_ADMIN,
    ("POST", "/v1/admin/keys/{key_id}/rotate"): Scope.KEYS_ADMIN,
    ("DELETE", "/v1/admin/keys/{key_id}"): Scope.KEYS_ADMIN,
    ("POST", "/v1/admin/tiers"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/tiers"): Scope.KEYS_ADMIN,
    ("GET", "/v1/admin/tiers/{name}"): Scope.KEYS_ADMIN,
    ("DELETE", "/v1/admin/tiers/{name}"): Scope.KEYS_ADMIN,
    ("GET", "/v1/chat/completions"): Scope.INFERENCE,
    ("GET", "/v1/chat/completions/{completion_id}"): Scope.INFERENCE,
    ("POST", "/v1/chat/completions/{completion_id}"): Scope.INFERENCE,
    ("PATCH", "/v1/chat/completions/{completion_id}"): Scope.INFERENCE,
    ("DELETE", "/v1/chat/completions/{completion_id}"): Scope.INFERENCE,
    ("GET", "/v1/chat/completions/{completion_id}/messages"): Scope.INFERENCE,
    ("POST", "/v1/responses"): Scope.INFERENCE,
    ("POST", "/v1/messages"): Scope.INFERENCE,
    ("POST", "/v1/messages/count_tokens"): Scope.INFERENCE,
    ("GET", "/v1/responses/{response_id}"): Scope.INFERENCE,
    ("DELETE", "/v1/responses/{response_id}"): Scope.INFERENCE,
    ("POST", "/v1/responses/{response_id}/cancel"): Scope.INFERENCE,
    ("GET", "/v1/responses/{response_id}/input_items"): Scope.INFERENCE,
    ("POST", "/v1/conversations"): Scope.CONVERSATIONS_WRITE,
    ("GET", "/v1/conversations"): Scope.CONVERSATIONS_READ,
    ("GET", "/v1/conversations/{conversation_id}"): Scope.CONVERSATIONS_READ,
    ("DELETE", "/v1/conversations/{conversation_id}"): Scope.CONVERSATIONS_WRITE,
    ("GET", "/v1/conversations/{conversation_id}/messages"): Scope.CONVERSATIONS_READ,
    ("POST", "/v1/conversations/{conversation_id}/messages"): Scope.CONVERSATIONS_WRITE,
    ("DELETE", "/v1/projects/{project_id}/data"): Scope.KEYS_ADMIN,
    ("POST", "/v1/files"): Scope.FILES_WRITE,
    ("GET", "/v1/files"): Scope.FILES_READ,
    ("GET", "/v1/files/{file_id}"): Scope.FILES_READ,
    ("GET", "/v1/files/{file_id}/content"): Scope.FILES_READ,
    ("DELETE", "/v1/files/{file_id}"): Scope.FILES_WRITE,
    ("POST", "/v1/batches"): Scope.JOBS_WRITE,
    ("GET", "/v1/batches"): Scope.JOBS_READ,
    ("GET", "/v1/batches/{batch_id}"): Scope.JOBS_READ,
    ("POST", "/v1/batches/{batch_id}/cancel"): Scope.JOBS_WRITE,
    ("POST", "/v1/jobs"): Scope.JOBS_WRITE,
    ("GET", "/v1/jobs"): Scope.JOBS_READ,
    ("GET", "/v1/jobs/{job_id}"): Scope.JOBS_READ,
    ("GET", "/v1/jobs/{job_id}/events"): Scope.JOBS_READ,
    ("POST", "/v1/jobs/{job_id}/cancel"): Scope.JOBS_WRITE,
    ("DELETE", "/v1/jobs/{job_id}"): Scope.JOBS_WRITE,
    ("GET", "/v1/webhooks/secret"): Scope.JOBS_READ,
}
OPEN_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/playground"), ("GET", "/metrics")}


def _concrete(path: str) -> str:
    return path.format(
        model="echo",
        project_id="proj_x",
        key_id="key_x",
        name="free",
        completion_id="chatcmpl-x",
        response_id="resp_x",
        conversation_id="conv_x",
        file_id="file-x",
        batch_id="batch_x",
        job_id="job_x",
    )


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with auth on, over SQLite and over PostgreSQL."""
    async with asgi_client(auth_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


def test_auth_is_on_by_default_except_on_loopback() -> None:
    assert not Settings(host="127.0.0.1").auth_enabled
    assert Settings(host="0.0.0.0").auth_enabled
    assert Settings(host="10.1.2.3").auth_enabled
    assert not Settings(host="0.0.0.0", auth={"enabled": False}).auth_enabled


async def test_every_route_is_in_the_scope_table(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    _, app = served
    routes = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    assert routes - OPEN_ROUTES == set(ROUTE_SCOPES)


@pytest.mark.parametrize(("method", "path"), sorted(ROUTE_SCOPES))
async def test_missing_key_is_401_and_a_key_without_the_scope_is_403(
    served: tuple[httpx.AsyncClient, FastAPI], method: str, path: str
) -> None:
    client, app = served
    needed = ROUTE_SCOPES[(method, path)]
    url = _concrete(path)
    body = {} if method == "POST" else None

    missing = await client.request(method, url, json=body)
    assert missing.status_code == 401
    others = [scope for scope in Scope if scope is not needed]
    key = await make_key(app, scopes=others)
    forbidden = await client.request(method, url, json=body, headers=bearer(key))
    assert forbidden.status_code == 403
    error = forbidden.json()["error"]
    assert needed.value in error["message"]
    if path.startswith("/v1/messages"):  # Anthropic's error shape: a type and a message
        assert missing.json()["error"]["type"] == "authentication_error"
        assert error["type"] == "permission_error"
    else:
        assert missing.json()["error"]["code"] == "missing_api_key"
        assert (error["code"], error["required_scope"]) == ("insufficient_scope", needed.value)

    allowed = await client.request(method, url, json=body, headers=bearer(await make_key(app, scopes=[needed])))
    assert allowed.status_code not in (401, 403)


async def test_each_bad_key_has_its_own_401_code(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    organization = app.state.runtime.control.local_principal.organization_id
    good = await make_key(app)
    parts = parse_key(good)
    assert parts is not None

    async def code(key: str) -> str:
        response = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert response.status_code == 401
        return str(response.json()["error"]["code"])

    assert await code("not-a-key") == "invalid_api_key"
    assert await code(good[:-1] + ("0" if good[-1] != "0" else "1")) == "invalid_api_key"  # wrong secret
    assert await code(f"pk-key_{'0' * 24}-{parts.secret}") == "invalid_api_key"  # unknown key id
    expired = await make_key(app, expires_at=int(time.time()) - 1)
    assert await code(expired) == "expired_api_key"
    await admin.revoke_key(organization, parts.key_id)
    assert await code(good) == "revoked_api_key"
    other = await make_key(app, project=(await admin.create_project(organization, "doomed")).id)
    await admin.archive_project(organization, "doomed")
    await _until_refused(client, other)
    assert await code(other) == "revoked_api_key"


async def _until_refused(client: httpx.AsyncClient, key: str) -> None:
    """A change made directly in the database reaches this process within the key cache's TTL (≤ 1 s)."""
    deadline = time.monotonic() + 1.5
    while (await client.get("/v1/models", headers=bearer(key))).status_code != 401:
        assert time.monotonic() < deadline, "the change did not apply within a second"


async def test_both_header_styles_are_accepted(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    key = await make_key(app)
    assert (await client.get("/v1/models", headers=bearer(key))).status_code == 200
    assert (await client.get("/v1/models", headers={"api-key": key})).status_code == 200


async def test_key_is_shown_once_and_stored_only_as_a_keyed_hash(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin_key = await make_key(app, scopes=[Scope.KEYS_ADMIN])
    created = await client.post(
        "/v1/admin/keys",
        json={"project": "default", "scopes": ["inference"], "tier": "free"},
        headers=bearer(admin_key),
    )
    assert created.status_code == 201
    value = created.json()["value"]
    parts = parse_key(value)
    assert parts is not None and parts.key_id == created.json()["id"]
    listed = await client.get(f"/v1/admin/keys/{parts.key_id}", headers=bearer(admin_key))
    assert "value" not in listed.json()
    assert parts.secret not in listed.text
    database: Database = app.state.runtime.control.database
    async with database.session() as session:
        stored = (await session.execute(select(ApiKey).where(ApiKey.id == parts.key_id))).scalar_one()
    assert parts.secret not in (stored.secret_hash, stored.previous_secret_hash)
    assert len(stored.secret_hash) == 64


async def test_rotation_keeps_the_old_secret_for_the_grace_period(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin_key = await make_key(app, scopes=[Scope.KEYS_ADMIN])
    old = await make_key(app, scopes=[Scope.MODELS_READ])
    key_id = old.split("-")[1]
    rotated = await client.post(
        f"/v1/admin/keys/{key_id}/rotate", json={"grace_period_s": 600}, headers=bearer(admin_key)
    )
    assert rotated.status_code == 200
    new = rotated.json()["value"]
    assert new != old and rotated.json()["previous_secret_valid_until"] >= time.time() + 590
    assert (await client.get("/v1/models", headers=bearer(old))).status_code == 200
    assert (await client.get("/v1/models", headers=bearer(new))).status_code == 200

    again = await client.post(f"/v1/admin/keys/{key_id}/rotate", json={"grace_period_s": 0}, headers=bearer(admin_key))
    newest = again.json()["value"]
    assert (await client.get("/v1/models", headers=bearer(new))).json()["error"]["code"] == "invalid_api_key"
    assert (await client.get("/v1/models", headers=bearer(newest))).status_code == 200


async def test_revoke_applies_at_once_in_this_process(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin_key = await make_key(app, scopes=[Scope.KEYS_ADMIN])
    victim = await make_key(app, scopes=[Scope.MODELS_READ])
    assert (await client.get("/v1/models", headers=bearer(victim))).status_code == 200
    revoked = await client.delete(f"/v1/admin/keys/{victim.split('-')[1]}", headers=bearer(admin_key))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    refused = await client.get("/v1/models", headers=bearer(victim))
    assert refused.json()["error"]["code"] == "revoked_api_key"


async def test_another_organizations_objects_are_404(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    theirs = await admin.create_organization("theirs")
    their_key = await make_key(app, organization_id=theirs.id)
    their_key_id = their_key.split("-")[1]
    their_project = (await admin.list_projects(theirs.id, limit=10, after=None)).items[0].id
    ours = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN, Scope.USAGE_READ]))

    for method, path in [
        ("GET", f"/v1/admin/keys/{their_key_id}"),
        ("POST", f"/v1/admin/keys/{their_key_id}/rotate"),
        ("DELETE", f"/v1/admin/keys/{their_key_id}"),
        ("GET", f"/v1/admin/projects/{their_project}"),
        ("DELETE", f"/v1/admin/projects/{their_project}"),
        ("GET", f"/v1/usage?project={their_project}"),
    ]:
        response = await client.request(method, path, headers=ours, json={} if method == "POST" else None)
        assert response.status_code == 404, (method, path, response.text)
    created = await client.post("/v1/admin/keys", json={"project": their_project}, headers=ours)
    assert created.status_code == 404
    # Tiers are per organization: theirs are invisible, and changing ours leaves theirs alone.
    await admin.put_tier(theirs.id, TierSettings(name="gold", requests_per_minute=5))
    assert (await client.get("/v1/admin/tiers/gold", headers=ours)).status_code == 404
    assert (await client.delete("/v1/admin/tiers/gold", headers=ours)).status_code == 404
    await client.post("/v1/admin/tiers", json={"name": "free", "requests_per_minute": 1}, headers=ours)
    assert (await admin.get_tier(theirs.id, "free")).requests_per_minute == 60
    listed = await client.get("/v1/admin/keys", headers=ours)
    assert their_key_id not in listed.text
    # …and the key still works for its owner.
    assert (await client.get("/v1/models", headers=bearer(their_key))).status_code == 200


async def test_another_projects_usage_is_404_without_keys_admin(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin: AdminService = app.state.runtime.control.admin
    organization = app.state.runtime.control.local_principal.organization_id
    project_a = await admin.create_project(organization, "a")
    project_b = await admin.create_project(organization, "b")
    key_a = await make_key(app, project=project_a.id, scopes=[Scope.USAGE_READ])
    key_b = await make_key(app, project=project_b.id, scopes=[Scope.USAGE_READ])
    assert (await client.get(f"/v1/usage?project={project_a.id}", headers=bearer(key_a))).status_code == 200
    assert (await client.get(f"/v1/usage?project={project_a.id}", headers=bearer(key_b))).status_code == 404


async def test_last_used_at_is_recorded_without_a_write_per_request(
    served: tuple[httpx.AsyncClient, FastAPI],
) -> None:
    client, app = served
    admin_key = await make_key(app, scopes=[Scope.KEYS_ADMIN])
    user = await make_key(app, scopes=[Scope.MODELS_READ])
    key_id = user.split("-")[1]
    before = await client.get(f"/v1/admin/keys/{key_id}", headers=bearer(admin_key))
    assert before.json()["last_used_at"] is None
    for _ in range(3):
        await client.get("/v1/models", headers=bearer(user))
    await app.state.runtime.control.meter.recorder.flush()
    after = await client.get(f"/v1/admin/keys/{key_id}", headers=bearer(admin_key))
    assert after.json()["last_used_at"] >= int(time.time()) - 5
