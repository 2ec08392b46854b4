"""Time since the entity's previous transaction (0, with has_previous = 0, for its first;
0 for a late one, never negative)."""

from __future__ import annotations

import math

import numpy as np

from fraudseq.features.constants import NS_PER_SECOND
from fraudseq.features.declaration import Block, StateNeed


def _kernel(ctx) -> dict:
    previous = np.empty(len(ctx), dtype=np.int64)
    previous[1:] = ctx.t[:-1]
    first = ctx.rank == 0
    previous[first] = ctx.state.last_time[ctx.entity[first]]
    has = ctx.n_prev > 0
    gap = np.where(has, np.maximum(ctx.t - previous, 0).astype(np.float64), 0.0)
    return {"log_gap_seconds": np.log1p(gap / NS_PER_SECOND), "has_previous": has * 1.0}


def _scalar(p) -> dict:
    account = p.account
    has = account.n > 0
    gap = float(max(p.time_ns - account.last_time, 0)) / NS_PER_SECOND if has else 0.0
    return {"log_gap_seconds": math.log1p(gap), "has_previous": 1.0 if has else 0.0}


BLOCK = Block(
    name="recency",
    names=lambda categorical, cp: ["log_gap_seconds", "has_previous"],
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("aggregates"),),
)
