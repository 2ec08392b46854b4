"""Column roles (the schema) and loading + validating transaction tables.

Users name their columns once, in the ``[columns]`` table of a TOML file::

    [columns]
    id = "tx_id"              # unique transaction id    (optional: the 1-based data row)
    entity = "card_id"        # whose history forms the sequence (optional: one stream;
                              # a list such as ["card1", "addr1"] is a composite key)
    time = "ts"               # timestamp                        (required)
    amount = "amount"         # transaction amount               (required)
    label = "is_fraud"        # 0/1: required to train/evaluate, optional to score
    categorical = ["mcc", "country"]   # optional
    numeric = []              # optional extra numeric columns
    counterparty = "merchant_id"  # optional: merchant/terminal with a delayed-label fraud rate
    scenario = "fraud_type"   # optional: only to break down results, never a feature

    [time]                    # only for a numeric time column: its unit and origin
    unit = "s"                # ns, us, ms, s, m, h or D
    origin = "1970-01-01"     # an ISO date or time (UTC)

:func:`load_transactions` reads a CSV, CSV.gz or Parquet file (or takes a DataFrame),
keeps only the schema's columns, converts them to canonical form, validates them and
sorts by time. The canonical frame always has an id column (:attr:`Schema.id_column`) and
one entity column (:attr:`Schema.entity_column`), whatever the file has:

============================  =========================================================
role                          canonical form
============================  =========================================================
id                            pandas' default string dtype ``"str"`` (pandas 3:
                              ``StringDtype(na_value=nan)``); integers become "123",
                              integral floats 123.0 become "123"; never missing. Without
                              an id column: the 1-based data row ("1", "2", ...), in
                              the column ``transaction_id``
entity                        ``"str"`` as above, never missing. A composite key's parts
                              are joined by :func:`entity_key` (a missing part is
                              ``"<NA>"``, a value of its own) into the column named
                              ``"card1+addr1"``; without an entity, the column
                              ``stream`` holds ``"all"``: one stream in time order
categorical, counterparty,    ``"str"`` as above; missing values (NaN/None/"") become
scenario                      the literal string ``"<NA>"`` (:data:`MISSING_CATEGORY`)
time                          ``datetime64[ns]``, naive, in UTC (aware input is converted
                              to UTC; ISO 8601 strings and datetimes accepted; numbers
                              only with a ``[time]`` table giving their unit and origin)
amount                        ``float64``; finite; zero and negative (refunds) allowed
numeric                       ``float64``; missing values stay NaN; text/infinity rejected
label                         ``int8`` holding 0/1; ``float64`` with NaN for a label
                              not known (an empty cell), when some are empty
============================  =========================================================

Label and scenario are ground truth: they may be absent from the data (scoring) and are
then simply not returned. With ``require_label=True`` (evaluation) a missing label column
or a missing label value is an error; with ``require_label=UNKNOWN_LABELS`` (training) the
column must be there and an empty label is not known (NaN); otherwise (scoring) the column
is optional and an empty label is not known (NaN), with a warning. Columns in the data
that the schema does not name are not read (CSV/Parquet) and are logged as ignored on the
``"fraudseq"`` logger.

Every problem raises :class:`~fraudseq.errors.DataValidationError` (bad data) or
:class:`~fraudseq.errors.SchemaError` (bad schema) whose message names the file, the
column, up to five offending rows with their values, and a fix. Row numbers are 1-based
data rows of the file (the header is not counted); for a DataFrame they are its index
labels.
"""

from __future__ import annotations

import difflib
import logging
import math
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError, FraudseqError, SchemaError
from fraudseq.io import table_format

__all__ = [
    "MISSING_CATEGORY",
    "STRING_DTYPE",
    "UNKNOWN_LABELS",
    "Schema",
    "ignored_columns",
    "load_transactions",
]

logger = logging.getLogger("fraudseq")

#: The value that missing categorical / counterparty / scenario values are replaced with.
MISSING_CATEGORY = "<NA>"
#: Amounts must be smaller than this in absolute value: no payment comes near it, and above
#: 2**53 (9e15) float64 no longer holds every integer, let alone cents.
MAX_ABS_AMOUNT = 1e15
#: `require_label` of training: the label column must be there, but a row's label may be
#: empty: a label not known (yet), NaN in the frame. Such a row is history (features and
#: windows use it as any transaction) and never a training or validation target; in the
#: counterparty features it is not a known fraud. `True` (evaluation) needs every label.
UNKNOWN_LABELS = "unknown-allowed"
#: The dtype of every text column returned by :func:`load_transactions` (pandas' default
#: string dtype: in pandas 3 an Arrow-backed ``StringDtype`` with NaN as missing value).
STRING_DTYPE = "str"

_REQUIRED_KEYS = ("time", "amount")
_OPTIONAL_STR_KEYS = ("id", "label", "counterparty", "scenario")
_LIST_KEYS = ("categorical", "numeric")
#: Keys allowed in the ``[columns]`` table, in role order.
ALLOWED_KEYS = (
    "id",
    "entity",
    "time",
    "amount",
    "label",
    "categorical",
    "numeric",
    "counterparty",
    "scenario",
)
_TOP_LEVEL_KEYS = ("columns", "time")
_TIME_KEYS = ("unit", "origin")
#: Units of a numeric time column, in nanoseconds (numpy's and pandas' unit names).
TIME_UNITS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "D": 86_400_000_000_000,
}
#: The canonical id column when the data has none (its values are 1-based data rows).
ROW_ID_COLUMN = "transaction_id"
#: The canonical entity column when the data has none, and the one value it holds.
STREAM_COLUMN = "stream"
STREAM_KEY = "all"
#: Separator of a composite entity key's parts (escaped with a backslash inside a part).
ENTITY_SEPARATOR = "|"
_MAX_ROWS_SHOWN = 5
_NOW_WORDS = ("now", "today", "tomorrow", "yesterday")

_EXAMPLE = '[columns]\ntime = "ts"\namount = "amount"\nentity = "card_id"\nlabel = "is_fraud"'
_TIME_EXAMPLE = '[time]\nunit = "s"\norigin = "1970-01-01"'


