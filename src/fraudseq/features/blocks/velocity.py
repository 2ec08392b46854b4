"""Activity of the entity just before the transaction, over 1 hour, 1 day and 7 days.

count_<w>: log1p(number of previous transactions with time in (t - w, t]); amount_<w> (1d,
7d): signed log1p of the sum of their amounts. Previous means earlier in the entity's time
order, so same-timestamp rows earlier in the file count, later ones don't. At most the
latest VELOCITY_CAP events count (what a live state keeps).
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from fraudseq.features.constants import (
    VELOCITY_AMOUNT_WINDOWS,
    VELOCITY_CAP,
    VELOCITY_WINDOWS_NS,
)
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.segments import signed_log1p, signed_log1p_of, window_sums

#: Above this (entities x time span in ns), times are replaced by their ranks to build the
#: (entity, time) keys (a sort of every event; offline files), else used as they are.
KEY_LIMIT = 1 << 62

WINDOWS = [
    (width, f"count_{name}", f"amount_{name}" if name in VELOCITY_AMOUNT_WINDOWS else None)
    for name, width in VELOCITY_WINDOWS_NS.items()
]


def _names(categorical, has_counterparty) -> list[str]:
    return [name for _, count, amount in WINDOWS for name in (count, amount) if name]


def _kernel(ctx) -> dict:
    times, group, pos = ctx.event_time, ctx.event_entity, ctx.pos
    floor = np.maximum(ctx.events.starts[group[pos]], pos - VELOCITY_CAP)
    lower_bound = _first_after(times, group, pos)
    out = {}
    for width, count_name, amount_name in WINDOWS:
        # Per queried event, the first event of its entity within (t - width, t].
        first = np.clip(lower_bound(times[pos] - width), floor, pos)
        out[count_name] = np.log1p((pos - first).astype(np.float64))
        if amount_name:
            out[amount_name] = signed_log1p(window_sums(ctx.event_amount, first, pos))
    return out


def _first_after(times: np.ndarray, group: np.ndarray, pos: np.ndarray):
    """A function of query times q (one per event `pos`): the position of the first event
    of the same entity with time > q (events grouped by entity, in time order within each),
    by one searchsorted on integer keys (entity, time) in the events' order."""
    n = len(times)
    if n == 0:
        return lambda q: np.zeros(len(q), dtype=np.int64)
    base_time, top = int(times.min()) - 1, int(times.max())
    groups = int(group[-1]) + 1
    if (top - base_time + 1) * groups < KEY_LIMIT:  # a live batch: a few days of few entities
        span = top - base_time + 1
        key = group * span + (times - base_time)
        query_base = group[pos] * span - base_time
        return lambda q: np.searchsorted(key, query_base + np.clip(q, base_time, top), side="right")
    # Times as ranks, so that (entity, time) fits one int64 key in the events' order: with
    # r(x) = #{times < x} and c(q) = #{times <= q}, x > q <=> r(x) >= c(q).
    by_time = np.argsort(times, kind="stable")
    sorted_time = times[by_time]
    run_first = np.r_[True, sorted_time[1:] != sorted_time[:-1]]
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = np.maximum.accumulate(np.where(run_first, np.arange(n), 0))
    key = group * (n + 1) + rank
    query_base = group[pos] * (n + 1)
    # Queries sorted by time, then in key order: searchsorted is fastest on sorted queries.
    # (Offline every event is queried, live mostly the stored history is not.)
    query_of = np.full(n, -1, dtype=np.int64)
    query_of[pos] = np.arange(len(pos))
    by_query_time = query_of[by_time]
    by_query_time = by_query_time[by_query_time >= 0]

    def search(q: np.ndarray) -> np.ndarray:
        lower = np.empty(len(q), dtype=np.int64)
        lower[by_query_time] = np.searchsorted(sorted_time, q[by_query_time], side="right")
        return np.searchsorted(key, query_base + lower, side="left")

    return search


def _scalar(p) -> dict:
    times, amounts = p.account.times, p.account.amounts
    floor = max(len(times) - VELOCITY_CAP, 0)
    out = {}
    for width, count_name, amount_name in WINDOWS:
        first = max(bisect.bisect_right(times, p.time_ns - width), floor)
        out[count_name] = math.log1p(len(times) - first)
        if amount_name:
            total = 0.0
            for value in amounts[first:]:
                total += value
            out[amount_name] = signed_log1p_of(total)
    return out


BLOCK = Block(
    name="velocity",
    names=_names,
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("events", last=1, span_ns=max(VELOCITY_WINDOWS_NS.values())),),
)
