"""Vectorised live features for a batch of transactions: numpy over all accounts at once.

`Detector.score_batch` groups a batch by account, reads every account's state once, and
computes the live features of all its transactions here with array arithmetic, giving the
same values as `LiveEncoder.encode` / `LiveEncoder.append` applied one transaction at a time
(sums of past amounts over the velocity windows come from prefix sums, so they may differ
from the one-at-a-time running sums in the last bits; everything else is the same
arithmetic in the same order). Then the model runs once over all the windows.

Account state is handled as arrays (`ArrayState`, the same bytes as `AccountState`). An
account whose transactions in the batch are not in time order (or are older than its stored
history), or whose remembered categorical values could overflow `SEEN_CAP` within the batch,
is not vectorised: the Detector runs it through the one-at-a-time code instead.

Counterparty buckets (UTC hours): a transaction reads the buckets before its own minus the
label delay D (in buckets), so transactions of the batch less than D + 1 buckets apart never
see each other's counts. `day_chunks` cuts the batch (in order) into runs spanning at most D
buckets; runs are encoded one after the other, each seeing the counts of the runs before it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from fraudseq.feature_blocks import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
    HISTORY_LAST_N,
    NOVELTY_WINDOW,
    NS_PER_SECOND,
    VELOCITY_AMOUNT_WINDOWS,
    VELOCITY_WINDOWS_NS,
    ZSCORE_STD_FLOOR,
)
from fraudseq.features import OOV_CODE
from fraudseq.serving.live_features import (
    _HEADER,
    _STATE_VERSION,
    SEEN_CAP,
    VELOCITY_CAP,
    LiveEncoder,
    LiveTransaction,
    _value_hash,
    event_features,
)


@dataclass
class ArrayState:
    """One account's `AccountState` as numpy arrays (decoded with np.frombuffer, no lists)."""

    n: int
    last_time: int
    sum_log: float
    max_log: float
    times: np.ndarray  # int64
    amounts: np.ndarray  # float64
    new_totals: np.ndarray  # int64
    ids: list[str]
    numeric: np.ndarray  # (r, F) float32
    codes: np.ndarray  # (r, C) int32
    seen: list[np.ndarray] = field(default_factory=list)  # uint64 hashes, insertion order

    @classmethod
    def empty(cls, live: LiveEncoder) -> ArrayState:
        return cls(
            0, 0, 0.0, -math.inf,
            np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64), [],
            np.zeros((0, live.n_numeric), np.float32),
            np.zeros((0, live.n_categorical), np.int32),
            [np.zeros(0, np.uint64) for _ in range(live.n_categorical)] if live.novelty else [],
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, blob: bytes) -> ArrayState:
        (version, n, last_time, sum_log, max_log, m, n_new, rows, n_num, n_cat, n_seen) = (
            _HEADER.unpack_from(blob, 0)
        )
        if version != _STATE_VERSION:
            from fraudseq.errors import FraudseqError

            raise FraudseqError(f"account state format {version} is not supported")
        o = _HEADER.size
        times = np.frombuffer(blob, "<i8", m, o).astype(np.int64)
        o += 8 * m
        amounts = np.frombuffer(blob, "<f8", m, o).astype(np.float64)
        o += 8 * m
        new_totals = np.frombuffer(blob, "<u2", n_new, o).astype(np.int64)
        o += 2 * n_new
        lengths = np.frombuffer(blob, "<u2", rows, o)
        o += 2 * rows
        numeric = np.frombuffer(blob, "<f4", rows * n_num, o).reshape(rows, n_num)
        o += 4 * rows * n_num
        codes = np.frombuffer(blob, "<i4", rows * n_cat, o).reshape(rows, n_cat)
        o += 4 * rows * n_cat
        ids = []
        for length in lengths.tolist():
            ids.append(blob[o : o + length].decode())
            o += length
        seen = []
        for _ in range(n_seen):
            (count,) = struct.unpack_from("<I", blob, o)
            seen.append(np.frombuffer(blob, "<u8", count, o + 4).astype(np.uint64))
            o += 4 + 8 * count
        return cls(
            n, last_time, sum_log, max_log, times, amounts, new_totals, ids, numeric, codes, seen
        )

    def to_bytes(self) -> bytes:
        """The bytes `AccountState.to_bytes` gives for the same state."""
        ids = [i.encode() for i in self.ids]
        rows, n_num = self.numeric.shape
        parts = [
            _HEADER.pack(
                _STATE_VERSION, self.n, self.last_time, self.sum_log, self.max_log,
                len(self.times), len(self.new_totals), rows, n_num, self.codes.shape[1],
                len(self.seen),
            ),
            self.times.astype("<i8").tobytes(),
            self.amounts.astype("<f8").tobytes(),
            self.new_totals.astype("<u2").tobytes(),
            np.array([len(i) for i in ids], dtype="<u2").tobytes(),
            np.ascontiguousarray(self.numeric, dtype="<f4").tobytes(),
            np.ascontiguousarray(self.codes, dtype="<i4").tobytes(),
            *ids,
        ]  # fmt: skip
        for values in self.seen:
            parts.append(struct.pack("<I", len(values)))
            parts.append(values.astype("<u8").tobytes())
        return b"".join(parts)