def _closest(name: str, candidates: Iterable[Any]) -> str | None:
    names = [str(c) for c in candidates]
    match = difflib.get_close_matches(str(name), names, n=1, cutoff=0.7)
    if match:
        return match[0]
    lowered = {n.lower(): n for n in names}
    return lowered.get(str(name).lower())


def _did_you_mean(name: str, candidates: Iterable[Any]) -> str:
    match = _closest(name, candidates)
    return f" (did you mean {match!r}?)" if match is not None else ""


def entity_key(parts: Iterable[str]) -> str:
    """One composite entity key from its parts' canonical text (see :func:`entity_keys`)."""
    return ENTITY_SEPARATOR.join(
        p.replace("\\", "\\\\").replace(ENTITY_SEPARATOR, "\\" + ENTITY_SEPARATOR) for p in parts
    )


def entity_key_parts(key: str) -> list[str]:
    """The parts of a composite entity key: the inverse of :func:`entity_key`."""
    parts, current, escaped = [], [], False
    for ch in key:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ENTITY_SEPARATOR:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def entity_keys(parts: list[pd.Series]) -> pd.Series:
    """:func:`entity_key` of every row, vectorised: parts escaped, joined by '|'."""
    escaped = [
        p.str.replace("\\", "\\\\", regex=False).str.replace(
            ENTITY_SEPARATOR, "\\" + ENTITY_SEPARATOR, regex=False
        )
        for p in parts
    ]
    key = escaped[0]
    for part in escaped[1:]:
        key = key + ENTITY_SEPARATOR + part
    return key.astype(STRING_DTYPE)


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True, kw_only=True)
class Schema:
    """Which column of the data plays which role. Build it with :meth:`from_toml`.

    ``id`` and ``entity`` are optional (see the module docstring); ``entity`` is one
    column name or a tuple of them (a composite key). ``time_unit`` and ``time_origin``
    (the ``[time]`` table) say how to read a numeric time column.
    """

    id: str | None = None
    entity: str | tuple[str, ...] | None = None
    time: str
    amount: str
    label: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    counterparty: str | None = None
    scenario: str | None = None
    time_unit: str | None = None
    time_origin: str | None = None

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        if isinstance(self.entity, list | tuple):
            parts = tuple(self.entity)
            object.__setattr__(self, "entity", parts[0] if len(parts) == 1 else parts or None)
        _validate_columns_table(
            {k: getattr(self, k) for k in ALLOWED_KEYS if getattr(self, k) is not None},
            "Schema(...)",
        )
        _validate_time_table(self.time_unit, self.time_origin, "Schema(...)")
        _check_canonical_names(self, "Schema(...)")

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> Schema:
        """Read the ``[columns]`` (and ``[time]``) tables of a TOML file."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise SchemaError(
                f"{path}: schema file not found. Fix: check the path, or start from "
                f"schemas/simulator.toml in the fraudseq repository."
            ) from None
        except (OSError, UnicodeDecodeError) as err:
            raise SchemaError(
                f"{path}: cannot read the schema file ({err}). "
                f"Fix: it must be a UTF-8 TOML text file."
            ) from None
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise SchemaError(
                f"{path}: not valid TOML: {err}. Fix: values must be quoted strings or "
                f'lists of strings, e.g.\n{_EXAMPLE}\ncategorical = ["mcc", "country"]'
            ) from None
        unknown = [k for k in doc if k not in _TOP_LEVEL_KEYS]
        if "columns" not in doc:
            stray = [k for k in unknown if k in ALLOWED_KEYS]
            hint = f" The keys {', '.join(map(repr, stray))} must be inside it." if stray else ""
            found = ", ".join(repr(k) for k in doc) or "nothing"
            raise SchemaError(
                f"{path}: missing the [columns] table (found {found}).{hint} "
                f"Fix: start the file with a [columns] table, e.g.\n{_EXAMPLE}"
            )
        if unknown:
            details = "; ".join(f"{k!r}{_did_you_mean(k, _TOP_LEVEL_KEYS)}" for k in unknown)
            raise SchemaError(
                f"{path}: unknown top-level key(s) {details}. Fix: a schema file holds the "
                f"[columns] table and, for a numeric time column, the [time] table; put "
                f"column roles inside [columns]."
            )
        for table in _TOP_LEVEL_KEYS:
            if table in doc and not isinstance(doc[table], dict):
                raise SchemaError(
                    f"{path}: {table!r} must be a table. Fix: write it as a [{table}] "
                    f"header followed by key = value lines, e.g.\n"
                    + (_EXAMPLE if table == "columns" else _TIME_EXAMPLE)
                )
        return cls.from_document(doc, source=str(path))

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], source: str = "<dict>") -> Schema:
        """From ``{"columns": {...}, "time": {...}}`` (a schema file's tables, or the
        ``schema`` entry of a model.json). A plain ``[columns]`` dict is read too: the
        model.json of models saved before the ``[time]`` table existed."""
        if "columns" not in doc or not isinstance(doc.get("columns"), Mapping):
            return cls.from_dict(doc, source=source)
        time_table = doc.get("time") or {}
        if not isinstance(time_table, Mapping):
            raise SchemaError(f"{source}: [time] must be a table. Fix: e.g.\n{_TIME_EXAMPLE}")
        unknown = [k for k in time_table if k not in _TIME_KEYS]
        if unknown:
            details = "; ".join(f"{k!r}{_did_you_mean(k, _TIME_KEYS)}" for k in unknown)
            raise SchemaError(
                f"{source}: unknown key(s) in [time]: {details}. Fix: [time] holds only "
                f"unit and origin, e.g.\n{_TIME_EXAMPLE}"
            )
        return cls.from_dict(
            doc["columns"],
            source=source,
            time_unit=time_table.get("unit"),
            time_origin=time_table.get("origin"),
        )

    @classmethod
    def from_dict(
        cls,
        columns: Mapping[str, Any],
        source: str = "<dict>",
        *,
        time_unit: str | None = None,
        time_origin: str | None = None,
    ) -> Schema:
        """Build from the ``[columns]`` table as a dict, with the same checks as from_toml.

        ``None`` for an optional key means "not given".
        """
        if not isinstance(columns, Mapping):
            raise SchemaError(
                f"{source}: the [columns] table must be a mapping of role to column name, "
                f"got {type(columns).__name__}. Fix: e.g. {{'time': 'ts', 'amount': "
                f"'amount', 'entity': 'card_id'}}"
            )
        unknown = [k for k in columns if k not in ALLOWED_KEYS]
        if unknown:
            details = "; ".join(f"{k!r}{_did_you_mean(k, ALLOWED_KEYS)}" for k in unknown)
            raise SchemaError(
                f"{source}: unknown key(s) in [columns]: {details}. "
                f"Fix: use only the allowed keys: {', '.join(ALLOWED_KEYS)}."
            )
        values = {k: v for k, v in columns.items() if v is not None}
        missing = [k for k in _REQUIRED_KEYS if k not in values]
        if missing:
            raise SchemaError(
                f"{source}: [columns] is missing the required key(s) {', '.join(missing)}. "
                f"Fix: name the column for each, e.g. "
                + ", ".join(f'{k} = "<your {k} column>"' for k in missing)
                + "."
            )
        _validate_columns_table(values, source)
        _validate_time_table(time_unit, time_origin, source)
        kwargs: dict[str, Any] = dict(values)
        for key in (*_LIST_KEYS, "entity"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs, time_unit=time_unit, time_origin=time_origin)

    @classmethod
    def simulator(cls) -> Schema:
        """The columns written by fraudseq's built-in simulator (schemas/simulator.toml)."""
        return cls(
            id="tx_id",
            entity="card_id",
            time="ts",
            amount="amount",
            label="is_fraud",
            categorical=("mcc", "country", "channel", "device_id", "merchant_id"),
            numeric=(),
            counterparty="merchant_id",
            scenario="fraud_type",
        )

    # -- views ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``[columns]`` table: lists for tuples, None omitted; inverse of from_dict."""
        out: dict[str, Any] = {}
        for key in ALLOWED_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def to_document(self) -> dict[str, Any]:
        """``{"columns": ..., "time": ...}``: what model.json stores; inverse of
        :meth:`from_document` (``time`` only for a numeric time column)."""
        doc: dict[str, Any] = {"columns": self.to_dict()}
        if self.time_unit is not None:
            doc["time"] = {"unit": self.time_unit, "origin": self.time_origin}
        return doc

    @property
    def entity_parts(self) -> tuple[str, ...]:
        """The entity's columns in the data: none (one stream), one, or a composite key."""
        if self.entity is None:
            return ()
        return (self.entity,) if isinstance(self.entity, str) else tuple(self.entity)

    @property
    def id_column(self) -> str:
        """The id column of the canonical frame (and of a live request)."""
        return self.id if self.id is not None else ROW_ID_COLUMN

    @property
    def entity_column(self) -> str:
        """The entity column of the canonical frame: the one entity column, the parts
        joined by '+' for a composite key, or ``stream`` when the data has none."""
        parts = self.entity_parts
        return "+".join(parts) if parts else STREAM_COLUMN

    def source_columns(self, with_label: bool = True) -> list[str]:
        """The columns read from a file or a request, in role order, without duplicates
        (the id only when the schema names one; every part of a composite entity).
        ``with_label=False`` leaves out the label *and* the scenario: both are ground
        truth, unknown when scoring new transactions."""
        return self._ordered([self.id], self.entity_parts, with_label)

    def columns(self, with_label: bool = True) -> list[str]:
        """The canonical frame's columns in role order (see :meth:`source_columns`):
        :attr:`id_column` and :attr:`entity_column` stand for the id and the entity."""
        return self._ordered([self.id_column], [self.entity_column], with_label)

    def _ordered(self, ids: list, entities: Iterable[str], with_label: bool) -> list[str]:
        names: list[str | None] = [*ids, *entities, self.time, self.amount]
        if with_label:
            names.append(self.label)
        names.extend(self.categorical)
        names.extend(self.numeric)
        names.append(self.counterparty)
        if with_label:
            names.append(self.scenario)
        return list(dict.fromkeys(n for n in names if n is not None))

    @property
    def string_columns(self) -> list[str]:
        """Source columns held as text: id, entity parts, categorical, counterparty,
        scenario."""
        names = [self.id, *self.entity_parts, *self.categorical, self.counterparty, self.scenario]
        return list(dict.fromkeys(n for n in names if n is not None))


