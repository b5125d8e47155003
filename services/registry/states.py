"""The job state machine: one table of allowed moves, from which every conditional update is built.

    queued  -> running    a worker claims it
    queued  -> cancelled  cancelled before it started
    queued  -> failed     its message could not be sent
    running -> queued     the sweeper takes back an attempt whose worker went silent
    running -> succeeded  its version is registered
    running -> failed     it raised, diverged or ran out of time, or ran out of attempts
    running -> cancelled  it stopped at a batch after a cancel was asked

Succeeded, failed and cancelled are final: nothing leaves them.
"""

from __future__ import annotations

from services.registry.entities import JobState

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}
FINAL = frozenset(state for state, targets in TRANSITIONS.items() if not targets)
ACTIVE = frozenset(JobState) - FINAL  # queued or running: a worker has it, or will


class InvalidTransition(ValueError):
    """A move the table does not allow: a bug in the caller, not a job that moved on meanwhile."""


def sources(target: JobState, *, only: JobState | None = None) -> list[JobState]:
    """The states a job may move to `target` from (just `only`, when given), in a stable order for SQL `IN`.

    Raises InvalidTransition when there are none, so a conditional update can never be built for a
    move the table forbids.
    """
    found = [state for state, targets in TRANSITIONS.items() if target in targets and only in (None, state)]
    if not found:
        raise InvalidTransition(f"a job cannot move {f'from {only} ' if only else ''}to {target}")
    return found


def allowed(source: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[source]
