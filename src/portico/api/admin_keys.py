"""/v1/admin/keys: the API keys of the caller's organization: create, list, get, rotate, revoke (scope keys:admin)."""

from __future__ import annotations

from starlette.responses import Response

from portico.api.admin import JSON_BODY, Limit, admin_router
from portico.api.deps import AdminDep, PrincipalDep
from portico.api.rendering import error_responses, json_response
from portico.schemas.admin import (
    CreatedKeyObject,
    KeyCreateRequest,
    KeyList,
    KeyObject,
    KeyRotateRequest,
)
from portico.services.admin_views import created_key_view, key_view

router = admin_router()


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
    return json_response(created_key_view(created), status_code=201)


@router.get("/keys", response_model=KeyList)
async def list_keys(
    admin: AdminDep,
    principal: PrincipalDep,
    project_id: str | None = None,
    limit: Limit = 20,
    after: str | None = None,
) -> Response:
    page = await admin.list_keys(principal.organization_id, project_id=project_id, limit=limit, after=after)
    return json_response(KeyList.of([key_view(key) for key in page.items], has_more=page.has_more))


@router.get("/keys/{key_id}", response_model=KeyObject)
async def get_key(key_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    return json_response(key_view(await admin.get_key(principal.organization_id, key_id)))


@router.post(
    "/keys/{key_id}/rotate", response_model=CreatedKeyObject, dependencies=JSON_BODY, responses=error_responses(409)
)
async def rotate_key(
    key_id: str, admin: AdminDep, principal: PrincipalDep, body: KeyRotateRequest | None = None
) -> Response:
    """A new secret; the previous one keeps working for `grace_period_s` so clients can switch without downtime."""
    grace = (body or KeyRotateRequest()).grace_period_s
    return json_response(
        created_key_view(await admin.rotate_key(principal.organization_id, key_id, grace_period_s=grace))
    )


@router.delete("/keys/{key_id}", response_model=KeyObject)
async def revoke_key(key_id: str, admin: AdminDep, principal: PrincipalDep) -> Response:
    """Revokes the key: every server refuses it within a second (401 revoked_api_key)."""
    return json_response(key_view(await admin.revoke_key(principal.organization_id, key_id)))
