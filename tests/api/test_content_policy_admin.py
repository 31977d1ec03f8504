"""Content policies through the admin API: a project's own (PUT/DELETE /v1/admin/projects/{id}/content_policy),
a tier's default (POST /v1/admin/tiers, or the settings' tiers), and how they resolve onto the caller's
principal: the project's own, else the key's tier's, else none; a change reaches every server's cached keys
within one refresh."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portico.auth.authenticator import Authenticator
from portico.auth.principal import Principal
from portico.constants import Scope
from portico.safety.policy import Category, ContentPolicy
from portico.services.admin import AdminService
from portico.services.control_plane import server_secret
from portico.settings import TierSettings
from tests.conftest import asgi_client, auth_settings, bearer, echo_settings, make_key

STRICT = {"categories": {"hate": 0.4, "violence": 0.3}, "check": "both", "on_output": "fail", "injection": "block"}
TIER_DEFAULT = {"categories": {"sexual": 0.8}, "injection": "off"}


@pytest.fixture
async def served(database_url: str, database_schema: str | None) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The app with auth on, over SQLite and over PostgreSQL."""
    async with asgi_client(auth_settings(database_url=database_url, database_schema=database_schema)) as pair:
        yield pair


def _admin(app: FastAPI) -> tuple[AdminService, str]:
    return app.state.runtime.control.admin, app.state.runtime.control.local_principal.organization_id


async def _principal(app: FastAPI, key: str) -> Principal:
    """Who the key is, as a request's authentication sees it."""
    authenticator: Authenticator = app.state.runtime.control.authenticator
    return await authenticator.authenticate(key)


def _policy_url(project_id: str) -> str:
    return f"/v1/admin/projects/{project_id}/content_policy"


async def test_a_projects_policy_is_set_shown_and_cleared(served: tuple[httpx.AsyncClient, FastAPI]) -> None:
    client, app = served
    admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
    project = (await client.post("/v1/admin/projects", json={"name": "guarded"}, headers=admin)).json()
    assert project["content_policy"] is None

    put = await client.put(_policy_url(project["id"]), json=STRICT, headers=admin)
    assert put.status_code == 200, put.text
    expected = {**ContentPolicy().model_dump(mode="json"), **STRICT}  # unnamed fields at their defaults
    assert put.json()["object"] == "organization.project" and put.json()["content_policy"] == expected
    shown = await client.get(f"/v1/admin/projects/{project['id']}", headers=admin)
    assert shown.json()["content_policy"] == expected
    listed = (await client.get("/v1/admin/projects", headers=admin)).json()["data"]
    assert [item["content_policy"] for item in listed if item["id"] == project["id"]] == [expected]

    cleared = await client.delete(_policy_url(project["id"]), headers=admin)
    assert cleared.status_code == 200 and cleared.json()["content_policy"] is None
    assert (await client.get(f"/v1/admin/projects/{project['id']}", headers=admin)).json()["content_policy"] is None
    assert (await client.get(f"/v1/admin/projects/{project['id']}", headers=admin)).json()["status"] == "active"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"categories": {"hate": 2.0}}, "categories.hate"),
        ({"categories": {"gore": 0.5}}, "categories.gore"),
        ({"injection_threshold": -0.1}, "injection_threshold"),
        ({"check": "sideways"}, "check"),
        ({"block": ["hate"]}, "block"),
        ({"injection_threshold": False}, "injection_threshold"),  # strict, like every request body
        ({"categories": {"hate": "0.4"}}, "categories.hate"),
    ],
)
async def test_an_invalid_policy_is_a_400_naming_the_parameter_and_changes_nothing(
    body: dict[str, Any], param: str
) -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
        service, organization = _admin(app)
        project = await service.create_project(organization, "guarded")
        refused = await client.put(_policy_url(project.id), json=body, headers=admin)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"].startswith(param)
        assert (await service.get_project(organization, project.id)).content_policy is None


async def test_another_organizations_admin_gets_404_and_changes_nothing() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        service, organization = _admin(app)
        project = await service.set_content_policy(
            organization, (await service.create_project(organization, "ours")).id, ContentPolicy()
        )
        theirs = await service.create_organization("strangers")
        stranger = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN], organization_id=theirs.id))

        put = await client.put(_policy_url(project.id), json=STRICT, headers=stranger)
        deleted = await client.delete(_policy_url(project.id), headers=stranger)
        assert (put.status_code, deleted.status_code) == (404, 404)
        assert put.json()["error"]["code"] == "not_found"
        assert (await service.get_project(organization, project.id)).content_policy == ContentPolicy()


async def test_a_keys_principal_carries_its_projects_policy_and_no_other() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
        service, organization = _admin(app)
        guarded = await service.create_project(organization, "guarded")
        open_ = await service.create_project(organization, "open")
        assert (await client.put(_policy_url(guarded.id), json=STRICT, headers=admin)).status_code == 200

        guarded_key = await make_key(app, project=guarded.id, tier="free")
        open_key = await make_key(app, project=open_.id, tier="free")
        assert (await _principal(app, guarded_key)).content_policy == ContentPolicy.model_validate(STRICT)
        assert (await _principal(app, open_key)).content_policy is None


