"""How a multi-process attempt's ranks ended becomes what a single process would have raised (services.usecases.ranks)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from services.errors import KilnError
from services.registry.s3 import StoreUnavailable
from services.training.loop import Diverged
from services.usecases.ranks import LeftForSweeper, RankDied, raised_by_ranks, write_outcome


def ended(tmp_path: Path, *raised: tuple[int, BaseException]) -> BaseException:
    for rank, exc in raised:
        write_outcome(tmp_path, rank, exc)
    return raised_by_ranks(tmp_path, 1)


def test_no_word_from_any_rank_is_a_dead_rank_retried(tmp_path: Path) -> None:
    assert isinstance(ended(tmp_path), RankDied)


def test_a_broken_collective_only_follows_a_peer_that_died(tmp_path: Path) -> None:
    died = ended(tmp_path, (0, dist.DistBackendError("gloo: Connection closed by peer [127.0.0.1]:29500")),
                 (1, RuntimeError("[gloo] Read error: Connection reset by peer")))  # fmt: skip
    assert isinstance(died, RankDied) and "rank 0" in str(died)


def test_a_ranks_own_error_fails_the_job_as_a_single_process_would(tmp_path: Path) -> None:
    """Another attempt would meet the same TypeError: no retry, and the message a single process' job would carry."""
    failed = ended(tmp_path, (0, dist.DistBackendError("Connection closed by peer")), (1, TypeError("bad operand")))
    assert type(failed) is KilnError and failed.message == "TypeError: bad operand"


def test_a_known_ending_wins_over_what_it_caused_in_the_others(tmp_path: Path) -> None:
    diverged = ended(tmp_path, (1, RuntimeError("Connection closed by peer")), (0, Diverged("loss is nan at epoch 3", 3)))
    assert isinstance(diverged, Diverged) and diverged.epoch == 3
    (tmp_path / "outage").mkdir()
    assert isinstance(ended(tmp_path / "outage", (0, StoreUnavailable("s3 away"))), LeftForSweeper)


def test_a_kiln_error_keeps_its_message(tmp_path: Path) -> None:
    failed = ended(tmp_path, (0, KilnError("the dataset was deleted")))
    assert type(failed) is KilnError and failed.message == "the dataset was deleted"
