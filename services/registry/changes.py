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

from services.wakeups import Waker, wake_folder, waker_for

log = logging.getLogger(__name__)
CHANNEL = "kiln_jobs"  # the triggers' NOTIFY channel; its payload is the job's id
Changed = Callable[[str | None], None]  # a job's id, or None: any job may have changed


def announce_commits(sessions: sessionmaker[Session], database_url: str) -> None:
    """On SQLite, wake this machine's listeners after every commit (PostgreSQL's triggers need nothing here)."""
    folder = wake_folder(database_url)
    if folder is not None:
        waker = waker_for(folder)
        event.listen(sessions, "after_commit", lambda _session: waker.wake_all())  # never raises: the commit has happened


class ChangeListener:
    """A thread that calls `changed` with each job the database says changed, until `close`."""

    def __init__(self, database_url: str, changed: Changed, *, poll_s: float = 1.0, retry_s: float = 2.0, gap_s: float = 0.02) -> None:
        self.url, self.changed, self.poll_s, self.retry_s, self.gap_s = database_url, changed, poll_s, retry_s, gap_s
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
        waker = Waker(wake_folder(self.url))  # a FIFO of this listener's own, removed when it stops (not the process's)
        try:
            while not self.stop.is_set():
                if waker.wait(self.poll_s):
                    self._tell(None)
                    self.stop.wait(self.gap_s)  # every commit wakes every follower here: one word per gap, for all of them
        finally:
            waker.close()

    def _tell(self, job_id: str | None) -> None:
        try:
            self.changed(job_id)
        except Exception:  # a follower's trouble is not the listener's: it keeps listening
            log.warning("a job change could not be passed on", exc_info=True)

    def _notifications(self) -> None:
        import psycopg
        from psycopg.conninfo import make_conninfo

        url = make_url(self.url)
        conninfo = make_conninfo(**url.translate_connect_args(username="user", database="dbname"), **url.query)  # type: ignore[arg-type]
        failures = 0
        while not self.stop.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    failures = 0
                    self._tell(None)  # what changed while nobody listened
                    while not self.stop.is_set():
                        for note in conn.notifies(timeout=self.poll_s):
                            self._tell(note.payload)
            except Exception as err:  # the database is away: the followers poll meanwhile
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG  # said once, not every retry
                log.log(level, "not listening for job changes (%s); event streams poll until it is back", err, exc_info=failures > 1)
                self.stop.wait(self.retry_s)
