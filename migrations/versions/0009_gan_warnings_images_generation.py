"""A job's warnings, an epoch's rendered samples, and a generator version's generation settings

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
    with op.batch_alter_table("job_epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("generation")
    with op.batch_alter_table("job_epochs", schema=None) as batch_op:
        batch_op.drop_column("image")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("warnings")
