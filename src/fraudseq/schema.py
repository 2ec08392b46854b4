"""Column roles (the schema) and loading + validating transaction tables.

Users name their columns once, in the ``[columns]`` table of a TOML file::

    [columns]
    id = "tx_id"              # unique transaction id            (required)
    entity = "card_id"        # whose history forms the sequence (required)
    time = "ts"               # timestamp                        (required)
    amount = "amount"         # transaction amount               (required)
    label = "is_fraud"        # 0/1: required to train/evaluate, optional to score
    categorical = ["mcc", "country"]   # optional
    numeric = []              # optional extra numeric columns
    counterparty = "merchant_id"  # optional: merchant/terminal with a delayed-label fraud rate
    scenario = "fraud_type"   # optional: only to break down results, never a feature

:func:`load_transactions` reads a CSV, CSV.gz or Parquet file (or takes a DataFrame),
keeps only the schema's columns, converts them to canonical dtypes, validates them and
sorts by time. Canonical dtypes of the returned frame:

============================  =========================================================
role                          dtype
============================  =========================================================
id, entity                    pandas' default string dtype ``"str"`` (pandas 3:
                              ``StringDtype(na_value=nan)``); integers become "123",
                              integral floats 123.0 become "123"; never missing
categorical, counterparty,    ``"str"`` as above; missing values (NaN/None/"") become
scenario                      the literal string ``"<NA>"`` (:data:`MISSING_CATEGORY`)
time                          ``datetime64[ns]``, naive, in UTC (aware input is converted
                              to UTC; ISO 8601 strings, datetimes and epoch seconds accepted)
amount                        ``float64``; finite; zero and negative (refunds) allowed
numeric                       ``float64``; missing values stay NaN; text/infinity rejected
label                         ``int8`` holding 0/1
============================  =========================================================

Label and scenario are ground truth: they may be absent from the data (scoring) and are
then simply not returned. With ``require_label=True`` a missing label column or a missing
label value is an error; otherwise a label column with missing values is dropped with a
warning. Columns in the data that the schema does not name are not read (CSV/Parquet) and
are logged as ignored on the ``"fraudseq"`` logger.

Every problem raises :class:`~fraudseq.errors.DataValidationError` (bad data) or
:class:`~fraudseq.errors.SchemaError` (bad schema) whose message names the file, the
column, up to five offending rows with their values, and a fix. Row numbers are 1-based
data rows of the file (the header is not counted); for a DataFrame they are its index
labels.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError, FraudseqError, SchemaError
from fraudseq.io import table_format

__all__ = [
    "MISSING_CATEGORY",
    "STRING_DTYPE",
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
#: The dtype of every text column returned by :func:`load_transactions` (pandas' default
#: string dtype: in pandas 3 an Arrow-backed ``StringDtype`` with NaN as missing value).
STRING_DTYPE = "str"

_REQUIRED_KEYS = ("id", "entity", "time", "amount")
_OPTIONAL_STR_KEYS = ("label", "counterparty", "scenario")
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
_TOP_LEVEL_KEYS = ("columns",)
_MAX_ROWS_SHOWN = 5
_NOW_WORDS = ("now", "today", "tomorrow", "yesterday")

_EXAMPLE = (
    '[columns]\nid = "tx_id"\nentity = "card_id"\ntime = "ts"\namount = "amount"\n'
    'label = "is_fraud"'
)


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


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Schema:
    """Which column of the data plays which role. Build it with :meth:`from_toml`."""

    id: str
    entity: str
    time: str
    amount: str
    label: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    counterparty: str | None = None
    scenario: str | None = None

    def __post_init__(self) -> None:
        for key in _LIST_KEYS:
            value = getattr(self, key)
            if isinstance(value, list):
                object.__setattr__(self, key, tuple(value))
        _validate_columns_table(
            {f.name: getattr(self, f.name) for f in fields(self)}, "Schema(...)"
        )

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> Schema:
        """Read the ``[columns]`` table of a TOML file; SchemaError names the file."""
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
                f"{path}: unknown top-level key(s) {details}. Fix: a schema file holds only "
                f"the [columns] table; put column roles inside it."
            )
        if not isinstance(doc["columns"], dict):
            raise SchemaError(
                f"{path}: 'columns' must be a table. Fix: write it as a [columns] "
                f"header followed by key = value lines, e.g.\n{_EXAMPLE}"
            )
        return cls.from_dict(doc["columns"], source=str(path))

    @classmethod
    def from_dict(cls, columns: Mapping[str, Any], source: str = "<dict>") -> Schema:
        """Build from the ``[columns]`` table as a dict, with the same checks as from_toml.

        ``None`` for an optional key means "not given".
        """
        if not isinstance(columns, Mapping):
            raise SchemaError(
                f"{source}: the [columns] table must be a mapping of role to column name, "
                f"got {type(columns).__name__}. Fix: e.g. {{'id': 'tx_id', 'entity': "
                f"'card_id', 'time': 'ts', 'amount': 'amount'}}"
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
        kwargs: dict[str, Any] = dict(values)
        for key in _LIST_KEYS:
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

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

    def columns(self, with_label: bool = True) -> list[str]:
        """All named columns in role order without duplicates.

        Role order: id, entity, time, amount, label, categorical..., numeric...,
        counterparty, scenario. ``with_label=False`` leaves out the label *and* the
        scenario: both are ground truth, unknown when scoring new transactions.
        """
        names: list[str | None] = [self.id, self.entity, self.time, self.amount]
        if with_label:
            names.append(self.label)
        names.extend(self.categorical)
        names.extend(self.numeric)
        names.append(self.counterparty)
        if with_label:
            names.append(self.scenario)
        out: list[str] = []
        for name in names:
            if name is not None and name not in out:
                out.append(name)
        return out

    @property
    def string_columns(self) -> list[str]:
        """Columns held as text: id, entity, categorical, counterparty, scenario."""
        names = [self.id, self.entity, *self.categorical, self.counterparty, self.scenario]
        out: list[str] = []
        for name in names:
            if name is not None and name not in out:
                out.append(name)
        return out


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
        for name in value if key in _LIST_KEYS else (value,):
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


# ------------------------------------------------------------------------ loading


def ignored_columns(columns: Iterable[Any], schema: Schema | None = None) -> list[Any]:
    """Columns of the data (in data order) that the schema does not name."""
    schema = Schema.simulator() if schema is None else schema
    named = set(schema.columns(with_label=True))
    return [c for c in columns if c not in named]


class _Rows:
    """Turns positions of offending rows into what the user sees."""

    def __init__(self, source_name: str, index: pd.Index | None) -> None:
        self.source_name = source_name
        self.index = index  # None: file (1-based data rows); else DataFrame index labels

    def describe(self, positions: np.ndarray, values: list[Any]) -> str:
        total = len(positions)
        shown = positions[:_MAX_ROWS_SHOWN]
        if self.index is None:
            labels = [str(int(p) + 1) for p in shown]
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


def _to_string(series: pd.Series) -> pd.Series:
    """Text column to STRING_DTYPE; integral floats lose their '.0'; missing stays NaN."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        series = series.astype(dtype.categories.dtype if len(dtype.categories) else object)
        dtype = series.dtype
    if pd.api.types.is_float_dtype(dtype):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
        finite = values[np.isfinite(values)]
        if finite.size and np.all(finite == np.round(finite)) and np.all(np.abs(finite) < 2**53):
            series = series.astype("Int64")
    return series.astype(STRING_DTYPE)


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


