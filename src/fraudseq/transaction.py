"""The canonical transaction: one validated transaction (`LiveTransaction`, the row form) and
a batch of them (`TransactionColumns`, the column form), parsed from request dicts.

A request has the fields of `request_columns`: the canonical id column
(``transaction_id`` when the schema names no id), each source column of the entity (none for
one stream), time, amount, categorical, numeric and counterparty. Values are canonicalised
with the rules `load_transactions` uses, from `fraudseq.schema` (missing values:
`is_missing`; text of numbers: `number_text`; composite keys: `entity_key`; numeric times:
`numeric_times`; times within EARLIEST_TIME..LATEST_TIME, naive UTC nanoseconds), so a
transaction gives the same values whether it comes from a file or from a request.
`parse_transaction` parses one (and names the bad field); `parse_batch` parses a list a
column at a time and gives the same values and digests.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from typing import NamedTuple

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError
from fraudseq.features.constants import COUNTERPARTY_BUCKET_NS
from fraudseq.schema import (
    _NOW_WORDS,
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ABS_AMOUNT,
    MISSING_CATEGORY,
    STREAM_KEY,
    STRING_DTYPE,
    TIME_UNITS,
    TIME_YEARS,
    Schema,
    entity_key,
    is_missing,
    number_text,
    numeric_times,
)

__all__ = [
    "LiveTransaction",
    "TransactionColumns",
    "content_digest",
    "history_frame",
    "history_json",
    "parse_batch",
    "parse_transaction",
    "request_columns",
    "request_entity",
]

# ISO 8601 with at most microseconds (datetime.fromisoformat would drop nanoseconds).
_ISO_MICROSECONDS = re.compile(
    r"(19|20)\d\d-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?)?(Z|[+-]\d\d:?\d\d)?"
)
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


# -- one transaction: the row form -------------------------------------------------------
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

    def history_json(self) -> str:
        """This transaction as a store's history log keeps it (`history_json`): the
        columns of a batch of one."""
        columns = [
            [self.id],
            [self.entity],
            [self.time_ns],
            [self.amount],
            [[value] for value in self.categorical],
            [[value] for value in self.numeric],
            None if self.counterparty is None else [self.counterparty],
        ]
        return json.dumps(columns, separators=(",", ":"))


def parse_transaction(tx, schema: Schema) -> LiveTransaction:
    """Validate and canonicalise a transaction dict keyed by the schema's column names.

    The fields are `request_columns(schema)`: the id under `schema.id_column`, the entity
    as its source column(s). The entity key is that of `load_transactions`: the one
    column's text, `entity_key` of a composite key's parts (a missing part is "<NA>", all
    parts missing is an error), or `STREAM_KEY` without an entity. The label and scenario
    columns are not needed and are ignored if present, like any column the schema does not
    name. Raises DataValidationError naming the field.
    """
    columns = request_columns(schema)
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
def request_columns(schema: Schema) -> tuple[str, ...]:
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


def request_entity(tx: dict, schema: Schema) -> str:
    """The entity key of a request dict, as `parse_transaction` forms it (and
    `load_transactions` from a file): the one entity column's text, `entity_key` of a
    composite key's parts, or `STREAM_KEY` without an entity. Only the entity's fields are
    read (a producer partitioning by account needs no more). Raises DataValidationError."""
    if not isinstance(tx, dict):
        raise DataValidationError(
            f"a transaction must be a JSON object / dict keyed by column name, got "
            f"{type(tx).__name__}"
        )
    for column in schema.entity_parts:
        if column not in tx:
            raise DataValidationError(
                f"transaction {_id_hint(tx, schema)}: missing field {column!r} (entity)"
            )
    return _entity(tx, schema)


def _entity(tx: dict, schema: Schema) -> str:
    """The entity key, as `load_transactions` makes it from the entity's source columns."""
    parts = schema.entity_parts
    if not parts:
        return STREAM_KEY
    if len(parts) == 1:
        return _text(tx[parts[0]], parts[0], "entity", tx, schema)
    values = [tx[c] for c in parts]
    if all(map(is_missing, values)):
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


