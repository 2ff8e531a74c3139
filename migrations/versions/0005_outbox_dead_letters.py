"""Peer outbox dead letters: the peer's status and problem title, and why a message was parked.

Messages the peer refused before this revision (outcome ``refused``) become ``parked``
(cause ``refused``), with their last error as the reason, for an admin to see, replay or
drop like new ones.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("peer_outbox") as batch:
        batch.add_column(sa.Column("peer_status", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("problem_title", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("parked_reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("park_cause", sa.String(length=16), nullable=True))
    op.execute(
        "UPDATE peer_outbox SET outcome = 'parked', parked_reason = last_error, "
        "park_cause = 'refused' WHERE outcome = 'refused'"
    )


def downgrade() -> None:
    op.execute("UPDATE peer_outbox SET outcome = 'refused' WHERE outcome IN ('parked', 'dropped')")
    with op.batch_alter_table("peer_outbox") as batch:
        batch.drop_column("park_cause")
        batch.drop_column("parked_reason")
        batch.drop_column("problem_title")
        batch.drop_column("peer_status")
