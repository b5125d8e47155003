"""The API's followers of jobs (event streams), woken on the event loop when the database says their job changed."""

from __future__ import annotations

import asyncio
import uuid


class Follower:
    """One stream's wake-up: set when its job (or any job) changes, cleared each time the stream looks again."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    async def next_look(self, timeout: float) -> None:
        """Return when the job changed since the last look, or after `timeout` (the poll that covers a word lost)."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout)
        except TimeoutError:
            pass
        self.changed.clear()  # before the look: a change during it wakes the next wait at once


class JobWatch:
    """Followers by job, woken by services.registry.changes.ChangeListener from its thread."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.followers: dict[str, set[Follower]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop

    def follow(self, job_id: uuid.UUID) -> Follower:
        follower = Follower()
        self.followers.setdefault(str(job_id), set()).add(follower)
        return follower

    def leave(self, job_id: uuid.UUID, follower: Follower) -> None:
        followers = self.followers.get(str(job_id), set())
        followers.discard(follower)
        if not followers:
            self.followers.pop(str(job_id), None)

    def changed(self, job_id: str | None) -> None:
        """From any thread: `job_id` changed (None: any job may have)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake, job_id)
        except RuntimeError:  # the loop closed just now: the API is stopping
            pass

    def _wake(self, job_id: str | None) -> None:
        groups = list(self.followers.values()) if job_id is None else [self.followers.get(job_id, set())]
        for followers in groups:
            for follower in followers:
                follower.changed.set()
