"""Index arithmetic on flat arrays cut into per-entity segments (no Python loop per row)."""

from __future__ import annotations

import math

import numpy as np


def starts_of(lengths: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums: where each segment of `lengths` starts."""
    out = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=out[1:])
    return out


def ranges(starts: np.ndarray, lengths: np.ndarray, step: int = 1) -> np.ndarray:
    """Concatenated ranges starts[i] + step * [0, lengths[i])."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.asarray(starts, dtype=np.int64) - step * starts_of(lengths)
    out = np.arange(total, dtype=np.int64)
    if step != 1:
        out *= step
    return np.repeat(offsets, lengths) + out


def group_ids(lengths: np.ndarray) -> np.ndarray:
    """The segment number of every item."""
    return np.repeat(np.arange(len(lengths)), lengths)


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(v) * log1p(|v|), exactly as math.log1p per value (no sign product rounding)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros_like(values)
    positive, negative = values > 0, values < 0
    out[positive] = np.log1p(values[positive])
    out[negative] = -np.log1p(-values[negative])
    return out


def signed_log1p_of(value: float) -> float:
    """`signed_log1p` of one number (math.log1p, as numpy's per value)."""
    if value > 0:
        return math.log1p(value)
    if value < 0:
        return -math.log1p(-value)
    return 0.0


class Combined:
    """Each entity's stored segment followed by the chunk's new items, as one flat array:
    `starts`/`lengths` per entity, `stored` where the stored items go, `new` where each new
    item (grouped by entity, in order) goes."""

    def __init__(self, stored_len: np.ndarray, added: np.ndarray, entity, rank) -> None:
        self.stored_len = stored_len
        self.lengths = stored_len + added
        self.starts = starts_of(self.lengths)
        self.stored = ranges(self.starts, stored_len)
        self.new = self.starts[entity] + stored_len[entity] + rank
        self.size = int(self.lengths.sum())

    def fill(self, stored: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = np.empty((self.size, *stored.shape[1:]), dtype=stored.dtype)
        out[self.stored] = stored
        out[self.new] = new
        return out

    def tail(self, keep) -> tuple[np.ndarray, np.ndarray]:
        """Index of the last min(length, keep) items of each entity, and their counts."""
        counts = np.minimum(self.lengths, keep)
        return ranges(self.starts + self.lengths - counts, counts), counts


def grouped_searchsorted(
    values: np.ndarray, group: np.ndarray, queries: np.ndarray, query_group: np.ndarray
) -> np.ndarray:
    """Per query, the position in `values` (sorted within each group, groups in order) of
    the first element of its group greater than the query (bisect_right), exact on int64.

    One searchsorted on keys group * span + value: queries are clipped to the values' range
    (which keeps every answer), so keys fit in int64 unless span * groups is huge; then the
    values are replaced by their ranks (a sort, several times slower)."""
    if len(values) == 0:
        return np.zeros(len(queries), dtype=np.int64)
    base, top = int(values.min()) - 1, int(values.max())
    groups = int(max(group.max(), query_group.max(initial=0))) + 1
    if (top - base + 1) * groups < 1 << 62:
        values, queries = values - base, np.clip(queries, base, top) - base
    else:
        _, rank = np.unique(np.concatenate([values, queries]), return_inverse=True)
        values, queries = rank[: len(values)], rank[len(values) :]
    span = int(max(values.max(), queries.max(initial=0))) + 1
    keys = group.astype(np.int64) * span + values
    query_keys = query_group.astype(np.int64) * span + queries
    return np.searchsorted(keys, query_keys, side="right")


def running_max_before(values: np.ndarray, group: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Per item, the max of `initial[group]` and the earlier items of its group (groups
    contiguous), exactly: an integer key puts the group first and the value's rank second,
    so one maximum.accumulate scans every group at once."""
    n = len(values)
    out = initial[group].astype(np.float64, copy=True) if n else np.zeros(0)
    if n < 2:
        return out
    distinct, rank = np.unique(values, return_inverse=True)
    key = group.astype(np.int64) * len(distinct) + rank.reshape(-1)
    running = np.maximum.accumulate(key)
    earlier = np.r_[False, group[1:] == group[:-1]]
    previous = distinct[running[:-1] % len(distinct)]
    out[1:] = np.where(earlier[1:], np.maximum(out[1:], previous), out[1:])
    return out


def sums_before(values: np.ndarray, group: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Per item, `initial[group]` plus the sum of the earlier items of its group (groups
    contiguous); prefix differences, rounding to the ulp of the running total."""
    n = len(values)
    if n == 0:
        return np.zeros(0)
    prefix = np.zeros(n + 1)
    np.cumsum(values, out=prefix[1:])
    first = np.r_[True, group[1:] != group[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    return initial[group] + (prefix[:-1] - prefix[start])


#: Above this many summed elements per row on average, window sums switch from direct
#: summation (reduceat: exact in the order a live service adds its events, but costing the
#: total window size) to differences of prefix sums (O(n), rounding ~ ulp of the prefix).
WINDOW_SUM_BUDGET_PER_ROW = 64


def window_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(values[lo[i]:hi[i]]) for each i, with lo <= hi <= len(values) - 1 (0 if empty)."""
    if len(lo) == 0:
        return np.zeros(0, dtype=np.float64)
    if int((hi - lo).sum()) > WINDOW_SUM_BUDGET_PER_ROW * len(lo):
        prefix = np.zeros(len(values) + 1, dtype=np.float64)
        np.cumsum(values, out=prefix[1:])
        return prefix[hi] - prefix[lo]
    bounds = np.empty(2 * len(lo), dtype=np.int64)
    bounds[0::2] = lo
    bounds[1::2] = hi
    sums = np.add.reduceat(values, bounds)[0::2]
    return np.where(hi > lo, sums, 0.0)
