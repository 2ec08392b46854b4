"""A first schema guessed from a file's columns (`fraudseq check DATA --suggest-schema`).

:func:`suggest_schema` reads the header and a sample of rows (the first 10,000 by default,
with pyarrow), looks at each column's name and values, and guesses its role: time, amount,
label, id, entity, counterparty, scenario, categorical or numeric. :meth:`Suggestion.to_toml`
writes the guess as a schema file in which every line says why it was guessed, and lists the
columns left out and why. The text is always a valid schema (it is parsed back before it is
returned), but it is a guess: the user reads it, fixes it and passes it to ``--schema``.

The names it knows are those of the public fraud data sets (ULB credit card, PaySim,
IEEE-CIS, Sparkov, the Fraud Detection Handbook) and their usual variants.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.schema import (
    Schema,
    _header,
    _missing,
    _to_time,
    open_csv,
    table_file,
    unreadable,
)

__all__ = ["SAMPLE_ROWS", "ColumnFacts", "Suggestion", "read_sample", "suggest_schema"]

#: Rows read to guess the schema.
SAMPLE_ROWS = 10_000
#: A text (or integer-code) column with at most this many distinct values in the sample,
#: and at most MAX_DISTINCT_SHARE of its rows, is a category.
MAX_CATEGORIES = 1_000
MAX_DISTINCT_SHARE = 0.5
#: Placeholder origin of a numeric time that is not Unix time.
PLACEHOLDER_ORIGIN = "2000-01-01"

# Names are compared in a normal form: lower case, letters and digits only
# ("trans_date_trans_time" -> "transdatetranstime", "TX_AMOUNT" -> "txamount").
# Lists are in order of preference.
_TIME_NAMES = (
    "txdatetime",
    "transdatetranstime",
    "transactiondatetime",
    "transactiontime",
    "transactiontimestamp",
    "timestamp",
    "eventtime",
    "eventtimestamp",
    "datetime",
    "ts",
    "time",
    "transactiondate",
    "transdate",
    "txdate",
    "date",
    "createdat",
    "transactiondt",
    "step",
    "unixtime",
    "epoch",
)
_AMOUNT_NAMES = (
    "amount",
    "amt",
    "transactionamt",
    "transactionamount",
    "txamount",
    "txnamount",
    "transamount",
    "paymentamount",
    "amountusd",
)
_LABEL_NAMES = (
    "isfraud",
    "fraud",
    "txfraud",
    "class",
    "label",
    "target",
    "isfraudulent",
    "fraudulent",
    "fraudlabel",
    "fraudflag",
    "ischargeback",
    "chargeback",
)
_SCENARIO_NAMES = (
    "txfraudscenario",
    "fraudscenario",
    "fraudtype",
    "fraudcategory",
    "fraudreason",
    "scenario",
)
_ID_NAMES = (
    "transactionid",
    "transid",
    "txid",
    "txnid",
    "tranid",
    "trxid",
    "transactionnumber",
    "transnum",
    "txnnum",
    "transactionref",
    "transactionreference",
    "paymentid",
    "eventid",
    "id",
)
_ENTITY_NAMES = (
    "cardid",
    "cardnumber",
    "cardno",
    "ccnum",
    "creditcard",
    "card",
    "pan",
    "accountid",
    "accountnumber",
    "account",
    "acctid",
    "customerid",
    "customer",
    "custid",
    "clientid",
    "client",
    "userid",
    "user",
    "nameorig",
    "payerid",
    "payer",
    "senderid",
    "sender",
    "card1",
)
_COUNTERPARTY_NAMES = (
    "merchantid",
    "merchant",
    "merchantname",
    "merchantcode",
    "terminalid",
    "terminal",
    "namedest",
    "payeeid",
    "payee",
    "beneficiaryid",
    "beneficiary",
    "recipientid",
    "recipient",
    "receiverid",
    "receiver",
    "storeid",
    "store",
    "shopid",
)
#: Personal data: constant per customer, and not something to feed a model.
_PERSONAL_NAMES = (
    "first",
    "last",
    "firstname",
    "lastname",
    "fullname",
    "name",
    "street",
    "address",
    "streetaddress",
    "dob",
    "dateofbirth",
    "birthdate",
    "birthday",
    "email",
    "phone",
    "phonenumber",
    "ssn",
    "cardholder",
    "cardholdername",
)
_INDEX_NAMES = ("", "index", "unnamed0", "rownum", "rownumber")
_TIME_TOKENS = {"time", "date", "datetime", "timestamp", "ts", "dt", "unix", "epoch", "step"}
_ID_TOKENS = {"id", "num", "number", "no", "ref", "key"}
_CODE_TOKENS = {
    "id",
    "code",
    "zip",
    "postal",
    "postcode",
    "addr",
    "card",
    "mcc",
    "terminal",
    "merchant",
    "country",
    "region",
    "branch",
    "device",
    "product",
}
_UNIT_TOKENS = {
    "step": "h",
    "steps": "h",
    "hour": "h",
    "hours": "h",
    "day": "D",
    "days": "D",
    "minute": "m",
    "minutes": "m",
    "min": "m",
    "second": "s",
    "seconds": "s",
    "sec": "s",
    "secs": "s",
    "ms": "ms",
    "millis": "ms",
    "milliseconds": "ms",
    "us": "us",
    "micros": "us",
    "microseconds": "us",
    "ns": "ns",
    "nanos": "ns",
    "nanoseconds": "ns",
}
_DATE_LIKE = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{2,4})")


def normal_name(name: str) -> str:
    """Lower case, letters and digits only: 'TX_AMOUNT' -> 'txamount'."""
    return re.sub(r"[^0-9a-z]", "", str(name).lower())


def name_tokens(name: str) -> set[str]:
    """Words of a column name, split at underscores, digits and camelCase:
    'nameOrig' -> {'name', 'orig'}, 'TX_FRAUD' -> {'tx', 'fraud'}, 'card1' -> {'card'}."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name))
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", text)
    return {t for t in re.split(r"[^a-z]+", text.lower()) if t}