# datetime64[ns] covers 1677-09-21 .. 2262-04-11; other units hold more and would overflow.
_NS_LOW = np.datetime64("1677-09-22", "s")
_NS_HIGH = np.datetime64("2262-04-10", "s")


def _to_time(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(datetime64[ns] naive-UTC values, bad mask)."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = series.dtype
    if pd.api.types.is_datetime64_dtype(dtype):
        values = series.to_numpy()
        out_of_range = np.zeros(len(values), dtype=bool)
        if np.datetime_data(values.dtype)[0] != "ns":
            out_of_range = ~np.isnat(values) & ((values < _NS_LOW) | (values > _NS_HIGH))
            if out_of_range.any():
                values = np.where(out_of_range, np.datetime64("NaT"), values)
        values = values.astype("datetime64[ns]")
        return values, out_of_range | np.isnat(values)
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        # Epoch seconds.
        seconds = series.to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(seconds) & (np.abs(seconds) < 9.2e9)
        parsed = pd.to_datetime(np.where(ok, seconds, np.nan), unit="s")
        values = parsed.to_numpy(dtype="datetime64[ns]")
        return values, np.isnat(values)
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
    values = parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return values, np.isnat(values)


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

        with _open_csv(path) as stream:
            return list(pacsv.open_csv(stream).schema.names)
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise _unreadable(name, fmt, err) from None


def _open_csv(path: Path) -> Any:
    import pyarrow as pa

    compression = "gzip" if path.name.lower().endswith(".gz") else None
    return pa.input_stream(str(path), compression=compression)


def _unreadable(name: str, fmt: str, err: BaseException) -> DataValidationError:
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
            with _open_csv(path) as stream:
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
        raise _unreadable(name, fmt, err) from None


def load_transactions(
    source: str | Path | pd.DataFrame,
    schema: Schema | str | Path | None = None,
    *,
    require_label: bool = False,
) -> pd.DataFrame:
    """Read, validate and canonicalise a transaction table.

    Args:
        source: path to a .csv, .csv.gz or .parquet file, or a DataFrame (never modified).
        schema: the column roles; None means the built-in simulator's columns; a path is
            read with :meth:`Schema.from_toml`.
        require_label: raise if the label column is absent or has missing values
            (training and evaluation); otherwise a missing label column is fine.

    Returns:
        A new DataFrame with only the schema's columns, in role order (label and scenario
        only when present in the data), original column names, canonical dtypes (see the
        module docstring), sorted stably by time, index 0..n-1.

    Raises:
        DataValidationError: naming the file, column, first offending rows and a fix.
    """
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
    else:
        path = Path(source)
        name = str(source)
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
        available = _header(path, fmt, name)

    wanted = schema.columns(with_label=True)
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
    if isinstance(source, pd.DataFrame):
        dupes = [c for c in present if int((source.columns == c).sum()) > 1]
        if dupes:
            raise DataValidationError(
                f"{name}: column(s) {', '.join(map(repr, dupes))} appear more than once. "
                f"Fix: drop or rename the duplicates."
            )
        frame = source
        rows = _Rows(name, source.index)
    else:
        frame = _read_file(path, fmt, name, present, schema.string_columns)
        rows = _Rows(name, None)

    n = len(frame)
    if n == 0:
        raise DataValidationError(
            f"{name}: no transactions (the table has a header but no rows). Fix: check the "
            f"export or the filter that produced it."
        )
    ignored = ignored_columns(available, schema)
    if ignored:
        logger.info(
            "%s: ignoring %d column(s) not named in the schema: %s",
            name,
            len(ignored),
            ", ".join(map(str, ignored)),
        )

    # Positional views (a DataFrame's own index is only used to report rows).
    raw = {c: frame[c].reset_index(drop=True) for c in present}
    out: dict[str, Any] = {}

    # id: present, unique.
    ids_raw = raw[schema.id]
    ids_missing = _missing(ids_raw)
    if ids_missing.any():
        raise _fail(
            rows,
            schema.id,
            ids_raw,
            ids_missing,
            "missing transaction id",
            "every transaction needs an id; fill these in or drop the rows.",
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
            "ids must be unique; remove duplicated rows (e.g. a file loaded twice) "
            "or point 'id' at a truly unique column.",
        )
    out[schema.id] = ids

    # entity: present.
    ent_raw = raw[schema.entity]
    ent_missing = _missing(ent_raw)
    if ent_missing.any():
        raise _fail(
            rows,
            schema.entity,
            ent_raw,
            ent_missing,
            "missing entity (card/customer) id",
            "every transaction must belong to a card/customer; fill these in or drop the rows.",
        )
    out[schema.entity] = _to_string(ent_raw)

    # time: parseable.
    time_raw = raw[schema.time]
    times, bad = _to_time(time_raw)
    if bad.any():
        raise _fail(
            rows,
            schema.time,
            time_raw,
            bad,
            "missing or unparseable timestamps",
            "write timestamps as ISO 8601, e.g. 2024-01-31 13:45:00 or "
            "2024-01-31T13:45:00+02:00 (offsets are converted to UTC), within "
            "years 1678-2261.",
        )
    out[schema.time] = times

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
            if require_label:
                raise _fail(
                    rows,
                    label,
                    label_raw,
                    missing,
                    "missing labels",
                    "training and evaluation need a 0/1 label on every row; fill "
                    "them in or drop the unlabelled rows.",
                )
            # Scoring: the known labels still feed the delayed counterparty features;
            # a missing one is a label not known yet (NaN), never a legitimate transaction.
            logger.warning(
                "%s: column %r has %d missing label(s), taken as not known yet",
                name,
                label,
                int(missing.sum()),
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

    result = pd.DataFrame({c: out[c] for c in wanted if c in out})
    result.index = pd.RangeIndex(n)
    ticks = times.view("int64")
    if not bool(np.all(ticks[1:] >= ticks[:-1])):
        order = np.argsort(ticks, kind="stable")
        result = result.take(order).reset_index(drop=True)
    # A file's load is news; a frame is usually one loaded (and logged) already.
    level = logging.DEBUG if isinstance(source, pd.DataFrame) else logging.INFO
    logger.log(level, "%s: loaded %d transactions", name, n)
    return result


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
