"""Hyperparameter studies and their trials; a job carries the study and trial it runs

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("best_trial", sa.Integer(), nullable=True),
        sa.Column("best_version", sa.Integer(), nullable=True),
        sa.Column("importances", sa.JSON(), nullable=True),
        sa.Column("revision", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_studies_state", "studies", ["state"])
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("study_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("trial_number", sa.Integer(), nullable=True))
        batch_op.create_index("ix_jobs_study_id", ["study_id"])
        batch_op.create_foreign_key("fk_jobs_study_id", "studies", ["study_id"], ["id"])
    op.create_table(
        "study_trials",
        sa.Column("study_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("system_attrs", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name="fk_study_trials_study_id", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_study_trials_job_id"),
        sa.PrimaryKeyConstraint("study_id", "number"),
        sa.UniqueConstraint("job_id", name="uq_study_trials_job_id"),
    )


def downgrade() -> None:
    op.drop_table("study_trials")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("fk_jobs_study_id", type_="foreignkey")
        batch_op.drop_index("ix_jobs_study_id")
        batch_op.drop_column("trial_number")
        batch_op.drop_column("study_id")
    op.drop_index("ix_studies_state", table_name="studies")
    op.drop_table("studies")