# --------------------------------------------------------------------------- reading


def read_sample(path: str | Path, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """The header and the first `rows` rows of a CSV, CSV.gz or Parquet file. CSV columns
    are read as text (empty cells and NA/null missing), typed later by :func:`facts`."""
    import pyarrow as pa

    path = Path(path)
    fmt = table_file(path, str(path))
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            batches = parquet.iter_batches(batch_size=rows)
            first = next(batches, None)
            if first is None:
                return parquet.schema_arrow.empty_table().to_pandas()
            return first.to_pandas()
        import pyarrow.csv as pacsv

        text = {name: pa.string() for name in _header(path, fmt, str(path))}
        batches_read: list[Any] = []
        n = 0
        with open_csv(path) as stream:
            reader = pacsv.open_csv(
                stream,
                convert_options=pacsv.ConvertOptions(column_types=text, strings_can_be_null=True),
            )
            for batch in reader:
                batches_read.append(batch)
                n += batch.num_rows
                if n >= rows:
                    break
        table = pa.Table.from_batches(batches_read, schema=reader.schema)
        return table.slice(0, rows).to_pandas()
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise unreadable(str(path), fmt, err) from None


# ----------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class ColumnFacts:
    """What the sample says about one column."""

    name: str
    kind: str  # "datetime", "number" or "text"
    rows: int
    missing: int
    distinct: int
    integral: bool = False  # numbers: every value a whole number
    binary: bool = False  # values within {0, 1} (or true/false)
    low: float | None = None
    high: float | None = None
    mean: float | None = None
    example: str = ""

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def unique(self) -> bool:
        return self.missing == 0 and self.distinct == self.rows and self.rows > 0

    @property
    def modest(self) -> bool:
        """Few enough distinct values for a category."""
        return 2 <= self.distinct <= MAX_CATEGORIES and (
            self.present < 20 or self.distinct <= MAX_DISTINCT_SHARE * self.present
        )

    @property
    def norm(self) -> str:
        return normal_name(self.name)

    @property
    def tokens(self) -> set[str]:
        return name_tokens(self.name)


def facts(name: str, series: pd.Series) -> ColumnFacts:
    """Kind, missing values, distinct values and range of one sampled column."""
    dtype = series.dtype
    rows = len(series)
    if isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
        missing = int(series.isna().sum())
        return ColumnFacts(
            name, "datetime", rows, missing, int(series.nunique()), example=_first(series)
        )
    if pd.api.types.is_bool_dtype(dtype):
        missing = int(series.isna().sum())
        ones = series.dropna().astype(bool)
        return ColumnFacts(
            name,
            "number",
            rows,
            missing,
            int(series.nunique()),
            integral=True,
            binary=True,
            low=0.0,
            high=1.0,
            mean=float(ones.mean()) if len(ones) else None,
        )
    if pd.api.types.is_numeric_dtype(dtype):
        return _number_facts(name, series.to_numpy(dtype=np.float64, na_value=np.nan), series)
    missing_mask = _missing(series)
    present = series.astype("str")[~missing_mask]
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and not numbers.isna().any():
        values = np.full(rows, np.nan)
        values[~missing_mask] = numbers.to_numpy(dtype=np.float64)
        return _number_facts(name, values, series)
    lowered = set(present.str.strip().str.lower().unique()) if len(present) else set()
    binary = bool(lowered) and lowered <= {"true", "false", "0", "1"}
    kind = "datetime" if len(present) and _dates(present) else "text"
    return ColumnFacts(
        name,
        kind,
        rows,
        int(missing_mask.sum()),
        int(present.nunique()),
        binary=binary,
        example=_first(present),
    )


def _number_facts(name: str, values: np.ndarray, series: pd.Series) -> ColumnFacts:
    missing = np.isnan(values)
    present = values[~missing]
    finite = present[np.isfinite(present)]
    return ColumnFacts(
        name,
        "number",
        len(values),
        int(missing.sum()),
        int(pd.unique(present).size),
        integral=bool(finite.size) and bool(np.all(finite == np.round(finite))),
        binary=bool(present.size) and bool(np.isin(present, (0.0, 1.0)).all()),
        low=float(finite.min()) if finite.size else None,
        high=float(finite.max()) if finite.size else None,
        mean=float(finite.mean()) if finite.size else None,
        example=_first(series[~missing]),
    )


def _dates(present: pd.Series) -> bool:
    """Text that reads as dates or times (nearly all of it)."""
    head = present.iloc[:1000]
    if head.str.match(_DATE_LIKE).mean() < 0.95:
        return False
    _, bad = _to_time(head)  # as loading reads them: ISO 8601, else one inferred format
    return bool((~bad).mean() >= 0.95)


def _first(series: pd.Series) -> str:
    values = series.dropna()
    return str(values.iloc[0]) if len(values) else ""


# ------------------------------------------------------------------------ suggestion


@dataclass
class _Line:
    key: str
    value: Any  # str, or list of (name, comment) for categorical/numeric
    comment: str
    active: bool = True  # False: written commented out


@dataclass
class Suggestion:
    """A guessed schema: :attr:`columns` is its [columns] table, :attr:`time` its [time]
    table (or None); :meth:`to_toml` writes it with a comment per line."""

    source: str
    sample_rows: int
    columns: dict[str, Any] = field(default_factory=dict)
    time: dict[str, str] | None = None
    ignored: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _lines: list[_Line] = field(default_factory=list)
    _time_comments: dict[str, str] = field(default_factory=dict)

    def schema(self) -> Schema:
        return Schema.from_document(self.document(), source="suggested schema")

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"columns": dict(self.columns)}
        if self.time is not None:
            doc["time"] = dict(self.time)
        return doc

    def to_toml(self) -> str:
        out = [
            f"# Schema suggested by `fraudseq check {_comment(self.source)} --suggest-schema`",
            f"# from the header and the first {self.sample_rows:,} rows. Every line is a guess,",
            "# with the reason after the #: check each one, edit, then pass this file to",
            "# --schema (`fraudseq check DATA --schema FILE` profiles the data with it).",
        ]
        out.extend(f"# {_comment(note)}" for note in self.notes)
        out += ["", "[columns]"]
        for line in self._lines:
            if isinstance(line.value, list):
                if not line.value:
                    out.append(_pad(f"{line.key} = []", line.comment))
                    continue
                out.append(_pad(f"{line.key} = [", line.comment))
                out.extend(_pad(f"    {_toml_str(n)},", why) for n, why in line.value)
                out.append("]")
            elif line.active:
                out.append(_pad(f"{line.key} = {_toml_str(line.value)}", line.comment))
            elif line.value is None:
                out.append(f"# {line.key}: {_comment(line.comment)}")
            else:
                out.append(_pad(f"# {line.key} = {_toml_str(line.value)}", line.comment))
        if self.time is not None:
            out += ["", "[time]"]
            for key in ("unit", "origin"):
                out.append(_pad(f"{key} = {_toml_str(self.time[key])}", self._time_comments[key]))
        if self.ignored:
            out += ["", "# Columns left out (not read; add them to a role above if they help):"]
            width = min(max(len(_comment(n)) for n, _ in self.ignored), 24)
            out.extend(
                f"#   {_comment(n or '(unnamed)'):<{width}}  {_comment(why)}"
                for n, why in self.ignored
            )
        return "\n".join(out) + "\n"


