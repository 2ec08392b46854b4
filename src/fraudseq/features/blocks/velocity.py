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

WINDOWS = [
    (width, f"count_{name}", f"amount_{name}" if name in VELOCITY_AMOUNT_WINDOWS else None)
    for name, width in VELOCITY_WINDOWS_NS.items()
]


def _names(categorical, has_counterparty) -> list[str]:
    return [name for _, count, amount in WINDOWS for name in (count, amount) if name]


def _kernel(ctx) -> dict:
    times, group, pos = ctx.event_time, ctx.event_entity, ctx.pos
    n = len(times)
    # Times as ranks, so that (entity, time) fits one int64 key in the events' order: with
    # r(x) = #{times < x} and c(q) = #{times <= q}, x > q <=> r(x) >= c(q).
    by_time = np.argsort(times, kind="stable")
    sorted_time = times[by_time]
    run_first = np.r_[True, sorted_time[1:] != sorted_time[:-1]] if n else np.zeros(0, bool)
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = np.maximum.accumulate(np.where(run_first, np.arange(n), 0))
    base = group * (n + 1)
    key = base + rank
    floor = np.maximum(ctx.events.starts[group[pos]], pos - VELOCITY_CAP)
    # Only the chunk's events are queried (live, most events are stored history), in time
    # order and then in key order: searchsorted is fastest on sorted queries.
    wanted = np.zeros(n, dtype=bool)
    wanted[pos] = True
    queried = by_time[wanted[by_time]]
    query_time = times[queried]
    lower = np.empty(n, dtype=np.int64)
    out = {}
    for width, count_name, amount_name in WINDOWS:
        # Per event, the first event of its entity within (t - width, t].
        lower[queried] = np.searchsorted(sorted_time, query_time - width, side="right")
        first = np.searchsorted(key, base[pos] + lower[pos], side="left")
        first = np.clip(first, floor, pos)
        out[count_name] = np.log1p((pos - first).astype(np.float64))
        if amount_name:
            out[amount_name] = signed_log1p(window_sums(ctx.event_amount, first, pos))
    return out


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
