"""Vectorised live scoring of a batch: columns of transactions, tables of account states.

`Detector.score_batch` parses a batch into columns (`parse_batch`), reads every account's
state once and decodes all of them into one `StateTable` (flat arrays over all accounts,
the `AccountState` bytes format read with index arithmetic), computes the live features of
all transactions with array arithmetic (`encode_batch`), runs the model once over all
windows and encodes the new states back (`encode_states`). The features are those of
`LiveEncoder.encode` / `LiveEncoder.append` applied one transaction at a time; sums of past
amounts over the velocity windows come from prefix sums and numpy's log1p may differ from
math.log1p in the last bit, so values agree to rounding, the rest is the same arithmetic in
the same order.

An account whose transactions in the batch are not in time order (or older than its stored
history), or whose remembered categorical values could overflow `SEEN_CAP` within the
batch, is not vectorised: the Detector runs it through the one-at-a-time code instead,
which inserts late transactions in time order (`LiveEncoder.insert`). Account states of
the first bytes format (version 1) are read through `AccountState` and written back in the
current one.

Counterparty buckets (UTC hours): a transaction reads the buckets before its own minus the
label delay D (in buckets), so transactions of the batch less than D + 1 buckets apart never
see each other's counts. `day_chunks` cuts the batch (in order) into runs spanning at most D
buckets; runs are encoded one after the other, each seeing the counts of the runs before it.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, replace
from itertools import repeat

import numpy as np
import pandas as pd

from fraudseq.features.encoder import OOV_CODE, clean_features
from fraudseq.features.kernel import Buckets, Chunk, Context, advance, compute
from fraudseq.features.segments import Combined, group_ids, ranges, starts_of
from fraudseq.features.state import StateTable, distinct_hashes
from fraudseq.serving.live_features import (
    SEEN_CAP,
    LiveEncoder,
)
from fraudseq.serving.stores import BucketTable
from fraudseq.transaction import TransactionColumns

# -- categorical values -------------------------------------------------------------------


class ValueTable:
    """One categorical column's values seen by a live batch: value -> a row holding its
    vocabulary code (`OOV_CODE` when unknown) and its `value_hash`, so that a batch's
    column is one dict look-up per value, in C. Values are added on first sight; past
    `CAP` values the table starts again. A lock makes it safe for concurrent batches."""

    CAP = 1 << 16

    def __init__(self, vocabulary: dict[str, int]) -> None:
        self.vocabulary = vocabulary
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str, int] = {}
        self.codes = np.zeros(1024, dtype=np.int32)
        self.hashes = np.zeros(1024, dtype=np.uint64)

    def lookup(self, values: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary codes (int32) and hashes (uint64) of `values`."""
        with self._lock:
            row = np.fromiter(map(self.index.get, values, repeat(-1)), np.int64, len(values))
            missing = np.flatnonzero(row < 0)
            if len(missing):
                new = list(dict.fromkeys(values[i] for i in missing.tolist()))
                if len(self.index) + len(new) > self.CAP:
                    self._reset()
                    new = list(dict.fromkeys(values))
                    missing = np.arange(len(values))
                start = len(self.index)
                stop = start + len(new)
                if stop > len(self.codes):
                    size = max(stop, 2 * len(self.codes))
                    self.codes = np.resize(self.codes, size)
                    self.hashes = np.resize(self.hashes, size)
                self.codes[start:stop] = [self.vocabulary.get(v, OOV_CODE) for v in new]
                self.hashes[start:stop] = distinct_hashes(new)
                self.index.update(zip(new, range(start, stop), strict=True))
                row[missing] = [self.index[values[i]] for i in missing.tolist()]
            return self.codes[row], self.hashes[row]


#: Each LiveEncoder's ValueTables (one per categorical column), made on its first batch.
_VALUE_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def value_tables(live: LiveEncoder) -> list[ValueTable]:
    tables = _VALUE_TABLES.get(live)
    if tables is None:
        tables = _VALUE_TABLES[live] = [ValueTable(v) for v in live.vocabularies]
    return tables


# -- account states as one table ---------------------------------------------------------


