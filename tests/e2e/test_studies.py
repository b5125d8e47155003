"""A study on real processes: an API, a worker with two pool processes, PostgreSQL and Redis. Its trials run two at
once, the hopeless ones are pruned, the worker is SIGKILLed mid-study and a new one carries on, and `best` ends on
the best trial's version, with no trial started twice."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.stacks import Stack
from tests.factories import job_body

GOOD_LR, BAD_LR = 0.01, 1e-7
STUDY = {
    "study_name": "digits-e2e",
    # About 0.15 s an epoch at batch size 4: a trial lasts long enough to be killed in.
    "job": job_body(model_name="digits-study", training={"epochs": 8, "batch_size": 4}),
    "search_space": {
        "training.optimizer.learning_rate": {"type": "categorical", "choices": [GOOD_LR, BAD_LR]},
        "model.layers[0].units": {"type": "categorical", "choices": [32, 64, 128]},
    },
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "sampler": "grid",  # its order depends only on which points are taken, never on timing: the same every run
    "pruner": {"type": "median", "n_startup_trials": 1},
    "max_trials": 6,
    "parallelism": 2,
}


def _study(client: httpx.Client, study_id: str) -> dict[str, Any]:
    return client.get(f"/v1/studies/{study_id}").json()


def _wait(client: httpx.Client, study_id: str, until: Any, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = _study(client, study_id)
        if until(study):
            return study
        time.sleep(0.1)
    raise AssertionError(f"the study never reached the expected point: {study}")


def _most_at_once(jobs: list[dict[str, Any]]) -> int:
    """The most trial jobs that were running at the same moment (from their start and finish times)."""
    moments = sorted([(j["started_at"], 1) for j in jobs] + [(j["finished_at"], -1) for j in jobs], key=lambda m: (m[0], m[1]))
    running = most = 0
    for _, step in moments:
        running += step
        most = max(most, running)
    return most


def test_a_study_prunes_survives_a_killed_worker_and_aliases_its_best_trial(stack_on: Any, redis_url: str) -> None:
    stack: Stack = stack_on(redis_url, worker_concurrency="2")
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
        created = client.post("/v1/studies", json=STUDY)
        assert created.status_code == 202, created.text
        study_id = created.json()["id"]
        # Mid-study: a trial has completed and another is training.
        during = _wait(client, study_id, lambda s: s["counts"]["complete"] >= 1 and any(t["state"] == "running" and t["epochs"] >= 1
                                                                                        for t in s["trials"]))  # fmt: skip
        stack.kill_worker()
        running = [t for t in _study(client, study_id)["trials"] if t["state"] == "running"]
        assert running, during
        stack.start_worker()  # as a supervisor would: the sweeper takes the killed trials back and resumes them
        study = _wait(client, study_id, lambda s: s["state"] != "running")
        assert study["state"] == "succeeded", (study, stack.logs())
        jobs = [client.get(f"/v1/jobs/{t['job_id']}").json() for t in study["trials"]]
        all_jobs = client.get("/v1/jobs?limit=200").json()
        versions = client.get("/v1/models/digits-study/versions").json()["data"]
        aliases = client.get("/v1/models/digits-study").json()["aliases"]

    # Every grid point ran exactly once, each as one job: no trial was started twice, even across the kill.
    trials = study["trials"]
    assert [t["number"] for t in trials] == list(range(6))
    points = {(t["params"]["training.optimizer.learning_rate"], t["params"]["model.layers[0].units"]) for t in trials}
    assert len(points) == 6
    assert all_jobs["count"] == 6 and {j["id"] for j in all_jobs["data"]} == {t["job_id"] for t in trials}
    assert [(j["study_id"], j["trial_number"]) for j in jobs] == [(study_id, n) for n in range(6)]
    assert any(j["attempt"] == 2 for j in jobs if j["id"] in {t["job_id"] for t in running})  # resumed after the kill
    # The hopeless trials were pruned (stopped early, nothing registered); the rest registered one version each.
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert any(t["params"]["training.optimizer.learning_rate"] == BAD_LR for t in pruned), trials
    assert all(t["epochs"] < 8 for t in pruned)
    complete = [t for t in trials if t["state"] == "complete"]
    assert sorted(v["job_id"] for v in versions) == sorted(t["job_id"] for t in complete)
    # Two ran at once, and never more than parallelism.
    assert _most_at_once(jobs) == 2
    # `best` is the complete trial with the highest val_accuracy.
    best = max(complete, key=lambda t: (t["value"], -t["number"]))
    assert study["best_trial"] == best["number"] and study["best"]["number"] == best["number"]
    assert study["best_version"] == best["version"] == aliases["best"]
    assert best["params"]["training.optimizer.learning_rate"] == GOOD_LR and best["value"] > 0.8
