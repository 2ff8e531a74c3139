"""Release ledger: what each completed request opened, per contributor, as sealed shares.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:00:00+00:00
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
        "release_ledger",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("cells", sa.JSON(), nullable=False),
        sa.Column("opened", sa.JSON(), nullable=False),
        sa.Column("contributors", sa.JSON(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(length=12), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["analysis_requests.id"],
                                name=op.f("fk_release_ledger_request_id_analysis_requests")),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_release_ledger")),
    )


def downgrade() -> None:
    op.drop_table("release_ledger")
