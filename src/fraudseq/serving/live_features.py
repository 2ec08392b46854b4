"""Live features: one transaction at a time, from per-account state, equal to the batch blocks.

Batch scoring computes every feature block of `fraudseq.feature_blocks` over a whole
entity-sorted file. A live service sees one transaction at a time, so this module keeps the
small per-account state each block needs and computes the new transaction's raw features
with incremental formulas that mirror the block definitions one for one:

=================  ==========================================================================
block              live state used (per account unless said otherwise)
=================  ==========================================================================
event              the transaction only
recency            the latest event's time
amount_history     count, running sum and max of signed log-amounts, the last 10 amounts
novelty            per categorical column the values seen (8-byte hashes) with the time each
                   was first seen, and the new-value totals of the last 15 events
velocity           (time, amount) of every event in the last 7 days (at most
                   `VELOCITY_CAP` = 1024 events; above that count_7d/amount_7d saturate)
counterparty_risk  per counterparty, (transactions, known frauds) per UTC hour bucket for
                   the last 30 days + D hours, D = ceil(label delay in hours) (kept by the
                   state store, which treats bucket numbers as opaque integers)
extra numeric      the transaction only
=================  ==========================================================================

The raw values are then scaled with the encoder's fitted means and scales, NaN/inf become 0,
each feature is clipped to the encoder's fitted range and the result is cast to float32,
exactly as `FeatureEncoder.transform` (both call `clean_features`); categorical values
get the vocabulary codes of `FeatureEncoder._codes` (2 + index, `OOV_CODE` otherwise). The
model's window is the stored encoded rows of the account's last K - 1 events plus this one.

Input values are canonicalised as `load_transactions` does (text ids, missing categorical
values -> "<NA>", integral floats -> "123", times -> naive UTC nanoseconds, numeric times
through the schema's [time] table), so the same transaction gives the same features whether
it comes from a file or from a JSON request. A request has the fields of
`_request_columns`: the canonical id column (``transaction_id`` when the schema names no
id), each source column of the entity (none for one stream), time, amount, categorical,
numeric and counterparty.

Order: an account's state holds its events in time order, whatever order they arrived in.
A late transaction (older than the account's latest event, by at most LATENESS_NS) is
inserted in its place (`LiveEncoder.insert`); to make that exact the state keeps a little
more than in-order scoring needs: events 7 days + LATENESS_NS back, the novelty totals and
first-value marks of the 15 events before each stored row, the rows of LATE_ROWS more
events, and the largest log-amount of the events it no longer holds. Every aggregate is
commutative (count, sum, max, first-seen times) and everything else is recomputed from
that bounded history, so the state after any arrival order within the lateness equals the
state after time order (floats to rounding; equal times are ordered by arrival).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import numbers
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.feature_blocks import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
    HISTORY_LAST_N,
    NOVELTY_WINDOW,
    NS_PER_SECOND,
    SECONDS_PER_DAY,
    VELOCITY_AMOUNT_WINDOWS,
    VELOCITY_WINDOWS_NS,
    ZSCORE_STD_FLOOR,
    label_delay_buckets,
)
from fraudseq.features import OOV_CODE, FeatureEncoder, clean_features
from fraudseq.schema import (
    MAX_ABS_AMOUNT,
    MISSING_CATEGORY,
    STREAM_KEY,
    TIME_UNITS,
    Schema,
    entity_key,
    numeric_times,
)

#: Most events kept for the velocity windows (the last 7 days); an account with more events
#: in 7 days than this gets count_7d / amount_7d over its latest VELOCITY_CAP events only.
VELOCITY_CAP = 1024
#: Most distinct values remembered per account and categorical column (oldest forgotten
#: first); a forgotten value seen again counts as new.
SEEN_CAP = 4096
#: Counterparty buckets older than the clock minus (D hours + 30 days + this) are pruned.
COUNTERPARTY_SLACK_DAYS = 7
#: Allowed lateness: a transaction at most this much older than its account's latest event
#: is inserted into the account's history in time order, exactly (the state keeps what that
#: needs: velocity events 7 days + LATENESS_NS back). A later one is scored against the
#: history before it that the state holds and not inserted ("history": "not_inserted").
LATENESS_NS = SECONDS_PER_DAY * NS_PER_SECOND
#: Encoded rows kept beyond the model's K - 1: a late transaction's own window is exact
#: when at most this many of its account's stored events are later than it (else shorter).
LATE_ROWS = 4

_SUPPORTED_BLOCKS = ("event", "recency", "amount_history", "novelty", "velocity")
_NOW_WORDS = ("now", "today", "tomorrow", "yesterday")
# ISO 8601 with at most microseconds (datetime.fromisoformat would drop nanoseconds).
_ISO_MICROSECONDS = re.compile(
    r"(19|20)\d\d-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?)?(Z|[+-]\d\d:?\d\d)?"
)
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_TIME_LOW = pd.Timestamp("1677-09-22")
_TIME_HIGH = pd.Timestamp("2262-04-10")


# -- input validation --------------------------------------------------------------------
class LiveTransaction(NamedTuple):
    """One validated transaction in canonical form (what a loaded file row would hold).
    A NamedTuple: immutable, and cheaper to make than a frozen dataclass."""

    id: str
    entity: str
    time_ns: int
    amount: float
    categorical: tuple[str, ...]
    numeric: tuple[float, ...]
    counterparty: str | None
    digest: str  # content hash: the same id with a different digest is a conflict

    @property
    def bucket(self) -> int:
        """The counterparty bucket (UTC hour) this transaction counts in."""
        return self.time_ns // COUNTERPARTY_BUCKET_NS


def parse_transaction(tx, schema: Schema) -> LiveTransaction:
    """Validate and canonicalise a transaction dict keyed by the schema's column names.

    The fields are `_request_columns(schema)`: the id under `schema.id_column`, the entity
    as its source column(s). The entity key is that of `load_transactions`: the one
    column's text, `entity_key` of a composite key's parts (a missing part is "<NA>", all
    parts missing is an error), or `STREAM_KEY` without an entity. The label and scenario
    columns are not needed and are ignored if present, like any column the schema does not
    name. Raises DataValidationError naming the field.
    """
    columns = _request_columns(schema)
    if not isinstance(tx, dict):
        raise DataValidationError(
            f"a transaction must be a JSON object / dict keyed by column name, got "
            f"{type(tx).__name__}"
        )
    for column in columns:
        if column not in tx:
            raise DataValidationError(
                f"transaction {_id_hint(tx, schema)}: missing field {column!r} "
                f"({_role(schema, column)}). Fix: send every column the schema names: "
                f"{', '.join(columns)}"
            )
    tx_id = _text(tx[schema.id_column], schema.id_column, "transaction id", tx, schema)
    entity = _entity(tx, schema)
    time_ns = _time_ns(tx[schema.time], schema.time, tx, schema)
    amount = _amount(tx[schema.amount], schema.amount, tx, schema)
    categorical = tuple(_category(tx[c], c, tx, schema) for c in schema.categorical)
    numeric = tuple(_number(tx[c], c, tx, schema) for c in schema.numeric)
    counterparty = (
        _category(tx[schema.counterparty], schema.counterparty, tx, schema)
        if schema.counterparty
        else None
    )
    digest = content_digest(tx_id, entity, time_ns, amount, categorical, numeric, counterparty)
    return LiveTransaction(
        tx_id, entity, time_ns, amount, categorical, numeric, counterparty, digest
    )


def content_digest(*canonical) -> str:
    """A transaction's content hash (`LiveTransaction.digest`) from its canonical values
    (id, entity, time_ns, amount, categorical tuple, numeric tuple, counterparty): repr of
    str/int/float/None is exact and unambiguous (strings are quoted and escaped)."""
    return hashlib.blake2b(repr(canonical).encode(), digest_size=12).hexdigest()


@functools.lru_cache(maxsize=64)
def _request_columns(schema: Schema) -> tuple[str, ...]:
    """The fields of a live request, in role order: `schema.id_column` (the id column, or
    ``transaction_id`` without one), each of `schema.entity_parts`, time, amount,
    categorical, numeric, counterparty."""
    return tuple(dict.fromkeys([schema.id_column, *schema.source_columns(with_label=False)]))


def _id_hint(tx: dict, schema: Schema) -> str:
    value = tx.get(schema.id_column)
    return repr(value) if isinstance(value, str | int) else "(no id)"


def _role(schema: Schema, column: str) -> str:
    roles = ["id"] if column == schema.id_column else []
    roles += ["entity"] if column in schema.entity_parts else []
    roles += [
        role for role in ("time", "amount", "counterparty") if getattr(schema, role) == column
    ]
    roles += [role for role in ("categorical", "numeric") if column in getattr(schema, role)]
    return "/".join(roles) or "column"


def _entity(tx: dict, schema: Schema) -> str:
    """The entity key, as `load_transactions` makes it from the entity's source columns."""
    parts = schema.entity_parts
    if not parts:
        return STREAM_KEY
    if len(parts) == 1:
        return _text(tx[parts[0]], parts[0], "entity", tx, schema)
    values = [tx[c] for c in parts]
    if all(map(_is_missing, values)):
        raise _bad(
            tx, schema, parts[0], f"every part of the entity key {' + '.join(parts)} is missing",
            values, f"send at least one of {', '.join(parts)} (null marks an unknown part).",
        )  # fmt: skip
    return entity_key([_category(v, c, tx, schema) for v, c in zip(values, parts, strict=True)])


