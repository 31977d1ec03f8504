"""Opens and closes the control plane: database, keys, limits, metering and usage, as settings choose."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from portico.auth.authenticator import Authenticator
from portico.auth.keys import load_or_create_server_secret, parse_key
from portico.auth.principal import ALL_SCOPES, Principal, effective_content_policy, effective_policy
from portico.limits.base import FailurePolicy, Limiter
from portico.limits.memory import MemoryLimiter
from portico.limits.redis import RedisLimiter
from portico.redis_client import redis_client
from portico.services.admin import AdminService
from portico.services.usage import UsageService
from portico.settings import Settings, TierSettings
from portico.storage.database import Database
from portico.usage.meter import Meter
from portico.usage.recorder import UsageRecorder

logger = logging.getLogger("portico")

# Seconds a Redis call may take before the limiter treats Redis as unreachable (then: fail open or closed).
REDIS_TIMEOUT_S = 0.5
ADMIN_TIER = "unlimited"  # the bootstrap admin key's tier


def server_secret(settings: Settings) -> bytes:
    if settings.auth.secret is not None:
        return settings.auth.secret.get_secret_value().encode()
    return load_or_create_server_secret(settings.data_dir / "hmac.secret")


def build_limiter(settings: Settings) -> Limiter:
    if settings.limits.backend == "memory":
        return MemoryLimiter(lease_s=settings.limits.concurrency_lease_s)
    assert settings.redis_url is not None  # Settings validates this
    client = redis_client(settings.redis_url, timeout_s=REDIS_TIMEOUT_S)
    return RedisLimiter(
        client, on_error=FailurePolicy(settings.limits.on_redis_error), lease_s=settings.limits.concurrency_lease_s
    )


async def open_admin(settings: Settings) -> tuple[Database, AdminService]:
    """The database, migrated, and the admin service over it (what ``portico keys`` needs)."""
    database = Database(settings.database, schema=settings.database_schema)
    await database.upgrade()
    return database, AdminService(database, server_secret(settings), settings.tiers, authenticator=None)


@dataclass(slots=True)
class ControlPlane:
    database: Database
    admin: AdminService
    authenticator: Authenticator | None  # None: auth is off
    local_principal: Principal  # who the caller is while auth is off
    meter: Meter
    usage: UsageService

    @classmethod
    async def open(cls, settings: Settings) -> ControlPlane:
        database = Database(settings.database, schema=settings.database_schema)
        await database.upgrade()
        secret = server_secret(settings)
        authenticator = (
            Authenticator(database, secret, ttl_s=settings.auth.key_cache_ttl_s) if settings.auth_enabled else None
        )
        admin = AdminService(database, secret, settings.tiers, authenticator)
        organization = await admin.default_organization()
        if settings.admin_key is not None:
            parts = parse_key(settings.admin_key.get_secret_value())
            if parts is None:
                raise ValueError("PORTICO_ADMIN_KEY is not a key of the form pk-key_<24 hex>-<64 hex>")
            if ADMIN_TIER not in {tier.name for tier in await admin.list_tiers(organization.id)}:
                await admin.put_tier(organization.id, TierSettings(name=ADMIN_TIER))
            await admin.ensure_key(organization.id, parts, tier=ADMIN_TIER)
        local_tier = await admin.get_tier(organization.id, settings.auth.local_tier)
        default_project = await admin.get_project(organization.id, "default")
        local_principal = Principal(
            organization_id=organization.id,
            project_id=default_project.id,
            key_id=None,
            scopes=ALL_SCOPES,
            tier=local_tier.name,
            policy=effective_policy(local_tier, {}),
            content_policy=effective_content_policy(default_project, local_tier),
        )
        recorder = UsageRecorder(
            database,
            flush_interval_s=settings.usage.flush_interval_s,
            flush_batch=settings.usage.flush_batch,
            also_flush=[authenticator.flush_last_used] if authenticator is not None else [],
        )
        recorder.start()
        meter = Meter(build_limiter(settings), recorder)
        if authenticator is None:
            logger.info("auth is off: every request acts as the local principal (default project)")
        elif not await admin.has_keys():
            logger.warning(FIRST_KEY_HINT)
        return cls(database, admin, authenticator, local_principal, meter, UsageService(database, recorder))

    async def principal_for(self, key_id: str | None) -> Principal:
        """Who work stored by a request (a job, a batch) acts as when it runs: the key that created it, as the
        key is now (a revoked key's queued work fails), or the local principal while auth is off."""
        if key_id is None or self.authenticator is None:
            return self.local_principal
        return await self.authenticator.principal_for_key(key_id)

    async def close(self) -> None:
        """Settle what is in flight, write every usage record, then close the database."""
        await self.meter.close()
        await self.database.close()


FIRST_KEY_HINT = (
    "No API keys exist yet. Create the first admin key with:\n"
    "  portico keys create --project default --scopes keys:admin,usage:read,models:read,inference --tier unlimited\n"
    "or start the server with PORTICO_ADMIN_KEY=pk-key_<24 hex>-<64 hex>."
)
