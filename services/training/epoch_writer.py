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
        """Run what is queued (unless a write failed), then stop the thread."""
        self._writes.put(None)
        self._thread.join()

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()  # an error in the training thread is the one raised; the epochs it trained are still written

    def _run(self) -> None:
        while (write := self._writes.get()) is not None:
            try:
                if self._error is None:
                    write()
            except BaseException as err:  # raised where the job is run, at its next submit or flush
                self._error = err
            finally:
                self._writes.task_done()
        self._writes.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
