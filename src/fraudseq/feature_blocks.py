"""Feature blocks: functions from an entity-sorted frame to named raw feature columns.

Every block is causal: the value for a transaction may depend on that transaction and the
same entity's earlier ones (and, for labels, only on labels older than the label delay).
Scaling is not done here; the FeatureEncoder fits it on training rows.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_DAY = 86_400


@dataclass
class SortedFrame:
    """The columns a feature block needs, in entity-sorted order (entity, time, file order).

    `categorical` and `counterparty` hold integer codes of the raw values, comparable within
    this frame only. `label` is 0/1 as float, NaN where unknown (or None without a label
    column); blocks may only use a label once it is older than `label_delay_ns`.
    """

    time_ns: np.ndarray
    amount: np.ndarray
    starts: np.ndarray
    extra_numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    counterparty: np.ndarray | None = None
    label: np.ndarray | None = None
    label_delay_ns: int = 7 * SECONDS_PER_DAY * NS_PER_SECOND

    @property
    def has_previous(self) -> np.ndarray:
        return np.arange(len(self.time_ns)) > self.starts


def event_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """What the transaction alone shows: signed log-amount, cyclic time of day and week."""
    seconds = frame.time_ns // NS_PER_SECOND
    day_fraction = (seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY
    week_fraction = ((seconds // SECONDS_PER_DAY + 3) % 7) / 7  # 1970-01-01 was a Thursday
    return {
        "log_amount": np.sign(frame.amount) * np.log1p(np.abs(frame.amount)),
        "amount": frame.amount,  # linear too: a fixed-amount rule is a sharp edge here
        "hour_sin": np.sin(2 * np.pi * day_fraction),
        "hour_cos": np.cos(2 * np.pi * day_fraction),
        "dow_sin": np.sin(2 * np.pi * week_fraction),
        "dow_cos": np.cos(2 * np.pi * week_fraction),
    }


def recency_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """Time since the entity's previous transaction (0 with has_previous=0 for its first)."""
    has_prev = frame.has_previous
    gap = np.zeros(len(frame.time_ns), dtype=np.float64)
    gap[1:] = (frame.time_ns[1:] - frame.time_ns[:-1]) / NS_PER_SECOND
    gap[~has_prev] = 0.0
    return {"log_gap_seconds": np.log1p(gap), "has_previous": has_prev.astype(np.float64)}


# -- per-entity sequence blocks ----------------------------------------------------------
# Shared conventions: "previous" transactions of the row at sorted position i are the
# positions starts[i] .. i-1 of its entity run (earlier time, or equal time and earlier in
# the file). Amounts enter as the signed log-amount sign(a) * log1p(|a|), which is
# log(a + 1) for the usual non-negative amounts and stays finite for refunds.

NS_PER_DAY = SECONDS_PER_DAY * NS_PER_SECOND
HISTORY_LAST_N = 10  # amount_zscore: statistics over the last N previous log-amounts
ZSCORE_STD_FLOOR = 0.1
NOVELTY_WINDOW = 16  # new_values_in_window: last K transactions, the current one included
VELOCITY_WINDOWS_NS = {
    "1h": 3_600 * NS_PER_SECOND,
    "1d": NS_PER_DAY,
    "7d": 7 * NS_PER_DAY,
}
VELOCITY_AMOUNT_WINDOWS = ("1d", "7d")
COUNTERPARTY_WINDOWS_DAYS = (1, 7, 30)
# Counterparty statistics count transactions in hour buckets: a label becomes usable within
# an hour of the delay passing (day buckets would hide up to a day of known labels).
BUCKETS_PER_DAY = 24
COUNTERPARTY_BUCKET_NS = NS_PER_DAY // BUCKETS_PER_DAY


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _entity_ids(starts: np.ndarray) -> np.ndarray:
    """Dense entity number (0, 1, ...) of every sorted position, from `starts`."""
    is_first = starts == np.arange(len(starts))
    return np.cumsum(is_first) - 1


