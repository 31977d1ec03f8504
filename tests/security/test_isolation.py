"""Tenant isolation, exhaustively from the route table (tests/api/test_auth.py's ROUTE_SCOPES).

For every route that names an object, and every verb on it: a key of another tenant — another project for a
project's objects, another organization for an organization's (keys, projects, tiers) — gets the same 404 as
for an id that does not exist, and the object is still there for its owner afterwards. A key without the route's
scope gets a 403 whoever owns the object, so a 403 never tells an outsider that an id exists. Every list route
shows another tenant none of the owner's ids. A new route, or a new kind of path parameter, fails here until
``OWNERS`` says who owns its objects.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portico.constants import Scope
from portico.services.admin import AdminService
from portico.settings import TierSettings
from tests.api.test_auth import ROUTE_SCOPES
from tests.api.test_batches import chat_line, create_batch
from tests.api.test_files import upload
from tests.conftest import ECHO_ALIAS, asgi_client, auth_settings, bearer, make_key

PROJECT = "project"
ORGANIZATION = "organization"
# Who owns the object a path parameter names, and the route that shows the owner whether it still exists.
OWNERS: dict[str, tuple[str, str]] = {
    "completion_id": (PROJECT, "/v1/chat/completions/{completion_id}"),
    "response_id": (PROJECT, "/v1/responses/{response_id}"),
    "conversation_id": (PROJECT, "/v1/conversations/{conversation_id}"),
    "file_id": (PROJECT, "/v1/files/{file_id}"),
    "batch_id": (PROJECT, "/v1/batches/{batch_id}"),
    "job_id": (PROJECT, "/v1/jobs/{job_id}"),
    "key_id": (ORGANIZATION, "/v1/admin/keys/{key_id}"),
    "project_id": (ORGANIZATION, "/v1/admin/projects/{project_id}"),
    "name": (ORGANIZATION, "/v1/admin/tiers/{name}"),
}
SHARED = {"model"}  # the served models are the same for every tenant
# Bodies that pass validation, so that the request reaches the lookup of the object.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/chat/completions/{completion_id}"): {"metadata": {"tag": "theirs"}},
    ("PATCH", "/v1/chat/completions/{completion_id}"): {"metadata": {"tag": "theirs"}},
    ("POST", "/v1/conversations/{conversation_id}/messages"): {"content": "hello"},
    ("PUT", "/v1/admin/projects/{project_id}/content_policy"): {"categories": {"hate": 0.5}},
}
CHAT = {"model": ECHO_ALIAS, "messages": [{"role": "user", "content": "isolation probe"}], "max_tokens": 4}


def _params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)


OBJECT_ROUTES = sorted(route for route in ROUTE_SCOPES if set(_params(route[1])) - SHARED)
LIST_ROUTES = sorted(route for route in ROUTE_SCOPES if route[0] == "GET" and not _params(route[1]))


@dataclass
class Tenants:
    client: httpx.AsyncClient
    app: FastAPI
    owner_project: str
    neighbour_project: str  # another project of the same organization
    stranger_organization: str  # another organization
    owner: dict[str, str]  # every scope, in the project that owns the objects
    neighbour: dict[str, str]  # every scope, in the neighbour project
    stranger: dict[str, str]  # every scope, in the other organization
    ids: dict[str, str]  # path parameter → the owner's object

    def outsider(self, path: str) -> tuple[dict[str, str], dict[str, str]]:
        """The closest outsider to the objects ``path`` names, and where it lives (``make_key`` arguments):
        another project for a project's objects, another organization for an organization's."""
        owned_by = {OWNERS[param][0] for param in _params(path)}
        if ORGANIZATION in owned_by:
            return self.stranger, {"organization_id": self.stranger_organization}
        return self.neighbour, {"project": self.neighbour_project}


async def _owned_objects(
    client: httpx.AsyncClient, app: FastAPI, project: str, owner: dict[str, str]
) -> dict[str, str]:
    """One object of every kind, made by the owner."""
    admin: AdminService = app.state.runtime.control.admin
    organization = app.state.runtime.control.local_principal.organization_id
    stored = await client.post("/v1/chat/completions", json={**CHAT, "store": True}, headers=owner)
    response = await client.post(
        "/v1/responses", json={"model": ECHO_ALIAS, "input": "isolation probe", "background": True}, headers=owner
    )
    conversation = await client.post("/v1/conversations", json={"model": ECHO_ALIAS}, headers=owner)
    uploaded = await upload(client, b'{"custom_id": "a"}\n', headers=owner)
    batch = await create_batch(client, [chat_line("a")], headers=owner)
    job = await client.post("/v1/jobs", json={"type": "chat.completion", "request": CHAT}, headers=owner)
    await admin.put_tier(organization, TierSettings(name="tier-of-the-owner", requests_per_minute=600))
    key = await make_key(app, project=project, scopes=[Scope.MODELS_READ])
    for created in (stored, response, conversation, uploaded, job):
        assert created.status_code in (200, 201, 202), created.text
    return {
        "completion_id": stored.json()["id"],
        "response_id": response.json()["id"],
        "conversation_id": conversation.json()["id"],
        "file_id": uploaded.json()["id"],
        "batch_id": batch["id"],
        "job_id": job.json()["id"],
        "key_id": key.split("-")[1],
        "project_id": project,
        "name": "tier-of-the-owner",
    }


@pytest.fixture
async def tenants() -> AsyncIterator[Tenants]:
    async with asgi_client(auth_settings()) as (client, app):
        admin: AdminService = app.state.runtime.control.admin
        organization = app.state.runtime.control.local_principal.organization_id
        owner_project = (await admin.create_project(organization, "owner")).id
        neighbour_project = (await admin.create_project(organization, "neighbour")).id
        theirs = await admin.create_organization("strangers")
        owner = bearer(await make_key(app, project=owner_project))
        yield Tenants(
            client=client,
            app=app,
            owner_project=owner_project,
            neighbour_project=neighbour_project,
            stranger_organization=theirs.id,
            owner=owner,
            neighbour=bearer(await make_key(app, project=neighbour_project)),
            stranger=bearer(await make_key(app, organization_id=theirs.id)),
            ids=await _owned_objects(client, app, owner_project, owner),
        )


def test_every_path_parameter_has_an_owner() -> None:
    named = {param for _, path in ROUTE_SCOPES for param in _params(path)}
    assert named - SHARED == set(OWNERS)


@pytest.mark.parametrize(("method", "path"), OBJECT_ROUTES)
async def test_another_tenants_object_is_404_and_a_missing_scope_is_403(
    tenants: Tenants, method: str, path: str
) -> None:
    client, app = tenants.client, tenants.app
    body = BODIES.get((method, path), {} if method in ("POST", "PATCH") else None)
    theirs = path.format(**tenants.ids)
    made_up = path.format(**{param: f"{tenants.ids[param]}0" for param in _params(path)})
    outsider, outsider_home = tenants.outsider(path)

    refused = await client.request(method, theirs, json=body, headers=outsider)
    unknown = await client.request(method, made_up, json=body, headers=outsider)
    assert refused.status_code == 404, refused.text
    assert refused.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert unknown.status_code == 404

    needed = ROUTE_SCOPES[(method, path)]
    others = [scope for scope in Scope if scope is not needed]
    for home in ({"project": tenants.owner_project}, outsider_home):
        unscoped = await make_key(app, scopes=others, **home)
        forbidden = await client.request(method, theirs, json=body, headers=bearer(unscoped))
        assert forbidden.status_code == 403, forbidden.text
        assert forbidden.json()["error"]["code"] == "insufficient_scope"

    for param in _params(path):
        still_there = await client.get(OWNERS[param][1].format(**tenants.ids), headers=tenants.owner)
        assert still_there.status_code == 200, (param, still_there.text)
        assert still_there.json().get("revoked_at") is None
        assert still_there.json().get("status") != "archived"


@pytest.mark.parametrize("path", [path for _, path in LIST_ROUTES])
async def test_lists_show_another_tenant_none_of_the_owners_objects(tenants: Tenants, path: str) -> None:
    client, ids = tenants.client, tenants.ids
    project_ids = [ids[param] for param, (owned_by, _) in OWNERS.items() if owned_by == PROJECT]

    mine = await client.get(path, headers=tenants.owner)
    assert mine.status_code == 200, mine.text
    listed_here = [ids[param] for param, (_, probe) in OWNERS.items() if probe.rsplit("/", 1)[0] == path]
    for object_id in listed_here:
        assert object_id in mine.text

    neighbours = await client.get(path, headers=tenants.neighbour)
    strangers = await client.get(path, headers=tenants.stranger)
    assert (neighbours.status_code, strangers.status_code) == (200, 200)
    for object_id in project_ids:
        assert object_id not in neighbours.text
    for object_id in ids.values():
        assert object_id not in strangers.text


async def test_each_project_signs_its_webhooks_with_its_own_secret(tenants: Tenants) -> None:
    secrets = [
        (await tenants.client.get("/v1/webhooks/secret", headers=headers)).json()["secret"]
        for headers in (tenants.owner, tenants.neighbour, tenants.stranger)
    ]
    assert len(set(secrets)) == 3