def vectorisable(live: LiveEncoder, state: ArrayState, times: np.ndarray) -> bool:
    """Whether an account's new transactions (times in batch order) can be vectorised:
    in time order after its stored history, and no categorical memory overflow."""
    if len(times) > 1 and (np.diff(times) < 0).any():
        return False
    if state.n and times[0] < state.last_time:
        return False
    return all(len(s) + len(times) <= SEEN_CAP for s in state.seen)


def day_chunks(days: np.ndarray, span: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) runs of bucket numbers `days` (batch order) spanning at most
    `span` buckets."""
    out, start, lo, hi = [], 0, None, None
    for i, day in enumerate(days.tolist()):  # batch order is the order of visibility
        lo = day if lo is None else min(lo, day)
        hi = day if hi is None else max(hi, day)
        if hi - lo > span:
            out.append((start, i))
            start, lo, hi = i, day, day
    out.append((start, len(days)))
    return out


def _segments(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For segments of `lengths`: start offsets, segment id of every element, and the
    offset of every element within its segment."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    total = int(lengths.sum())
    group = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(total, dtype=np.int64) - starts[group]
    return starts, group, within


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    positive, negative = values > 0, values < 0
    out[positive] = np.log1p(values[positive])
    out[negative] = -np.log1p(-values[negative])
    return out


def _grouped_searchsorted(
    values: np.ndarray, group: np.ndarray, queries: np.ndarray, query_group: np.ndarray
) -> np.ndarray:
    """Per query, the position in `values` (sorted within each group, groups in order) of
    the first element of its group greater than the query (bisect_right), exact on int64."""
    both = np.concatenate([values, queries])
    _, rank = np.unique(both, return_inverse=True)
    width = int(rank.max()) + 2 if len(rank) else 1
    keys = group.astype(np.int64) * width + rank[: len(values)]
    query_keys = query_group.astype(np.int64) * width + rank[len(values) :]
    return np.searchsorted(keys, query_keys, side="right")


@dataclass
class EncodedBatch:
    """The features and windows of one run of vectorised transactions (in their order)."""

    numeric: np.ndarray  # (N, F) float32
    codes: np.ndarray  # (N, C) int32
    window_numeric: np.ndarray  # (N, K, F) float32, left-aligned, zero padded
    window_codes: np.ndarray  # (N, K, C) int64
    lengths: np.ndarray  # (N,) int64
    n_previous: np.ndarray  # (N,) int64: the account's events before each transaction
    row_position: np.ndarray  # (N,) int64: each transaction's row in `ids`
    history_offset: np.ndarray  # (N,) int64: history index = row index + this
    ids: list[str]  # transaction id of every row
    times: np.ndarray  # history times (stored buffers, then this run's)
    amounts: np.ndarray  # history amounts

    def earlier_events(self, i: int) -> tuple[list[str], list[int], list[float]]:
        """Ids, times and amounts of the earlier events in transaction i's window."""
        hi = int(self.row_position[i])
        lo = hi - int(self.lengths[i]) + 1
        offset = int(self.history_offset[i])
        return (
            self.ids[lo:hi],
            self.times[lo + offset : hi + offset].tolist(),
            self.amounts[lo + offset : hi + offset].tolist(),
        )


