"""Indexes: usage records by organization (org-wide summaries) and batches by status (runners claiming work).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:40:16.963684
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_claim", ["status", "created_at"], unique=False)

    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.create_index("ix_usage_organization_created", ["organization_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("usage_records", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_organization_created")

    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_claim")