async def test_a_tiers_default_applies_where_the_project_has_none_and_the_projects_own_wins() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
        service, organization = _admin(app)
        tier = await client.post(
            "/v1/admin/tiers", json={"name": "guarded", "content_policy": TIER_DEFAULT}, headers=admin
        )
        assert tier.status_code == 200, tier.text
        tier_default = ContentPolicy.model_validate(TIER_DEFAULT)
        assert tier.json()["content_policy"] == tier_default.model_dump(mode="json")
        shown = (await client.get("/v1/admin/tiers/guarded", headers=admin)).json()
        assert shown["content_policy"] == tier_default.model_dump(mode="json")

        plain = await service.create_project(organization, "plain")
        own = await service.create_project(organization, "own")
        await service.set_content_policy(organization, own.id, ContentPolicy.model_validate(STRICT))
        assert (await _principal(app, await make_key(app, project=plain.id, tier="guarded"))).content_policy == (
            tier_default
        )
        own_principal = await _principal(app, await make_key(app, project=own.id, tier="guarded"))
        assert own_principal.content_policy == ContentPolicy.model_validate(STRICT)
        # A tier without a default, a project without a policy: nothing is checked.
        assert (await _principal(app, await make_key(app, project=plain.id, tier="free"))).content_policy is None

        lenient = {"name": "guarded", "content_policy": {"injection_threshold": False}}
        refused = await client.post("/v1/admin/tiers", json=lenient, headers=admin)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "content_policy.injection_threshold"
        replaced = await client.post("/v1/admin/tiers", json={"name": "guarded"}, headers=admin)
        assert replaced.json()["content_policy"] is None


async def test_a_policy_change_reaches_an_existing_keys_principal_at_the_next_cache_refresh() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
        service, organization = _admin(app)
        tier_default = ContentPolicy.model_validate(TIER_DEFAULT)
        await service.put_tier(organization, TierSettings(name="guarded", content_policy=tier_default))
        project = await service.create_project(organization, "changing")
        key = await make_key(app, project=project.id, tier="guarded")
        # Another server over the same database, its clock in the test's hands.
        now = [0.0]
        ttl_s = app.state.settings.auth.key_cache_ttl_s
        other = Authenticator(
            app.state.runtime.control.database, server_secret(app.state.settings), ttl_s=ttl_s, clock=lambda: now[0]
        )
        assert (await other.authenticate(key)).content_policy == tier_default

        assert (await client.put(_policy_url(project.id), json=STRICT, headers=admin)).status_code == 200
        assert (await other.authenticate(key)).content_policy == tier_default  # cached, within the refresh
        now[0] += ttl_s
        assert (await other.authenticate(key)).content_policy == ContentPolicy.model_validate(STRICT)

        assert (await client.delete(_policy_url(project.id), headers=admin)).status_code == 200
        now[0] += ttl_s
        assert (await other.authenticate(key)).content_policy == tier_default


async def test_the_settings_tiers_seed_their_policy_and_the_local_principal_follows_it() -> None:
    """Auth off: the local principal has the local tier's default, or the default project's own policy."""
    settings = echo_settings()
    local = ContentPolicy(categories={Category.HATE: 0.6})
    tiers = [
        tier.model_copy(update={"content_policy": local}) if tier.name == settings.auth.local_tier else tier
        for tier in settings.tiers
    ]
    async with asgi_client(settings.model_copy(update={"tiers": tiers})) as (client, app):
        assert app.state.runtime.control.local_principal.content_policy == local
        listed = {tier["name"]: tier["content_policy"] for tier in (await client.get("/v1/admin/tiers")).json()["data"]}
        assert listed == {"free": None, "standard": None, settings.auth.local_tier: local.model_dump(mode="json")}
        default = (await client.get("/v1/admin/projects/default")).json()
        assert (await client.put(_policy_url(default["id"]), json=STRICT)).status_code == 200

    async with asgi_client(settings) as (_, app):  # the same database, read again at start
        assert app.state.runtime.control.local_principal.content_policy == ContentPolicy.model_validate(STRICT)


async def test_erasing_a_projects_data_keeps_its_policy() -> None:
    async with asgi_client(auth_settings()) as (client, app):
        admin = bearer(await make_key(app, scopes=[Scope.KEYS_ADMIN]))
        service, organization = _admin(app)
        project = await service.create_project(organization, "erased")
        assert (await client.put(_policy_url(project.id), json=STRICT, headers=admin)).status_code == 200
        erased = await client.delete(f"/v1/projects/{project.id}/data", headers=admin)
        assert erased.status_code == 200, erased.text
        shown = (await client.get(f"/v1/admin/projects/{project.id}", headers=admin)).json()
        assert shown["content_policy"] == ContentPolicy.model_validate(STRICT).model_dump(mode="json")
