"""Each epoch's writes (its checkpoint file, the file's copy in the store, its row in SQL) on a thread of their own.

A small job spent a fifth of its time on them: two fsyncs for the checkpoint and a committed transaction per epoch, while
the next epoch could already train. Here the training thread takes the snapshot (the checkpoint's bytes, which the next
epoch would change) and goes on; the writes happen behind it, in the order they were given, so the file is still written
before its epoch is recorded. At most `depth` writes wait: what is stored is never more than about an epoch behind what
was trained, and a big checkpoint is never held twice in memory. The first write that fails stops every later one (an
epoch is never recorded past a failed checkpoint) and is raised in the training thread at its next `submit` or `flush`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

Write = Callable[[], None]


class EpochWriter:
    """An ordered queue of writes and the one thread that runs them; a context manager that waits for them on exit."""

    def __init__(self, depth: int = 2) -> None:
        self._writes: queue.Queue[Write | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._closing, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiln-epoch-writer", daemon=True)
        self._thread.start()

    def submit(self, write: Write) -> None:
        """Queue `write` after those already given; waits while `depth` are waiting. Raises an earlier write's error."""
        self._raise()
        self._writes.put(write)

    def flush(self) -> None:
        """Wait until every write given so far is done; raise the first that failed."""
        self._writes.join()
        self._raise()

    def close(self) -> None:
        """Run what is queued (unless a write failed), then stop the thread. A signal raised meanwhile (Celery's soft time
        limit) is raised once the writes are done, so none lands after the job has ended."""
        self._closing.set()
        interrupted: BaseException | None = None
        try:
            self._writes.put(None)  # the thread's cue, after what is queued; the closing flag is its backstop
        except BaseException as err:
            interrupted = err
        while not self._done.is_set():  # not Thread.join: an exception raised into a join can leave it wrong about the thread
            try:
                self._done.wait()
            except BaseException as err:
                interrupted = interrupted or err
        if interrupted is not None:
            raise interrupted

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()  # an error in the training thread is the one raised; the epochs it trained are still written

    def _run(self) -> None:
        try:
            self._take()
        finally:
            self._done.set()

    def _take(self) -> None:
        while True:
            try:
                write = self._writes.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if write is None:
                self._writes.task_done()
                return
            try:
                if self._error is None:
                    write()
            except BaseException as err:  # raised where the job is run, at its next submit or flush
                self._error = err
            finally:
                self._writes.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
