"""A version's serving task, and an autoencoder's anomaly threshold

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 05:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


REGRESSION_LOSSES = ("mse", "mae", "huber")
VERSIONS = sa.table(
    "model_versions", sa.column("id", sa.Integer), sa.column("job_id", sa.Uuid), sa.column("hyperparameters", sa.JSON),
    sa.column("dataset", sa.JSON), sa.column("task", sa.String),
)  # fmt: skip


def _task(hyperparameters: dict | None, dataset: dict | None) -> str:
    """What a trained version is, from what its job recorded: the targets and the loss."""
    if ((dataset or {}).get("spec") or {}).get("targets") == "inputs":
        return "autoencoder"
    return "regressor" if (hyperparameters or {}).get("loss") in REGRESSION_LOSSES else "classifier"


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("task", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("anomaly", sa.JSON(), nullable=True))
    # Versions trained before now get the task their job implied; uploads (no job) stay unknown.
    connection = op.get_bind()
    trained = connection.execute(sa.select(VERSIONS.c.id, VERSIONS.c.hyperparameters, VERSIONS.c.dataset)
                                 .where(VERSIONS.c.job_id.is_not(None))).all()  # fmt: skip
    for row in trained:
        connection.execute(sa.update(VERSIONS).where(VERSIONS.c.id == row.id).values(task=_task(row.hyperparameters, row.dataset)))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("anomaly")
        batch_op.drop_column("task")