def _text(value, column, what, tx, schema) -> str:
    """Id or entity: text or an integer (integral floats lose their '.0'), never missing."""
    if is_missing(value):
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
        return number_text(float(value))
    raise _bad(tx, schema, column, f"the {what} must be text or an integer", value, "send text.")


def _category(value, column, tx, schema) -> str:
    """Categorical / counterparty value as load_transactions gives it; missing -> "<NA>"."""
    if is_missing(value):
        return MISSING_CATEGORY
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return number_text(float(value))
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
    number = None if is_missing(value) else _as_float(value)
    if number is None or not abs(number) < MAX_ABS_AMOUNT:  # NaN and infinity too
        raise _bad(
            tx, schema, column, "missing, non-numeric, infinite or out-of-range amount", value,
            "amounts must be plain finite numbers such as 12.50 or -3 (refunds may be "
            f"negative), smaller than {MAX_ABS_AMOUNT:g} in absolute value.",
        )  # fmt: skip
    return number


def _number(value, column, tx, schema) -> float:
    """Extra numeric column: missing -> NaN (allowed); text and infinity are errors."""
    if is_missing(value):
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
        f"offsets are converted), within years {TIME_YEARS}"
        + (
            f", or a number of {schema.time_unit!r} since {schema.time_origin}."
            if schema.time_unit is not None
            else "."
        )
    )
    if is_missing(value) or isinstance(value, bool | np.bool_):
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
        if not (EARLIEST_TIME <= stamp <= LATEST_TIME):
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
            f"{schema.time_origin}; origin + value must fall within years {TIME_YEARS}.",
        )  # fmt: skip
    return time_ns


def numeric_time_ns(value, unit: str, origin) -> int | None:
    """Nanoseconds of one number of `unit` since `origin` (`numeric_times`, as files), or
    None when it is not finite or falls outside EARLIEST_TIME..LATEST_TIME."""
    try:
        times, bad = numeric_times([float(value)], unit, origin)
    except OverflowError:  # an integer beyond float: out of range too
        return None
    return None if bad[0] else int(times.view(np.int64)[0])


# -- many transactions: the column form --------------------------------------------------


@dataclass
class TransactionColumns:
    """Validated, canonical transactions as columns (what `parse_transaction` gives, by
    column): `row(i)` is transaction i's LiveTransaction.

    The content digests (`digests`, `digest(i)`) are made from the columns when first
    asked for, not by the parser: a batch of new transactions scored with the memory
    store needs none until a record is read back (a retry, feedback), and a hash per
    transaction is ~1.7 us, a tenth of a live batch's time. `_digests` holds them once
    made (or as given)."""

    ids: list[str]
    entities: list[str]
    time_ns: np.ndarray  # int64
    amount: np.ndarray  # float64
    categorical: list[list[str]]  # per categorical column
    numeric: list[list[float]]  # per extra numeric column
    counterparty: list[str] | None
    _digests: list[str] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def digests(self) -> list[str]:
        """Every transaction's `LiveTransaction.digest` (made once, on first use)."""
        if self._digests is None:
            n = len(self.ids)
            # The digest of parse_transaction, of the same canonical values (same types).
            cat_rows = list(zip(*self.categorical, strict=True)) if self.categorical else [()] * n
            num_rows = list(zip(*self.numeric, strict=True)) if self.numeric else [()] * n
            cps = self.counterparty if self.counterparty is not None else [None] * n
            self._digests = list(
                map(
                    content_digest, self.ids, self.entities, self.time_ns.tolist(),
                    self.amount.tolist(), cat_rows, num_rows, cps,
                )
            )  # fmt: skip
        return self._digests

    def digest(self, i: int) -> str:
        """Transaction i's digest (without making the others')."""
        return self._digests[i] if self._digests is not None else self.row(i).digest

    def row(self, i: int) -> LiveTransaction:
        canonical = (
            self.ids[i],
            self.entities[i],
            int(self.time_ns[i]),
            float(self.amount[i]),
            tuple(c[i] for c in self.categorical),
            tuple(c[i] for c in self.numeric),
            self.counterparty[i] if self.counterparty is not None else None,
        )
        digest = self._digests[i] if self._digests is not None else content_digest(*canonical)
        return LiveTransaction(*canonical, digest)

    def take(self, index) -> TransactionColumns:
        index = list(index)
        digests = self._digests
        return TransactionColumns(
            [self.ids[i] for i in index],
            [self.entities[i] for i in index],
            self.time_ns[index],
            self.amount[index],
            [[c[i] for i in index] for c in self.categorical],
            [[c[i] for i in index] for c in self.numeric],
            [self.counterparty[i] for i in index] if self.counterparty is not None else None,
            [digests[i] for i in index] if digests is not None else None,
        )

    @property
    def bucket(self) -> np.ndarray:
        """Counterparty buckets (UTC hours), as `LiveTransaction.bucket`."""
        return self.time_ns // COUNTERPARTY_BUCKET_NS

    def history_json(self) -> str:
        """These transactions as a store's history log keeps them (`history_json`)."""
        columns = [
            self.ids,
            self.entities,
            self.time_ns.tolist(),
            self.amount.tolist(),
            self.categorical,
            self.numeric,
            self.counterparty,
        ]
        return json.dumps(columns, separators=(",", ":"))

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


