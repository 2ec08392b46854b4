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

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError
from fraudseq.features.constants import COUNTERPARTY_BUCKET_NS
from fraudseq.features.encoder import OOV_CODE, clean_features
from fraudseq.features.kernel import Buckets, Chunk, Context, advance, compute
from fraudseq.features.segments import Combined, group_ids, ranges, starts_of
from fraudseq.features.state import StateTable, value_hashes
from fraudseq.schema import MAX_ABS_AMOUNT, STREAM_KEY, Schema, entity_key, numeric_times
from fraudseq.serving.live_features import (
    _ISO_MICROSECONDS,
    SEEN_CAP,
    LiveEncoder,
    LiveTransaction,
    _category,
    _is_missing,
    _request_columns,
    content_digest,
    parse_transaction,
)
from fraudseq.serving.state import BucketTable

# -- transactions as columns -------------------------------------------------------------


@dataclass
class TransactionColumns:
    """Validated, canonical transactions as columns (what `parse_transaction` gives, by
    column): `row(i)` is transaction i's LiveTransaction."""

    ids: list[str]
    entities: list[str]
    time_ns: np.ndarray  # int64
    amount: np.ndarray  # float64
    categorical: list[list[str]]  # per categorical column
    numeric: list[list[float]]  # per extra numeric column
    counterparty: list[str] | None
    digests: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def row(self, i: int) -> LiveTransaction:
        return LiveTransaction(
            self.ids[i],
            self.entities[i],
            int(self.time_ns[i]),
            float(self.amount[i]),
            tuple(c[i] for c in self.categorical),
            tuple(c[i] for c in self.numeric),
            self.counterparty[i] if self.counterparty is not None else None,
            self.digests[i],
        )

    def take(self, index) -> TransactionColumns:
        index = list(index)
        return TransactionColumns(
            [self.ids[i] for i in index],
            [self.entities[i] for i in index],
            self.time_ns[index],
            self.amount[index],
            [[c[i] for i in index] for c in self.categorical],
            [[c[i] for i in index] for c in self.numeric],
            [self.counterparty[i] for i in index] if self.counterparty is not None else None,
            [self.digests[i] for i in index],
        )

    @property
    def bucket(self) -> np.ndarray:
        """Counterparty buckets (UTC hours), as `LiveTransaction.bucket`."""
        return self.time_ns // COUNTERPARTY_BUCKET_NS

    @classmethod
    def from_rows(cls, rows: list[LiveTransaction], schema: Schema) -> TransactionColumns:
        return cls(
            [r.id for r in rows],
            [r.entity for r in rows],
            np.array([r.time_ns for r in rows], dtype=np.int64),
            np.array([r.amount for r in rows], dtype=np.float64),
            [[r.categorical[j] for r in rows] for j in range(len(schema.categorical))],
            [[r.numeric[j] for r in rows] for j in range(len(schema.numeric))],
            [r.counterparty for r in rows] if schema.counterparty else None,
            [r.digest for r in rows],
        )


def parse_batch(txs, schema: Schema) -> TransactionColumns:
    """`parse_transaction` of every transaction, as columns. The common case (dicts with
    text ids and entities, categories, ISO times or numbers with the schema's [time] table,
    float amounts, numbers or null in numeric columns) is checked and converted a column at
    a time, for every shape of entity (none, one column, a composite key); anything else
    goes through `parse_transaction` row by row, which names the position and field of the
    first invalid transaction."""
    if not isinstance(txs, list | tuple):
        raise DataValidationError(
            f"score_batch takes a list of transactions, got {type(txs).__name__}"
        )
    try:
        columns = _fast_columns(txs, schema)
    except (KeyError, TypeError, ValueError, OverflowError):
        columns = None
    if columns is not None:
        return columns
    rows = []
    for i, tx in enumerate(txs):
        try:
            rows.append(parse_transaction(tx, schema))
        except DataValidationError as err:
            raise DataValidationError(f"transaction at position {i}: {err}") from None
    return TransactionColumns.from_rows(rows, schema)


def _clean_text(values: list) -> bool:
    """Every value is a str with a non-blank character (so canonical as it is)."""
    return all(type(v) is str for v in values) and all(map(str.strip, values))


