"""Connector state: run history (counts only), watermarks, erasures still owed.

Revision ID: 0001
Revises:
Create Date: 2026-12-02 12:36:04+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "connector_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resources_read", sa.BigInteger(), nullable=False),
        sa.Column("patients", sa.BigInteger(), nullable=False),
        sa.Column("patients_excluded", sa.BigInteger(), nullable=False),
        sa.Column("rows_rejected", sa.BigInteger(), nullable=False),
        sa.Column("rows_shared", sa.BigInteger(), nullable=False),
        sa.Column("columns", sa.BigInteger(), nullable=False),
        sa.Column("bytes_per_node", sa.BigInteger(), nullable=False),
        sa.Column("rejected", sa.JSON(), nullable=False),
        sa.Column("stage_seconds", sa.JSON(), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connector_runs")),
    )
    op.create_index(op.f("ix_connector_runs_dataset_started_at"), "connector_runs",
                    ["dataset", "started_at"], unique=False)
    op.create_index(op.f("ix_connector_runs_status"), "connector_runs", ["status"], unique=False)
    op.create_table(
        "connector_watermarks",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["connector_runs.id"],
                                name=op.f("fk_connector_watermarks_run_id_connector_runs")),
        sa.PrimaryKeyConstraint("dataset", "key", name=op.f("pk_connector_watermarks")),
    )
    op.create_index(op.f("ix_connector_watermarks_run_id"), "connector_watermarks", ["run_id"],
                    unique=False)
    op.create_table(
        "connector_pending_erasures",
        sa.Column("dataset", sa.String(length=200), nullable=False),
        sa.Column("version_id", sa.Uuid(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dataset", "version_id",
                                name=op.f("pk_connector_pending_erasures")),
    )


def downgrade() -> None:
    op.drop_table("connector_pending_erasures")
    op.drop_index(op.f("ix_connector_watermarks_run_id"), table_name="connector_watermarks")
    op.drop_table("connector_watermarks")
    op.drop_index(op.f("ix_connector_runs_status"), table_name="connector_runs")
    op.drop_index(op.f("ix_connector_runs_dataset_started_at"), table_name="connector_runs")
    op.drop_table("connector_runs")
