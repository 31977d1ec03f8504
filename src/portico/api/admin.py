"""/v1/admin/...: projects, API keys and tiers of the caller's organization (scope keys:admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from portico.api.deps import AdminDep, PrincipalDep, require_json, require_scope
from portico.api.responses import error_responses, json_response
from portico.constants import API_KEY_PREFIX, Scope
from portico.schemas.admin import (
    CreatedKeyObject,
    Deleted,
    KeyCreateRequest,
    KeyList,
    KeyObject,
    KeyRotateRequest,
    ProjectCreateRequest,
    ProjectList,
    ProjectObject,
    TierList,
    TierObject,
    TierRequest,
)
from portico.services.admin import CreatedKey
from portico.storage.models import ApiKey, Project, Tier

router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    dependencies=[require_scope(Scope.KEYS_ADMIN)],
    responses=error_responses(401, 403, 404),
)
JSON_BODY = [Depends(require_json)]
Limit = Annotated[int, Query(ge=1, le=100)]


def _project(project: Project) -> ProjectObject:
    return ProjectObject(
        id=project.id,
        name=project.name,
        created_at=project.created_at,
        archived_at=project.archived_at,
        status="archived" if project.archived_at is not None else "active",
    )


def _key(key: ApiKey) -> KeyObject:
    return KeyObject(
        id=key.id,
        name=key.name,
        project_id=key.project_id,
        scopes=key.scopes,
        tier=key.tier.name,
        limits=key.limits,
        redacted_value=f"{API_KEY_PREFIX}{key.id}-****",
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        previous_secret_valid_until=key.previous_valid_until,
    )


def _created(created: CreatedKey) -> CreatedKeyObject:
    return CreatedKeyObject(**_key(created.key).model_dump(), value=created.plaintext)


def _tier(tier: Tier) -> TierObject:
    return TierObject(
        name=tier.name,
        requests_per_minute=tier.requests_per_minute,
        request_burst=tier.request_burst,
        tokens_per_minute=tier.tokens_per_minute,
        tokens_per_day=tier.tokens_per_day,
        max_concurrent=tier.max_concurrent,
        budget_per_day_usd=tier.budget_per_day_usd,
        budget_per_month_usd=tier.budget_per_month_usd,
        created_at=tier.created_at,
    )


# -- projects -------------------------------------------------------------------------------------------
@router.post("/projects", response_model=ProjectObject, status_code=201, dependencies=JSON_BODY)
async def create_project(body: ProjectCreateRequest, admin: AdminDep, principal: PrincipalDep) -> Response:
    project = await admin.create_project(principal.organization_id, body.name)
    return json_response(_project(project), status_code=201)


@router.get("/projects", response_model=ProjectList)
async def list_projects(
    admin: AdminDep, principal: PrincipalDep, limit: Limit = 20, after: str | None = None
) -> Response:
    page = await admin.list_projects(principal.organization_id, limit=limit, after=after)
    return json_response(ProjectList.of([_project(project) for project in page.items], has_more=page.has_more))


@router.get("/projects/{project_id}", response_model=ProjectObject)
async def get_project(project_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(_project(await admin.get_project(principal.organization_id, project_id)))


@router.delete("/projects/{project_id}", response_model=ProjectObject)
async def archive_project(project_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Archives the project: its keys stop working on every server within a second."""
    return json_response(_project(await admin.archive_project(principal.organization_id, project_id)))


# -- keys -----------------------------------------------------------------------------------------------
@router.post(
    "/keys",
    response_model=CreatedKeyObject,
    status_code=201,
    dependencies=JSON_BODY,
    responses=error_responses(400),
)
async def create_key(body: KeyCreateRequest, admin: AdminDep, principal: PrincipalDep) -> Response:
    """The response holds the key itself, once; only a keyed hash of it is stored."""
    created = await admin.create_key(
        principal.organization_id,
        project=body.project,
        name=body.name,
        scopes=body.scopes,
        tier=body.tier,
        limits=body.limits,
        expires_at=body.expires_at,
    )
    return json_response(_created(created), status_code=201)


@router.get("/keys", response_model=KeyList)
async def list_keys(
    admin: AdminDep,
    principal: PrincipalDep,
    project_id: str | None = None,
    limit: Limit = 20,
    after: str | None = None,
) -> Response:
    page = await admin.list_keys(principal.organization_id, project_id=project_id, limit=limit, after=after)
    return json_response(KeyList.of([_key(key) for key in page.items], has_more=page.has_more))


@router.get("/keys/{key_id}", response_model=KeyObject)
async def get_key(key_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(_key(await admin.get_key(principal.organization_id, key_id)))


@router.post(
    "/keys/{key_id}/rotate", response_model=CreatedKeyObject, dependencies=JSON_BODY, responses=error_responses(409)
)
async def rotate_key(
    key_id: str, admin: AdminDep, principal: PrincipalDep, body: KeyRotateRequest | None = None
) -> Response:
    """A new secret; the previous one keeps working for `grace_period_s` so clients can switch without downtime."""
    grace = (body or KeyRotateRequest()).grace_period_s
    return json_response(_created(await admin.rotate_key(principal.organization_id, key_id, grace_period_s=grace)))


@router.delete("/keys/{key_id}", response_model=KeyObject)
async def revoke_key(key_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Revokes the key: every server refuses it within a second (401 revoked_api_key)."""
    return json_response(_key(await admin.revoke_key(principal.organization_id, key_id)))


# -- tiers ----------------------------------------------------------------------------------------------
@router.post("/tiers", response_model=TierObject, dependencies=JSON_BODY)
async def put_tier(body: TierRequest, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Creates the tier, or replaces the limits of the tier of that name (its keys follow within a second)."""
    return json_response(_tier(await admin.put_tier(principal.organization_id, body)))


@router.get("/tiers", response_model=TierList)
async def list_tiers(admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(TierList(data=[_tier(tier) for tier in await admin.list_tiers(principal.organization_id)]))


@router.get("/tiers/{name}", response_model=TierObject)
async def get_tier(name: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(_tier(await admin.get_tier(principal.organization_id, name)))


@router.delete("/tiers/{name}", response_model=Deleted, responses=error_responses(409))
async def delete_tier(name: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    await admin.delete_tier(principal.organization_id, name)
    return json_response(Deleted(id=name, object="tier"))