def _bad(tx, schema, column: str, problem: str, value, fix: str) -> DataValidationError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return DataValidationError(
        f"transaction {_id_hint(tx, schema)}: field {column!r}: {problem} "
        f"(got {type(value).__name__} {shown}). Fix: {fix}"
    )


def _is_missing(value) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _text(value, column, what, tx, schema) -> str:
    """Id or entity: text or an integer (integral floats lose their '.0'), never missing."""
    if _is_missing(value):
        raise _bad(
            tx, schema, column, f"missing {what}", value, f"every transaction needs a {what}."
        )
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        raise _bad(tx, schema, column, f"a {what} cannot be a boolean", value, "send text.")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    raise _bad(tx, schema, column, f"the {what} must be text or an integer", value, "send text.")


def _category(value, column, tx, schema) -> str:
    """Categorical / counterparty value as load_transactions gives it; missing -> "<NA>"."""
    if _is_missing(value):
        return MISSING_CATEGORY
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return str(value)
    raise _bad(
        tx, schema, column, "a categorical value must be text or a number", value,
        "send text (or null when unknown).",
    )  # fmt: skip


def _as_float(value) -> float | None:
    """A float from a number or numeric text; None when it is neither."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str) and "_" not in value:
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _amount(value, column, tx, schema) -> float:
    number = None if _is_missing(value) else _as_float(value)
    if number is None or not abs(number) < MAX_ABS_AMOUNT:  # NaN and infinity too
        raise _bad(
            tx, schema, column, "missing, non-numeric, infinite or out-of-range amount", value,
            "amounts must be plain finite numbers such as 12.50 or -3 (refunds may be "
            f"negative), smaller than {MAX_ABS_AMOUNT:g} in absolute value.",
        )  # fmt: skip
    return number


def _number(value, column, tx, schema) -> float:
    """Extra numeric column: missing -> NaN (allowed); text and infinity are errors."""
    if _is_missing(value):
        return math.nan
    number = 1.0 if value is True else 0.0 if value is False else _as_float(value)
    if number is None or not math.isfinite(number):
        raise _bad(
            tx, schema, column, "non-numeric or infinite value", value,
            "send a plain number, or null when unknown.",
        )  # fmt: skip
    return number


def _time_ns(value, column, tx, schema) -> int:
    """Naive-UTC nanoseconds from an ISO 8601 string or a datetime; from a number only with
    the schema's [time] table (origin + value x unit, through `numeric_times` as files)."""
    fix = (
        "send an ISO 8601 time such as 2024-01-31T13:45:00Z or 2024-01-31 13:45:00 (UTC; "
        "offsets are converted), within years 1678-2261"
        + (
            f", or a number of {schema.time_unit!r} since {schema.time_origin}."
            if schema.time_unit is not None
            else "."
        )
    )
    if _is_missing(value) or isinstance(value, bool | np.bool_):
        raise _bad(tx, schema, column, "missing or unparseable timestamp", value, fix)
    if isinstance(value, numbers.Real) and not isinstance(value, np.datetime64):
        return _numeric_time_ns(value, column, tx, schema)
    try:
        if isinstance(value, str):
            text = value.strip()
            if _ISO_MICROSECONDS.fullmatch(text):  # the common case, 5x faster than pandas
                moment = datetime.fromisoformat(text)
                if moment.tzinfo is not None:
                    moment = moment.astimezone(UTC).replace(tzinfo=None)
                return (moment - _EPOCH) // _MICROSECOND * 1000
            if text.lower() in _NOW_WORDS:
                raise ValueError(value)
            stamp = pd.Timestamp(text)
        elif isinstance(value, datetime | date | np.datetime64 | pd.Timestamp):
            stamp = pd.Timestamp(value)
        else:
            raise TypeError(type(value).__name__)
        if stamp is pd.NaT or pd.isna(stamp):
            raise ValueError(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        if not (_TIME_LOW <= stamp <= _TIME_HIGH):
            raise ValueError(value)
        return int(stamp.as_unit("ns").value)
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime):
        raise _bad(tx, schema, column, "missing or unparseable timestamp", value, fix) from None


