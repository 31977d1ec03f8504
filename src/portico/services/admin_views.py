"""Projects, API keys and tiers as the admin API shows them (a key's secret only once, when it is made)."""

from __future__ import annotations

from portico.constants import API_KEY_PREFIX
from portico.schemas.admin import CreatedKeyObject, KeyObject, ProjectObject, TierObject
from portico.services.admin import CreatedKey
from portico.storage.models import ApiKey, Project, Tier


def project_view(project: Project) -> ProjectObject:
    return ProjectObject(
        id=project.id,
        name=project.name,
        created_at=project.created_at,
        archived_at=project.archived_at,
        status="archived" if project.archived_at is not None else "active",
        content_policy=project.content_policy,
    )


def key_view(key: ApiKey) -> KeyObject:
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


def created_key_view(created: CreatedKey) -> CreatedKeyObject:
    return CreatedKeyObject(**key_view(created.key).model_dump(), value=created.plaintext)


def tier_view(tier: Tier) -> TierObject:
    return TierObject(
        name=tier.name,
        requests_per_minute=tier.requests_per_minute,
        request_burst=tier.request_burst,
        tokens_per_minute=tier.tokens_per_minute,
        tokens_per_day=tier.tokens_per_day,
        max_concurrent=tier.max_concurrent,
        budget_per_day_usd=tier.budget_per_day_usd,
        budget_per_month_usd=tier.budget_per_month_usd,
        content_policy=tier.content_policy,
        created_at=tier.created_at,
    )
