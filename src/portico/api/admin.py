"""/v1/admin/projects (and their content policies) and /v1/admin/tiers of the caller's organization (scope
keys:admin); keys: api/admin_keys.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from portico.api.deps import AdminDep, PrincipalDep, require_json, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.admin import (
    ContentPolicyRequest,
    Deleted,
    ProjectCreateRequest,
    ProjectList,
    ProjectObject,
    TierList,
    TierObject,
    TierRequest,
)
from portico.services.admin_views import project_view, tier_view


def admin_router() -> APIRouter:
    """A router under ``/v1/admin`` whose every route needs ``keys:admin``."""
    return APIRouter(
        prefix="/v1/admin",
        tags=["admin"],
        dependencies=[require_scope(Scope.KEYS_ADMIN)],
        responses=error_responses(401, 403, 404),
    )


router = admin_router()
JSON_BODY = [Depends(require_json)]
Limit = Annotated[int, Query(ge=1, le=100)]


# -- projects -------------------------------------------------------------------------------------------
@router.post("/projects", response_model=ProjectObject, status_code=201, dependencies=JSON_BODY)
async def create_project(body: ProjectCreateRequest, admin: AdminDep, principal: PrincipalDep) -> Response:
    project = await admin.create_project(principal.organization_id, body.name)
    return json_response(project_view(project), status_code=201)


@router.get("/projects", response_model=ProjectList)
async def list_projects(
    admin: AdminDep, principal: PrincipalDep, limit: Limit = 20, after: str | None = None
) -> Response:
    page = await admin.list_projects(principal.organization_id, limit=limit, after=after)
    return json_response(ProjectList.of([project_view(project) for project in page.items], has_more=page.has_more))


@router.get("/projects/{project_id}", response_model=ProjectObject)
async def get_project(project_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(project_view(await admin.get_project(principal.organization_id, project_id)))


@router.delete("/projects/{project_id}", response_model=ProjectObject)
async def archive_project(project_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Archives the project: its keys stop working on every server within a second."""
    return json_response(project_view(await admin.archive_project(principal.organization_id, project_id)))


@router.put("/projects/{project_id}/content_policy", response_model=ProjectObject, dependencies=JSON_BODY)
async def set_content_policy(
    project_id: str, body: ContentPolicyRequest, admin: AdminDep, principal: PrincipalDep
) -> Response:
    """Sets the project's own content policy, which wins over its keys' tier default (within a second)."""
    return json_response(project_view(await admin.set_content_policy(principal.organization_id, project_id, body)))


@router.delete("/projects/{project_id}/content_policy", response_model=ProjectObject)
async def clear_content_policy(project_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Clears it: the project's keys follow their tier's default policy, if any (within a second)."""
    return json_response(project_view(await admin.set_content_policy(principal.organization_id, project_id, None)))


# -- tiers ----------------------------------------------------------------------------------------------
@router.post("/tiers", response_model=TierObject, dependencies=JSON_BODY)
async def put_tier(body: TierRequest, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Creates the tier, or replaces the limits and default content policy of the tier of that name (its keys
    follow within a second)."""
    return json_response(tier_view(await admin.put_tier(principal.organization_id, body)))


@router.get("/tiers", response_model=TierList)
async def list_tiers(admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(TierList(data=[tier_view(tier) for tier in await admin.list_tiers(principal.organization_id)]))


@router.get("/tiers/{name}", response_model=TierObject)
async def get_tier(name: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(tier_view(await admin.get_tier(principal.organization_id, name)))


@router.delete("/tiers/{name}", response_model=Deleted, responses=error_responses(409))
async def delete_tier(name: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    await admin.delete_tier(principal.organization_id, name)
    return json_response(Deleted(id=name, object="tier"))