#: A number is a time only with the schema's [time] table: the problem, and its fix.
NUMERIC_TIME_PROBLEM = "a number is not a time without its unit and origin"
NUMERIC_TIME_FIX = (
    "send an ISO 8601 time such as 2024-01-31T13:45:00Z, or add a [time] table to the "
    'model\'s schema (unit and origin, e.g. unit = "s" and origin = "1970-01-01" for Unix '
    f"epoch seconds; units: {', '.join(TIME_UNITS)}) and retrain it."
)


def _numeric_time_ns(value, column, tx, schema) -> int:
    """A number in the [time] table's unit since its origin (`numeric_times`, as files)."""
    if schema.time_unit is None:
        raise _bad(tx, schema, column, NUMERIC_TIME_PROBLEM, value, NUMERIC_TIME_FIX)
    time_ns = numeric_time_ns(value, schema.time_unit, schema.time_origin)
    if time_ns is None:
        raise _bad(
            tx, schema, column, "non-finite or out-of-range time", value,
            f"the model's [time] table reads a number as {schema.time_unit!r} since "
            f"{schema.time_origin}; origin + value must fall within years 1678-2261.",
        )  # fmt: skip
    return time_ns


def numeric_time_ns(value, unit: str, origin) -> int | None:
    """Nanoseconds of one number of `unit` since `origin` (`numeric_times`, as files), or
    None when it is not finite or falls outside years 1678-2261."""
    try:
        times, bad = numeric_times([float(value)], unit, origin)
    except OverflowError:  # an integer beyond float: out of range too
        return None
    return None if bad[0] else int(times.view(np.int64)[0])


# -- per-account state -------------------------------------------------------------------
# Version 2: version, n, last_time, sum_log, max_log, old_max, m, n_new, rows, n_num, n_cat,
# n_seen. Version 1 (read, never written) had no old_max, no firsts and no first-seen times.
_HEADER = struct.Struct("<BqqdddHHHHHB")
_HEADER_V1 = struct.Struct("<BqqddHHHHHB")
_STATE_VERSION = 2
#: First-seen time of a value remembered by a version-1 state (which kept none): long ago.
_LONG_AGO = -(2**63)


def first_mark(value_hash: int) -> int:
    """The byte `firsts` holds for an event that introduced a value (its hash's top 7 bits,
    odd, so never 0): enough to tell apart the few events of one timestamp."""
    return (value_hash >> 56) | 1