def robust_statistics(lags: list[np.ndarray], counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the median and the median absolute deviation of its `counts` valid lags
    (`lags` are columns of equal length, invalid entries +inf); 0 and 0 without any."""
    stacked = np.column_stack(lags)
    median = _sorted_median(stacked, counts)
    deviation = np.abs(stacked - median[:, None])  # +inf stays +inf
    return median, _sorted_median(deviation, counts)


def _sorted_median(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per row, the median of its first `counts` finite values (the rest are +inf); 0 for
    a row without any."""
    ordered = np.sort(values, axis=1)
    rows = np.arange(len(values))
    k = np.maximum(counts, 1)
    middle = (ordered[rows, (k - 1) // 2] + ordered[rows, k // 2]) / 2
    return np.where(counts > 0, middle, 0.0)


def amount_history_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """The log-amount against the entity's previous transactions (the current one excluded).

    amount_to_mean: log-amount minus the mean log-amount of all previous transactions;
    amount_zscore: (log-amount - mean of the last 10 previous) / (their std, ddof=0, + 0.1);
    amount_to_max: log-amount minus the largest previous log-amount;
    amount_to_median: log-amount minus the median of the last 10 previous;
    amount_robust_zscore: (log-amount - that median) / (their median absolute deviation
    + 0.1). Unlike the mean, std and max, these two stay put when a few of the last 10
    are an ongoing attack's inflated amounts.
    n_previous: log1p(number of previous transactions).
    Defaults without history: 0 (amount_zscore needs at least 2 previous transactions).
    """
    n = len(frame.time_ns)
    log_amount = _signed_log1p(np.asarray(frame.amount, dtype=np.float64))
    positions = np.arange(n)
    n_prev = positions - frame.starts
    has_prev = n_prev > 0

    # Mean over all previous: prefix sums (what a live service keeps as a running sum).
    prefix = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(log_amount, out=prefix[1:])
    prev_sum = prefix[positions] - prefix[frame.starts]
    to_mean = np.where(has_prev, log_amount - prev_sum / np.maximum(n_prev, 1), 0.0)

    # Last N previous: one pass per lag (N vectorised passes), two-pass mean and variance
    # so near-constant histories give an exact std of ~0 rather than cancellation noise.
    lags = [(n_prev >= lag, np.maximum(positions - lag, 0)) for lag in range(1, HISTORY_LAST_N + 1)]
    window_n = np.minimum(n_prev, HISTORY_LAST_N)
    window_sum = np.zeros(n, dtype=np.float64)
    for valid, index in lags:
        window_sum += np.where(valid, log_amount[index], 0.0)
    window_mean = window_sum / np.maximum(window_n, 1)
    window_sq = np.zeros(n, dtype=np.float64)
    for valid, index in lags:
        window_sq += np.where(valid, (log_amount[index] - window_mean) ** 2, 0.0)
    window_std = np.sqrt(window_sq / np.maximum(window_n, 1))
    zscore = np.where(
        n_prev >= 2, (log_amount - window_mean) / (window_std + ZSCORE_STD_FLOOR), 0.0
    )

    # Median and median absolute deviation of the last N previous.
    median, mad = robust_statistics(
        [np.where(valid, log_amount[index], np.inf) for valid, index in lags], window_n
    )
    to_median = np.where(has_prev, log_amount - median, 0.0)
    robust_z = np.where(n_prev >= 2, (log_amount - median) / (mad + ZSCORE_STD_FLOOR), 0.0)

    # Running max within entity runs, exactly: accumulate an integer key that puts the
    # entity first and the rank of the value second, then map ranks back to values.
    if n:
        values, rank = np.unique(log_amount, return_inverse=True)
        key = _entity_ids(frame.starts) * len(values) + rank.reshape(-1)
        running = np.maximum.accumulate(key)
        prev_max = np.zeros(n, dtype=np.float64)
        prev_max[1:] = values[running[:-1] % len(values)]
        to_max = np.where(has_prev, log_amount - prev_max, 0.0)
    else:
        to_max = np.zeros(0, dtype=np.float64)

    return {
        "amount_to_mean": to_mean,
        "amount_zscore": zscore,
        "amount_to_max": to_max,
        "amount_to_median": to_median,
        "amount_robust_zscore": robust_z,
        "n_previous": np.log1p(n_prev).astype(np.float64),
    }


def novelty_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """First-seen flags per categorical column, and their count over the last 16 rows.

    new_<c>: 1.0 if the row's value of c never occurred in the entity's previous
    transactions (so 1.0 on the entity's first transaction), else 0.0. A missing value
    (code -1) is treated as one value of its own.
    new_values_in_window: sum of all new_<c> flags over the entity's last 16 transactions,
    the current one included. No categorical columns: no features.
    """
    if not frame.categorical:
        return {}
    n = len(frame.time_ns)
    entity = _entity_ids(frame.starts)
    out: dict[str, np.ndarray] = {}
    total = np.zeros(n, dtype=np.int64)
    for column, codes in frame.categorical.items():
        codes = np.asarray(codes, dtype=np.int64)
        # Order rows by (entity, code, position): the first row of each (entity, code) run
        # is the first occurrence of that value for that entity.
        order = np.lexsort((np.arange(n), codes, entity))
        e, c = entity[order], codes[order]
        first = np.ones(n, dtype=bool)
        first[1:] = (e[1:] != e[:-1]) | (c[1:] != c[:-1])
        flag = np.zeros(n, dtype=np.float64)
        flag[order[first]] = 1.0
        out[f"new_{column}"] = flag
        total += flag.astype(np.int64)
    prefix = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(total, out=prefix[1:])
    positions = np.arange(n)
    window_start = np.maximum(frame.starts, positions - NOVELTY_WINDOW + 1)
    out["new_values_in_window"] = (prefix[positions + 1] - prefix[window_start]).astype(np.float64)
    return out


# Above this many summed elements per row on average, window sums switch from direct
# summation (reduceat: exact in the order a live service would add its events, but costing
# the total window size) to differences of prefix sums (O(n), rounding ~ ulp of the prefix).
WINDOW_SUM_BUDGET_PER_ROW = 64


def _window_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
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


def velocity_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """Activity of the entity just before the transaction, over 1 hour, 1 day and 7 days.

    count_<w>: log1p(number of previous transactions with time in (t - w, t]);
    amount_<w> (1d, 7d): signed log1p of the sum of their amounts. Previous means earlier
    positions of the entity, so same-timestamp rows earlier in the file count, later don't.
    """
    n = len(frame.time_ns)
    time_ns = np.asarray(frame.time_ns, dtype=np.int64)
    positions = np.arange(n)
    out: dict[str, np.ndarray] = {}
    if n == 0:
        for name in VELOCITY_WINDOWS_NS:
            out[f"count_{name}"] = np.zeros(0, dtype=np.float64)
        for name in VELOCITY_AMOUNT_WINDOWS:
            out[f"amount_{name}"] = np.zeros(0, dtype=np.float64)
        return out
    # Replace times by ranks so that (entity, time) fits one int64 key, sorted in the
    # frame's order: with r(x) = #{times < x} and c(q) = #{times <= q}, x > q <=> r(x) >= c(q).
    # Ranks come from one global time sort, in which the queries t - w are sorted too
    # (searchsorted is several times faster on sorted queries).
    by_time = np.argsort(time_ns)
    sorted_time = time_ns[by_time]
    run_first = np.ones(n, dtype=bool)
    run_first[1:] = sorted_time[1:] != sorted_time[:-1]
    rank = np.empty(n, dtype=np.int64)
    rank[by_time] = np.maximum.accumulate(np.where(run_first, np.arange(n), 0))
    base = _entity_ids(frame.starts) * (n + 1)
    key = base + rank
    amount = np.asarray(frame.amount, dtype=np.float64)
    for name, width in VELOCITY_WINDOWS_NS.items():
        lower_rank = np.empty(n, dtype=np.int64)
        lower_rank[by_time] = np.searchsorted(sorted_time, sorted_time - width, side="right")
        # First position of the entity inside the window (<= i, as row i itself qualifies);
        # the queries are sorted, like the keys.
        first = np.searchsorted(key, base + lower_rank, side="left")
        out[f"count_{name}"] = np.log1p(positions - first).astype(np.float64)
        if name in VELOCITY_AMOUNT_WINDOWS:
            out[f"amount_{name}"] = _signed_log1p(_window_sums(amount, first, positions))
    return out


def label_delay_buckets(label_delay_ns: int) -> int:
    """The label delay in whole counterparty buckets (hours), rounded up, at least 0."""
    return max(0, -(-int(label_delay_ns) // COUNTERPARTY_BUCKET_NS))


def counterparty_risk_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """Counterparty (terminal) activity and fraud rate before the label delay, and the age
    of its known fraud.

    Time is cut in hour buckets: b(t) = floor(t / 1 hour) in UTC and D = ceil(label delay in
    hours). For w in (1, 7, 30) days the window is the counterparty's transactions, from all
    entities, whose bucket lies in [b(t) - D - 24w, b(t) - D). All of them are strictly older
    than t - label_delay, since they precede bucket b(t) - D, which starts at or before
    t - D hours. cp_count_<w>d: log1p(their number); cp_risk_<w>d: number labelled 1 / their
    number (0 when none; unknown labels count in the number, not as fraud).
    cp_first_fraud_days / cp_last_fraud_days: days from the first / last bucket with a known
    fraud in the 30-day window to b(t) (0 when none): a campaign that began long ago has likely
    ended, one that began just before the delay cut is likely still running. Rows with a
    missing counterparty (code -1) get 0 and do not enter any statistic. No counterparty
    column: no features.
    """
    if frame.counterparty is None:
        return {}
    n = len(frame.time_ns)
    counterparty = np.asarray(frame.counterparty, dtype=np.int64)
    bucket = np.asarray(frame.time_ns, dtype=np.int64) // COUNTERPARTY_BUCKET_NS
    known_cp = counterparty >= 0
    if frame.label is None:
        fraud = np.zeros(n, dtype=np.int64)
    else:
        label = np.asarray(frame.label, dtype=np.float64)
        fraud = (np.nan_to_num(label, nan=0.0) > 0.5).astype(np.int64)

    out = {name: np.zeros(n, dtype=np.float64) for name in counterparty_feature_names()}
    if not known_cp.any():
        return out

    # Sort the rows with a counterparty by the key (counterparty, bucket): one entry per
    # transaction. The order within a key does not matter.
    rows = np.flatnonzero(known_cp)
    first_bucket = int(bucket[rows].min())
    n_buckets = int(bucket[rows].max()) - first_bucket + 1
    rel = bucket[rows] - first_bucket
    key = counterparty[rows] * n_buckets + rel
    by_key = np.argsort(key)
    rows, key, rel = rows[by_key], key[by_key], rel[by_key]
    stats = counterparty_statistics(
        key,
        np.ones(len(rows), dtype=np.int64),
        fraud[rows],
        rel,
        key - rel,
        rel,
        label_delay_buckets(frame.label_delay_ns),
    )
    for name, values in stats.items():
        out[name][rows] = values
    return out


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
    [query_bucket - delay - 24 w, query_bucket - delay). The batch block passes one entry per
    transaction; live batch scoring one entry per stored bucket, so both compute the same
    numbers. Searches are clipped at bucket 0 so that a query never reaches the previous
    counterparty.
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


def counterparty_feature_names() -> list[str]:
    names = [f"cp_{kind}_{w}d" for w in COUNTERPARTY_WINDOWS_DAYS for kind in ("count", "risk")]
    return [*names, "cp_first_fraud_days", "cp_last_fraud_days"]


# Blocks are computed in entity-sorted order; each may only look backwards in time.
FEATURE_BLOCKS = {
    "event": event_features,
    "recency": recency_features,
    "amount_history": amount_history_features,
    "novelty": novelty_features,
    "velocity": velocity_features,
    "counterparty_risk": counterparty_risk_features,
}


# What the log-scaled features count, for people: sign(v) * expm1(|v|) of each undoes its
# (signed) log1p. Patterns are tried in order.
_PLAIN = [
    (r"count_(\w+)", "{:.0f} earlier transactions in the last {}"),
    (r"amount_(\d+[hd])", "{:.2f} spent in the last {}"),
    (r"cp_count_(\w+)", "{:.0f} counterparty transactions in its {} window"),
    (r"n_previous", "{:.0f} earlier transactions"),
    (r"log_gap_seconds", "{:.0f} s since the previous transaction, 0 if there is none"),
    (r"log_amount", "amount {:.2f}"),
]


def plain_quantity(name: str, value: float) -> str | None:
    """What a log-scaled feature's value means in plain units ("3 earlier transactions in
    the last 1h" for count_1h = 1.386), or None for a feature that is not log-scaled."""
    for pattern, text in _PLAIN:
        match = re.fullmatch(pattern, name)
        if match:
            quantity = math.copysign(math.expm1(abs(value)), value)
            return text.format(quantity, *match.groups())
    return None