def _fast_columns(txs, schema: Schema) -> TransactionColumns | None:
    """The columns of the common case, or None (then the row-by-row parser decides)."""
    if not all(type(tx) is dict for tx in txs):
        return None
    required = _request_columns(schema)
    if not all(len(tx) >= len(required) for tx in txs):
        return None
    column = {c: [tx[c] for tx in txs] for c in required}  # KeyError: a missing field
    ids = column[schema.id_column]
    entities = _fast_entities(column, txs, schema)
    if entities is None or not _clean_text(ids):
        return None
    amounts = column[schema.amount]
    if not all(type(v) is float or type(v) is int for v in amounts):
        return None
    amount = np.array(amounts, dtype=np.float64)
    if not (np.abs(amount) < MAX_ABS_AMOUNT).all():  # the row parser names the bad one
        return None
    time_ns = _fast_times(column[schema.time], schema)
    if time_ns is None:
        return None
    categorical = []
    for c in schema.categorical:
        values = column[c]
        if not _clean_text(values):
            values = [_category(v, c, tx, schema) for v, tx in zip(values, txs, strict=True)]
        categorical.append(values)
    numeric = []
    for c in schema.numeric:  # plain numbers or null; the row parser reads bools and text
        values = column[c]
        if not all(v is None or type(v) is float or type(v) is int for v in values):
            return None
        values = [math.nan if v is None or v != v else float(v) for v in values]
        if np.isinf(values).any():  # the row parser names the bad one
            return None
        numeric.append(values)
    counterparty = None
    if schema.counterparty:
        values = column[schema.counterparty]
        if not _clean_text(values):
            values = [
                _category(v, schema.counterparty, tx, schema)
                for v, tx in zip(values, txs, strict=True)
            ]
        counterparty = values
    time_list, amount_list = time_ns.tolist(), amount.tolist()
    # The digest of parse_transaction, of the same canonical values (same types).
    cat_rows = list(zip(*categorical, strict=True)) if categorical else [()] * len(txs)
    num_rows = list(zip(*numeric, strict=True)) if numeric else [()] * len(txs)
    cps = counterparty if counterparty is not None else [None] * len(txs)
    digests = list(
        map(content_digest, ids, entities, time_list, amount_list, cat_rows, num_rows, cps)
    )
    return TransactionColumns(
        ids, entities, time_ns, amount, categorical, numeric, counterparty, digests
    )


def _fast_entities(column: dict, txs, schema: Schema) -> list[str] | None:
    """Entity keys as `parse_transaction` makes them, or None (the row parser decides)."""
    parts = schema.entity_parts
    if not parts:
        return [STREAM_KEY] * len(txs)
    if len(parts) == 1:
        values = column[parts[0]]
        return values if _clean_text(values) else None
    texts, clean = [], False
    for c in parts:
        values = column[c]
        if _clean_text(values):
            clean = True  # no transaction misses every part
        else:
            values = [_category(v, c, tx, schema) for v, tx in zip(values, txs, strict=True)]
        texts.append(values)
    if not clean and any(all(_is_missing(column[c][i]) for c in parts) for i in range(len(txs))):
        return None  # the row parser names the transaction without any part
    return [entity_key(key) for key in zip(*texts, strict=True)]


