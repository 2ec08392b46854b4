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

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.feature_blocks import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
    HISTORY_LAST_N,
    NOVELTY_WINDOW,
    VELOCITY_AMOUNT_WINDOWS,
    VELOCITY_WINDOWS_NS,
    ZSCORE_STD_FLOOR,
    counterparty_statistics,
    robust_statistics,
)
from fraudseq.features import OOV_CODE, clean_features
from fraudseq.schema import MAX_ABS_AMOUNT, STREAM_KEY, Schema, entity_key, numeric_times
from fraudseq.serving.live_features import (
    _HEADER,
    _ISO_MICROSECONDS,
    _STATE_VERSION,
    SEEN_CAP,
    VELOCITY_CAP,
    AccountState,
    LiveEncoder,
    LiveTransaction,
    _category,
    _is_missing,
    _request_columns,
    _value_hash,
    content_digest,
    event_features,
    parse_transaction,
)
from fraudseq.serving.stores import BucketTable

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

_HEADER_DTYPE = np.dtype(
    [
        ("version", "u1"), ("n", "<i8"), ("last_time", "<i8"), ("sum_log", "<f8"),
        ("max_log", "<f8"), ("old_max", "<f8"), ("m", "<u2"), ("n_new", "<u2"),
        ("rows", "<u2"), ("n_num", "<u2"), ("n_cat", "<u2"), ("n_seen", "u1"),
    ]
)  # fmt: skip
assert _HEADER_DTYPE.itemsize == _HEADER.size


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Exclusive prefix sums: where each segment of `lengths` starts."""
    out = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=out[1:])
    return out


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[i], starts[i] + lengths[i]) (index arithmetic)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64) - _starts(lengths), lengths) + np.arange(
        total, dtype=np.int64
    )


def _group_ids(lengths: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(len(lengths)), lengths)


@dataclass
class StateTable:
    """The states of A accounts as flat arrays, each account's part contiguous and in
    account order: per account `n`, `last_time`, `sum_log`, `max_log`, `old_max`; segments
    of `times`/`amounts` (counts `m`), `new_totals` and `firsts` rows (counts `n_new`;
    `firsts` is (total, columns) uint8), window rows `numeric`, `codes` and the rows'
    transaction ids (`id_bytes`, per-row `id_lengths`; counts `rows`), and per categorical
    column the `seen` hashes and their first-seen times `seen_times` (counts
    `seen_counts[j]`)."""

    n: np.ndarray
    last_time: np.ndarray
    sum_log: np.ndarray
    max_log: np.ndarray
    old_max: np.ndarray
    m: np.ndarray
    times: np.ndarray
    amounts: np.ndarray
    n_new: np.ndarray
    new_totals: np.ndarray
    firsts: np.ndarray
    rows: np.ndarray
    numeric: np.ndarray
    codes: np.ndarray
    id_lengths: np.ndarray
    id_bytes: np.ndarray
    seen_counts: list[np.ndarray]
    seen: list[np.ndarray]
    seen_times: list[np.ndarray]

    def ids(self, first_row: int, stop_row: int) -> list[str]:
        """Transaction ids of flat rows [first_row, stop_row)."""
        offsets = _starts(self.id_lengths)
        out = []
        for r in range(first_row, stop_row):
            lo = int(offsets[r])
            out.append(self.id_bytes[lo : lo + int(self.id_lengths[r])].tobytes().decode())
        return out


def decode_states(blobs: list[bytes], live: LiveEncoder) -> StateTable:
    """`AccountState.from_bytes` of every blob at once, into a StateTable (blobs of the
    first format are converted through AccountState first)."""
    blobs = [b if b[0] == _STATE_VERSION else AccountState.from_bytes(b).to_bytes() for b in blobs]
    lengths = np.array([len(b) for b in blobs], dtype=np.int64)
    joined = b"".join(blobs)
    buf = np.frombuffer(joined, dtype=np.uint8)
    start = _starts(lengths)
    size = _HEADER_DTYPE.itemsize
    header = buf[start[:, None] + np.arange(size)].copy().view(_HEADER_DTYPE).reshape(-1)
    if (header["version"] != _STATE_VERSION).any():
        raise FraudseqError("account state format not supported")
    m = header["m"].astype(np.int64)
    n_new = header["n_new"].astype(np.int64)
    rows = header["rows"].astype(np.int64)
    n_num, n_cat = live.n_numeric, live.n_categorical
    stored = rows > 0
    if (header["n_num"][stored] != n_num).any() or (header["n_cat"][stored] != n_cat).any():
        raise FraudseqError("account state rows do not match the model's features")

    def take(offsets, nbytes, dtype):
        return np.frombuffer(_gather(joined, offsets, nbytes), dtype)

    o = start + size
    times = take(o, 8 * m, "<i8").astype(np.int64)
    o = o + 8 * m
    amounts = take(o, 8 * m, "<f8").astype(np.float64)
    o = o + 8 * m
    new_totals = take(o, 2 * n_new, "<u2").astype(np.int64)
    o = o + 2 * n_new
    id_lengths = take(o, 2 * rows, "<u2").astype(np.int64)
    o = o + 2 * rows
    total_rows = int(rows.sum())  # not reshape(-1, ...): a model may have no categorical
    numeric = take(o, 4 * rows * n_num, "<f4").reshape(total_rows, n_num).astype(np.float32)
    o = o + 4 * rows * n_num
    codes = take(o, 4 * rows * n_cat, "<i4").reshape(total_rows, n_cat).astype(np.int32)
    o = o + 4 * rows * n_cat
    id_total = np.bincount(_group_ids(rows), weights=id_lengths, minlength=len(blobs))
    id_total = id_total.astype(np.int64)
    id_bytes = take(o, id_total, np.uint8)
    o = o + id_total
    n_seen = header["n_seen"]
    expected = n_cat if live.novelty else 0
    if (n_seen != expected).any():
        raise FraudseqError("account state categorical memory does not match the model")
    firsts = take(o, n_new * expected, np.uint8).reshape(int(n_new.sum()), expected).copy()
    o = o + n_new * expected
    seen_counts, seen, seen_times = [], [], []
    for _ in range(expected):
        count = take(o, np.full(len(blobs), 4), "<u4").astype(np.int64)
        seen_counts.append(count)
        seen.append(take(o + 4, 8 * count, "<u8").astype(np.uint64))
        seen_times.append(take(o + 4 + 8 * count, 8 * count, "<i8").astype(np.int64))
        o = o + 4 + 16 * count
    return StateTable(
        header["n"].astype(np.int64), header["last_time"].astype(np.int64),
        header["sum_log"].astype(np.float64), header["max_log"].astype(np.float64),
        header["old_max"].astype(np.float64), m, times, amounts, n_new, new_totals, firsts,
        rows, numeric, codes, id_lengths, id_bytes, seen_counts, seen, seen_times,
    )  # fmt: skip


def encode_states(table: StateTable, live: LiveEncoder) -> list[bytes]:
    """`AccountState.to_bytes` of every account of the table (byte for byte)."""
    a = len(table.n)
    n_num, n_cat = live.n_numeric, live.n_categorical
    row_group = _group_ids(table.rows)
    id_total = np.bincount(row_group, weights=table.id_lengths, minlength=a).astype(np.int64)
    sections = [  # (bytes per account, flat little-endian bytes)
        (8 * table.m, table.times.astype("<i8").view(np.uint8)),
        (8 * table.m, table.amounts.astype("<f8").view(np.uint8)),
        (2 * table.n_new, table.new_totals.astype("<u2").view(np.uint8)),
        (2 * table.rows, table.id_lengths.astype("<u2").view(np.uint8)),
        (4 * table.rows * n_num, np.ascontiguousarray(table.numeric, "<f4").view(np.uint8)),
        (4 * table.rows * n_cat, np.ascontiguousarray(table.codes, "<i4").view(np.uint8)),
        (id_total, table.id_bytes),
        (table.n_new * len(table.seen), np.ascontiguousarray(table.firsts, np.uint8).reshape(-1)),
    ]
    for count, values, first_seen in zip(
        table.seen_counts, table.seen, table.seen_times, strict=True
    ):
        sections.append((np.full(a, 4), count.astype("<u4").view(np.uint8)))
        sections.append((8 * count, values.astype("<u8").view(np.uint8)))
        sections.append((8 * count, first_seen.astype("<i8").view(np.uint8)))
    header = np.zeros(a, dtype=_HEADER_DTYPE)
    header["version"] = _STATE_VERSION
    header["n"], header["last_time"] = table.n, table.last_time
    header["sum_log"], header["max_log"] = table.sum_log, table.max_log
    header["old_max"] = table.old_max
    header["m"], header["n_new"], header["rows"] = table.m, table.n_new, table.rows
    header["n_num"], header["n_cat"] = n_num, n_cat
    header["n_seen"] = len(table.seen)
    sections.insert(0, (np.full(a, _HEADER_DTYPE.itemsize), header.view(np.uint8)))
    pieces = [  # per section, each account's slice of it
        _slices(flat.tobytes(), _starts(nbytes), nbytes) for nbytes, flat in sections
    ]
    return [b"".join(parts) for parts in zip(*pieces, strict=True)]


def _slices(buf: bytes, offsets: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """The byte ranges [offset, offset + size) of `buf`."""
    return [buf[o : o + n] for o, n in zip(offsets.tolist(), sizes.tolist(), strict=True)]


def _gather(buf: bytes, offsets: np.ndarray, sizes: np.ndarray) -> bytes:
    """The byte ranges [offset, offset + size) of `buf`, concatenated: a slice per range
    beats per-byte index arrays by about 2.5x on kilobyte states."""
    return b"".join(_slices(buf, offsets, sizes))


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


def _signed_log1p(values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    positive, negative = values > 0, values < 0
    out[positive] = np.log1p(values[positive])
    out[negative] = -np.log1p(-values[negative])
    return out


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, index into them) of `values`, as np.unique's return_inverse."""
    index, distinct = pd.factorize(values)
    return distinct, index


