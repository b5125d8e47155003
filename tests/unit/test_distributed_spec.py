"""`distributed.processes` in a job body: validated by the schema, capped by KILN_MAX_TRAINING_PROCESSES, refused where
several processes cannot train the same network; and the sampler that shards each epoch's rows."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from services.config import Settings
from services.errors import InvalidSpec
from services.spec import Budget, JobSpec, check_budget
from services.spec.job import format_loc
from services.training.distributed import Distributed
from tests.factories import gan_body, job_body

CAP_2 = Budget(max_parameters=100_000_000, max_training_memory_mb=10**6, max_training_processes=2)


def test_no_distributed_section_is_one_process() -> None:
    assert JobSpec.model_validate(job_body()).processes == 1
    assert JobSpec.model_validate(job_body(distributed={"processes": 2})).processes == 2


@pytest.mark.parametrize("processes", [0, -1, "two", 2.5, 2000])
def test_a_bad_process_count_names_the_field(processes: object) -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(job_body(distributed={"processes": processes}))
    assert [format_loc(e["loc"]) for e in caught.value.errors()] == ["distributed.processes"]


def test_an_unknown_distributed_option_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(job_body(distributed={"processes": 2, "nodes": 2}))
    assert [format_loc(e["loc"]) for e in caught.value.errors()] == ["distributed.nodes"]


def test_more_processes_than_the_cap_are_refused_naming_the_field_and_the_cap() -> None:
    check_budget(JobSpec.model_validate(job_body(distributed={"processes": 2})), CAP_2)
    with pytest.raises(InvalidSpec) as caught:
        check_budget(JobSpec.model_validate(job_body(distributed={"processes": 3})), CAP_2)
    assert caught.value.field == "distributed.processes"
    assert caught.value.message == "3 training processes asked, over KILN_MAX_TRAINING_PROCESSES=2"


@pytest.mark.parametrize(
    "body",
    [gan_body(distributed={"processes": 2}), job_body(distributed={"processes": 2}, training={"fine_tune": {"after_epoch": 2}})],
    ids=["gan", "fine_tune"],
)
def test_jobs_several_processes_cannot_share_are_refused(body: dict) -> None:
    with pytest.raises(InvalidSpec) as caught:
        check_budget(JobSpec.model_validate(body), CAP_2)
    assert caught.value.field == "distributed.processes"


def test_the_cap_defaults_to_this_machines_cpus_and_reaches_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    assert Settings().max_training_processes == (os.cpu_count() or 1)
    monkeypatch.setenv("KILN_MAX_TRAINING_PROCESSES", "4")
    assert Settings().budget().max_training_processes == 4


def test_the_ranks_shards_cover_every_row_and_reshuffle_each_epoch_as_the_seed_says() -> None:
    ranks = [Distributed(rank, 2, seed=7) for rank in range(2)]
    epoch_1 = [r.shard(11, epoch=1) for r in ranks]
    assert [len(s) for s in epoch_1] == [6, 6] and ranks[0].shard_size(11) == 6  # one row repeated to even them out
    assert set(torch.cat(epoch_1).tolist()) == set(range(11))
    assert torch.equal(ranks[0].shard(11, epoch=1), epoch_1[0])  # a resumed attempt draws the same order
    assert not torch.equal(ranks[0].shard(11, epoch=2), epoch_1[0])
    assert not torch.equal(Distributed(0, 2, seed=8).shard(11, epoch=1), epoch_1[0])