def _fast_times(times: list, schema: Schema) -> np.ndarray | None:
    """Naive-UTC int64 nanoseconds of ISO strings (or, with the schema's [time] table, of
    plain numbers), or None (the row parser decides)."""
    if schema.time_unit is not None and all(type(v) is float or type(v) is int for v in times):
        values, bad = numeric_times(
            np.array(times, dtype=np.float64), schema.time_unit, schema.time_origin
        )
        return None if bad.any() else values.view(np.int64)
    if not all(type(v) is str for v in times):
        return None
    times = [v.strip() for v in times]
    match = _ISO_MICROSECONDS.fullmatch
    if not all(match(v) for v in times):
        return None
    stamps = pd.to_datetime(pd.Series(times, dtype=object), format="ISO8601", utc=True)
    return stamps.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)


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


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index into them) of `values`, as np.unique's return_inverse."""
    index, distinct = pd.factorize(values)
    return distinct, index


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
    counterparty_days: BucketTable,
) -> tuple[EncodedRun, StateTable]:
    """Features of `txs` (in order; `account[i]` indexes the table) after each account's
    state and its earlier transactions in `txs` (the feature kernel over the stored states
    plus the batch), and the table with them appended. Every account with transactions
    here must be `vectorisable`. `counterparty_days` holds the (count, frauds) buckets of
    the counterparties visible to these transactions."""
    n, a, k = len(txs), len(table.n), live.window
    order = np.argsort(account, kind="stable")  # grouped by account, batch order within
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    # Categorical values: each distinct value is hashed and looked up once.
    distinct_values = [  # (distinct values, index): factorize hashes, np.unique would sort
        _factorize(np.array(values, dtype=object)[order]) for values in txs.categorical
    ]
    hashes = []
    if live.novelty:
        for distinct, index in distinct_values:
            hashes.append(value_hashes(distinct)[index])
    chunk = Chunk(account[order], txs.time_ns[order], txs.amount[order], hashes)
    buckets = None
    if live.counterparty:
        chunk.counterparty, buckets = _counterparty_codes(txs, order, counterparty_days)
    context = Context(table, chunk, live.columns, live.delay_buckets, buckets)
    raw = compute(live.blocks, context)
    for j, column in enumerate(live.schema.numeric):
        raw[f"numeric:{column}"] = np.array(txs.numeric[j], np.float64)[order]

    values = np.stack([raw[name] for name in live.names], axis=1)
    numeric = clean_features((values - live.means) / live.scales, (live.low, live.high))
    codes = np.empty((n, live.n_categorical), dtype=np.int32)
    for j, vocabulary in enumerate(live.vocabularies):
        distinct, index = distinct_values[j]
        get = vocabulary.get
        codes[:, j] = np.array([get(v, OOV_CODE) for v in distinct.tolist()], np.int32)[index]
    acc, rank = context.entity, context.rank

    # Windows: each account's stored rows (last K - 1 events), then this run's rows.
    rows = Combined(table.rows, context.m, acc, rank)
    pad = rows.size
    rows_numeric = np.zeros((pad + 1, live.n_numeric), dtype=np.float32)
    rows_codes = np.zeros((pad + 1, live.n_categorical), dtype=np.int64)
    rows_numeric[:pad] = rows.fill(table.numeric, numeric)
    rows_codes[:pad] = rows.fill(table.codes, codes)
    rpos = rows.new
    steps = np.arange(k, dtype=np.int64)
    lengths = np.minimum(rpos - rows.starts[acc] + 1, k)
    index = (rpos - lengths + 1)[:, None] + steps[None, :]
    index[steps[None, :] >= lengths[:, None]] = pad
    new_ids = [txs.ids[i].encode() for i in order.tolist()]
    id_lengths = rows.fill(table.id_lengths, np.array([len(i) for i in new_ids], np.int64))
    stored_bytes = Combined(
        np.bincount(group_ids(table.rows), weights=table.id_lengths, minlength=a).astype(np.int64),
        np.bincount(acc, weights=[len(i) for i in new_ids], minlength=a).astype(np.int64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )
    new_bytes = np.frombuffer(b"".join(new_ids), dtype=np.uint8)
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
        window_numeric=rows_numeric[index][inverse],
        window_codes=rows_codes[index][inverse],
        lengths=lengths[inverse],
        n_previous=context.n_prev[inverse],
        row_position=rpos[inverse],
        history_offset=history_offset[inverse],
        rows_table=rows_ids,
        times=context.event_time,
        amounts=context.event_amount,
    )
    return run, state


def _counterparty_codes(
    txs: TransactionColumns, order: np.ndarray, stored: BucketTable
) -> tuple[np.ndarray, Buckets]:
    """The batch's counterparties (in `order`) as codes of the stored table's names (new
    ones after them), and the stored buckets as the kernel's."""
    index = stored.index
    names = [txs.counterparty[i] for i in order.tolist()]
    codes = [index.get(name, -1) for name in names]
    unknown = [i for i, code in enumerate(codes) if code < 0]
    if unknown:
        extra, _ = pd.factorize(np.array([names[i] for i in unknown], dtype=object))
        for i, code in zip(unknown, extra.tolist(), strict=True):
            codes[i] = len(stored.names) + code
    buckets = Buckets(stored.code, stored.bucket, stored.count, stored.fraud)
    return np.array(codes, dtype=np.int64), buckets