def vectorisable(table: StateTable, account: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per account of the table: whether its new transactions (`account`, `times` in batch
    order) can be vectorised: in time order after its stored history, and no categorical
    memory overflow within the batch."""
    a = len(table.n)
    order = np.argsort(account, kind="stable")
    acc, t = account[order], times[order]
    first = np.ones(len(acc), dtype=bool)
    first[1:] = acc[1:] != acc[:-1]
    backwards = np.zeros(len(acc), dtype=bool)
    backwards[1:] = (t[1:] < t[:-1]) & ~first[1:]
    backwards |= first & (table.n[acc] > 0) & (t < table.last_time[acc])
    ok = np.bincount(acc[backwards], minlength=a) == 0
    m = np.bincount(account, minlength=a)
    for count in table.seen_counts:
        ok &= count + m <= SEEN_CAP
    return ok


def day_chunks(days: np.ndarray, span: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) runs of `days` (batch order) spanning at most `span` days,
    each as long as possible (one vector search per run)."""
    out, start = [], 0
    while start < len(days):
        rest = days[start:]
        spread = np.maximum.accumulate(rest) - np.minimum.accumulate(rest)
        over = np.flatnonzero(spread > span)
        stop = start + (int(over[0]) if len(over) else len(rest))
        out.append((start, stop))
        start = stop
    return out or [(0, 0)]


# -- features ----------------------------------------------------------------------------


@dataclass
class EncodedRun:
    """Features, windows and context of one run of vectorised transactions (run order)."""

    numeric: np.ndarray  # (N, F) float32
    codes: np.ndarray  # (N, C) int32
    window_numeric: np.ndarray  # (N, K, F) float32, left-aligned, zero padded
    window_codes: np.ndarray  # (N, K, C) int64
    lengths: np.ndarray  # (N,) int64
    n_previous: np.ndarray  # (N,) int64: the account's events before each transaction
    row_position: np.ndarray  # (N,) each transaction's row in `rows_table`
    history_offset: np.ndarray  # (N,) history index = row index + this
    rows_table: StateTable  # ids of the combined rows (id_lengths, id_bytes)
    times: np.ndarray  # combined history times
    amounts: np.ndarray  # combined history amounts

    def earlier_events(self, i: int) -> tuple[list[str], list[int], list[float]]:
        """Ids, times and amounts of the earlier events in transaction i's window."""
        hi = int(self.row_position[i])
        lo = hi - int(self.lengths[i]) + 1
        offset = int(self.history_offset[i])
        return (
            self.rows_table.ids(lo, hi),
            self.times[lo + offset : hi + offset].tolist(),
            self.amounts[lo + offset : hi + offset].tolist(),
        )


def encode_batch(
    live: LiveEncoder,
    txs: TransactionColumns,
    table: StateTable,
    account: np.ndarray,
    counterparty_buckets: BucketTable,
) -> tuple[EncodedRun, StateTable]:
    """Features of `txs` (in order; `account[i]` indexes the table) after each account's
    state and its earlier transactions in `txs` (the feature kernel over the stored states
    plus the batch), and the table with them appended. Every account with transactions
    here must be `vectorisable`. `counterparty_buckets` holds the (count, frauds) buckets
    of the counterparties visible to these transactions."""
    n, a, k = len(txs), len(table.n), live.window
    order = np.argsort(account, kind="stable")  # grouped by account, batch order within
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    # Categorical values: one dict look-up each, in C, for both the vocabulary code and the
    # hash (`ValueTable`).
    looked_up = [table_of.lookup(values) for table_of, values in zip(
        value_tables(live), txs.categorical, strict=True)]  # fmt: skip
    hashes = [value_hash[order] for _, value_hash in looked_up] if live.novelty else []
    chunk = Chunk(account[order], txs.time_ns[order], txs.amount[order], hashes)
    buckets = None
    if live.counterparty:
        chunk.counterparty, buckets = _counterparty_codes(txs, order, counterparty_buckets)
    context = Context(table, chunk, live.columns, live.delay_buckets, buckets)
    raw = compute(live.blocks, context)
    for j, column in enumerate(live.schema.numeric):
        raw[f"numeric:{column}"] = np.array(txs.numeric[j], np.float64)[order]

    values = np.stack([raw[name] for name in live.names], axis=1)
    numeric = clean_features((values - live.means) / live.scales, (live.low, live.high))
    codes = np.empty((n, live.n_categorical), dtype=np.int32)
    for j, (code, _) in enumerate(looked_up):
        codes[:, j] = code[order]
    acc, rank = context.entity, context.rank

    # Windows: each account's stored rows (last K - 1 events), then this run's rows.
    rows = Combined(table.rows, context.m, acc, rank)
    pad = rows.size
    rows_numeric = _padded(rows, table.numeric, numeric, np.float32)
    rows_codes = _padded(rows, table.codes, codes, np.int64)
    rpos = rows.new
    steps = np.arange(k, dtype=np.int64)
    lengths = np.minimum(rpos - rows.starts[acc] + 1, k)
    index = (rpos - lengths + 1)[:, None] + steps[None, :]
    index[steps[None, :] >= lengths[:, None]] = pad
    new_lengths, new_bytes = _id_bytes(txs.ids, order)
    id_lengths = rows.fill(table.id_lengths, new_lengths)
    stored_bytes = Combined(
        np.bincount(group_ids(table.rows), weights=table.id_lengths, minlength=a).astype(np.int64),
        np.bincount(acc, weights=new_lengths, minlength=a).astype(np.int64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )
    id_bytes = np.empty(stored_bytes.size, dtype=np.uint8)
    id_bytes[stored_bytes.stored] = table.id_bytes
    id_bytes[ranges(stored_bytes.starts + stored_bytes.stored_len, stored_bytes.lengths
                    - stored_bytes.stored_len)] = new_bytes  # fmt: skip
    rows_ids = replace(table, id_lengths=id_lengths, id_bytes=id_bytes)

    # The accounts' new state: the kernel's, plus the window rows of the latest events.
    state = advance(context, live.retention)
    keep_rows, count_rows = rows.tail(live.rows_kept)
    id_offsets = starts_of(id_lengths)
    state.rows = count_rows
    state.numeric = rows_numeric[keep_rows]
    state.codes = rows_codes[keep_rows].astype(np.int32)
    state.id_lengths = id_lengths[keep_rows]
    state.id_bytes = id_bytes[ranges(id_offsets[keep_rows], id_lengths[keep_rows])]

    events = context.events
    history_offset = (events.starts + table.m - rows.starts - table.rows)[acc]
    run = EncodedRun(
        numeric=numeric[inverse],
        codes=codes[inverse],
        window_numeric=rows_numeric[index[inverse]],
        window_codes=rows_codes[index[inverse]],
        lengths=lengths[inverse],
        n_previous=context.n_prev[inverse],
        row_position=rpos[inverse],
        history_offset=history_offset[inverse],
        rows_table=rows_ids,
        times=context.event_time,
        amounts=context.event_amount,
    )
    return run, state


def _padded(rows: Combined, stored: np.ndarray, new: np.ndarray, dtype) -> np.ndarray:
    """`rows.fill(stored, new)` as `dtype`, with a row of zeros appended (the windows'
    padding), filled in place."""
    out = np.empty((rows.size + 1, *stored.shape[1:]), dtype=dtype)
    out[rows.stored] = stored
    out[rows.new] = new
    out[rows.size] = 0
    return out


def _id_bytes(ids: list[str], order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 lengths and bytes of `ids` taken in `order` (ASCII ids, the usual: one
    encode of them all)."""
    joined = "".join(ids)
    if joined.isascii():
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        data = np.frombuffer(joined.encode(), dtype=np.uint8)
    else:
        encoded = [tx_id.encode() for tx_id in ids]
        lengths = np.fromiter(map(len, encoded), np.int64, len(ids))
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return lengths[order], data[ranges(starts_of(lengths)[order], lengths[order])]


def _counterparty_codes(
    txs: TransactionColumns, order: np.ndarray, stored: BucketTable
) -> tuple[np.ndarray, Buckets]:
    """The batch's counterparties (in `order`) as codes of the stored table's names (new
    ones after them), and the stored buckets as the kernel's."""
    names = txs.counterparty
    code = np.fromiter(map(stored.index.get, names, repeat(-1)), np.int64, len(names))[order]
    unknown = np.flatnonzero(code < 0)
    if len(unknown):  # names the table lacks: the next codes, in order of appearance
        new, _ = pd.factorize(np.array(names, dtype=object)[order[unknown]])
        code[unknown] = len(stored.names) + new
    buckets = Buckets(stored.code, stored.bucket, stored.count, stored.fraud)
    return code, buckets