def _toml_str(value: str) -> str:
    """A TOML basic string."""
    escaped = []
    for ch in str(value):
        if ch in ('"', "\\"):
            escaped.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            escaped.append(f"\\u{ord(ch):04X}")
        else:
            escaped.append(ch)
    return '"' + "".join(escaped) + '"'


def _comment(text: Any) -> str:
    """Text that stays on one comment line (TOML comments allow no control characters)."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", " ", str(text))


def _pad(code: str, comment: str) -> str:
    return f"{code:<34} # {_comment(comment)}" if comment else code


def _show(value: float | None) -> str:
    return "?" if value is None else f"{value:,.6g}"


def suggest_schema(path: str | Path, sample_rows: int = SAMPLE_ROWS) -> Suggestion:
    """Guess a schema from the header and the first `sample_rows` rows of a file."""
    sample = read_sample(path, sample_rows)
    return suggest_from_frame(sample, source=str(path))


def suggest_from_frame(sample: pd.DataFrame, source: str = "DATA") -> Suggestion:
    """Guess a schema from a sample of rows (see :func:`suggest_schema`)."""
    names = [str(c) for c in sample.columns]
    if len(set(names)) < len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise DataValidationError(
            f"{source}: column(s) {', '.join(map(repr, repeated))} appear more than once in "
            "the header. Fix: rename the duplicates."
        )
    cols = {n: facts(n, sample.iloc[:, i]) for i, n in enumerate(names)}
    guess = _Guesser(cols, len(sample), source)
    return guess.run()


class _Guesser:
    def __init__(self, cols: dict[str, ColumnFacts], rows: int, source: str) -> None:
        self.cols = cols
        self.rows = rows
        self.free = dict(cols)  # not given a role yet
        self.result = Suggestion(source=source, sample_rows=rows)
        self.lines: dict[str, _Line] = {}
        self.ignored: dict[str, str] = {}
        self.categorical: list[tuple[str, str]] = []  # (column, why)
        self.numeric: list[tuple[str, str]] = []

    # -- helpers --------------------------------------------------------------------
    def by_name(self, names: tuple[str, ...], ok=lambda f: True) -> ColumnFacts | None:
        for wanted in names:
            for f in self.free.values():
                if f.norm == wanted and ok(f):
                    return f
        return None

    def by_tokens(self, need: set[str], also: set[str] | None = None, ok=lambda f: True):
        for f in self.free.values():
            if f.tokens & need and (also is None or f.tokens & also) and ok(f):
                return f
        return None

    def take(self, f: ColumnFacts) -> None:
        self.free.pop(f.name, None)

    def ignore(self, f: ColumnFacts, why: str) -> None:
        self.ignored[f.name] = why
        self.take(f)

    def set(self, key: str, f: ColumnFacts, why: str) -> None:
        self.lines[key] = _Line(key, f.name, why)
        self.result.columns[key] = f.name
        self.take(f)

    def comment_out(self, key: str, value: str | None, why: str) -> None:
        self.lines[key] = _Line(key, value, why, active=False)

    def _distinct(self, f: ColumnFacts) -> str:
        return f"{f.distinct:,} distinct in {f.present:,} rows"

    # -- the guess ------------------------------------------------------------------
    def run(self) -> Suggestion:
        for f in list(self.free.values()):
            if f.norm in _INDEX_NAMES and f.kind == "number" and f.integral and f.unique:
                self.ignore(f, "a saved row index (0, 1, 2, ...), not data")
            elif f.present == 0:
                self.ignore(f, "empty in the sampled rows")
        self.label()
        self.time()
        self.amount()
        self.transaction_id()
        self.entity()
        self.counterparty()
        self.features()
        return self.finish()

    def label(self) -> None:
        f = self.by_name(_LABEL_NAMES, lambda f: f.binary) or self.by_tokens(
            {"fraud"}, ok=lambda f: f.binary and f.norm not in _SCENARIO_NAMES
        )
        if f is not None:
            share = f", {f.mean:.2%} ones in the sample" if f.mean is not None else ""
            self.set("label", f, f"0/1 values{share}, named like a fraud label")
        else:
            self.comment_out(
                "label", None, "no 0/1 column named like a fraud label; scoring works without it"
            )
        for g in list(self.free.values()):
            if g.norm in _LABEL_NAMES:  # ground truth, whatever its values: never a feature
                fix = "" if g.binary else ": convert it to 1 = fraud, 0 = legitimate"
                self.ignore(g, f"named like a label (e.g. {g.example!r}), so never a feature{fix}")
        s = self.by_name(_SCENARIO_NAMES) or self.by_tokens({"scenario"})
        if s is not None:
            self.set(
                "scenario",
                s,
                "named like a fraud scenario/type: ground truth, only to break results down",
            )
        for f in list(self.free.values()):
            if "fraud" in f.tokens or "chargeback" in f.tokens:
                self.ignore(
                    f,
                    "named like fraud ground truth: left out so it cannot leak into the "
                    "features (add it to numeric only if it is known when a transaction "
                    "happens)",
                )

    def time(self) -> None:
        best: tuple[tuple, ColumnFacts] | None = None
        for i, f in enumerate(self.free.values()):
            if f.norm in _PERSONAL_NAMES:
                continue
            timeish = bool(f.tokens & _TIME_TOKENS) or f.norm in _TIME_NAMES
            rank = _TIME_NAMES.index(f.norm) if f.norm in _TIME_NAMES else len(_TIME_NAMES)
            if f.kind == "datetime":
                score = (0, rank, i) if f.norm in _TIME_NAMES else (1 if timeish else 3, i)
            elif f.kind == "number" and f.norm in _TIME_NAMES:
                score = (2, rank, i)
            elif f.kind == "number" and timeish and (f.tokens & set(_UNIT_TOKENS)):
                score = (4, i)
            else:
                continue
            score = (f.missing > 0, *score)  # complete columns first
            if best is None or score < best[0]:
                best = (score, f)
        if best is None:
            self.lines["time"] = _Line(
                "time",
                "<your time column>",
                "FIX: no column looks like a time (dates, or numbers named like a time)",
            )
            self.result.columns["time"] = "<your time column>"
            self.result.notes.append("FIX: name the time column below; none was recognised.")
            return
        f = best[1]
        check = f"; CHECK: {f.missing:,} missing in the sample, which loading refuses"
        if f.kind == "datetime":
            self.set("time", f, f"dates and times, e.g. {f.example!r}" + check * bool(f.missing))
        else:
            unit, origin, why_unit, why_origin = _numeric_time(f)
            self.set(
                "time",
                f,
                f"numbers named like a time ({_show(f.low)} to {_show(f.high)}): "
                "read through [time] below" + check * bool(f.missing),
            )
            self.result.time = {"unit": unit, "origin": origin}
            self.result._time_comments = {"unit": why_unit, "origin": why_origin}
            self.result.notes.append(
                f"CHECK the [time] table: {f.name!r} holds numbers, and their unit and origin "
                "are guesses."
            )
        for g in list(self.free.values()):
            timeish = g.kind == "datetime" or bool(g.tokens & _TIME_TOKENS)
            if timeish and g.norm not in _PERSONAL_NAMES:
                self.ignore(g, f"another time column ({f.name!r} is the time)")

    def amount(self) -> None:
        def ok(g: ColumnFacts) -> bool:
            return g.kind == "number" and not g.tokens & {"balance", "old", "new"}

        f = self.by_name(_AMOUNT_NAMES, ok) or self.by_tokens({"amount", "amt"}, ok=ok)
        if f is None and (g := self.by_name(_AMOUNT_NAMES)) is not None:
            self.set(
                "amount",
                g,
                f"named like an amount; CHECK: not plain numbers in the sample (e.g. "
                f"{g.example!r}), which loading refuses",
            )
            return
        if f is None:
            self.lines["amount"] = _Line(
                "amount", "<your amount column>", "FIX: no numeric column named like an amount"
            )
            self.result.columns["amount"] = "<your amount column>"
            self.result.notes.append("FIX: name the amount column below; none was recognised.")
            return
        why = f"numbers named like an amount ({_show(f.low)} to {_show(f.high)})"
        if f.missing:
            why += f"; CHECK: {f.missing:,} missing in the sample, which loading refuses"
        self.set("amount", f, why)

    def transaction_id(self) -> None:
        f = self.by_name(_ID_NAMES) or self.by_tokens(
            {"transaction", "trans", "tx", "txn", "trx", "payment"}, _ID_TOKENS
        )
        if f is None:
            self.comment_out(
                "id", None, "no transaction id column: each row's id is its 1-based row number"
            )
            return
        if f.unique:
            self.set("id", f, f"unique in the {f.rows:,} sampled rows, named like an id")
            return
        problem = (
            f"{f.missing:,} missing" if f.missing else f"{f.present - f.distinct:,} repeated values"
        )
        self.comment_out(
            "id",
            f.name,
            f"named like an id but NOT unique in the sample ({problem}); without id each row's "
            "id is its 1-based row number",
        )
        self.ignore(f, "named like a transaction id, but not unique (see id above)")

    def entity(self) -> None:
        f = self.by_name(_ENTITY_NAMES) or self.by_tokens(
            {"card", "customer", "cust", "account", "acct", "user", "client"}, _ID_TOKENS
        )
        if f is None:
            self.comment_out(
                "entity",
                None,
                "no card/customer/account column found, so none is set: the whole file is one "
                "stream in time order",
            )
            return
        why = f"named like a card/customer/account ({self._distinct(f)})"
        if f.missing:
            self.comment_out(
                "entity",
                f.name,
                f"named like a card/customer/account, but {f.missing:,} rows of the sample "
                'have none, which loading refuses; a composite key (entity = ["a", "b"]) '
                "allows a missing part",
            )
            self.ignore(f, "entity-like but with missing values (see entity above)")
        else:
            if f.norm == "card1":
                why += '; IEEE-CIS style: entity = ["card1", "addr1"] is a finer key'
            self.set("entity", f, why)
        for g in list(self.free.values()):
            other_key = g.tokens & {"customer", "account", "user", "client"} and (
                g.tokens & _ID_TOKENS
            )
            if (g.norm in _ENTITY_NAMES and g.norm != "card1") or other_key:
                self.ignore(g, "another entity-like column (a different entity, or a key part)")

    def counterparty(self) -> None:
        def ok(g: ColumnFacts) -> bool:
            return g.kind == "text" or (g.kind == "number" and g.integral)

        f = self.by_name(_COUNTERPARTY_NAMES, ok) or self.by_tokens(
            {"merchant", "terminal", "payee", "beneficiary", "recipient", "receiver"}, ok=ok
        )
        if f is None:
            return
        self.set(
            "counterparty",
            f,
            f"named like a merchant/terminal/payee ({self._distinct(f)}): its delayed-label "
            "fraud rate is a feature",
        )
        if f.modest:
            self.categorical.append((f.name, "the counterparty too: few enough values"))

    def features(self) -> None:
        for f in list(self.free.values()):
            if f.norm in _PERSONAL_NAMES:
                self.ignore(f, "personal data (constant per customer): not a feature")
            elif f.kind == "number" and f.integral and f.tokens & _CODE_TOKENS and f.modest:
                self.categorical.append(
                    (f.name, f"whole numbers named like a code ({self._distinct(f)})")
                )
                self.take(f)
            elif f.kind == "number" and f.distinct <= 1:
                self.ignore(f, "a single value in the sample")
            elif f.kind == "number":
                missing = f", {f.missing / f.rows:.0%} missing" if f.missing else ""
                self.numeric.append((f.name, f"numbers{missing}"))
                self.take(f)
            elif f.kind == "text" and f.distinct <= 1:
                self.ignore(f, "a single value in the sample")
            elif f.kind == "text" and f.modest:
                missing = f", {f.missing / f.rows:.0%} missing" if f.missing else ""
                self.categorical.append((f.name, f"text, {self._distinct(f)}{missing}"))
                self.take(f)
            elif f.kind == "text":
                self.ignore(
                    f, f"text with too many distinct values for a category ({self._distinct(f)})"
                )
            else:
                self.ignore(f, f"{f.kind} values")

    def finish(self) -> Suggestion:
        result = self.result
        result.columns["categorical"] = [n for n, _ in self.categorical]
        result.columns["numeric"] = [n for n, _ in self.numeric]
        cat_why = "text or codes with modest cardinality" if self.categorical else "none found"
        num_why = "other numeric columns" if self.numeric else "none found"
        order = ("id", "entity", "time", "amount", "label")
        lines = [self.lines[k] for k in order if k in self.lines]
        lines.append(_Line("categorical", self.categorical, cat_why))
        lines.append(_Line("numeric", self.numeric, num_why))
        lines += [self.lines[k] for k in ("counterparty", "scenario") if k in self.lines]
        result._lines = lines
        result.ignored = list(self.ignored.items())
        # The text must be a schema: parse it back, exactly as --schema would.
        text = result.to_toml()
        try:
            parsed = Schema.from_document(tomllib.loads(text), source="suggested schema")
        except (tomllib.TOMLDecodeError, FraudseqError) as err:  # a bug, not a user error
            raise RuntimeError(f"the suggested schema does not parse: {err}\n{text}") from err
        if parsed != result.schema():
            raise RuntimeError(f"the suggested schema's text and roles differ:\n{text}")
        return result


def _numeric_time(f: ColumnFacts) -> tuple[str, str, str, str]:
    """(unit, origin, why unit, why origin) of a numeric time column."""
    unit = next((_UNIT_TOKENS[t] for t in sorted(f.tokens) if t in _UNIT_TOKENS), None)
    why = f"named {f.name!r}" if unit else None
    if f.norm == "transactiondt":
        unit, why = "s", "TransactionDT counts seconds (IEEE-CIS: 86400 is day 1)"
    elif f.norm == "time" and unit is None:
        unit, why = "s", "a 'Time' column usually counts seconds (ULB credit card data)"
    high = f.high or 0.0
    epoch = {"s": 1e8, "ms": 1e11, "us": 1e14, "ns": 1e17}
    if unit is None:
        # No unit in the name: guess it from the magnitude if the values look like Unix time.
        unit = next((u for u, low in reversed(epoch.items()) if high > low * 10), "s")
        why = "no unit in the name: guessed from the size of the values"
    if unit == "h" and "step" in f.tokens:
        why = "simulation steps: 1 step = 1 hour in PaySim"
    if unit in epoch and (f.low or 0.0) > epoch[unit]:
        return unit, "1970-01-01", f"CHECK: {why}", "values this large look like Unix time"
    return (
        unit,
        PLACEHOLDER_ORIGIN,
        f"CHECK: {why}",
        "CHECK: a PLACEHOLDER: set the date and time that the value 0 stands for",
    )
