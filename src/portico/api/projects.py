"""DELETE /v1/projects/{id}/data: erase a project's stored content (scope keys:admin)."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter
from starlette.responses import Response

from portico.api.deps import AdminDep, DatabaseDep, PipelineDep, PrincipalDep, SettingsDep, require_scope
from portico.api.rendering import error_responses, json_response
from portico.constants import Scope
from portico.schemas.admin import ErasedCounts, ProjectDataDeletion
from portico.services.data_deletion import erase_project_data

router = APIRouter(tags=["admin"], dependencies=[require_scope(Scope.KEYS_ADMIN)])


@router.delete(
    "/v1/projects/{project_id}/data", response_model=ProjectDataDeletion, responses=error_responses(401, 403, 404)
)
async def erase_project(
    project_id: str,
    admin: AdminDep,
    database: DatabaseDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    pipeline: PipelineDep,
) -> Response:
    """Erases stored completions, conversations, jobs, batches, files, idempotency records and unsent webhooks
    of the project, and says how many of each, and drops its cached responses. Usage records (counts and costs,
    no content) are kept."""
    project = await admin.get_project(principal.organization_id, project_id)
    erased = await erase_project_data(database, settings.files_directory, project.id)
    if pipeline.cache is not None:
        await pipeline.cache.forget_project(project.id)
    if pipeline.semantic_cache is not None:
        await pipeline.semantic_cache.forget_project(project.id)
    return json_response(
        ProjectDataDeletion(
            project_id=project.id,
            deleted=ErasedCounts(**dataclasses.asdict(erased)),
            kept=["project", "api_keys", "usage_records"],
        )
    )
