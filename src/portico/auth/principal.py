"""Who is calling: the key's organization, project, scopes, effective limits and content policy."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from portico.constants import Scope
from portico.limits.base import LimitPolicy
from portico.safety.policy import ContentPolicy
from portico.storage.models import ApiKey, Project, Tier

ALL_SCOPES = frozenset(Scope)
LIMIT_FIELDS = tuple(field.name for field in fields(LimitPolicy))


@dataclass(frozen=True, slots=True)
class Principal:
    organization_id: str
    project_id: str
    key_id: str | None  # None while auth is off (local use)
    scopes: frozenset[str]
    tier: str
    policy: LimitPolicy
    content_policy: ContentPolicy | None  # None: nothing is checked

    @property
    def subject(self) -> str:
        """Whose limits apply: the key, or the project while auth is off."""
        return self.key_id or self.project_id


def tier_limits(tier: Tier) -> dict[str, Any]:
    return {name: getattr(tier, name) for name in LIMIT_FIELDS}


def effective_policy(tier: Tier, overrides: dict[str, Any]) -> LimitPolicy:
    """The tier's limits, each replaced by the key's override where it has one (``None`` there: unlimited)."""
    limits = tier_limits(tier)
    limits.update({name: value for name, value in overrides.items() if name in limits})
    return LimitPolicy(**limits)


def effective_content_policy(project: Project, tier: Tier) -> ContentPolicy | None:
    """The project's own policy if it has one, else the tier's default, else none."""
    return project.content_policy if project.content_policy is not None else tier.content_policy


def principal_of(key: ApiKey) -> Principal:
    return Principal(
        organization_id=key.project.organization_id,
        project_id=key.project_id,
        key_id=key.id,
        scopes=frozenset(key.scopes),
        tier=key.tier.name,
        policy=effective_policy(key.tier, key.limits),
        content_policy=effective_content_policy(key.project, key.tier),
    )