def encode_batch(
    live: LiveEncoder,
    txs: list[LiveTransaction],
    states: list[ArrayState],
    account: np.ndarray,
    counterparty_days: dict[str, dict[int, list[int]]],
) -> EncodedBatch:
    """Features of `txs` (batch order; `account[i]` indexes `states`) after each account's
    state and its earlier transactions in `txs`; `states` are updated in place to include
    them. Every account's transactions must be `vectorisable`. `counterparty_days` holds
    the (count, frauds) buckets by counterparty and day visible to these transactions."""
    n = len(txs)
    k = live.window
    order = np.argsort(account, kind="stable")  # grouped by account, batch order within
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    acc = account[order]
    sorted_txs = [txs[i] for i in order.tolist()]
    used, m = np.unique(acc, return_counts=True)  # accounts of this run, their counts
    local = np.searchsorted(used, acc)  # account -> 0..A-1 (sorted order)
    run_starts, _, rank = _segments(m)
    st = [states[a] for a in used.tolist()]
    n_state = np.array([s.n for s in st], dtype=np.int64)

    t = np.fromiter((tx.time_ns for tx in sorted_txs), dtype=np.int64, count=n)
    amount = np.fromiter((tx.amount for tx in sorted_txs), dtype=np.float64, count=n)
    la = _signed_log1p(amount)
    n_prev = n_state[local] + rank
    raw: dict[str, np.ndarray] = {}
    if live.uses["event"]:
        raw.update(event_features(t, amount, la, np))
    if live.uses["recency"]:
        last = np.array([s.last_time for s in st], dtype=np.int64)
        previous = np.empty(n, dtype=np.int64)
        previous[1:] = t[:-1]
        previous[run_starts] = last
        gap = np.where(n_prev > 0, np.maximum(t - previous, 0).astype(np.float64), 0.0)
        raw["log_gap_seconds"] = np.log1p(gap / NS_PER_SECOND)
        raw["has_previous"] = (n_prev > 0).astype(np.float64)

    # Running sum and max of log-amounts before each transaction: one vector step per rank.
    sum_before = np.array([s.sum_log for s in st], dtype=np.float64)[local]
    max_before = np.array([s.max_log for s in st], dtype=np.float64)[local]
    by_rank = np.argsort(rank, kind="stable")
    rank_counts = np.bincount(rank)
    first = int(rank_counts[0])
    for count in rank_counts[1:].tolist():
        sel = by_rank[first : first + count]
        sum_before[sel] = sum_before[sel - 1] + la[sel - 1]
        max_before[sel] = np.maximum(max_before[sel - 1], la[sel - 1])
        first += count

    # Each account's past amounts and times (stored buffer, then this run), concatenated.
    buf_len = np.array([len(s.times) for s in st], dtype=np.int64)
    hist_starts, hist_group, hist_within = _segments(buf_len + m)
    hist_t = np.empty(len(hist_group), dtype=np.int64)
    hist_a = np.empty(len(hist_group), dtype=np.float64)
    is_new = hist_within >= buf_len[hist_group]
    if buf_len.sum():
        hist_t[~is_new] = np.concatenate([s.times for s in st])
        hist_a[~is_new] = np.concatenate([s.amounts for s in st])
    hist_t[is_new] = t
    hist_a[is_new] = amount
    pos = hist_starts[local] + buf_len[local] + rank  # each transaction in the history

    if live.uses["amount_history"]:
        window_n = np.minimum(n_prev, HISTORY_LAST_N)
        lags = []
        for j in range(1, HISTORY_LAST_N + 1):  # lag 1 (most recent) first, like the block
            valid = j <= window_n
            index = np.where(valid, pos - j, pos)
            lags.append((valid, np.where(valid, _signed_log1p(hist_a[index]), 0.0)))
        total = np.zeros(n)
        for _, lag in lags:
            total = total + lag
        safe_n = np.maximum(window_n, 1)
        mean = total / safe_n
        squares = np.zeros(n)
        for valid, lag in lags:
            squares = squares + np.where(valid, (lag - mean) ** 2, 0.0)
        std = np.sqrt(squares / safe_n)
        has = n_prev > 0
        safe_prev = np.maximum(n_prev, 1)
        raw["amount_to_mean"] = np.where(has, la - sum_before / safe_prev, 0.0)
        raw["amount_zscore"] = np.where(n_prev >= 2, (la - mean) / (std + ZSCORE_STD_FLOOR), 0.0)
        raw["amount_to_max"] = np.where(has, la - max_before, 0.0)
        raw["n_previous"] = np.where(has, np.log1p(n_prev.astype(np.float64)), 0.0)

    # Categorical values: each distinct value is hashed and looked up once.
    distinct_values = []
    for j in range(live.n_categorical):
        values = np.array([tx.categorical[j] for tx in sorted_txs], dtype=object)
        distinct_values.append(np.unique(values, return_inverse=True))
    hashes, fresh = [], []  # per column: value hashes, first seen by the account here
    new_total = np.zeros(n, dtype=np.int64)
    if live.novelty:
        for j, column in enumerate(live.schema.categorical):
            distinct, index = distinct_values[j]
            h = np.array([_value_hash(v) for v in distinct.tolist()], dtype=np.uint64)[index]
            hashes.append(h)
            seen = [s.seen[j] for s in st]
            seen_len = np.array([len(s) for s in seen], dtype=np.int64)
            seen_all = np.concatenate(seen) if seen_len.sum() else np.zeros(0, np.uint64)
            both = np.concatenate([seen_all, h])
            _, code = np.unique(both, return_inverse=True)
            width = int(code.max()) + 1
            seen_keys = np.repeat(np.arange(len(st)), seen_len) * width + code[: len(seen_all)]
            keys = local * width + code[len(seen_all) :]
            _, first_index = np.unique(keys, return_index=True)
            earlier_in_run = np.ones(n, dtype=bool)
            earlier_in_run[first_index] = False  # keys are grouped: first is the earliest
            new = ~(np.isin(keys, seen_keys) | earlier_in_run)
            fresh.append(new)
            new_total += new
            raw[f"new_{column}"] = new.astype(np.float64)
        # The last NOVELTY_WINDOW - 1 totals before each transaction, stored ones first.
        tot_len = np.array([len(s.new_totals) for s in st], dtype=np.int64)
        tot_starts, tot_group, tot_within = _segments(tot_len + m)
        totals = np.empty(len(tot_group), dtype=np.int64)
        stored = tot_within < tot_len[tot_group]
        if tot_len.sum():
            totals[stored] = np.concatenate([s.new_totals for s in st])
        totals[~stored] = new_total
        prefix = np.concatenate([[0], np.cumsum(totals)])
        tpos = tot_starts[local] + tot_len[local] + rank
        lo = np.maximum(tot_starts[local], tpos - (NOVELTY_WINDOW - 1))
        raw["new_values_in_window"] = (prefix[tpos] - prefix[lo] + new_total).astype(np.float64)

    if live.uses["velocity"]:
        cap = max(VELOCITY_CAP, live.keep_last)
        floor = np.maximum(hist_starts[local], pos - cap)
        prefix = np.concatenate([[0.0], np.cumsum(hist_a)])
        for name, width in VELOCITY_WINDOWS_NS.items():
            first = _grouped_searchsorted(hist_t, hist_group, t - width, local)
            first = np.clip(first, floor, pos)
            raw[f"count_{name}"] = np.log1p((pos - first).astype(np.float64))
            if name in VELOCITY_AMOUNT_WINDOWS:
                raw[f"amount_{name}"] = _signed_log1p(prefix[pos] - prefix[first])

    if live.counterparty:
        raw.update(_counterparty(live, sorted_txs, counterparty_days))
    for j, column in enumerate(live.schema.numeric):
        raw[f"numeric:{column}"] = np.array([tx.numeric[j] for tx in sorted_txs], np.float64)

    values = np.stack([raw[name] for name in live.names], axis=1)
    scaled = (values - live.means) / live.scales
    numeric = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    codes = np.empty((n, live.n_categorical), dtype=np.int32)
    for j, vocabulary in enumerate(live.vocabularies):
        distinct, index = distinct_values[j]
        get = vocabulary.get
        codes[:, j] = np.array([get(v, OOV_CODE) for v in distinct.tolist()], np.int32)[index]

    # Windows: each account's stored rows (last K - 1 events), then this run's rows.
    row_len = np.array([len(s.numeric) for s in st], dtype=np.int64)
    row_starts, row_group, row_within = _segments(row_len + m)
    total_rows = len(row_group)
    rows_numeric = np.zeros((total_rows + 1, live.n_numeric), dtype=np.float32)  # + padding
    rows_codes = np.zeros((total_rows + 1, live.n_categorical), dtype=np.int64)
    old = row_within < row_len[row_group]
    old_index = np.flatnonzero(old)
    if len(old_index):
        rows_numeric[old_index] = np.concatenate([s.numeric for s in st])
        rows_codes[old_index] = np.concatenate([s.codes for s in st])
    rpos = row_starts[local] + row_len[local] + rank
    rows_numeric[rpos] = numeric
    rows_codes[rpos] = codes
    steps = np.arange(k, dtype=np.int64)
    lengths = np.minimum(rpos - row_starts[local] + 1, k)
    index = (rpos - lengths + 1)[:, None] + steps[None, :]
    index[steps[None, :] >= lengths[:, None]] = total_rows
    window_numeric = rows_numeric[index]
    window_codes = rows_codes[index]

    # Transaction ids of the rows (for the new states and for reasons).
    all_ids: list[str] = []
    for s, run in zip(st, np.split(np.arange(n), run_starts[1:]), strict=True):
        all_ids.extend(s.ids)
        all_ids.extend(sorted_txs[i].id for i in run.tolist())
    # history index = row index + offset (both end with the account's latest event)
    hist_offset = (hist_starts + buf_len - row_starts - row_len)[local]

    # The accounts' new state.
    ends = run_starts + m - 1
    for a, s in enumerate(st):
        stop = int(ends[a])
        s.n += int(m[a])
        s.last_time = int(t[stop])
        s.sum_log = float(sum_before[stop] + la[stop])
        s.max_log = float(max(max_before[stop], la[stop]))
        lo, hi = int(hist_starts[a]), int(hist_starts[a] + buf_len[a] + m[a])
        times, amounts = hist_t[lo:hi], hist_a[lo:hi]
        limit = len(times) - live.keep_last
        horizon = int(t[stop]) - live.velocity_span
        drop = min(int(np.searchsorted(times, horizon, side="right")), max(limit, 0))
        drop = max(drop, len(times) - max(VELOCITY_CAP, live.keep_last))
        s.times, s.amounts = times[drop:].copy(), amounts[drop:].copy()
        start = int(run_starts[a])
        if live.novelty:
            lo, hi = int(tot_starts[a]), int(tot_starts[a] + tot_len[a] + m[a])
            s.new_totals = totals[lo:hi][-(NOVELTY_WINDOW - 1) :].copy()
            for j in range(len(s.seen)):
                stop_run = start + int(m[a])
                added = hashes[j][start:stop_run][fresh[j][start:stop_run]]
                if len(added):
                    s.seen[j] = np.concatenate([s.seen[j], added])
        keep = k - 1
        if keep > 0:
            lo, hi = int(row_starts[a]), int(row_starts[a] + row_len[a] + m[a])
            s.numeric = rows_numeric[max(lo, hi - keep) : hi].astype(np.float32)
            s.codes = rows_codes[max(lo, hi - keep) : hi].astype(np.int32)
            s.ids = all_ids[max(lo, hi - keep) : hi]

    return EncodedBatch(
        numeric=numeric[inverse],
        codes=codes[inverse],
        window_numeric=window_numeric[inverse],
        window_codes=window_codes[inverse],
        lengths=lengths[inverse],
        n_previous=n_prev[inverse],
        row_position=rpos[inverse],
        history_offset=hist_offset[inverse],
        ids=all_ids,
        times=hist_t,
        amounts=hist_a,
    )