def _grouped_searchsorted(
    values: np.ndarray, group: np.ndarray, queries: np.ndarray, query_group: np.ndarray
) -> np.ndarray:
    """Per query, the position in `values` (sorted within each group, groups in order) of
    the first element of its group greater than the query (bisect_right), exact on int64.

    One searchsorted on keys group * span + value: queries are clipped to the values' range
    (which keeps every answer), so keys fit in int64 unless span * groups is huge; then the
    values are replaced by their ranks (a sort, several times slower)."""
    if len(values) == 0:
        return np.zeros(len(queries), dtype=np.int64)
    base, top = int(values.min()) - 1, int(values.max())
    groups = int(max(group.max(), query_group.max(initial=0))) + 1
    if (top - base + 1) * groups < 1 << 62:
        values, queries = values - base, np.clip(queries, base, top) - base
    else:
        _, rank = np.unique(np.concatenate([values, queries]), return_inverse=True)
        values, queries = rank[: len(values)], rank[len(values) :]
    span = int(max(values.max(), queries.max(initial=0))) + 1
    keys = group.astype(np.int64) * span + values
    query_keys = query_group.astype(np.int64) * span + queries
    return np.searchsorted(keys, query_keys, side="right")


class _Combined:
    """Each account's stored segment followed by this run's new items, as one flat array:
    `starts`/`lengths` per account, `stored` where the stored items go, `new` where each
    new transaction (grouped order) goes."""

    def __init__(self, stored_len: np.ndarray, m: np.ndarray, account, rank) -> None:
        self.stored_len = stored_len
        self.lengths = stored_len + m
        self.starts = _starts(self.lengths)
        self.stored = _ranges(self.starts, stored_len)
        self.new = self.starts[account] + stored_len[account] + rank
        self.size = int(self.lengths.sum())

    def fill(self, stored: np.ndarray, new: np.ndarray) -> np.ndarray:
        out = np.empty((self.size, *stored.shape[1:]), dtype=stored.dtype)
        out[self.stored] = stored
        out[self.new] = new
        return out

    def tail(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of the last min(length, keep) items of each account, and their counts."""
        counts = np.minimum(self.lengths, keep)
        return _ranges(self.starts + self.lengths - counts, counts), counts


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
    state and its earlier transactions in `txs`, and the table with them appended. Every
    account with transactions here must be `vectorisable`. `counterparty_buckets` holds the
    (count, frauds) buckets of the counterparties visible to these transactions."""
    n, a, k = len(txs), len(table.n), live.window
    order = np.argsort(account, kind="stable")  # grouped by account, batch order within
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    acc = account[order]
    m = np.bincount(acc, minlength=a)
    run_starts = _starts(m)
    rank = np.arange(n) - run_starts[acc]
    has = m > 0
    last = run_starts + m - 1  # each account's last new transaction (if any)

    t = txs.time_ns[order]
    amount = txs.amount[order]
    la = _signed_log1p(amount)
    n_prev = table.n[acc] + rank
    raw: dict[str, np.ndarray] = {}
    if live.uses["event"]:
        raw.update(event_features(t, amount, la, np))
    if live.uses["recency"]:
        previous = np.empty(n, dtype=np.int64)
        previous[1:] = t[:-1]
        previous[rank == 0] = table.last_time[acc[rank == 0]]
        gap = np.where(n_prev > 0, np.maximum(t - previous, 0).astype(np.float64), 0.0)
        raw["log_gap_seconds"] = np.log1p(gap / 1e9)
        raw["has_previous"] = (n_prev > 0).astype(np.float64)

    # Running sum and max of log-amounts before each transaction: one vector step per rank.
    sum_before = table.sum_log[acc].copy()
    max_before = table.max_log[acc].copy()
    by_rank = np.argsort(rank, kind="stable")
    rank_counts = np.bincount(rank) if n else np.zeros(1, dtype=np.int64)
    first = int(rank_counts[0])
    for count in rank_counts[1:].tolist():
        sel = by_rank[first : first + count]
        sum_before[sel] = sum_before[sel - 1] + la[sel - 1]
        max_before[sel] = np.maximum(max_before[sel - 1], la[sel - 1])
        first += count

    # Each account's past amounts and times (stored buffer, then this run's).
    hist = _Combined(table.m, m, acc, rank)
    hist_t = hist.fill(table.times, t)
    hist_a = hist.fill(table.amounts, amount)
    hist_group = _group_ids(hist.lengths)
    pos = hist.new

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
        before = n_prev > 0
        raw["amount_to_mean"] = np.where(before, la - sum_before / np.maximum(n_prev, 1), 0.0)
        raw["amount_zscore"] = np.where(n_prev >= 2, (la - mean) / (std + ZSCORE_STD_FLOOR), 0.0)
        raw["amount_to_max"] = np.where(before, la - max_before, 0.0)
        median, mad = robust_statistics(
            [np.where(valid, lag, np.inf) for valid, lag in lags], window_n
        )
        raw["amount_to_median"] = np.where(before, la - median, 0.0)
        raw["amount_robust_zscore"] = np.where(
            n_prev >= 2, (la - median) / (mad + ZSCORE_STD_FLOOR), 0.0
        )
        raw["n_previous"] = np.where(before, np.log1p(n_prev.astype(np.float64)), 0.0)

    # Categorical values: each distinct value is hashed and looked up once.
    distinct_values = [  # (distinct values, index): factorize hashes, np.unique would sort
        _factorize(np.array(values, dtype=object)[order]) for values in txs.categorical
    ]
    hashes, fresh = [], []  # per column: value hashes, first seen by the account here
    new_total = np.zeros(n, dtype=np.int64)
    if live.novelty:
        for j, column in enumerate(live.schema.categorical):
            distinct, index = distinct_values[j]
            h = np.array([_value_hash(v) for v in distinct.tolist()], dtype=np.uint64)[index]
            hashes.append(h)
            seen_all = table.seen[j]
            code, _ = pd.factorize(np.concatenate([seen_all, h]))
            width = int(code.max()) + 1
            seen_keys = _group_ids(table.seen_counts[j]) * width + code[: len(seen_all)]
            keys = acc * width + code[len(seen_all) :]
            _, first_index = np.unique(keys, return_index=True)
            earlier_here = np.ones(n, dtype=bool)
            earlier_here[first_index] = False  # keys are grouped: the first is the earliest
            new = ~(np.isin(keys, seen_keys) | earlier_here)
            fresh.append(new)
            new_total += new
            raw[f"new_{column}"] = new.astype(np.float64)
        # The last NOVELTY_WINDOW - 1 totals before each transaction, stored ones first.
        tot = _Combined(table.n_new, m, acc, rank)
        totals = tot.fill(table.new_totals, new_total)
        prefix = np.concatenate([[0], np.cumsum(totals)])
        lo = np.maximum(tot.starts[acc], tot.new - (NOVELTY_WINDOW - 1))
        raw["new_values_in_window"] = (prefix[tot.new] - prefix[lo] + new_total).astype(np.float64)

    if live.uses["velocity"]:
        floor = np.maximum(hist.starts[acc], pos - max(VELOCITY_CAP, live.keep_last))
        prefix = np.concatenate([[0.0], np.cumsum(hist_a)])
        for name, width in VELOCITY_WINDOWS_NS.items():
            first = _grouped_searchsorted(hist_t, hist_group, t - width, acc)
            first = np.clip(first, floor, pos)
            raw[f"count_{name}"] = np.log1p((pos - first).astype(np.float64))
            if name in VELOCITY_AMOUNT_WINDOWS:
                raw[f"amount_{name}"] = _signed_log1p(prefix[pos] - prefix[first])

    if live.counterparty:
        cps = [txs.counterparty[i] for i in order.tolist()]
        raw.update(_counterparty(live, cps, t // COUNTERPARTY_BUCKET_NS, counterparty_buckets))
    for j, column in enumerate(live.schema.numeric):
        raw[f"numeric:{column}"] = np.array(txs.numeric[j], np.float64)[order]

    values = np.stack([raw[name] for name in live.names], axis=1)
    numeric = clean_features((values - live.means) / live.scales, (live.low, live.high))
    codes = np.empty((n, live.n_categorical), dtype=np.int32)
    for j, vocabulary in enumerate(live.vocabularies):
        distinct, index = distinct_values[j]
        get = vocabulary.get
        codes[:, j] = np.array([get(v, OOV_CODE) for v in distinct.tolist()], np.int32)[index]

    # Windows: each account's stored rows (last K - 1 events), then this run's rows.
    rows = _Combined(table.rows, m, acc, rank)
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
    stored_bytes = _Combined(
        np.bincount(_group_ids(table.rows), weights=table.id_lengths, minlength=a).astype(np.int64),
        np.bincount(acc, weights=[len(i) for i in new_ids], minlength=a).astype(np.int64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
    )
    new_bytes = np.frombuffer(b"".join(new_ids), dtype=np.uint8)
    id_bytes = np.empty(stored_bytes.size, dtype=np.uint8)
    id_bytes[stored_bytes.stored] = table.id_bytes
    id_bytes[_ranges(stored_bytes.starts + stored_bytes.stored_len, stored_bytes.lengths
                     - stored_bytes.stored_len)] = new_bytes  # fmt: skip
    rows_ids = replace(table, id_lengths=id_lengths, id_bytes=id_bytes)

    # The accounts' new state (accounts without transactions here stay as they were).
    # As `LiveEncoder.append` one at a time: `LiveEncoder._retain` drops, `old_max` keeps
    # the largest dropped log-amount, the novelty zone and the rows keep their latest.
    end_t = np.where(has, t[last.clip(0)], table.last_time)
    horizon = end_t - live.retain_span
    le_horizon = _grouped_searchsorted(hist_t, hist_group, horizon, np.arange(a))
    drop = np.minimum(le_horizon - hist.starts, np.maximum(hist.lengths - live.keep_last, 0))
    drop = np.maximum(drop, hist.lengths - max(VELOCITY_CAP, live.keep_last))
    kept = _ranges(hist.starts + drop, hist.lengths - drop)
    dropped = _ranges(hist.starts, drop)
    old_max = table.old_max.copy()
    if len(dropped):
        np.maximum.at(old_max, hist_group[dropped], _signed_log1p(hist_a[dropped]))
    end = last.clip(0)
    state = replace(
        table,
        n=table.n + m,
        last_time=end_t,
        sum_log=np.where(has, sum_before[end] + la[end], table.sum_log),
        max_log=np.where(has, np.maximum(max_before[end], la[end]), table.max_log),
        old_max=old_max,
        m=hist.lengths - drop,
        times=hist_t[kept],
        amounts=hist_a[kept],
    )
    if live.novelty:
        keep_totals, count_totals = tot.tail(live.zone)
        state.n_new, state.new_totals = count_totals, totals[keep_totals]
        marks = np.zeros((n, len(hashes)), dtype=np.uint8)
        for j, (h, new) in enumerate(zip(hashes, fresh, strict=True)):
            marks[:, j] = np.where(new, ((h >> np.uint64(56)) | np.uint64(1)), 0)
        state.firsts = tot.fill(table.firsts, marks)[keep_totals]
        state.seen_counts, state.seen, state.seen_times = [], [], []
        for j in range(len(table.seen)):
            added = np.bincount(acc[fresh[j]], minlength=a)
            none = np.zeros(0, dtype=np.int64)
            seen = _Combined(table.seen_counts[j], added, none, none)
            new_slots = _ranges(seen.starts + seen.stored_len, added)
            merged = np.empty(seen.size, dtype=np.uint64)
            merged[seen.stored] = table.seen[j]
            merged[new_slots] = hashes[j][fresh[j]]
            first_seen = np.empty(seen.size, dtype=np.int64)
            first_seen[seen.stored] = table.seen_times[j]
            first_seen[new_slots] = t[fresh[j]]
            state.seen_counts.append(seen.lengths)
            state.seen.append(merged)
            state.seen_times.append(first_seen)
    keep_rows, count_rows = rows.tail(live.rows_kept)
    id_offsets = _starts(id_lengths)
    state.rows = count_rows
    state.numeric = rows_numeric[keep_rows]
    state.codes = rows_codes[keep_rows].astype(np.int32)
    state.id_lengths = id_lengths[keep_rows]
    state.id_bytes = id_bytes[_ranges(id_offsets[keep_rows], id_lengths[keep_rows])]

    history_offset = (hist.starts + table.m - rows.starts - table.rows)[acc]
    run = EncodedRun(
        numeric=numeric[inverse],
        codes=codes[inverse],
        window_numeric=rows_numeric[index][inverse],
        window_codes=rows_codes[index][inverse],
        lengths=lengths[inverse],
        n_previous=n_prev[inverse],
        row_position=rpos[inverse],
        history_offset=history_offset[inverse],
        rows_table=rows_ids,
        times=hist_t,
        amounts=hist_a,
    )
    return run, state


def _counterparty(live: LiveEncoder, cps: list[str], own: np.ndarray, buckets: BucketTable) -> dict:
    """As `LiveEncoder._counterparty` for every transaction (`own`: its bucket), through
    the batch block's `counterparty_statistics` on the stored (count, frauds) buckets."""
    index = buckets.index
    unknown = len(buckets.names)  # no buckets: a code past every entry's
    query = np.fromiter((index.get(c, unknown) for c in cps), np.int64, len(cps))
    longest = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY
    stored = len(buckets) > 0
    base = min(
        int(buckets.bucket.min()) if stored else 0,
        int(own.min()) - live.delay_buckets - longest,
    )
    span = max(int(buckets.bucket.max()) if stored else 0, int(own.max())) - base + 2
    bucket = buckets.bucket - base
    key = buckets.code * span + bucket
    order = np.argsort(key, kind="stable")
    return counterparty_statistics(
        key[order],
        buckets.count[order],
        buckets.fraud[order],
        bucket[order],
        query * span,
        own - base,
        live.delay_buckets,
    )
