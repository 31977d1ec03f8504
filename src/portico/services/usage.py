"""Usage totals and buckets for a time window, limited to what the caller may see."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from portico.auth.principal import Principal
from portico.constants import Scope
from portico.errors import NotFound
from portico.storage import control
from portico.storage.database import Database
from portico.storage.usage import UsageGroupBy, UsageSummary, summarize_usage
from portico.usage.recorder import UsageRecorder


class UsageService:
    def __init__(self, database: Database, recorder: UsageRecorder) -> None:
        self._database = database
        self._recorder = recorder

    async def summarize(
        self,
        principal: Principal,
        *,
        project: str | None,
        start: float | None,
        end: float | None,
        group_by: UsageGroupBy | None,
    ) -> UsageSummary:
        """The caller's project; with keys:admin any project of its organization, or all of them."""
        # This process's unwritten records first, so a caller sees its own requests at once.
        await self._recorder.flush()
        async with self._database.session() as session:
            project_ids = await self._visible_projects(session, principal, project)
            return await summarize_usage(
                session,
                organization_id=principal.organization_id,
                project_ids=project_ids,
                start=start,
                end=end,
                group_by=group_by,
            )

    async def _visible_projects(
        self, session: AsyncSession, principal: Principal, project: str | None
    ) -> list[str] | None:
        admin = Scope.KEYS_ADMIN in principal.scopes
        if project is None:
            return None if admin else [principal.project_id]
        if not admin:
            if project != principal.project_id:
                raise NotFound(f"No project '{project}' visible to this key.", param="project")
            return [project]
        found = await control.get_project(session, principal.organization_id, project)
        if found is None:
            raise NotFound(f"No project '{project}' in this organization.", param="project")
        return [found.id]