@dataclass
class AccountState:
    """What the live features and the window need of one account's past, in time order.

    Events are kept sorted by time (equal times in arrival order); a late event is inserted
    in its place (`LiveEncoder.insert`), so the state is the same whatever order its events
    arrived in. `n`, `last_time`, `sum_log` and `max_log` cover every event; `old_max` the
    largest signed log-amount of the events no longer in `times`. `times`/`amounts` hold the
    latest events: at least `LiveEncoder.keep_last` of them, every event within 7 days +
    LATENESS of the latest when velocity features are used, at most VELOCITY_CAP.
    `new_totals` (the novelty total of each) and `firsts` (per categorical column,
    `first_mark` of the value the event introduced, else 0; row-major bytes) cover the
    latest `LiveEncoder.zone` of them; `numeric`/`codes`/`ids` the encoded rows and
    transaction ids of the latest `LiveEncoder.rows_kept`. `seen` per categorical column
    maps the 8-byte hash of each value seen to the time it was first seen, oldest first.
    """

    n: int = 0
    last_time: int = 0
    sum_log: float = 0.0
    max_log: float = -math.inf
    old_max: float = -math.inf
    times: list[int] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    new_totals: list[int] = field(default_factory=list)
    firsts: bytearray = field(default_factory=bytearray)
    ids: list[str] = field(default_factory=list)
    numeric: np.ndarray | None = None  # (r, F) float32
    codes: np.ndarray | None = None  # (r, C) int32
    seen: list[dict[int, int]] = field(default_factory=list)

    #: Set on views of the history before a late event (`_Before`): the novelty flags of
    #: an event being recomputed. Never stored.
    flags = None

    def to_bytes(self) -> bytes:
        """Compact little-endian binary (struct + raw arrays); never pickle."""
        numeric = self.numeric if self.numeric is not None else np.zeros((0, 0), np.float32)
        codes = self.codes if self.codes is not None else np.zeros((0, 0), np.int32)
        rows, n_num = numeric.shape
        n_cat = codes.shape[1]
        m, n_new = len(self.times), len(self.new_totals)
        ids = [i.encode() for i in self.ids]
        parts = [
            _HEADER.pack(
                _STATE_VERSION,
                self.n,
                self.last_time,
                self.sum_log,
                self.max_log,
                self.old_max,
                m,
                n_new,
                rows,
                n_num,
                n_cat,
                len(self.seen),
            ),
            struct.pack(f"<{m}q{m}d{n_new}H{rows}H", *self.times, *self.amounts,
                        *self.new_totals, *(len(i) for i in ids)),
            np.ascontiguousarray(numeric, dtype="<f4").tobytes(),
            np.ascontiguousarray(codes, dtype="<i4").tobytes(),
            *ids,
            bytes(self.firsts),
        ]  # fmt: skip
        for values in self.seen:
            k = len(values)
            parts.append(struct.pack(f"<I{k}Q{k}q", k, *values, *values.values()))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> AccountState:
        if blob[0] == 1:
            return cls._from_v1(blob)
        (version, n, last_time, sum_log, max_log, old_max, m, n_new, rows, n_num, n_cat,
         n_seen) = _HEADER.unpack_from(blob, 0)  # fmt: skip
        if version != _STATE_VERSION:
            raise FraudseqError(f"account state format {version} is not supported")
        state = cls(n=n, last_time=last_time, sum_log=sum_log, max_log=max_log, old_max=old_max)
        offset = state._read_body(blob, _HEADER.size, m, n_new, rows, n_num, n_cat)
        state.firsts = bytearray(blob[offset : offset + n_new * n_seen])
        offset += n_new * n_seen
        for _ in range(n_seen):
            (count,) = struct.unpack_from("<I", blob, offset)
            values = struct.unpack_from(f"<{count}Q{count}q", blob, offset + 4)
            state.seen.append(dict(zip(values[:count], values[count:], strict=True)))
            offset += 4 + 16 * count
        return state

    def _read_body(self, blob, offset, m, n_new, rows, n_num, n_cat) -> int:
        """Read times to ids (the part versions 1 and 2 share); the offset after them."""
        lists = struct.unpack_from(f"<{m}q{m}d{n_new}H{rows}H", blob, offset)
        offset += 16 * m + 2 * n_new + 2 * rows
        self.times = list(lists[:m])
        self.amounts = list(lists[m : 2 * m])
        self.new_totals = list(lists[2 * m : 2 * m + n_new])
        lengths = lists[2 * m + n_new :]
        self.numeric = np.frombuffer(blob, "<f4", rows * n_num, offset).reshape(rows, n_num)
        offset += 4 * rows * n_num
        self.codes = np.frombuffer(blob, "<i4", rows * n_cat, offset).reshape(rows, n_cat)
        offset += 4 * rows * n_cat
        ids = []
        for length in lengths:
            ids.append(blob[offset : offset + length].decode())
            offset += length
        self.ids = ids
        return offset

    @classmethod
    def _from_v1(cls, blob: bytes) -> AccountState:
        """A version-1 state (written before late events were inserted): the same events;
        what it did not keep is filled in conservatively. Values seen were first seen long
        ago, no event is known to have introduced a value (`firsts` 0), and the events it
        dropped had the largest log-amount of all if any were dropped."""
        (_, n, last_time, sum_log, max_log, m, n_new, rows, n_num, n_cat, n_seen) = (
            _HEADER_V1.unpack_from(blob, 0)
        )
        state = cls(n=n, last_time=last_time, sum_log=sum_log, max_log=max_log)
        offset = state._read_body(blob, _HEADER_V1.size, m, n_new, rows, n_num, n_cat)
        state.old_max = max_log if n > m else -math.inf
        state.firsts = bytearray(n_new * n_seen)
        for _ in range(n_seen):
            (count,) = struct.unpack_from("<I", blob, offset)
            hashes = struct.unpack_from(f"<{count}Q", blob, offset + 4)
            state.seen.append(dict.fromkeys(hashes, _LONG_AGO))
            offset += 4 + 8 * count
        return state


class _SeenBefore:
    """A column's seen values as they were just before a late event at `time`: a value
    counts as seen if it was first seen at or before that time (equal times: the earlier
    arrival is the earlier event)."""

    __slots__ = ("_seen", "_time")

    def __init__(self, seen: dict[int, int], time: int) -> None:
        self._seen, self._time = seen, time

    def __contains__(self, value_hash: int) -> bool:
        first = self._seen.get(value_hash)
        return first is not None and first <= self._time


class _Before:
    """A view of an account's history up to a position of `times` (the events before a late
    transaction, or before a stored event whose row is recomputed): what `LiveEncoder._raw`,
    `window_rows` and the reasons read, as `AccountState` has them."""

    __slots__ = ("n", "last_time", "sum_log", "max_log", "times", "amounts", "new_totals",
                 "seen", "flags", "numeric", "codes", "ids")  # fmt: skip