def _validate_columns_table(values: Mapping[str, Any], source: str) -> None:
    """Type checks and role-conflict checks shared by from_dict and the constructor."""
    for key in (*_REQUIRED_KEYS, *_OPTIONAL_STR_KEYS):
        value = values.get(key)
        if value is None and key in _OPTIONAL_STR_KEYS:
            continue
        if not isinstance(value, str):
            raise SchemaError(
                f"{source}: [columns] {key} must be a column name (a string), got "
                f'{type(value).__name__} {value!r}. Fix: e.g. {key} = "my_column"'
                + (" (or leave the key out)." if key in _OPTIONAL_STR_KEYS else ".")
            )
        if not value.strip():
            raise SchemaError(
                f"{source}: [columns] {key} is an empty column name. Fix: give the column's "
                f"name" + (", or leave the key out." if key in _OPTIONAL_STR_KEYS else ".")
            )
    entity = values.get("entity")
    if entity is not None:
        parts = [entity] if isinstance(entity, str) else entity
        if (
            not isinstance(parts, list | tuple)
            or not parts
            or not all(isinstance(p, str) and p.strip() for p in parts)
        ):
            raise SchemaError(
                f"{source}: [columns] entity must be a column name or a non-empty list of "
                f"them (a composite key), got {type(entity).__name__} {entity!r}. Fix: e.g. "
                f'entity = "card_id" or entity = ["card1", "addr1"] (or leave the key out: '
                f"the whole file is then one stream in time order)."
            )
        if len(set(parts)) < len(parts):
            raise SchemaError(
                f"{source}: [columns] entity lists a column more than once ({entity!r}). "
                f"Fix: list each column of the key once."
            )
    for key in _LIST_KEYS:
        value = values.get(key, ())
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise SchemaError(
                f"{source}: [columns] {key} must be a list of column names, got "
                f"{type(value).__name__} {value!r}. Fix: e.g. {key} = "
                + (f'["{value}"]' if isinstance(value, str) else '["col_a", "col_b"]')
                + " (use [] for none)."
            )
        bad = [v for v in value if not isinstance(v, str) or not v.strip()]
        if bad:
            raise SchemaError(
                f"{source}: [columns] {key} must be a list of non-empty strings; bad "
                f"item(s): {', '.join(repr(b) for b in bad)}. Fix: quote each column "
                f'name, e.g. {key} = ["col_a", "col_b"].'
            )
        repeated = sorted({v for v in value if list(value).count(v) > 1})
        if repeated:
            raise SchemaError(
                f"{source}: [columns] {key} lists {', '.join(map(repr, repeated))} more than "
                f"once. Fix: list each column once."
            )

    roles: dict[str, list[str]] = {}
    for key in ALLOWED_KEYS:
        value = values.get(key)
        if value is None:
            continue
        for name in value if isinstance(value, list | tuple) else (value,):
            roles.setdefault(name, []).append(key)
    for name, its_roles in roles.items():
        if len(its_roles) < 2 or sorted(its_roles) == ["categorical", "counterparty"]:
            continue
        if {"label", "scenario"} & set(its_roles):
            why = "the label and the scenario are ground truth and must never be features"
        elif "id" in its_roles:
            why = "the transaction id must be unique per row, so it cannot be anything else"
        else:
            why = "each column has one role (only counterparty may also be in categorical)"
        raise SchemaError(
            f"{source}: column {name!r} is given several roles ({', '.join(its_roles)}); "
            f"{why}. Fix: keep {name!r} in one role and name a different column for the "
            f"other(s)."
        )


