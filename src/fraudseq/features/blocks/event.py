"""What the transaction alone shows: signed log-amount, the amount, cyclic time of day and
of week (1970-01-01 was a Thursday)."""

from __future__ import annotations

import math

import numpy as np

from fraudseq.features.constants import NS_PER_SECOND, SECONDS_PER_DAY
from fraudseq.features.declaration import Block


def _features(time_ns, amount, log_amount, xp) -> dict:
    seconds = time_ns // NS_PER_SECOND
    day_fraction = (seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY
    week_fraction = ((seconds // SECONDS_PER_DAY + 3) % 7) / 7
    return {
        "log_amount": log_amount,
        "amount": amount,  # linear too: a fixed-amount rule is a sharp edge here
        "hour_sin": xp.sin(2 * math.pi * day_fraction),
        "hour_cos": xp.cos(2 * math.pi * day_fraction),
        "dow_sin": xp.sin(2 * math.pi * week_fraction),
        "dow_cos": xp.cos(2 * math.pi * week_fraction),
    }


BLOCK = Block(
    name="event",
    names=lambda categorical, cp: [
        "log_amount",
        "amount",
        "hour_sin",
        "hour_cos",
        "dow_sin",
        "dow_cos",
    ],  # fmt: skip
    kernel=lambda ctx: _features(ctx.t, ctx.amount, ctx.log_amount, np),
    scalar=lambda p: _features(p.time_ns, p.amount, p.log_amount, math),
    history=False,
)
