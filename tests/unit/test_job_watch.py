"""The API's event streams wake when their job changes: a word for one job wakes its followers alone, None wakes all."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from api.job_watch import JobWatch


def test_a_change_wakes_the_jobs_followers_at_once_and_no_others() -> None:
    async def scenario() -> None:
        watch, job, other = JobWatch(), uuid.uuid4(), uuid.uuid4()
        watch.bind(asyncio.get_running_loop())
        mine, theirs = watch.follow(job), watch.follow(other)
        threading.Thread(target=watch.changed, args=(str(job),)).start()  # from the listener's thread
        started = time.monotonic()
        await mine.next_look(30)
        assert time.monotonic() - started < 10  # woken, not the 30 s poll
        await theirs.next_look(0.2)  # nothing for it: its poll's interval passes
        assert not theirs.changed.is_set()
        watch.changed(None)  # SQLite's word names no job: everyone looks
        await asyncio.sleep(0.05)
        assert mine.changed.is_set() and theirs.changed.is_set()
        watch.leave(job, mine)
        watch.leave(other, theirs)
        assert watch.followers == {}

    asyncio.run(scenario())


def test_a_change_during_a_look_wakes_the_next_wait() -> None:
    async def scenario() -> None:
        watch, job = JobWatch(), uuid.uuid4()
        watch.bind(asyncio.get_running_loop())
        follower = watch.follow(job)
        watch.changed(str(job))  # while the stream reads the job, say
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await follower.next_look(30)
        assert time.monotonic() - started < 10

    asyncio.run(scenario())