def _validate_time_table(unit: Any, origin: Any, source: str) -> None:
    """[time]: both keys or neither; a known unit; an ISO origin within datetime64[ns]."""
    if unit is None and origin is None:
        return
    if unit is None or origin is None:
        absent = "unit" if unit is None else "origin"
        raise SchemaError(
            f"{source}: [time] is missing {absent!r}. Fix: give both, e.g.\n{_TIME_EXAMPLE}"
        )
    if unit not in TIME_UNITS:
        raise SchemaError(
            f"{source}: [time] unit {unit!r} is not a time unit. Fix: use one of "
            f'{", ".join(map(repr, TIME_UNITS))} (seconds: unit = "s").'
        )
    if parse_origin(origin) is None:
        raise SchemaError(
            f"{source}: [time] origin {origin!r} is not an ISO date or time. Fix: e.g. "
            f'origin = "1970-01-01" (Unix time) or origin = "2017-12-01T00:00:00".'
        )


def parse_origin(origin: Any) -> pd.Timestamp | None:
    """The [time] origin as naive UTC, or None when it is not an ISO 8601 date or time."""
    if not isinstance(origin, str):
        return None
    try:
        stamp = pd.Timestamp(datetime.fromisoformat(origin.strip()))
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def _check_canonical_names(schema: Schema, source: str) -> None:
    """The synthesised id/entity columns must not shadow a column of another role."""
    named = schema.source_columns(with_label=True)
    for column, role, fix in (
        (schema.id_column, "id", "name the id column (id = ...)"),
        (schema.entity_column, "entity", "name the entity differently"),
    ):
        own = [schema.id] if role == "id" else [schema.entity] if schema.entity else []
        if column not in own and column not in schema.entity_parts and column in named:
            raise SchemaError(
                f"{source}: the canonical {role} column {column!r} is also a column of "
                f"the data with another role. Fix: {fix}, or rename that column."
            )


# ------------------------------------------------------------------------ loading


def ignored_columns(columns: Iterable[Any], schema: Schema | None = None) -> list[Any]:
    """Columns of the data (in data order) that the schema does not name."""
    schema = Schema.simulator() if schema is None else schema
    named = set(schema.source_columns(with_label=True))
    return [c for c in columns if c not in named]


class _Rows:
    """Turns positions of offending rows into what the user sees."""

    def __init__(self, source_name: str, index: pd.Index | None, first_row: int = 0) -> None:
        self.source_name = source_name
        self.index = index  # None: file (1-based data rows); else DataFrame index labels
        self.first_row = first_row  # a chunk of a file: the position of its first row

    def describe(self, positions: np.ndarray, values: list[Any]) -> str:
        total = len(positions)
        shown = positions[:_MAX_ROWS_SHOWN]
        if self.index is None:
            labels = [str(self.first_row + int(p) + 1) for p in shown]
            word = "row" if total == 1 else "rows"
            kind = "1-based data rows, header not counted"
        else:
            labels = [_index_label(self.index[int(p)]) for p in shown]
            word = "index"
            kind = "DataFrame index labels"
        vals = ", ".join(_show(v) for v in values[: len(shown)])
        return (
            f"{word} {', '.join(labels)} (first {len(shown)} of {total}; {kind}) "
            f"with value(s) {vals}"
        )


def _index_label(value: Any) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    return repr(value) if isinstance(value, str) else str(value)


def _show(value: Any) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "missing"
    if isinstance(value, float) and np.isnan(value):
        return "missing"
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(
    rows: _Rows, column: str, raw: pd.Series, bad: np.ndarray, problem: str, fix: str
) -> DataValidationError:
    positions = np.flatnonzero(bad)
    values = list(raw.iloc[positions[:_MAX_ROWS_SHOWN]])
    return DataValidationError(
        f"{rows.source_name}: column {column!r}: {problem} at "
        f"{rows.describe(positions, values)}. Fix: {fix}"
    )


