"""Counterparty (terminal) activity and fraud rate before the label delay, and the age of
its known fraud.

Time is cut in hour buckets: b(t) = floor(t / 1 hour) in UTC and D = ceil(label delay in
hours). For w in (1, 7, 30) days the window is the counterparty's transactions, from all
entities, whose bucket lies in [b(t) - D - 24w, b(t) - D). All of them are strictly older
than t - label_delay, since they precede bucket b(t) - D, which starts at or before t - D
hours. cp_count_<w>d: log1p(their number); cp_risk_<w>d: number labelled 1 / their number
(0 when none; unknown labels count in the number, not as fraud). cp_first_fraud_days /
cp_last_fraud_days: days from the first / last bucket with a known fraud in the 30-day
window to b(t) (0 when none): a campaign that began long ago has likely ended, one that
began just before the delay cut is likely still running. Rows with a missing counterparty
get 0 and enter no statistic. No counterparty column: no features.

The state is the counterparty's (count, frauds) per bucket, kept under its own key: the
chunk's rows enter as entries of one transaction (a fraud if labelled 1), the stored
buckets as theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fraudseq.features.constants import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
)
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.kernel import known_frauds


def _names(categorical, has_counterparty) -> list[str]:
    if not has_counterparty:
        return []
    names = [f"cp_{kind}_{w}d" for w in COUNTERPARTY_WINDOWS_DAYS for kind in ("count", "risk")]
    return [*names, "cp_first_fraud_days", "cp_last_fraud_days"]


def counterparty_statistics(
    key: np.ndarray,
    count: np.ndarray,
    fraud: np.ndarray,
    bucket: np.ndarray,
    query_base: np.ndarray,
    query_bucket: np.ndarray,
    delay: int,
) -> dict[str, np.ndarray]:
    """The counterparty features of queries, from a table of (counterparty, bucket) entries.

    Entries are sorted by `key` = counterparty * span + `bucket` (buckets >= 0 from a common
    origin, span larger than any bucket), each holding `count` transactions of which `fraud`
    are known frauds. A query of a counterparty whose keys start at `query_base`
    (counterparty * span), made in bucket `query_bucket`, sees the entries with bucket in
    [query_bucket - delay - 24 w, query_bucket - delay). Searches are clipped at bucket 0
    so that a query never reaches the previous counterparty.
    """
    count_prefix = np.r_[0, np.cumsum(count)]
    fraud_prefix = np.r_[0, np.cumsum(fraud)]
    visible = query_bucket - delay
    end = np.searchsorted(key, query_base + np.maximum(visible, 0), side="left")
    out = {}
    for w in COUNTERPARTY_WINDOWS_DAYS:
        lo = np.maximum(visible - w * BUCKETS_PER_DAY, 0)
        start = np.searchsorted(key, query_base + lo, side="left")
        n = count_prefix[end] - count_prefix[start]
        out[f"cp_count_{w}d"] = np.log1p(n.astype(np.float64))
        out[f"cp_risk_{w}d"] = (fraud_prefix[end] - fraud_prefix[start]) / np.maximum(n, 1)

    # `start` is now the longest window's. The first entry with a known fraud at or after it
    # and the last before `end`, from next/previous-fraud positions (a sentinel past the end).
    position = np.arange(len(key) + 1)
    is_fraud = np.r_[np.asarray(fraud) > 0, True]
    next_fraud = np.minimum.accumulate(np.where(is_fraud, position, len(key))[::-1])[::-1]
    prev_fraud = np.maximum.accumulate(np.where(np.r_[False, is_fraud[:-1]], position - 1, -1))
    has = next_fraud[start] < end
    first = np.zeros(len(query_bucket))
    last = np.zeros(len(query_bucket))
    first[has] = (query_bucket[has] - bucket[next_fraud[start[has]]]) / BUCKETS_PER_DAY
    last[has] = (query_bucket[has] - bucket[prev_fraud[end[has]]]) / BUCKETS_PER_DAY
    out["cp_first_fraud_days"] = first
    out["cp_last_fraud_days"] = last
    return out


def _kernel(ctx) -> dict:
    chunk = ctx.chunk
    if chunk.counterparty is None:
        return {}
    n = len(ctx)
    code = np.asarray(chunk.counterparty, dtype=np.int64)
    own = ctx.t // COUNTERPARTY_BUCKET_NS
    known = code >= 0
    fraud = known_frauds(chunk.label, n)
    out = {name: np.zeros(n) for name in _names((), True)}
    if not known.any():
        return out
    stored = ctx.buckets
    entry_code = np.concatenate([stored.code, code[known]])
    entry_bucket = np.concatenate([stored.bucket, own[known]])
    entry_count = np.concatenate([stored.count, np.ones(int(known.sum()), dtype=np.int64)])
    entry_fraud = np.concatenate([stored.fraud, fraud[known]])
    longest = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY
    base = int(min(entry_bucket.min(), own[known].min() - ctx.delay_buckets - longest))
    span = int(max(entry_bucket.max(), own[known].max())) - base + 2
    rel = entry_bucket - base
    key = entry_code * span + rel
    order = _key_order(key, len(stored.code))  # the order within a key does not matter
    # The rows are entries too: in the entries' order they are the queries in key order
    # (searchsorted is several times faster on sorted queries).
    rows = np.flatnonzero(known)[order[order >= len(stored.code)] - len(stored.code)]
    stats = counterparty_statistics(
        key[order], entry_count[order], entry_fraud[order], rel[order],
        code[rows] * span, own[rows] - base, ctx.delay_buckets,
    )  # fmt: skip
    for name, values in stats.items():
        out[name][rows] = values
    return out


def _key_order(key: np.ndarray, stored: int) -> np.ndarray:
    """An order sorting `key` (ties in any order). When the first `stored` keys are already
    sorted (a live batch's stored buckets come so from the store), only the rest are sorted
    and merged in: a sort of the chunk's entries, not of every stored bucket."""
    head = key[:stored]
    if stored < 2 or not (head[1:] >= head[:-1]).all():
        return np.argsort(key)
    tail = np.argsort(key[stored:]) + stored
    order = np.empty(len(key), dtype=np.int64)
    # Each tail entry goes after the stored keys <= it and the tail entries before it.
    at = np.searchsorted(head, key[tail], side="right") + np.arange(len(tail))
    placed = np.zeros(len(key), dtype=bool)
    placed[at] = True
    order[at] = tail
    order[~placed] = np.arange(stored)
    return order


@dataclass(frozen=True)
class CounterpartyTotals:
    """What one transaction's counterparty features need: the counterparty's transactions
    and known frauds in each window of COUNTERPARTY_WINDOWS_DAYS ending at `hi` (its bucket
    minus the label delay), and its first and last bucket with a known fraud in the longest
    window (None without one). Stores may compute it (SQLite does, in SQL) rather than
    return every bucket: a busy counterparty has hundreds of hour buckets in 30 days."""

    counts: tuple[int, ...]
    frauds: tuple[int, ...]
    first_fraud: int | None = None
    last_fraud: int | None = None

    @classmethod
    def from_buckets(cls, buckets: dict[int, tuple[int, int]], hi: int) -> CounterpartyTotals:
        """The totals of (count, frauds) buckets (only buckets with transactions)."""
        lows = window_starts(hi)
        counts, frauds = [0] * len(lows), [0] * len(lows)
        fraud_buckets = []
        for bucket, (n, f) in buckets.items():
            if bucket >= hi:
                continue
            for i, lo in enumerate(lows):
                if bucket >= lo:
                    counts[i] += n
                    frauds[i] += f
            if f and bucket >= lows[-1]:
                fraud_buckets.append(bucket)
        return cls(
            tuple(counts),
            tuple(frauds),
            min(fraud_buckets) if fraud_buckets else None,
            max(fraud_buckets) if fraud_buckets else None,
        )


def window_starts(hi: int) -> list[int]:
    """The first bucket of each counterparty window (COUNTERPARTY_WINDOWS_DAYS) ending at hi."""
    return [hi - w * BUCKETS_PER_DAY for w in COUNTERPARTY_WINDOWS_DAYS]


_PAIRS = [(f"cp_count_{w}d", f"cp_risk_{w}d") for w in COUNTERPARTY_WINDOWS_DAYS]


def _scalar(p) -> dict:
    if p.counterparty is None:
        return {}
    totals = p.counterparty
    if not isinstance(totals, CounterpartyTotals):
        totals = CounterpartyTotals.from_buckets(totals, p.bucket - p.delay_buckets)
    out = {}
    for (count_name, risk_name), count, fraud in zip(
        _PAIRS, totals.counts, totals.frauds, strict=True
    ):
        out[count_name] = math.log1p(count)
        out[risk_name] = fraud / max(count, 1)
    first, last = totals.first_fraud, totals.last_fraud
    out["cp_first_fraud_days"] = 0.0 if first is None else (p.bucket - first) / BUCKETS_PER_DAY
    out["cp_last_fraud_days"] = 0.0 if last is None else (p.bucket - last) / BUCKETS_PER_DAY
    return out


BLOCK = Block(
    name="counterparty_risk",
    names=_names,
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("counterparty"),),
    history=False,
)
