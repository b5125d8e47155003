"""Wake-ups between processes on one machine: FIFOs in a folder beside a SQLite database, one per listening process.

A writer, once its transaction has committed, writes a byte to every FIFO in the folder; a listener waits on its own
FIFO (select: no CPU while idle) for up to its polling interval. The poll stays the fallback: a wake-up that never comes
(a writer on another machine, a FIFO removed) costs one interval, never a change. The embedded broker wakes its workers
this way (worker/embedded_broker.py), and the registry wakes the API's event streams.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import secrets
import select
import threading
import time
from pathlib import Path

from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
PENDING = "."  # a FIFO not yet opened by its listener: writers leave it alone


def wake_folder(database_url: str) -> Path | None:
    """Where the listeners of a SQLite database keep their FIFOs; None for a database in memory or on a server."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return path.with_name(path.name + ".wake")


class Waker:
    """The wake-ups of one database, for the process it lives in: `wait` for its listener, `wake_all` for writers."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.fd: int | None = None
        self.path: Path | None = None
        self.pid = 0
        self.deaf = False  # this process could not make its FIFO: it polls, and still wakes others
        self.lock = threading.Lock()
        os.register_at_fork(after_in_child=self._abandon)  # a forked pool child never holds its parent's FIFO open
        atexit.register(self.close)

    def wait(self, timeout: float) -> bool:
        """Whether a writer woke this process within `timeout`: a sleep that a write cuts short."""
        fd = self._listening()
        if fd is None:
            time.sleep(timeout)
            return False
        if not select.select([fd], [], [], timeout)[0]:
            return False
        try:
            while os.read(fd, 4096):  # every byte written so far: one look answers them all
                pass
        except BlockingIOError:
            pass
        return True

    def wake_self(self) -> None:
        """Cut this process's own wait short."""
        if self.fd is not None and self.pid == os.getpid():
            _poke(self.fd)

    def wake_all(self) -> None:
        """Tell every listener of this database on this machine to look now. Best effort, and never raises: it runs after
        a commit or a publish that has happened, and a listener that misses it looks at its next poll."""
        if self.folder is None:
            return
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return  # nobody has listened yet, or the folder is not ours to read
        for entry in entries:
            if entry.name.startswith(PENDING):
                continue
            try:
                fd = os.open(entry.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno == errno.ENXIO:  # nobody reads it: its listener died
                    Path(entry.path).unlink(missing_ok=True)
                continue
            try:
                _poke(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        with self.lock:
            if self.fd is not None and self.pid == os.getpid():
                os.close(self.fd)
                if self.path is not None:
                    self.path.unlink(missing_ok=True)
            self._forget()

    def _listening(self) -> int | None:
        """This process's FIFO, made on first use: created under a pending name, opened, then renamed into place, so a
        writer never takes it for a dead listener's before it is open."""
        if self.folder is None or self.deaf or (self.fd is not None and self.pid == os.getpid()):
            return self.fd
        with self.lock:
            if self.fd is not None and self.pid == os.getpid():  # another thread made it meanwhile
                return self.fd
            name = f"{os.getpid()}-{secrets.token_hex(4)}"
            pending, path = self.folder / f"{PENDING}{name}", self.folder / name
            try:
                self.folder.mkdir(mode=0o700, exist_ok=True)
                os.mkfifo(pending, 0o600)
                # Read and write end in one: the FIFO always has a writer, so select never sees a hang-up.
                fd = os.open(pending, os.O_RDWR | os.O_NONBLOCK)
                os.rename(pending, path)
            except OSError as err:  # a file system without FIFOs, say: this process polls alone, as before
                log.warning("wake-ups off for this process (%s): it looks at its poll's interval instead", err)
                self.deaf = True
                return None
            self.fd, self.path, self.pid = fd, path, os.getpid()
            return fd

    def _forget(self) -> None:
        self.fd, self.path, self.pid = None, None, 0

    def _abandon(self) -> None:
        """In a forked child: close its copy of the parent's FIFO (the parent's stays open), so the FIFO dies with the
        parent and a writer then finds it unread and removes it."""
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        self.lock = threading.Lock()  # a lock another thread held at the fork would never be released here
        self._forget()


_wakers: dict[Path | None, Waker] = {}
_wakers_lock = threading.Lock()


def _reset_lock() -> None:
    global _wakers_lock
    _wakers_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock)


def waker_for(folder: Path | None) -> Waker:
    """One Waker per database per process: whatever in the process uses it (a broker's consumer, its producers, a
    queue-length probe, the registry's sessions) shares one FIFO."""
    with _wakers_lock:
        if folder not in _wakers:
            _wakers[folder] = Waker(folder)
        return _wakers[folder]


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"!")
    except OSError:  # full (a wake-up is already waiting to be read), or its listener closed it just now
        pass
