"""uploaded datasets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 14:55:40.785975
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("feature_shape", sa.JSON(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dataset_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("labels", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("preprocessing", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_model_versions_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_foreign_key("fk_model_versions_dataset_id", "datasets", ["dataset_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_model_versions_dataset_id", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_model_versions_dataset_id"))
        batch_op.drop_column("preprocessing")
        batch_op.drop_column("labels")
        batch_op.drop_column("dataset_id")

    op.drop_table("datasets")