@dataclass(frozen=True)
class CounterpartyTotals:
    """What one transaction's counterparty features need: the counterparty's transactions
    and known frauds in each window of COUNTERPARTY_WINDOWS_DAYS ending at `hi` (its bucket
    minus the label delay), and its first and last bucket with a known fraud in the longest
    window (None without one). Stores may compute it (SQLite does, in SQL) rather than
    return every bucket: a busy counterparty has hundreds of hour buckets in 30 days."""

    counts: tuple[int, ...]
    frauds: tuple[int, ...]
    first_fraud: int | None = None
    last_fraud: int | None = None

    @classmethod
    def from_buckets(cls, buckets: dict[int, tuple[int, int]], hi: int) -> CounterpartyTotals:
        """The totals of (count, frauds) buckets (only buckets with transactions)."""
        lows = window_starts(hi)
        counts, frauds = [0] * len(lows), [0] * len(lows)
        fraud_buckets = []
        for bucket, (n, f) in buckets.items():
            if bucket >= hi:
                continue
            for i, lo in enumerate(lows):
                if bucket >= lo:
                    counts[i] += n
                    frauds[i] += f
            if f and bucket >= lows[-1]:
                fraud_buckets.append(bucket)
        return cls(
            tuple(counts),
            tuple(frauds),
            min(fraud_buckets) if fraud_buckets else None,
            max(fraud_buckets) if fraud_buckets else None,
        )


def window_starts(hi: int) -> list[int]:
    """The first bucket of each counterparty window (COUNTERPARTY_WINDOWS_DAYS) ending at hi."""
    return [hi - w * BUCKETS_PER_DAY for w in COUNTERPARTY_WINDOWS_DAYS]


@dataclass
class LiveFeatures:
    """The encoded features of one transaction and what appending it to the state needs."""

    numeric: np.ndarray  # (F,) float32, scaled like FeatureEncoder.transform
    codes: np.ndarray  # (C,) int32 vocabulary codes
    raw: dict[str, float]  # unscaled feature values by name
    hashes: list[int]  # per categorical column, the hash of the value
    new_total: int  # number of first-seen categorical values
    log_amount: float


