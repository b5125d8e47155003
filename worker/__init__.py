"""The Celery entrypoint: `app` builds the Celery app (no torch, no tasks); `tasks` holds the thin tasks."""
