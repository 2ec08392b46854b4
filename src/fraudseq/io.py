"""Reading and atomically writing tables (CSV, CSV.gz, Parquet) and small files."""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def table_format(path: str | Path) -> str:
    """Return "csv" or "parquet" from a file name, or raise naming the accepted suffixes."""
    name = str(path).lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    raise FraudseqError(f"{path}: unknown file type; use one of {', '.join(TABLE_SUFFIXES)}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`, renamed onto it only if the block succeeds.
    Failing to write (a directory in the way, no space, no permission) raises one
    FraudseqError naming `path`."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, default_mode(0o666))  # mkstemp makes 0600; use the usual umask
        os.replace(tmp_path, path)
    except OSError as exc:
        raise FraudseqError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


def default_mode(base: int) -> int:
    """`base` with the process umask applied, as open() or mkdir() would."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def write_table(df: pd.DataFrame, path: str | Path, *, for_spreadsheets: bool = False) -> Path:
    """Write `df` as CSV (gzip when the name ends in .gz) or Parquet, atomically.

    `for_spreadsheets`: a CSV's text cells that a spreadsheet would run as a formula are
    neutralised (:func:`spreadsheet_safe`); Parquet keeps its typed values as they are.
    A CSV whose text holds a carriage return ends its lines with CR LF, as RFC 4180 does:
    Python's csv writer quotes a cell only for the characters of the line ending, and a
    bare CR left unquoted would start a new row in a spreadsheet."""
    crlf = _holds_carriage_return(df)
    with TableWriter(path, for_spreadsheets=for_spreadsheets, crlf=crlf) as writer:
        writer.write(df)
    return Path(path)


class TableWriter:
    """`write_table` in parts: each `write(part)` appends rows of the same columns; the
    file appears, whole, when the block ends without error. `crlf`: end CSV lines with
    CR LF (say so when any text cell holds a carriage return, see `write_table`)."""

    def __init__(self, path: str | Path, *, for_spreadsheets: bool = False, crlf: bool = False):
        self.path = Path(path)
        self.format = table_format(self.path)
        self.for_spreadsheets = for_spreadsheets
        self.ending = "\r\n" if crlf else "\n"
        self._writer = None
        self._handle = None

    def __enter__(self) -> TableWriter:
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, part: pd.DataFrame) -> None:
        try:
            if self.format == "parquet":
                self._write_parquet(part)
            else:
                self._write_csv(part)
        except OSError as exc:
            raise FraudseqError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _write_parquet(self, part: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(part, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, table.schema)
        self._writer.write_table(table.cast(self._writer.schema))

    def _write_csv(self, part: pd.DataFrame) -> None:
        header = self._handle is None
        if header:
            gz = self.path.name.lower().endswith(".gz")
            self._handle = (gzip.open if gz else open)(self._tmp, "wt", newline="")
        out = spreadsheet_safe(part) if self.for_spreadsheets else part
        out.to_csv(self._handle, index=False, header=header, lineterminator=self.ending)

    def __exit__(self, *exc) -> None:
        try:
            for closing in (self._writer, self._handle):
                if closing is not None:
                    closing.close()
        finally:
            self._atomic.__exit__(*exc)


#: What makes a spreadsheet read a cell as a formula (OWASP's CSV injection rule).
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def _holds_carriage_return(df: pd.DataFrame) -> bool:
    return any(_text_cells(df[c], lambda t: t.str.contains("\r", regex=False)).any() for c in df)


def _text_cells(values: pd.Series, test) -> pd.Series:
    """`test` (a function of a string Series returning booleans) on the text cells of
    `values`; False for numbers, booleans, dates and missing values."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # its cells are its categories' values
        values = values.astype(object)
    if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
        return pd.Series(False, index=values.index)  # numbers, booleans, dates
    is_text = values.map(type).eq(str) if values.dtype == object else values.notna()
    text = values.where(is_text, "").astype(str)
    return test(text).fillna(False).astype(bool) & is_text


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of `df` whose text cells starting with =, +, -, @, a tab or a carriage return
    are prefixed with a single quote, so that a spreadsheet shows them instead of running
    them (OWASP's rule against CSV injection). Numbers are untouched (a score of -0.5 stays
    a number); a text id "-123" becomes "'-123"."""
    out = df.copy()
    for column in out.columns:
        values = out[column]
        risky = _text_cells(values, lambda text: text.str.startswith(FORMULA_LEADS)).to_numpy()
        if risky.any():
            changed = values.astype(object)
            changed[risky] = "'" + changed[risky].astype(str)
            out[column] = changed
    return out


def write_json(obj: Any, path: str | Path) -> Path:
    """Write strict JSON atomically, with sorted keys so files diff cleanly; NaN and
    infinities (a metric undefined without fraud, a threshold that alerts on nothing) become
    null, as JSON has no such numbers and strict parsers reject them."""
    path = Path(path)
    text = json.dumps(json_safe(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path


def json_safe(obj: Any) -> Any:
    """`obj` with non-finite floats, in any nested dict, list or tuple, replaced by None."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(value) for value in obj]
    return obj