def _missing(series: pd.Series) -> np.ndarray:
    """NaN/None/NA, plus empty or blank strings."""
    missing = np.array(series.isna(), dtype=bool)  # writable copy
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype) or isinstance(
        dtype, pd.CategoricalDtype | pd.StringDtype
    ):
        text = series if isinstance(dtype, pd.StringDtype) else series.astype(STRING_DTYPE)
        missing |= (text.str.strip() == "").to_numpy(dtype=bool, na_value=False)
    return missing


def is_missing(value: Any) -> bool:
    """:func:`_missing` of one value (a field of a live request)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


#: Floats hold every integer below this; an integral float beyond it keeps its float text.
_EXACT_INTEGERS = 2**53


def number_text(value: float) -> str:
    """A float's canonical text, as :func:`_to_string` gives it: "123" for an integral one
    (exact below 2**53), else Python's float text ("1.5", "1e+20")."""
    if math.isfinite(value) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return str(int(value))
    return str(value)


def _to_string(series: pd.Series) -> pd.Series:
    """Text column to STRING_DTYPE, each float as :func:`number_text` (so a file and a live
    request give the same text); missing stays NaN."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(dtype.categories.dtype if len(dtype.categories) else object)
        dtype = series.dtype
    if pd.api.types.is_float_dtype(dtype):
        floats = series.to_numpy(dtype="float64", na_value=np.nan)
    elif pd.api.types.is_object_dtype(dtype):
        floats = _object_floats(series)
    else:
        return series.astype(STRING_DTYPE)
    with np.errstate(invalid="ignore"):
        whole = (floats == np.round(floats)) & (np.abs(floats) < _EXACT_INTEGERS)
    if whole.sum() == (~np.isnan(floats)).sum() and pd.api.types.is_float_dtype(dtype):
        return series.astype("Int64").astype(STRING_DTYPE)  # the common case, in one pass
    text = series.astype(STRING_DTYPE)
    if whole.any():
        ints = np.where(whole, floats, 0).astype(np.int64)
        text = text.mask(whole, pd.Series(ints, index=series.index).astype(STRING_DTYPE))
    return text


def _object_floats(series: pd.Series) -> np.ndarray:
    """The values of a mixed column's float elements, NaN elsewhere (text, bools, ...)."""
    if pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        return np.full(len(series), np.nan)
    present = series.where(~_missing(series), "")  # pd.NA does not compare
    objects = present.to_numpy(dtype=object)
    text = present.astype(STRING_DTYPE)
    # A str is its own text; a bool's text is True/False (never a number's).
    numbers = (text.to_numpy(dtype=object) != objects) & ~text.isin(("True", "False")).to_numpy(
        dtype=bool
    )
    values = pd.to_numeric(present.where(numbers), errors="coerce")
    return pd.Series(values).to_numpy(dtype="float64", na_value=np.nan)


def _to_float(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, was-missing mask); text that is not a number becomes NaN."""
    missing = _missing(series)
    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
    else:
        if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(dtype):
            series = series.astype(object)
        numbers = pd.to_numeric(series, errors="coerce")
        values = pd.Series(numbers).to_numpy(dtype="float64", na_value=np.nan)
    return values, missing


def _to_time(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] naive-UTC values, bad mask) of dates and times (not numbers)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = series.dtype
    if pd.api.types.is_datetime64_dtype(dtype):
        return _time_range(series.to_numpy())
    # Text, or objects such as datetime/Timestamp (possibly with mixed time zones).
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(object)
    missing = _missing(series)
    parsed = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    n_failed = int((parsed.isna().to_numpy() & ~missing).sum())
    if n_failed:
        # Not ISO 8601 everywhere: let pandas infer one format from the data instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                inferred = pd.to_datetime(series, errors="coerce", utc=True)
            except (ValueError, TypeError, OverflowError):
                inferred = None
        if inferred is not None and int((inferred.isna().to_numpy() & ~missing).sum()) < n_failed:
            parsed = inferred
    # pandas turns "now"/"today" into the current time: never right for a transaction.
    words = series.astype(STRING_DTYPE).str.strip().str.lower().isin(_NOW_WORDS)
    parsed = parsed.where(~words.to_numpy(dtype=bool))
    return _time_range(parsed.dt.tz_localize(None).to_numpy())


def _time_range(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] values, bad mask) of naive-UTC datetime64 values of any unit: NaT and
    times outside EARLIEST_TIME..LATEST_TIME are bad. Compared in their own unit, because
    casting a far date (pandas parses "1500-01-01" in microseconds) to ns overflows silently."""
    low, high = (
        np.datetime64(t.value, "ns").astype(values.dtype) for t in (EARLIEST_TIME, LATEST_TIME)
    )
    bad = np.isnat(values) | (values < low) | (values > high)
    if bad.any():
        values = np.where(bad, np.datetime64("NaT"), values)
    return values.astype("datetime64[ns]"), bad


def _to_label(series: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float values, missing mask, invalid-value mask); 0/1, bools, "true"/"false" valid."""
    missing = _missing(series)
    dtype = series.dtype
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = series.astype(STRING_DTYPE).str.strip().str.lower()
        text = text.replace({"true": "1", "false": "0"})
        values = pd.Series(pd.to_numeric(text, errors="coerce")).to_numpy(
            dtype="float64", na_value=np.nan
        )
    invalid = ~missing & ~np.isin(values, (0.0, 1.0))
    return values, missing, invalid


def _header(path: Path, fmt: str, name: str) -> list[str]:
    """Column names without reading the data (the first block only, for CSV)."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        import pyarrow.csv as pacsv

        with open_csv(path) as stream:
            return list(pacsv.open_csv(stream).schema.names)
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise unreadable(name, fmt, err) from None


def table_file(path: Path, name: str) -> str:
    """The format of the table file `path` ("csv" or "parquet"; `name` in errors), once it is
    known to exist and to be a file (a Parquet dataset may be a directory)."""
    try:
        fmt = table_format(path)
    except FraudseqError as err:
        raise DataValidationError(
            f"{err}. Fix: rename or convert the file; gzip-compressed CSV must end in .csv.gz."
        ) from None
    if not path.exists():
        near = (
            _did_you_mean(path.name, [p.name for p in path.parent.glob("*")])
            if (path.parent.is_dir())
            else ""
        )
        raise DataValidationError(
            f"{name}: file not found{near}. Fix: check the path (relative paths are "
            f"relative to {Path.cwd()})."
        )
    if path.is_dir() and fmt == "csv":
        raise DataValidationError(
            f"{name}: is a directory, not a CSV file. Fix: give the path of the file itself."
        )
    return fmt


