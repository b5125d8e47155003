"""Celery is set up for long jobs that must not be lost: late acks, one message at a time, rising time limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.config import Settings
from worker.app import create_celery


def test_messages_are_acknowledged_only_when_a_job_is_done() -> None:
    conf = create_celery(Settings(broker_url="redis://127.0.0.1:6379/0")).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]


def test_soft_limit_then_hard_limit_then_visibility_timeout_then_lease() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:6379/0")
    conf = create_celery(settings).conf
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert conf.task_soft_time_limit < conf.task_time_limit < visibility < settings.job_lease_s


def test_time_limits_out_of_order_are_refused() -> None:
    with pytest.raises(ValidationError, match="KILN_JOB_SOFT_TIME_LIMIT_S < KILN_JOB_TIME_LIMIT_S"):
        Settings(job_time_limit_s=60, job_soft_time_limit_s=120)
