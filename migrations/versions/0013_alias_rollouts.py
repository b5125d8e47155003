"""Weighted aliases and mirrors: an alias may split traffic between versions, and copy each request to a mirror version

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mirror", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_model_aliases_mirror", "model_versions", ["model_id", "mirror"], ["model_id", "version"])
    op.create_table(
        "model_alias_weights",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id", "alias"],
            ["model_aliases.model_id", "model_aliases.alias"],
            name="fk_model_alias_weights_alias",
            ondelete="CASCADE",
        ),  # fmt: skip
        sa.ForeignKeyConstraint(
            ["model_id", "version"], ["model_versions.model_id", "model_versions.version"], name="fk_model_alias_weights_version"
        ),
        sa.PrimaryKeyConstraint("model_id", "alias", "version"),
    )


def downgrade() -> None:
    op.drop_table("model_alias_weights")
    with op.batch_alter_table("model_aliases", schema=None) as batch_op:
        batch_op.drop_constraint("fk_model_aliases_mirror", type_="foreignkey")
        batch_op.drop_column("mirror")
