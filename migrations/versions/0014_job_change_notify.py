"""Job changes announced: on PostgreSQL, NOTIFY kiln_jobs with the job's id when a job row is written or an epoch added,
so event streams answer at once on every API replica (services/registry/changes.py). SQLite needs no schema for it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 10:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TRIGGERS = {  # trigger: (table, events, the row's job id)
    "kiln_jobs_changed": ("jobs", "INSERT OR UPDATE", "NEW.id"),
    "kiln_job_epochs_added": ("job_epochs", "INSERT", "NEW.job_id"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, events, job_id) in TRIGGERS.items():
        op.execute(f"""
            CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_notify('kiln_jobs', {job_id}::text);
                RETURN NULL;
            END $$""")  # fmt: skip
        op.execute(f"CREATE TRIGGER {name} AFTER {events} ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (table, _, _) in TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
