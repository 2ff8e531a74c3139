"""Prepared dataset versions: the time a node voted ready in an upload's two-phase commit.

A version this node voted ready on is in state ``prepared`` (a new value of the
``VARCHAR(32)`` state column, no schema change) with ``prepared_at`` set; the stale-upload
cleanup never erases it. Downgrading turns prepared versions back into ``receiving`` (every
column is stored, so the connector's commit still succeeds), which the older cleanup may
expire again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 11:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("UPDATE dataset_versions SET state = 'receiving' WHERE state = 'prepared'")
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("prepared_at")