#: Exact types the column-at-a-time parser accepts (`set(map(type, ...))` checks a column
#: in C; subclasses such as bool go to the row parser).
_STR, _DICT = {str}, {dict}
_NUMBER, _NUMBER_OR_NONE = {float, int}, {float, int, type(None)}


def _clean_text(values: list) -> bool:
    """Every value is a str with a non-blank character (so canonical as it is)."""
    return set(map(type, values)) <= _STR and all(map(str.strip, values))


def _fast_columns(txs, schema: Schema) -> TransactionColumns | None:
    """The columns of the common case, or None (then the row-by-row parser decides)."""
    if not set(map(type, txs)) <= _DICT:
        return None
    required = request_columns(schema)
    if min(map(len, txs), default=len(required)) < len(required):
        return None
    column = {c: [tx[c] for tx in txs] for c in required}  # KeyError: a missing field
    ids = column[schema.id_column]
    entities = _fast_entities(column, txs, schema)
    if entities is None or not _clean_text(ids):
        return None
    amounts = column[schema.amount]
    if not set(map(type, amounts)) <= _NUMBER:
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
        if not set(map(type, values)) <= _NUMBER_OR_NONE:
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
    # The digests are made when first asked for (`TransactionColumns.digests`).
    return TransactionColumns(ids, entities, time_ns, amount, categorical, numeric, counterparty)


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
    if not clean and any(all(is_missing(column[c][i]) for c in parts) for i in range(len(txs))):
        return None  # the row parser names the transaction without any part
    return [entity_key(key) for key in zip(*texts, strict=True)]


def _fast_times(times: list, schema: Schema) -> np.ndarray | None:
    """Naive-UTC int64 nanoseconds of ISO strings (or, with the schema's [time] table, of
    plain numbers), or None (the row parser decides)."""
    if schema.time_unit is not None and set(map(type, times)) <= _NUMBER:
        values, bad = numeric_times(
            np.array(times, dtype=np.float64), schema.time_unit, schema.time_origin
        )
        return None if bad.any() else values.view(np.int64)
    if not set(map(type, times)) <= _STR:
        return None
    seconds = _iso_seconds(times)
    if seconds is not None:
        return seconds
    times = [v.strip() for v in times]
    match = _ISO_MICROSECONDS.fullmatch
    if not all(match(v) for v in times):
        return None
    stamps = pd.to_datetime(pd.Series(times, dtype=object), format="ISO8601", utc=True)
    return stamps.dt.tz_localize(None).to_numpy().astype("datetime64[ns]").view(np.int64)


