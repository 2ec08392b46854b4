"""The log-amount against the entity's previous transactions (the current one excluded).

amount_to_mean: log-amount minus the mean log-amount of all previous transactions;
amount_zscore: (log-amount - mean of the last 10 previous) / (their std, ddof=0, + 0.1);
amount_to_max: log-amount minus the largest previous log-amount;
amount_to_median: log-amount minus the median of the last 10 previous;
amount_robust_zscore: (log-amount - that median) / (their median absolute deviation + 0.1).
Unlike the mean, std and max, these two stay put when a few of the last 10 are an ongoing
attack's inflated amounts.
n_previous: log1p(number of previous transactions).
Defaults without history: 0 (the z-scores need at least 2 previous transactions). Amounts
enter as sign(a) * log1p(|a|), finite for refunds.
"""

from __future__ import annotations

import math

import numpy as np

from fraudseq.features.constants import HISTORY_LAST_N, ZSCORE_STD_FLOOR
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.segments import (
    running_max_before,
    signed_log1p_of,
    sums_before,
)

NAMES = ["amount_to_mean", "amount_zscore", "amount_to_max", "amount_to_median",
         "amount_robust_zscore", "n_previous"]  # fmt: skip


def robust_statistics(lags: list[np.ndarray], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the median and the median absolute deviation of its `counts` valid lags
    (`lags` are columns of equal length, invalid entries +inf); 0 and 0 without any."""
    stacked = np.column_stack(lags)
    median = _sorted_median(stacked, counts)
    deviation = np.abs(stacked - median[:, None])  # +inf stays +inf
    return median, _sorted_median(deviation, counts)


def _sorted_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    ordered = np.sort(values, axis=1)
    rows = np.arange(len(values))
    k = np.maximum(counts, 1)
    middle = (ordered[rows, (k - 1) // 2] + ordered[rows, k // 2]) / 2
    return np.where(counts > 0, middle, 0.0)


def _kernel(ctx) -> dict:
    la, n_prev, entity, state = ctx.log_amount, ctx.n_prev, ctx.entity, ctx.state
    before = n_prev > 0
    # Lags 1 (most recent) to N from the combined events, two-pass mean and variance so
    # near-constant histories give an exact std of ~0 rather than cancellation noise.
    window_n = np.minimum(n_prev, HISTORY_LAST_N)
    lags = []
    for j in range(1, HISTORY_LAST_N + 1):
        valid = j <= window_n
        index = np.where(valid, ctx.pos - j, ctx.pos)
        lags.append((valid, np.where(valid, ctx.event_log_amount[index], 0.0)))
    total = np.zeros(len(ctx))
    for _, lag in lags:
        total = total + lag
    safe_n = np.maximum(window_n, 1)
    mean = total / safe_n
    squares = np.zeros(len(ctx))
    for valid, lag in lags:
        squares = squares + np.where(valid, (lag - mean) ** 2, 0.0)
    std = np.sqrt(squares / safe_n)
    median, mad = robust_statistics([np.where(v, lag, np.inf) for v, lag in lags], window_n)
    sum_before = sums_before(la, entity, state.sum_log)
    max_before = running_max_before(la, entity, state.max_log)
    return {
        "amount_to_mean": np.where(before, la - sum_before / np.maximum(n_prev, 1), 0.0),
        "amount_zscore": np.where(n_prev >= 2, (la - mean) / (std + ZSCORE_STD_FLOOR), 0.0),
        "amount_to_max": np.where(before, la - max_before, 0.0),
        "amount_to_median": np.where(before, la - median, 0.0),
        "amount_robust_zscore": np.where(
            n_prev >= 2, (la - median) / (mad + ZSCORE_STD_FLOOR), 0.0
        ),
        "n_previous": np.log1p(n_prev.astype(np.float64)),
    }


def _scalar(p) -> dict:
    account, la = p.account, p.log_amount
    n_prev = account.n
    if n_prev == 0:
        return dict.fromkeys(NAMES, 0.0)
    lags = [signed_log1p_of(a) for a in reversed(account.amounts[-HISTORY_LAST_N:])]
    window_n = min(n_prev, HISTORY_LAST_N)
    window_sum = 0.0
    for value in lags:  # summed in the kernel's order
        window_sum += value
    window_mean = window_sum / window_n
    window_sq = 0.0
    for value in lags:
        window_sq += (value - window_mean) ** 2
    window_std = math.sqrt(window_sq / window_n)
    two = n_prev >= 2
    median = _median(lags)
    mad = _median([abs(value - median) for value in lags])
    return {
        "amount_to_mean": la - account.sum_log / n_prev,
        "amount_zscore": (la - window_mean) / (window_std + ZSCORE_STD_FLOOR) if two else 0.0,
        "amount_to_max": la - account.max_log,
        "amount_to_median": la - median,
        "amount_robust_zscore": (la - median) / (mad + ZSCORE_STD_FLOOR) if two else 0.0,
        "n_previous": math.log1p(n_prev),
    }


def _median(values: list[float]) -> float:
    """As `robust_statistics`: the mean of the middle two."""
    ordered = sorted(values)
    k = len(ordered)
    return (ordered[(k - 1) // 2] + ordered[k // 2]) / 2


BLOCK = Block(
    name="amount_history",
    names=lambda categorical, cp: list(NAMES),
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("aggregates"), StateNeed("events", last=HISTORY_LAST_N)),
)