def open_csv(path: Path) -> Any:
    import pyarrow as pa

    compression = "gzip" if path.name.lower().endswith(".gz") else None
    return pa.input_stream(str(path), compression=compression)


def unreadable(name: str, fmt: str, err: BaseException) -> DataValidationError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "empty" in text.lower():
        return DataValidationError(
            f"{name}: the file is empty (no header, no rows). Fix: export the transactions "
            f"again; the first line must be the header."
        )
    what = "a Parquet file" if fmt == "parquet" else "a CSV file (comma-separated, UTF-8)"
    return DataValidationError(
        f"{name}: cannot read it as {what}: {text}. Fix: check that the file is complete, "
        f"that its name matches its format (.csv, .csv.gz, .parquet) and, for CSV, that "
        f"every row has as many fields as the header."
    )


def _read_file(
    path: Path, fmt: str, name: str, present: list[str], text_columns: list[str]
) -> pd.DataFrame:
    import pyarrow as pa

    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path, columns=present).to_pandas()
        import pyarrow.csv as pacsv

        # Text roles are read as text so ids like "007" keep their zeros; strings are
        # never null here (empty strings are treated as missing afterwards), so codes
        # such as "NA" (Namibia) survive.
        text_types = {c: pa.string() for c in present if c in text_columns}

        def read(column_types: dict[str, Any]) -> pd.DataFrame:
            with open_csv(path) as stream:
                table = pacsv.read_csv(
                    stream,
                    convert_options=pacsv.ConvertOptions(
                        include_columns=present, column_types=column_types
                    ),
                )
            return table.to_pandas()

        try:
            return read(text_types)
        except pa.ArrowInvalid as err:
            if "conversion error" not in str(err).lower():
                raise
            # A column's type was guessed from its first rows and a later row does not
            # fit: read everything as text and let validation name the offending rows.
            return read({c: pa.string() for c in present})
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise unreadable(name, fmt, err) from None


def load_transactions(
    source: str | Path | pd.DataFrame,
    schema: Schema | str | Path | None = None,
    *,
    require_label: bool | str = False,
) -> pd.DataFrame:
    """Read, validate and canonicalise a transaction table.

    Args:
        source: path to a .csv, .csv.gz or .parquet file, or a DataFrame (never modified).
        schema: the column roles; None means the built-in simulator's columns; a path is
            read with :meth:`Schema.from_toml`.
        require_label: True: raise if the label column is absent or has missing values
            (evaluation); UNKNOWN_LABELS: raise if the column is absent, take an empty
            label as not known, NaN (training); False: the column is optional (scoring).

    Returns:
        A new DataFrame with only the schema's columns, in role order (label and scenario
        only when present in the data), original column names, canonical dtypes (see the
        module docstring), sorted stably by time, index 0..n-1.

    Raises:
        DataValidationError: naming the file, column, first offending rows and a fix.
    """
    table = open_table(source, schema, require_label=require_label)
    schema, name = table.schema, table.name
    if isinstance(source, pd.DataFrame):
        dupes = [c for c in table.present if int((source.columns == c).sum()) > 1]
        if dupes:
            raise DataValidationError(
                f"{name}: column(s) {', '.join(map(repr, dupes))} appear more than once. "
                f"Fix: drop or rename the duplicates."
            )
        frame = source
    else:
        frame = _read_file(table.path, table.fmt, name, table.present, schema.string_columns)
    if len(frame) == 0:
        raise DataValidationError(
            f"{name}: no transactions (the table has a header but no rows). Fix: check the "
            f"export or the filter that produced it."
        )
    result = canonical_rows(table, frame, require_label=require_label)
    ticks = result[schema.time].to_numpy().view("int64")
    if not bool(np.all(ticks[1:] >= ticks[:-1])):
        order = np.argsort(ticks, kind="stable")
        result = result.take(order).reset_index(drop=True)
    # A file's load is news; a frame is usually one loaded (and logged) already.
    level = logging.DEBUG if isinstance(source, pd.DataFrame) else logging.INFO
    logger.log(level, "%s: loaded %d transactions", name, len(result))
    return result


@dataclass(frozen=True)
class Table:
    """A transactions source checked against its schema before any row is read: the
    columns to read (`present`), and for a file its path and format."""

    schema: Schema
    name: str
    present: list[str]
    path: Path | None = None
    fmt: str | None = None


def open_table(
    source: str | Path | pd.DataFrame,
    schema: Schema | str | Path | None = None,
    *,
    require_label: bool | str = False,
) -> Table:
    """The `Table` of `source`: raises DataValidationError naming the missing columns."""
    default_schema = schema is None
    if isinstance(schema, str | Path):
        schema = Schema.from_toml(schema)
    schema = Schema.simulator() if schema is None else schema
    optional = {c for c in (schema.label, schema.scenario) if c is not None}
    if require_label and schema.label is None:
        raise DataValidationError(
            "the schema names no label column, but labels are required here (training or "
            'evaluation). Fix: add label = "<your 0/1 fraud column>" to [columns].'
        )

    if isinstance(source, pd.DataFrame):
        name = "<DataFrame>"
        available = list(source.columns)
        schema = _reloaded(schema, available)
    else:
        path = Path(source)
        name = str(source)
        fmt = table_file(path, name)
        available = _header(path, fmt, name)

    wanted = schema.source_columns(with_label=True)
    required = [c for c in wanted if c not in optional or (require_label and c == schema.label)]
    available_set = set(available)
    absent = [c for c in required if c not in available_set]
    if absent:
        roles = _roles_of(schema)
        details = "; ".join(f"{c!r} ({roles[c]}){_did_you_mean(c, available)}" for c in absent)
        shown = ", ".join(repr(c) for c in available[:30])
        more = f" and {len(available) - 30} more" if len(available) > 30 else ""
        raise DataValidationError(
            f"{name}: missing column(s) {details}. The data has columns: {shown}{more}. "
            f"Fix: rename the column(s) in the data, or point the schema's [columns] "
            f"entries at the right names."
            + (
                " No schema was given, so the built-in simulator's columns were expected; "
                "pass a schema (a TOML file with a [columns] table) describing your data."
                if default_schema
                else ""
            )
        )
    present = [c for c in wanted if c in available_set]
    ignored = ignored_columns(available, schema)
    if ignored:
        logger.info(
            "%s: ignoring %d column(s) not named in the schema: %s",
            name,
            len(ignored),
            ", ".join(map(str, ignored)),
        )

    if isinstance(source, pd.DataFrame):
        return Table(schema, name, present)
    return Table(schema, name, present, path, fmt)