#: Positions of the digits in YYYY-MM-DDTHH:MM:SS, and of its separators (code points).
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_SEPARATORS = {4: ord("-"), 7: ord("-"), 13: ord(":"), 16: ord(":")}


def _iso_seconds(times: list[str]) -> np.ndarray | None:
    """Nanoseconds of times that all read YYYY-MM-DDTHH:MM:SS (or with a space for the T,
    or a final Z), the shape `_ISO_MICROSECONDS` accepts with whole seconds and no offset,
    checked and read a column at a time (numpy's datetime64 parser refuses a month, day,
    hour, minute or second out of range); None for any other shape."""
    text = np.array(times)
    width = text.dtype.itemsize // 4
    if text.dtype.kind != "U" or width not in (19, 20) or not len(text):
        return None
    chars = text.view(np.uint32).reshape(len(text), width)
    if (chars == 0).any() or (width == 20 and (chars[:, 19] != ord("Z")).any()):
        return None  # a shorter one, or a last character other than Z
    ok = ((chars[:, _DIGITS] - ord("0")) <= 9).all()  # unsigned: below "0" wraps around
    century = chars[:, 0] * 256 + chars[:, 1]
    ok &= ((century == ord("1") * 256 + ord("9")) | (century == ord("2") * 256 + ord("0"))).all()
    ok &= ((chars[:, 10] == ord("T")) | (chars[:, 10] == ord(" "))).all()
    for at, code in _SEPARATORS.items():
        ok &= (chars[:, at] == code).all()
    if not ok:
        return None
    if width == 20:
        text = np.ascontiguousarray(chars[:, :19]).view("<U19").reshape(-1)
    try:
        return text.astype("datetime64[s]").astype("datetime64[ns]").view(np.int64)
    except ValueError:  # out of range: the row parser names it
        return None


# -- the history log: scored transactions as a store keeps them ---------------------------


def history_json(transactions: LiveTransaction | TransactionColumns) -> str:
    """The log entry of one transaction or a batch: the JSON array of the columns of
    `TransactionColumns` but the digests, ``[ids, entities, time_ns, amount, [categorical
    columns], [numeric columns], counterparty or null]`` (one transaction: columns of
    one). Columns, not rows: json encodes lists of plain values in C, about twice as fast
    as a list per transaction. Missing numeric values are written as NaN, which
    `history_frame` reads back."""
    return transactions.history_json()


def history_frame(entries: list[str], schema: Schema) -> pd.DataFrame:
    """The transactions of log entries (`history_json` texts) as a canonical frame:
    `schema.columns(with_label=False)` without the scenario, in the entries' order. All
    entries are parsed by one `json.loads` and their columns joined by `chain`: a loop per
    entry and column, none per transaction."""
    logged = json.loads("[" + ",".join(entries) + "]")

    def joined(field: int, column: int | None = None) -> list:
        if column is None:
            return list(chain.from_iterable(entry[field] for entry in logged))
        return list(chain.from_iterable(entry[field][column] for entry in logged))

    out: dict = {
        schema.id_column: pd.Series(joined(0), dtype=STRING_DTYPE),
        schema.entity_column: pd.Series(joined(1), dtype=STRING_DTYPE),
        schema.time: np.array(joined(2), dtype=np.int64).view("datetime64[ns]"),
        schema.amount: np.array(joined(3), dtype=np.float64),
    }
    for j, column in enumerate(schema.categorical):
        out[column] = pd.Series(joined(4, j), dtype=STRING_DTYPE)
    for j, column in enumerate(schema.numeric):
        out[column] = np.array(joined(5, j), dtype=np.float64)
    if schema.counterparty and schema.counterparty not in out:
        out[schema.counterparty] = pd.Series(joined(6), dtype=STRING_DTYPE)
    columns = [c for c in schema.columns(with_label=False) if c in out]
    return pd.DataFrame({c: out[c] for c in columns})
