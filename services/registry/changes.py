"""Word that a job changed, from whoever wrote it to whoever follows it: a job's event stream answers when the job changes,
not at its next poll.

- **PostgreSQL:** triggers (migration 0014) NOTIFY `kiln_jobs` with the job's id when a job row is written or an epoch
  added. PostgreSQL delivers it at commit, to every listener, whichever machine wrote it.
- **SQLite** (one machine): every committed session wakes the FIFOs beside the database file (services/wakeups.py). The
  listener cannot tell which job changed, so every follower looks.

The followers' poll (`KILN_EVENTS_POLL_S`) stays the fallback: a word lost (a listener reconnecting) costs one poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from services.wakeups import wake_folder, waker_for

log = logging.getLogger(__name__)
CHANNEL = "kiln_jobs"  # the triggers' NOTIFY channel; its payload is the job's id
Changed = Callable[[str | None], None]  # a job's id, or None: any job may have changed


def announce_commits(sessions: sessionmaker[Session], database_url: str) -> None:
    """On SQLite, wake this machine's listeners after every commit (PostgreSQL's triggers need nothing here)."""
    folder = wake_folder(database_url)
    if folder is not None:
        waker = waker_for(folder)
        event.listen(sessions, "after_commit", lambda _session: waker.wake_all())


class ChangeListener:
    """A thread that calls `changed` with each job the database says changed, until `close`."""

    def __init__(self, database_url: str, changed: Changed, *, poll_s: float = 1.0, retry_s: float = 2.0) -> None:
        self.url, self.changed, self.poll_s, self.retry_s = database_url, changed, poll_s, retry_s
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> ChangeListener:
        sqlite = wake_folder(self.url)
        if sqlite is not None:
            target = self._wakeups
        elif make_url(self.url).get_backend_name() == "postgresql":
            target = self._notifications
        else:
            return self  # a database with neither: the followers poll
        self.thread = threading.Thread(target=target, name="kiln-job-changes", daemon=True)
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=self.poll_s + 1)

    def _wakeups(self) -> None:
        waker = waker_for(wake_folder(self.url))
        while not self.stop.is_set():
            if waker.wait(self.poll_s):
                self.changed(None)

    def _notifications(self) -> None:
        import psycopg

        conninfo = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.changed(None)  # what changed while nobody listened
                    while not self.stop.is_set():
                        for note in conn.notifies(timeout=self.poll_s):
                            self.changed(note.payload)
            except Exception:  # the database is away: the followers poll meanwhile
                log.debug("listening for job changes failed; retrying", exc_info=True)
                self.stop.wait(self.retry_s)
