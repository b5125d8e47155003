"""A version's PyTorch weights: a safetensors state dict stored beside its ONNX artifact

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 16:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("weights_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("weights_size", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_model_versions_weights_sha256"), ["weights_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_weights_sha256"))
        batch_op.drop_column("weights_size")
        batch_op.drop_column("weights_sha256")
