"""Peer audit heads: each peer's chain head as this node observed it, and detected mismatches.

``peer_audit_heads`` keeps the newest observed ``(seq, hash)`` per peer (plus a bounded
history); ``peer_audit_mismatches`` records a peer whose chain no longer held the recorded
head (its newest entries truncated or rewritten) until an operator acknowledges it
(the periodic audit head exchange between the nodes).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 14:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "peer_audit_heads",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peer_audit_heads")),
    )
    op.create_index("ix_peer_audit_heads_peer", "peer_audit_heads", ["peer", "id"],
                    unique=False)
    op.create_table(
        "peer_audit_mismatches",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("peer", sa.String(length=64), nullable=False),
        sa.Column("recorded_seq", sa.BigInteger(), nullable=False),
        sa.Column("recorded_hash", sa.String(length=64), nullable=False),
        sa.Column("reported_seq", sa.BigInteger(), nullable=False),
        sa.Column("reported_hash", sa.String(length=64), nullable=False),
        sa.Column("hash_at_recorded", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peer_audit_mismatches")),
    )
    op.create_index("ix_peer_audit_mismatches_open", "peer_audit_mismatches",
                    ["peer", "acknowledged_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_peer_audit_mismatches_open", table_name="peer_audit_mismatches")
    op.drop_table("peer_audit_mismatches")
    op.drop_index("ix_peer_audit_heads_peer", table_name="peer_audit_heads")
    op.drop_table("peer_audit_heads")