class LiveEncoder:
    """A fitted FeatureEncoder's features for one transaction at a time.

    `encode(tx, account, counterparty)` returns the features of `tx` given the
    account's state (its earlier transactions) and the counterparty's hour buckets;
    `append(account, tx, features)` returns the state with `tx` added.
    """

    def __init__(self, encoder: FeatureEncoder, window: int) -> None:
        encoder._check_fitted()
        self.encoder = encoder
        self.schema = encoder.schema
        self.window = window
        self.blocks = tuple(encoder.blocks)
        unknown = [b for b in self.blocks if b not in (*_SUPPORTED_BLOCKS, "counterparty_risk")]
        if unknown:
            raise FraudseqError(
                f"live scoring does not implement the feature block(s) {unknown}; add their "
                f"incremental form to fraudseq.serving.live_features"
            )
        self.uses = {b: b in self.blocks for b in (*_SUPPORTED_BLOCKS, "counterparty_risk")}
        self.novelty = self.uses["novelty"] and bool(self.schema.categorical)
        self.counterparty = self.uses["counterparty_risk"] and self.schema.counterparty is not None
        self.names = list(encoder.numeric_names_)
        self.means = np.asarray(encoder.means_, dtype=np.float64)
        self.scales = np.asarray(encoder.scales_, dtype=np.float64)
        self.low, self.high = (np.asarray(v, dtype=np.float64) for v in encoder.feature_range)
        self.vocabularies = [
            {value: i + 2 for i, value in enumerate(encoder.vocabularies_[c])}
            for c in self.schema.categorical
        ]
        self.delay_buckets = label_delay_buckets(
            int(encoder.label_delay_days * SECONDS_PER_DAY * NS_PER_SECOND)
        )
        # Rows of the latest events (windows), the novelty zone (each row's new-value window
        # reaches 15 events back) and the events kept: enough to recompute every stored row
        # when a late event is inserted before it (LiveEncoder.insert).
        self.rows_kept = window - 1 + LATE_ROWS if window > 1 else 0
        self.zone = self.rows_kept + NOVELTY_WINDOW - 1 if self.novelty else 0
        self.keep_last = max(
            self.rows_kept + (HISTORY_LAST_N if self.uses["amount_history"] else 1),
            self.zone,
            1,
        )
        self.velocity_span = max(VELOCITY_WINDOWS_NS.values()) if self.uses["velocity"] else 0
        # Events within this of the latest stay in `times`: the velocity windows of every
        # event a late insertion can reach (0: only the latest keep_last events).
        self.retain_span = self.velocity_span + LATENESS_NS if self.uses["velocity"] else 0
        self.n_numeric = len(self.names)
        self.n_categorical = len(self.schema.categorical)
        # Feature names built once, not per transaction.
        self._novelty_names = [f"new_{column}" for column in self.schema.categorical]
        self._velocity = [
            (width, f"count_{name}", f"amount_{name}" if name in VELOCITY_AMOUNT_WINDOWS else None)
            for name, width in VELOCITY_WINDOWS_NS.items()
        ]
        self._counterparty_names = [
            (f"cp_count_{w}d", f"cp_risk_{w}d") for w in COUNTERPARTY_WINDOWS_DAYS
        ]
        self._numeric_names = [f"numeric:{column}" for column in self.schema.numeric]
        # The features that depend on the account's earlier events: a late insertion
        # recomputes these in each later stored row; the others (event, counterparty, extra
        # numeric) are the transaction's own.
        history_blocks = {
            "recency": ["log_gap_seconds", "has_previous"],
            "amount_history": [
                "amount_to_mean", "amount_zscore", "amount_to_max", "amount_to_median",
                "amount_robust_zscore", "n_previous",
            ],
            "novelty": [*self._novelty_names, "new_values_in_window"] if self.novelty else [],
            "velocity": [name for _, count, amount in self._velocity
                         for name in (count, amount) if name is not None],
        }  # fmt: skip
        wanted = {name for block, names in history_blocks.items() if self.uses[block]
                  for name in names}  # fmt: skip
        self.history_columns = np.array(
            [j for j, name in enumerate(self.names) if name in wanted], dtype=np.int64
        )
        self._check_names()

    def _check_names(self) -> None:
        """Fail at load, not with wrong scores, if a block's names changed since training."""
        probe = LiveTransaction(
            "probe", "probe", 0, 1.0, ("x",) * self.n_categorical,
            (0.0,) * len(self.schema.numeric), "x" if self.schema.counterparty else None, "",
        )  # fmt: skip
        produced = set(self._raw(probe, self.empty_state(), {})[0])
        if produced != set(self.names):
            raise FraudseqError(
                "live features do not match the model's encoder: the encoder has "
                f"{sorted(set(self.names) - produced)} that live scoring lacks and live scoring "
                f"computes {sorted(produced - set(self.names))} that the encoder lacks; the "
                "model was trained by another fraudseq version or a feature block changed"
            )

    def empty_state(self) -> AccountState:
        return AccountState(
            numeric=np.zeros((0, self.n_numeric), np.float32),
            codes=np.zeros((0, self.n_categorical), np.int32),
            seen=[{} for _ in self.schema.categorical] if self.novelty else [],
        )

    def counterparty_buckets(self, tx: LiveTransaction) -> tuple[int, int] | None:
        """The half-open range [lo, hi) of counterparty buckets the features read."""
        if not self.counterparty:
            return None
        hi = tx.bucket - self.delay_buckets
        return hi - max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY, hi

    @property
    def counterparty_retention_buckets(self) -> int:
        """Hour buckets older than the clock's bucket minus this many are purged: no
        transaction the clock accepts reads them."""
        longest = max(COUNTERPARTY_WINDOWS_DAYS) + COUNTERPARTY_SLACK_DAYS
        return self.delay_buckets + longest * BUCKETS_PER_DAY

    # -- the features --------------------------------------------------------------------
    def encode(
        self,
        tx: LiveTransaction,
        account: AccountState,
        counterparty: CounterpartyTotals | dict[int, tuple[int, int]] | None = None,
    ) -> LiveFeatures:
        """Raw and encoded features of `tx` after the account's stored events, given its
        counterparty's totals or (count, frauds) buckets."""
        raw, hashes, new_total, log_amount = self._raw(tx, account, counterparty or {})
        scaled = np.fromiter(map(raw.__getitem__, self.names), np.float64, self.n_numeric)
        np.subtract(scaled, self.means, out=scaled)  # FeatureEncoder.transform, row of one
        np.divide(scaled, self.scales, out=scaled)
        if (scaled >= self.low).all() and (scaled <= self.high).all():  # the common case,
            numeric = scaled.astype(np.float32)  # as clean_features gives it
        else:  # a NaN, an infinity or a value beyond the fitted range somewhere
            numeric = clean_features(scaled, (self.low, self.high))
        codes = [
            vocabulary.get(value, OOV_CODE)
            for vocabulary, value in zip(self.vocabularies, tx.categorical, strict=True)
        ]
        return LiveFeatures(
            numeric=numeric,
            codes=np.array(codes, dtype=np.int32),
            raw=raw,
            hashes=hashes,
            new_total=new_total,
            log_amount=log_amount,
        )

    def _raw(
        self, tx: LiveTransaction, account: AccountState, counterparty
    ) -> tuple[dict[str, float], list[int], int, float]:
        """Unscaled features by name, the categorical hashes, new-value total, log-amount."""
        raw: dict[str, float] = {}
        t = tx.time_ns
        amount = tx.amount
        log_amount = _signed_log1p(amount)
        n_prev = account.n
        if self.uses["event"]:
            raw.update(event_features(t, amount, log_amount, math))
        if self.uses["recency"]:
            # A late (out-of-order) transaction gets gap 0 rather than a negative gap.
            gap = float(max(t - account.last_time, 0)) / NS_PER_SECOND if n_prev else 0.0
            raw["log_gap_seconds"] = math.log1p(gap)
            raw["has_previous"] = 1.0 if n_prev else 0.0
        if self.uses["amount_history"]:
            raw.update(self._amount_history(account, log_amount))
        hashes: list[int] = []
        new_total = 0
        if self.novelty:
            flags = account.flags  # set when a stored event's row is recomputed
            for c, (seen, name, value) in enumerate(
                zip(account.seen, self._novelty_names, tx.categorical, strict=True)
            ):
                h = _value_hash(value)
                hashes.append(h)
                new = (0 if h in seen else 1) if flags is None else flags[c]
                new_total += new
                raw[name] = float(new)
            recent = account.new_totals[-(NOVELTY_WINDOW - 1) :]
            raw["new_values_in_window"] = float(sum(recent) + new_total)
        if self.uses["velocity"]:
            times, amounts = account.times, account.amounts
            for width, count_name, amount_name in self._velocity:
                first = bisect.bisect_right(times, t - width)
                raw[count_name] = math.log1p(len(times) - first)
                if amount_name is not None:
                    total = 0.0
                    for value in amounts[first:]:
                        total += value
                    raw[amount_name] = _signed_log1p(total)
        if self.counterparty:
            self._counterparty(tx, counterparty, raw)
        for name, value in zip(self._numeric_names, tx.numeric, strict=True):
            raw[name] = value
        return raw, hashes, new_total, log_amount

    def _amount_history(self, account: AccountState, log_amount: float) -> dict[str, float]:
        n_prev = account.n
        if n_prev == 0:
            return {
                "amount_to_mean": 0.0,
                "amount_zscore": 0.0,
                "amount_to_max": 0.0,
                "amount_to_median": 0.0,
                "amount_robust_zscore": 0.0,
                "n_previous": 0.0,
            }
        # Lags 1..N, most recent first, summed in the batch block's order.
        lags = [_signed_log1p(a) for a in reversed(account.amounts[-HISTORY_LAST_N:])]
        window_n = min(n_prev, HISTORY_LAST_N)
        window_sum = 0.0
        for value in lags:
            window_sum += value
        window_mean = window_sum / window_n
        window_sq = 0.0
        for value in lags:
            window_sq += (value - window_mean) ** 2
        window_std = math.sqrt(window_sq / window_n)
        zscore = (
            (log_amount - window_mean) / (window_std + ZSCORE_STD_FLOOR) if n_prev >= 2 else 0.0
        )
        median = _median(lags)
        mad = _median([abs(value - median) for value in lags])
        return {
            "amount_to_mean": log_amount - account.sum_log / n_prev,
            "amount_zscore": zscore,
            "amount_to_max": log_amount - account.max_log,
            "amount_to_median": log_amount - median,
            "amount_robust_zscore": (
                (log_amount - median) / (mad + ZSCORE_STD_FLOOR) if n_prev >= 2 else 0.0
            ),
            "n_previous": math.log1p(n_prev),
        }

    def _counterparty(self, tx: LiveTransaction, counterparty, out: dict[str, float]) -> None:
        """As `feature_blocks.counterparty_risk_features`, from the counterparty's totals
        (or its buckets), into `out`."""
        hi = tx.bucket - self.delay_buckets
        totals = (
            counterparty
            if isinstance(counterparty, CounterpartyTotals)
            else CounterpartyTotals.from_buckets(counterparty, hi)
        )
        for (count_name, risk_name), count, fraud in zip(
            self._counterparty_names, totals.counts, totals.frauds, strict=True
        ):
            out[count_name] = math.log1p(count)
            out[risk_name] = fraud / max(count, 1)
        first, last = totals.first_fraud, totals.last_fraud
        no_fraud = first is None
        out["cp_first_fraud_days"] = 0.0 if no_fraud else (tx.bucket - first) / BUCKETS_PER_DAY
        out["cp_last_fraud_days"] = 0.0 if no_fraud else (tx.bucket - last) / BUCKETS_PER_DAY

    # -- the window and the state update -------------------------------------------------
    def window_rows(
        self, account: AccountState, features: LiveFeatures
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encoded rows (L, F) float32 and codes (L, C) int64 of the window, oldest first."""
        numeric = np.concatenate([account.numeric, features.numeric[None, :]])
        codes = np.concatenate([account.codes, features.codes[None, :]]).astype(np.int64)
        return numeric[-self.window :], codes[-self.window :]

    def append(
        self, account: AccountState, tx: LiveTransaction, features: LiveFeatures
    ) -> AccountState:
        """The account's state with `tx` added as its latest event (in place; returned).
        `tx` is not older than the account's latest event (else see `insert`)."""
        t = tx.time_ns
        account.n += 1
        account.last_time = max(account.last_time, t) if account.n > 1 else t
        account.sum_log += features.log_amount
        account.max_log = max(account.max_log, features.log_amount)
        account.times.append(t)
        account.amounts.append(tx.amount)
        self._retain(account)
        if self.novelty:
            account.new_totals.append(features.new_total)
            marks = self._marks(features)
            account.firsts += marks
            if len(account.new_totals) > self.zone:
                del account.new_totals[: -self.zone]
                del account.firsts[: -self.zone * self.n_categorical]
            for seen, h, mark in zip(account.seen, features.hashes, marks, strict=True):
                if mark:  # first seen now
                    seen[h] = t
                    if len(seen) > SEEN_CAP:
                        del seen[next(iter(seen))]
        keep = self.rows_kept
        if keep > 0:
            account.numeric = np.concatenate([account.numeric, features.numeric[None, :]])[-keep:]
            account.codes = np.concatenate([account.codes, features.codes[None, :]])[-keep:]
            account.ids = [*account.ids, tx.id][-keep:]
        return account

    def _marks(self, features: LiveFeatures) -> bytes:
        """`firsts` of an event: per column, `first_mark` of its value if new, else 0."""
        return bytes(
            first_mark(h) if features.raw[name] else 0
            for h, name in zip(features.hashes, self._novelty_names, strict=True)
        )

    def _retain(self, account: AccountState) -> None:
        """Drop the events `times` no longer needs (older than the latest minus retain_span
        beyond the latest keep_last, or beyond max(VELOCITY_CAP, keep_last)); `old_max`
        keeps the largest log-amount of what was dropped."""
        times = account.times
        drop = 0
        limit = len(times) - self.keep_last
        horizon = account.last_time - self.retain_span
        while drop < limit and times[drop] <= horizon:
            drop += 1
        drop = max(drop, len(times) - max(VELOCITY_CAP, self.keep_last))
        if drop > 0:
            old_max = account.old_max
            for amount in account.amounts[:drop]:
                old_max = max(old_max, _signed_log1p(amount))
            account.old_max = old_max
            del times[:drop]
            del account.amounts[:drop]

    # -- late transactions ---------------------------------------------------------------
    def before(self, account: AccountState, time_ns: int) -> _Before:
        """The account's history before a late transaction at `time_ns` (after stored events
        of the same time), as the state holds it: what its features and window are computed
        from. All of it when the transaction can be inserted (`can_insert`), except the rows
        of more than LATE_ROWS later events."""
        return self._view(account, bisect.bisect_right(account.times, time_ns), time_ns)

    def _view(
        self,
        account: AccountState,
        pos: int,
        time_ns: int,
        flags: list[int] | None = None,
        logs: list[float] | None = None,
    ) -> _Before:
        """The history before position `pos` of `times`; `flags`: the novelty flags of the
        event at `pos` (a stored event whose row is recomputed) instead of the seen sets;
        `logs`: the signed log-amounts of `amounts`, when already computed."""
        times, amounts = account.times, account.amounts
        if logs is None:
            logs = [_signed_log1p(amount) for amount in amounts]
        later = len(times) - pos
        view = _Before()
        view.n = account.n - later
        view.last_time = times[pos - 1] if pos else time_ns
        view.sum_log = account.sum_log - sum(logs[pos:])
        view.max_log = max(account.old_max, *logs[:pos]) if pos else account.old_max
        view.times, view.amounts = times[:pos], amounts[:pos]
        zone_start = len(times) - len(account.new_totals)
        view.new_totals = account.new_totals[: max(pos - zone_start, 0)]
        view.seen = [_SeenBefore(seen, time_ns) for seen in account.seen]
        view.flags = flags
        rows = max(pos - (len(times) - len(account.ids)), 0)
        view.numeric, view.codes, view.ids = (
            account.numeric[:rows], account.codes[:rows], account.ids[:rows]
        )  # fmt: skip
        return view

    def can_insert(self, account: AccountState, time_ns: int) -> bool:
        """Whether a transaction at `time_ns` enters the account's history: always when it
        is not older than the latest event; a late one when it is at most LATENESS_NS older
        and the state still holds the events around its place."""
        if account.n == 0 or time_ns >= account.last_time:
            return True
        if time_ns < account.last_time - LATENESS_NS:
            return False
        return account.n == len(account.times) or time_ns >= account.times[0]

    def insert(
        self, account: AccountState, tx: LiveTransaction, features: LiveFeatures
    ) -> AccountState:
        """The account's state with the late `tx` inserted in time order (after stored
        events of its time), in place; `features` are those computed on `before(account,
        tx.time_ns)` and `can_insert` holds. The result equals the state had the events
        arrived in time order: the aggregates take `tx` in, every stored event later than it
        gets the novelty flags, totals and history features it has with `tx` before it
        (its row's history columns are recomputed), and the retention rules are applied."""
        if account.n == 0 or tx.time_ns >= account.last_time:
            return self.append(account, tx, features)
        t = tx.time_ns
        times = account.times
        pos = bisect.bisect_right(times, t)
        zone_start = len(times) - len(account.new_totals)
        rows_start = len(times) - len(account.ids)
        account.n += 1
        account.sum_log += features.log_amount
        account.max_log = max(account.max_log, features.log_amount)
        width = self.n_categorical
        if self.novelty:
            marks = self._marks(features)
            for c, (seen, h, mark) in enumerate(
                zip(account.seen, features.hashes, marks, strict=True)
            ):
                if not mark:
                    continue
                first = seen.get(h)
                if first is not None:  # a later event introduced it: no longer new there
                    for i in range(len(account.new_totals)):
                        if times[zone_start + i] == first and account.firsts[i * width + c] == mark:
                            account.firsts[i * width + c] = 0
                            account.new_totals[i] -= 1
                            break
                seen[h] = t
                if first is not None or next(reversed(seen.values())) > t or len(seen) > 1:
                    ordered = sorted(seen.items(), key=_first_seen)  # stable: arrival order
                    seen.clear()
                    seen.update(ordered)
                if len(seen) > SEEN_CAP:
                    del seen[next(iter(seen))]
            if pos >= zone_start:
                i = pos - zone_start
                account.new_totals.insert(i, features.new_total)
                account.firsts[i * width : i * width] = marks
                if len(account.new_totals) > self.zone:
                    del account.new_totals[: -self.zone]
                    del account.firsts[: -self.zone * width]
        times.insert(pos, t)
        account.amounts.insert(pos, tx.amount)
        keep = self.rows_kept
        if keep > 0:
            numeric, codes, ids = np.array(account.numeric), account.codes, account.ids
            if pos >= rows_start:
                i = pos - rows_start
                numeric = np.insert(numeric, i, features.numeric, axis=0)
                codes = np.insert(codes, i, features.codes, axis=0)
                ids = [*ids[:i], tx.id, *ids[i:]]
            account.numeric, account.codes, account.ids = (
                numeric[-keep:],
                codes[-keep:],
                ids[-keep:],
            )
            self._refresh_rows(account, t)
        self._retain(account)
        return account

    def _refresh_rows(self, account: AccountState, after: int) -> None:
        """Recompute the history columns of the stored rows of events later than `after`
        (a time), from the history before each: what they would hold had the events come in
        time order."""
        times, amounts = account.times, account.amounts
        rows_start = len(times) - len(account.ids)
        zone_start = len(times) - len(account.new_totals)
        width = self.n_categorical
        columns = self.history_columns
        no_values = ("",) * width
        no_numbers = (0.0,) * len(self.schema.numeric)
        logs = [_signed_log1p(amount) for amount in amounts]
        for r in range(len(account.ids)):
            pos = rows_start + r
            if times[pos] <= after:
                continue
            flags = None
            if self.novelty:
                i = pos - zone_start
                flags = [int(account.firsts[i * width + c] != 0) for c in range(width)]
            view = self._view(account, pos, times[pos], flags, logs)
            event = LiveTransaction(
                account.ids[r], "", times[pos], amounts[pos], no_values, no_numbers,
                "" if self.counterparty else None, "",
            )  # fmt: skip
            account.numeric[r, columns] = self.encode(event, view, None).numeric[columns]


def event_features(time_ns, amount, log_amount, xp) -> dict:
    """The event block's features of one transaction (xp = math) or of arrays (xp = numpy)."""
    seconds = time_ns // NS_PER_SECOND
    day_fraction = (seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY
    week_fraction = ((seconds // SECONDS_PER_DAY + 3) % 7) / 7
    return {
        "log_amount": log_amount,
        "amount": amount,
        "hour_sin": xp.sin(2 * math.pi * day_fraction),
        "hour_cos": xp.cos(2 * math.pi * day_fraction),
        "dow_sin": xp.sin(2 * math.pi * week_fraction),
        "dow_cos": xp.cos(2 * math.pi * week_fraction),
    }


def _median(values: list[float]) -> float:
    """As `feature_blocks.robust_statistics` computes it: the mean of the middle two."""
    ordered = sorted(values)
    k = len(ordered)
    return (ordered[(k - 1) // 2] + ordered[k // 2]) / 2


def _first_seen(item: tuple[int, int]) -> int:
    return item[1]


def _signed_log1p(value: float) -> float:
    if value > 0:
        return math.log1p(value)
    if value < 0:
        return -math.log1p(-value)
    return 0.0


@functools.lru_cache(maxsize=1 << 16)  # categorical values repeat: hash each one once
def _value_hash(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")