def _counterparty(live: LiveEncoder, txs: list[LiveTransaction], buckets: dict) -> dict:
    """As `LiveEncoder._counterparty` for every transaction, from one sorted bucket table."""
    n = len(txs)
    names = sorted({tx.counterparty for tx in txs})
    cp_index = {c: i for i, c in enumerate(names)}
    cp = np.fromiter((cp_index[tx.counterparty] for tx in txs), dtype=np.int64, count=n)
    own = np.fromiter((tx.time_ns // COUNTERPARTY_BUCKET_NS for tx in txs), np.int64, count=n)
    hi = own - live.delay_buckets
    longest = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY
    rows = [(cp_index[c], d, v[0], v[1]) for c in names for d, v in buckets.get(c, {}).items()]
    table = np.array(rows, dtype=np.int64).reshape(-1, 4)
    base = min(int(table[:, 1].min()) if rows else 0, int(hi.min()) - longest)
    span = max(int(table[:, 1].max()) if rows else 0, int(hi.max())) - base + 2
    order = np.argsort(table[:, 0] * span + (table[:, 1] - base), kind="stable")
    table = table[order]
    keys = table[:, 0] * span + (table[:, 1] - base)
    count_prefix = np.concatenate([[0], np.cumsum(table[:, 2])])
    fraud_prefix = np.concatenate([[0], np.cumsum(table[:, 3])])
    up = np.searchsorted(keys, cp * span + (hi - base), side="left")
    out = {}
    for w in COUNTERPARTY_WINDOWS_DAYS:
        lo = np.searchsorted(keys, cp * span + (hi - w * BUCKETS_PER_DAY - base), side="left")
        count = count_prefix[up] - count_prefix[lo]
        frauds = fraud_prefix[up] - fraud_prefix[lo]
        out[f"cp_count_{w}d"] = np.log1p(count.astype(np.float64))
        out[f"cp_risk_{w}d"] = frauds / np.maximum(count, 1)
    # `lo` is the longest window's: its first and last bucket with a known fraud.
    position = np.arange(len(table) + 1)
    is_fraud = np.r_[table[:, 3] > 0, True]  # a sentinel past the end
    next_fraud = np.minimum.accumulate(np.where(is_fraud, position, len(table))[::-1])[::-1]
    prev_fraud = np.maximum.accumulate(np.where(np.r_[False, is_fraud[:-1]], position - 1, -1))
    has = next_fraud[lo] < up
    first, last = np.zeros(n), np.zeros(n)
    first[has] = (own[has] - table[next_fraud[lo[has]], 1]) / BUCKETS_PER_DAY
    last[has] = (own[has] - table[prev_fraud[up[has]], 1]) / BUCKETS_PER_DAY
    out["cp_first_fraud_days"] = first
    out["cp_last_fraud_days"] = last
    return out
