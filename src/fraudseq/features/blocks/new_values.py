"""new_values_24h: how many categorical values (all columns together) the entity used for
the first time in the last 24 hours, the current transaction's included. A new device, a
new country and a new merchant category within a day is a takeover's pattern; one new
value a month is a customer's. No categorical columns: no feature."""

from __future__ import annotations

import numpy as np

from fraudseq.features.constants import NS_PER_DAY
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.segments import Combined, grouped_searchsorted, sums_before

WIDTH_NS = NS_PER_DAY


def _names(categorical, has_counterparty) -> list[str]:
    return ["new_values_24h"] if categorical else []


def _kernel(ctx) -> dict:
    if not ctx.columns:
        return {}
    state, entity = ctx.state, ctx.entity
    total = np.zeros(len(ctx))
    for j, new in enumerate(ctx.fresh):
        # First-seen times: each entity's stored ones (sorted), then its new rows' times.
        counts = state.seen_counts[j]
        stored = state.seen_times[j]
        order = np.lexsort((stored, np.repeat(np.arange(len(counts)), counts)))
        added = np.bincount(entity[new], minlength=len(counts))
        new_rank = sums_before(new * 1.0, entity, np.zeros(len(counts))).astype(np.int64)
        firsts = Combined(counts, added, entity[new], new_rank[new])
        times = firsts.fill(stored[order], ctx.t[new])
        group = np.repeat(np.arange(len(counts)), firsts.lengths)
        lo = grouped_searchsorted(times, group, ctx.t - WIDTH_NS, entity)
        hi = firsts.starts[entity] + counts[entity] + new_rank + new
        total += hi - lo
    return {"new_values_24h": total}


def _scalar(p) -> dict:
    if not p.columns:
        return {}
    since, total = p.time_ns - WIDTH_NS, 0
    # A stored event's row being recomputed (flags set) finds its own values in `seen`.
    own_in_seen = getattr(p.account, "flags", None) is not None
    for seen, new in zip(p.account.seen, p.new, strict=True):
        total += 0 if own_in_seen else new
        for first in reversed(seen.values()):  # in first-seen order
            if first <= since:
                break
            total += first <= p.time_ns
    return {"new_values_24h": float(total)}


BLOCK = Block(
    name="new_values_24h",
    names=_names,
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("novelty"),),
)
