"""A short run of bench/load.py in the suite: predictions and job submissions at once, and nothing fails.

The memory target (RSS growth under 10%) is a benchmark figure (`make bench`); here only
correctness is asserted: every prediction answered 2xx and every job submitted succeeded.
"""

from __future__ import annotations

from bench.load import run


def test_mixed_load_on_loopback_has_no_errors() -> None:
    report = run(seconds=8, warmup_s=3)
    print(f"\n[load] {report.predict.requests} predictions at {report.predict.requests_per_s:.0f} req/s, "
          f"{report.jobs.submitted} jobs, RSS {report.rss_mib}")  # fmt: skip
    # Throughput is a benchmark figure (`make bench` prints req/s against a baseline); here: answered, and no errors.
    assert report.predict.requests > 0 and report.predict.errors == 0
    assert report.jobs.submitted >= 8 and report.jobs.succeeded == report.jobs.submitted, report.jobs.errors
    assert report.errors == 0