def canonical_rows(
    table: Table, frame: pd.DataFrame, *, first_row: int = 0, require_label: bool | str = False
) -> pd.DataFrame:
    """`frame`'s rows validated and in canonical form, in their order (see
    `load_transactions`): all of a DataFrame source, or of a file from its data row
    `first_row` (0-based; errors name the file's rows)."""
    schema, name, present, n = table.schema, table.name, table.present, len(frame)
    rows = _Rows(name, frame.index) if table.path is None else _Rows(name, None, first_row)
    # Positional views (a DataFrame's own index is only used to report rows).
    raw = {c: frame[c].reset_index(drop=True) for c in present}
    out: dict[str, Any] = {}

    out[schema.id_column] = _load_ids(schema, raw, rows, n)
    out[schema.entity_column] = _load_entities(schema, raw, rows, n)
    out[schema.time] = _load_times(schema, raw[schema.time], rows)

    # amount: finite number (negative = refund, allowed).
    amount_raw = raw[schema.amount]
    amounts, _ = _to_float(amount_raw)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(amounts) < MAX_ABS_AMOUNT)  # NaN and infinity too
    if bad.any():
        raise _fail(
            rows,
            schema.amount,
            amount_raw,
            bad,
            "missing, non-numeric, infinite or out-of-range amounts",
            "amounts must be plain finite numbers such as 12.50 or -3 (refunds may "
            "be negative; no currency symbols or thousands separators), smaller than "
            f"{MAX_ABS_AMOUNT:g} in absolute value.",
        )
    out[schema.amount] = amounts

    # label: 0/1.
    label = schema.label
    if label is not None and label in raw:
        label_raw = raw[label]
        values, missing, invalid = _to_label(label_raw)
        if invalid.any():
            raise _fail(
                rows,
                label,
                label_raw,
                invalid,
                "labels other than 0/1",
                "use 1 for fraud and 0 for legitimate (true/false and 0.0/1.0 are accepted too).",
            )
        if missing.any():
            if require_label is True:
                raise _fail(
                    rows,
                    label,
                    label_raw,
                    missing,
                    "missing labels",
                    "evaluation needs a 0/1 label on every row it measures; fill them in, "
                    "or evaluate a period whose labels are known (train takes an empty "
                    "label as not known: history, never a target).",
                )
            # The known labels still feed the delayed counterparty features; a missing one
            # is a label not known yet (NaN), never a legitimate transaction. Training uses
            # such a row as history only, never as a target.
            logger.log(
                logging.INFO if require_label == UNKNOWN_LABELS else logging.WARNING,
                "%s: column %r has %d missing label(s), taken as not known yet%s",
                name,
                label,
                int(missing.sum()),
                " (history, never a training target)" if require_label else "",
            )
            out[label] = np.where(missing, np.nan, values).astype(np.float64)
        else:
            out[label] = values.astype(np.int8)

    # categorical / counterparty: text, missing -> "<NA>".
    for c in dict.fromkeys([*schema.categorical, schema.counterparty]):
        if c is None:
            continue
        out[c] = _category(raw[c])

    # numeric: float64; missing stays NaN; text and infinity are errors.
    for c in schema.numeric:
        values, missing = _to_float(raw[c])
        bad = ~missing & ~np.isfinite(values)
        if bad.any():
            raise _fail(
                rows,
                c,
                raw[c],
                bad,
                "non-numeric or infinite values",
                "numeric columns must hold plain numbers (leave a cell empty if "
                "unknown), or move the column to 'categorical' in the schema.",
            )
        out[c] = values

    if schema.scenario is not None and schema.scenario in raw:
        out[schema.scenario] = _category(raw[schema.scenario])

    result = pd.DataFrame({c: out[c] for c in schema.columns(with_label=True) if c in out})
    result.index = pd.RangeIndex(n)
    return result


def _reloaded(schema: Schema, columns: list) -> Schema:
    """A frame that load_transactions returned holds the canonical id and entity columns
    in place of the data's (row numbers, one stream, a composite key): read those as they
    are, so loading is idempotent."""
    changes: dict[str, Any] = {}
    if schema.id is None and schema.id_column in columns:
        changes["id"] = schema.id_column
    if len(schema.entity_parts) != 1 and schema.entity_column in columns:
        changes["entity"] = schema.entity_column
    return replace(schema, **changes) if changes else schema


def _load_ids(schema: Schema, raw: dict, rows: _Rows, n: int) -> pd.Series:
    """Unique text ids; without an id column, the 1-based data row numbers."""
    if schema.id is None:
        first = rows.first_row + 1
        return pd.Series(np.arange(first, first + n).astype(str), dtype=STRING_DTYPE)
    ids_raw = raw[schema.id]
    ids_missing = _missing(ids_raw)
    if ids_missing.any():
        raise _fail(
            rows,
            schema.id,
            ids_raw,
            ids_missing,
            "missing transaction id",
            "every transaction needs an id; fill these in or drop the rows (or leave 'id' "
            "out of the schema: each row's id is then its 1-based row number).",
        )
    ids = _to_string(ids_raw)
    if not _is_unique(ids):
        dup = ids.duplicated(keep=False).to_numpy()
        raise _fail(
            rows,
            schema.id,
            ids_raw,
            dup,
            "duplicate transaction ids",
            "ids must be unique; remove duplicated rows (e.g. a file loaded twice), "
            "point 'id' at a truly unique column, or leave 'id' out of the schema (each "
            "row's id is then its 1-based row number).",
        )
    return ids


