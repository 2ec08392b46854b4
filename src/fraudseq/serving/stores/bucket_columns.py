"""`BucketColumns`: the memory store's counterparty hour buckets as sorted columns.

One sorted int64 key per (counterparty, bucket) entry, ``code << 32 | (bucket + 2**31)``,
with its transaction and fraud counts beside it. A counterparty's buckets are one contiguous
run of keys, so a batch reads every requested counterparty's range with two `searchsorted`
calls and hands the rows on as a `BucketTable`, with no Python object per bucket.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat

import numpy as np

from fraudseq.serving.stores.base import BucketCounts, BucketTable

#: Hour buckets (ns since the epoch // one hour) lie within +-2**31 for any int64 time.
_OFFSET = 1 << 31
_LOW = (1 << 32) - 1


class BucketColumns:
    """(count, frauds) per (counterparty, hour bucket), sorted by counterparty code, then
    bucket. Not thread-safe: the store holds its lock around every call."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}  # counterparty -> code (codes are never reused)
        self.key = np.empty(0, dtype=np.int64)
        self.count = np.empty(0, dtype=np.int64)
        self.fraud = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.key)

    def _span(self, codes: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and end positions of buckets [lo, hi) of each code."""
        base = codes << 32
        lo, hi = max(lo, -_OFFSET), min(hi, _OFFSET)
        return (
            np.searchsorted(self.key, base + (lo + _OFFSET)),
            np.searchsorted(self.key, base + (hi + _OFFSET)),
        )

    def read(self, names: list[str], span: tuple[int, int]) -> BucketTable:
        """The buckets in the half-open range `span` of `names` (distinct), as a table whose
        names are `names`."""
        codes = np.fromiter(map(self.index.get, names, repeat(-1)), np.int64, len(names))
        known = np.flatnonzero(codes >= 0)
        starts, ends = self._span(codes[known], *span)
        lengths = ends - starts
        # Row positions: the concatenated ranges [starts[i], ends[i]).
        first = np.cumsum(lengths) - lengths
        rows = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
        return BucketTable(
            list(names),
            np.repeat(known, lengths),
            (self.key[rows] & _LOW) - _OFFSET,
            self.count[rows],
            self.fraud[rows],
        )

    def of(self, name: str, span: tuple[int, int] | None = None) -> dict[int, tuple[int, int]]:
        """One counterparty's {bucket: (count, frauds)}, all or those in `span`."""
        code = self.index.get(name)
        if code is None:
            return {}
        lo, hi = span if span is not None else (-_OFFSET, _OFFSET)
        (start,), (end,) = self._span(np.array([code], dtype=np.int64), lo, hi)
        buckets = ((self.key[start:end] & _LOW) - _OFFSET).tolist()
        pairs = zip(self.count[start:end].tolist(), self.fraud[start:end].tolist(), strict=True)
        return dict(zip(buckets, pairs, strict=True))

    def add(self, counts: Mapping[tuple[str, int], int]) -> None:
        """Add `counts` transactions per (counterparty, bucket); new entries are inserted.
        `BucketCounts` (a batch's columns) are added without counting them in Python."""
        if isinstance(counts, BucketCounts):
            if not len(counts.names):
                return
            keys, n = np.unique(self._keys(counts.names, counts.buckets), return_counts=True)
        elif not counts:
            return
        else:
            names = [cp for cp, _ in counts]
            buckets = np.fromiter((b for _, b in counts), np.int64, len(counts))
            keys = self._keys(names, buckets)
            order = np.argsort(keys, kind="stable")
            keys, n = keys[order], np.fromiter(counts.values(), np.int64, len(counts))[order]
        at = np.searchsorted(self.key, keys)
        found = at < len(self.key)
        found[found] = self.key[at[found]] == keys[found]
        self.count[at[found]] += n[found]  # keys are distinct: no repeated positions
        if not found.all():
            new = ~found
            self.key = np.insert(self.key, at[new], keys[new])
            self.count = np.insert(self.count, at[new], n[new])
            self.fraud = np.insert(self.fraud, at[new], 0)

    def _keys(self, names: list[str], buckets: np.ndarray) -> np.ndarray:
        """The keys of (names[i], buckets[i]); names new to the index get the next codes."""
        index = self.index
        codes = np.fromiter(map(index.get, names, repeat(-1)), np.int64, len(names))
        unknown = np.flatnonzero(codes < 0)
        if len(unknown):  # in order of first appearance
            for i in unknown.tolist():
                codes[i] = index.setdefault(names[i], len(index))
        return (codes << 32) | (np.asarray(buckets, dtype=np.int64) + _OFFSET)

    def add_fraud(self, name: str, bucket: int, delta: int) -> None:
        """Change the fraud count of an existing entry by `delta`; a pruned one stays gone."""
        code = self.index.get(name)
        if code is None:
            return
        key = (code << 32) | (bucket + _OFFSET)
        at = int(np.searchsorted(self.key, key))
        if at < len(self.key) and self.key[at] == key:
            self.fraud[at] += delta

    def prune(self, limit: int) -> None:
        """Drop the buckets older than `limit`."""
        keep = (self.key & _LOW) >= max(limit + _OFFSET, 0)
        if not keep.all():
            self.key, self.count, self.fraud = self.key[keep], self.count[keep], self.fraud[keep]
