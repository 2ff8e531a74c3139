"""Connector state: the event numbers seen of each FHIR Subscription (issue 13).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_subscription_events",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("subscription", sa.String(length=64), nullable=False),
        sa.Column("highest", sa.BigInteger(), nullable=False),
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "subscription",
                                name=op.f("pk_connector_subscription_events")),
    )


def downgrade() -> None:
    op.drop_table("connector_subscription_events")