def _load_entities(schema: Schema, raw: dict, rows: _Rows, n: int) -> pd.Series:
    """Entity keys: the one column's text, a composite key, or one stream."""
    parts = schema.entity_parts
    if not parts:
        return pd.Series(np.full(n, STREAM_KEY, dtype=object), dtype=STRING_DTYPE)
    if len(parts) == 1:
        ent_raw = raw[parts[0]]
        ent_missing = _missing(ent_raw)
        if ent_missing.any():
            raise _fail(
                rows,
                parts[0],
                ent_raw,
                ent_missing,
                "missing entity (card/customer) id",
                "every transaction must belong to a card/customer; fill these in or drop the rows.",
            )
        return _to_string(ent_raw)
    # A composite key: a missing part is a value of its own ("<NA>"), unless all are.
    all_missing = np.logical_and.reduce([_missing(raw[c]) for c in parts])
    if all_missing.any():
        raise _fail(
            rows,
            parts[0],
            raw[parts[0]],
            all_missing,
            f"every part of the entity key {' + '.join(parts)} is missing",
            "each transaction needs at least one part of its entity key; fill these in "
            "or drop the rows.",
        )
    return entity_keys([_category(raw[c]) for c in parts])


def _load_times(schema: Schema, time_raw: pd.Series, rows: _Rows) -> np.ndarray:
    """datetime64[ns] naive UTC; numbers only through the schema's [time] table."""
    column = schema.time
    dates = isinstance(time_raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(
        time_raw.dtype
    )
    if schema.time_unit is not None and not dates:  # [time] says how to read numbers
        values, _ = _to_float(time_raw)
        times, bad = numeric_times(values, schema.time_unit, schema.time_origin)
        if bad.any():
            raise _fail(
                rows,
                column,
                time_raw,
                bad,
                "missing, non-numeric or out-of-range times",
                f"the schema's [time] table reads this column as numbers of "
                f"{schema.time_unit!r} since {schema.time_origin}; every value must be a "
                f"plain number, and origin + value must fall within years {TIME_YEARS}.",
            )
        return times
    dtype = time_raw.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        first = time_raw.iloc[:3].tolist()
        raise DataValidationError(
            f"{rows.source_name}: column {column!r}: the times are numbers (first values "
            f"{', '.join(map(_show, first))}), and a number alone does not say its unit or "
            f"its origin. Fix: add a [time] table to the schema, e.g. for Unix epoch "
            f"seconds:\n{_TIME_EXAMPLE}\n(units: {', '.join(TIME_UNITS)}; for hours since "
            f'the start of a simulation, unit = "h" and origin = its first day).'
        )
    times, bad = _to_time(time_raw)
    if bad.any():
        raise _fail(
            rows,
            column,
            time_raw,
            bad,
            "missing or unparseable timestamps",
            "write timestamps as ISO 8601, e.g. 2024-01-31 13:45:00 or "
            "2024-01-31T13:45:00+02:00 (offsets are converted to UTC), within "
            f"years {TIME_YEARS}.",
        )
    return times


#: The one range of valid transaction times (naive UTC, after converting any offset), for
#: files, live requests and the HTTP API alike: whole years 1678-2261, inside what
#: datetime64[ns] holds (1677-09-21 .. 2262-04-11).
EARLIEST_TIME = pd.Timestamp("1678-01-01")
LATEST_TIME = pd.Timestamp("2261-12-31T23:59:59.999999999")
TIME_YEARS = "1678-2261"


def numeric_times(values: np.ndarray, unit: str, origin: str) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] of origin + values x unit, bad mask): NaN, infinite or out of
    range is bad. Integral values are converted exactly; fractions round to 1 ns.
    Files and live requests both go through here."""
    values = np.asarray(values, dtype=np.float64)
    step = TIME_UNITS[unit]
    start = int(parse_origin(origin).value)
    low, high = int(EARLIEST_TIME.value), int(LATEST_TIME.value)
    with np.errstate(invalid="ignore", over="ignore"):
        offset = values * float(step)
        # In floats first (which keeps the int64 arithmetic below from overflowing), then
        # exactly in integers: near the bounds a float is 1024 ns coarse.
        bad = ~np.isfinite(offset) | (offset < low - start) | (offset > high - start)
    safe = np.where(bad, 0.0, values)
    whole = np.trunc(safe)
    ticks = whole.astype(np.int64) * np.int64(step) + np.round((safe - whole) * step).astype(
        np.int64
    )
    ticks += np.int64(start)
    bad |= (ticks < low) | (ticks > high)
    ticks = np.where(bad, np.iinfo(np.int64).min, ticks)
    return ticks.view("datetime64[ns]"), bad


def _is_unique(ids: pd.Series) -> bool:
    """ids.is_unique, twice as fast when the ids are all integers written as text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        ints = pc.cast(pa.array(ids), pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, TypeError):
        ints = None
    # Distinct integers are distinct strings; equal integers ("7", "007") need the text.
    if ints is not None and ints.null_count == 0 and pd.Series(ints.to_numpy()).is_unique:
        return True
    return bool(ids.is_unique)


def _category(series: pd.Series) -> pd.Series:
    missing = _missing(series)
    text = _to_string(series)
    if missing.any():
        text = text.mask(missing, MISSING_CATEGORY)
    return text


def _roles_of(schema: Schema) -> dict[str, str]:
    roles: dict[str, list[str]] = {}
    for key in ALLOWED_KEYS:
        value = getattr(schema, key)
        if value is None:
            continue
        for c in value if isinstance(value, tuple) else (value,):
            roles.setdefault(c, []).append(key)
    return {c: "/".join(r) for c, r in roles.items()}
