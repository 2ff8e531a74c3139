"""Connector state: each dataset's row-digest lineage (how its versions differ).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 14:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_lineage",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("versions", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["connector_runs.id"],
                                name=op.f("fk_connector_lineage_run_id_connector_runs")),
        sa.PrimaryKeyConstraint("dataset", name=op.f("pk_connector_lineage")),
    )


def downgrade() -> None:
    op.drop_table("connector_lineage")
