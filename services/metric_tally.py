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
    __slots__ = ("child", "count", "dirty")

    def __init__(self, child: Any, dirty: list[Any]) -> None:
        self.child, self.count, self.dirty = child, 0, dirty

    def inc(self) -> None:
        if not self.count:
            self.dirty.append(self)  # flush() visits only what changed since the last one
        self.count += 1

    def flush(self) -> None:
        if self.count:
            self.child.inc(self.count)
            self.count = 0


class HistogramTally:
    """A histogram child's buckets and sum. prometheus_client has no public call that adds many observations at once, so
    this adds to the child's own values (`_buckets`, `_sum`, and `_upper_bounds` for the bounds); tests read the exposition."""

    __slots__ = ("bounds", "child", "counts", "dirty", "seen", "total")

    def __init__(self, child: Any, dirty: list[Any]) -> None:
        self.child, self.bounds, self.dirty = child, tuple(child._upper_bounds), dirty  # bounds end with +Inf, as prometheus_client's
        self.counts, self.total, self.seen = [0] * len(self.bounds), 0.0, False

    def observe(self, value: float) -> None:
        if not self.seen:
            self.seen = True
            self.dirty.append(self)
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bucket whose bound is >= value, as prometheus_client counts
        self.total += value

    def flush(self) -> None:
        for bucket, count in zip(self.child._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        self.child._sum.inc(self.total)
        self.counts, self.total, self.seen = [0] * len(self.bounds), 0.0, False


class Tallies:
    """The tallies of one registry, made on first use per label set. Update and make them with `lock` held: a scrape
    flushes them from a thread of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._dirty: list[CountTally | HistogramTally] = []  # updated since the last flush

    def count(self, child: Any) -> CountTally:
        return CountTally(child, self._dirty)

    def histogram(self, child: Any) -> HistogramTally:
        return HistogramTally(child, self._dirty)

    def flush(self) -> None:
        """Add what was tallied since the last flush to prometheus_client's values: only the tallies that changed."""
        with self.lock:
            dirty, self._dirty[:] = list(self._dirty), []
            for tally in dirty:
                tally.flush()
