"""Release ledger: the typed columns each release read (version lineage rule).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # entries written before this revision read columns nobody recorded: [] (they keep
    # guarding their cells; the lineage rule cannot see them)
    with op.batch_alter_table("release_ledger") as batch:
        batch.add_column(sa.Column("columns", sa.JSON(), nullable=False,
                                   server_default=sa.text("'[]'")))


def downgrade() -> None:
    with op.batch_alter_table("release_ledger") as batch:
        batch.drop_column("columns")
