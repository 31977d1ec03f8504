"""Tables of the control plane: organizations → projects → API keys, tiers of limits, and usage records.

Times are integer Unix seconds (as on the wire), except usage records' ``created_at``, a float so records of
one second keep their order. Limits are nullable integers / floats: ``NULL`` means no limit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from portico.safety.policy import ContentPolicy


class Base(DeclarativeBase):
    # Every constraint gets a known name: SQLite alters a table by copying it (Alembic's batch mode), which can
    # only drop or change a constraint it can name; PostgreSQL would otherwise choose names of its own.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class PolicyJSON(TypeDecorator[ContentPolicy]):
    """A ``ContentPolicy`` stored as its JSON form (``model_dump(mode="json")``), read back validated."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: ContentPolicy | None, dialect: Dialect) -> dict[str, Any] | None:
        return None if value is None else value.model_dump(mode="json")

    def process_result_value(self, value: dict[str, Any] | None, dialect: Dialect) -> ContentPolicy | None:
        return None if value is None else ContentPolicy.model_validate(value)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # org_...
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # proj_...
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger)
    archived_at: Mapped[int | None] = mapped_column(BigInteger, default=None)  # its keys stop working
    # NULL: its keys follow their tier's default policy.
    content_policy: Mapped[ContentPolicy | None] = mapped_column(PolicyJSON, default=None)


class Tier(Base):
    """A named set of default limits; a key takes its tier's limits, each overridable on the key, and its content
    policy unless the key's project has its own."""

    __tablename__ = "tiers"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # tier_...
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    request_burst: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(BigInteger, default=None)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger, default=None)
    max_concurrent: Mapped[int | None] = mapped_column(Integer, default=None)
    budget_per_day_usd: Mapped[float | None] = mapped_column(Float, default=None)
    budget_per_month_usd: Mapped[float | None] = mapped_column(Float, default=None)
    # The policy of its keys whose project has none of its own (NULL: none).
    content_policy: Mapped[ContentPolicy | None] = mapped_column(PolicyJSON, default=None)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    """A key ``pk-<id>-<secret>``; only an HMAC-SHA256 of the secret is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # key_...
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    tier_id: Mapped[str] = mapped_column(ForeignKey("tiers.id"))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    # After a rotation the previous secret stays valid until ``previous_valid_until``.
    previous_secret_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    previous_valid_until: Mapped[int | None] = mapped_column(BigInteger, default=None)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Per-key overrides of the tier's limits: {limit name: value or null}; absent names follow the tier.
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, default=None)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, default=None)

    project: Mapped[Project] = relationship(lazy="joined", innerjoin=True)
    tier: Mapped[Tier] = relationship(lazy="joined", innerjoin=True)


class UsageRecord(Base):
    """One request's usage and cost; written in batches, off the request path."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_project_created", "project_id", "created_at"),
        Index("ix_usage_organization_created", "organization_id", "created_at"),  # org-wide summaries
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    organization_id: Mapped[str] = mapped_column(String(40))
    project_id: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(40), default=None)  # None when auth is off
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    cached_tokens: Mapped[int] = mapped_column(Integer)
    cost_usd: Mapped[float] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, default=None)  # streams only
    status: Mapped[int] = mapped_column(Integer)  # HTTP status the client got (499: it went away)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Why a content policy ended it: `content_policy_violation:<categories>` (blocked), `content_filter:<...>`.
    outcome: Mapped[str | None] = mapped_column(String(200), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    day: Mapped[str] = mapped_column(String(10))  # UTC date, YYYY-MM-DD: the `group_by=day` bucket
