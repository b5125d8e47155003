"""Counter and histogram updates kept in plain numbers on the hot path, and folded into prometheus_client when read.

prometheus_client takes a lock and scans the buckets for every update: ~2.5 us each, and a predict
makes seven, which on a small model costs more than onnxruntime's run. A tally costs a bisect and
two additions. `Tallies.flush()` adds what was tallied since the last flush to the prometheus_client
values, so a scrape that flushes first reads exact totals. In multiprocess mode, where another
process may serve the scrape, the caller flushes after every request instead.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from typing import Any


class CountTally:
    __slots__ = ("child", "count")

    def __init__(self, child: Any) -> None:
        self.child, self.count = child, 0

    def inc(self) -> None:
        self.count += 1

    def flush(self) -> None:
        if self.count:
            self.child.inc(self.count)
            self.count = 0


class HistogramTally:
    """A histogram child's buckets and sum. prometheus_client has no public call that adds many observations at once, so
    this adds to the child's own values (`_buckets`, `_sum`, and `_upper_bounds` for the bounds); tests read the exposition."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child, self.bounds = child, tuple(child._upper_bounds)  # ends with +Inf, as prometheus_client keeps it
        self.counts, self.total = [0] * len(self.bounds), 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value, as prometheus_client counts
        self.total += value

    def flush(self) -> None:
        if self.total or any(self.counts):
            for bucket, count in zip(self.child._buckets, self.counts, strict=True):
                if count:
                    bucket.inc(count)
            self.child._sum.inc(self.total)
            self.counts, self.total = [0] * len(self.bounds), 0.0


class Tallies:
    """The tallies of one registry, made on first use per label set. Update and make them with `lock` held: a scrape
    flushes them from a thread of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._all: list[CountTally | HistogramTally] = []

    def count(self, child: Any) -> CountTally:
        tally = CountTally(child)
        self._all.append(tally)
        return tally

    def histogram(self, child: Any) -> HistogramTally:
        tally = HistogramTally(child)
        self._all.append(tally)
        return tally

    def flush(self) -> None:
        with self.lock:
            for tally in self._all:
                tally.flush()
