"""A transactions file read in chunks of rows: each chunk validated and canonical, as
`load_transactions` gives the whole file, with the file position of each row (`ROW`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError
from fraudseq.schema import Schema, Table, canonical_rows, open_csv, open_table, unreadable

#: Column added to each chunk: the row's 0-based position among the file's data rows.
ROW = "_row"


def file_order(frame: pd.DataFrame, time: str) -> np.ndarray:
    """The order `load_transactions` gives rows of a file: by time, then file position."""
    return np.lexsort((frame[ROW].to_numpy(), frame[time].to_numpy()))


def read_chunks(
    source: str | Path,
    schema: Schema | str | Path | None = None,
    *,
    rows: int = 500_000,
    require_label: bool | str = False,
) -> Iterator[pd.DataFrame]:
    """Canonical chunks of about `rows` rows of a .csv, .csv.gz or .parquet file (or a
    Parquet dataset directory), in file order. Raises DataValidationError as
    `load_transactions` does, naming the file's rows."""
    table = open_table(source, schema, require_label=require_label)
    batches = _parquet_batches(table, rows) if table.fmt == "parquet" else _csv_batches(table, rows)
    first = 0
    for frame in batches:
        if not len(frame):
            continue
        chunk = canonical_rows(table, frame, first_row=first, require_label=require_label)
        chunk[ROW] = np.arange(first, first + len(chunk), dtype=np.int64)
        first += len(chunk)
        yield chunk
    if first == 0:
        raise DataValidationError(
            f"{table.name}: no transactions (the table has a header but no rows). Fix: check "
            f"the export or the filter that produced it."
        )


def _parquet_batches(table: Table, rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(table.path, format="parquet")
    # No read-ahead: by default Arrow reads 16 batches ahead, memory that grows with the file.
    batches = dataset.to_batches(
        columns=table.present, batch_size=rows, batch_readahead=0, fragment_readahead=0
    )
    for batch in batches:
        yield batch.to_pandas()


def _csv_batches(table: Table, rows: int) -> Iterator[pd.DataFrame]:
    """CSV blocks of about `rows` rows. Text roles are read as text (ids keep their zeros);
    the other columns' types are those of the first block, widened so that a later block
    cannot fail on a value the first block did not show: integers to floats (a 12.5 after
    12s; numeric times to int64, which floats would round), empty columns to text."""
    import pyarrow as pa

    text = {c: pa.string() for c in table.present if c in table.schema.string_columns}
    probe = 1 << 20
    try:
        probing = _csv_blocks(table, probe, text)
        first = next(probing, None)
        probing.close()  # closes the file
        if first is None:
            return
        types = {f.name: _widened(f.type, f.name == table.schema.time) for f in first.schema}
        block = int(min(max(rows * probe / max(first.num_rows, 1), 1 << 16), 1 << 30))
        for batch in _csv_blocks(table, block, types):
            yield batch.to_pandas()
    except (pa.ArrowInvalid, OSError, EOFError) as err:
        raise unreadable(table.name, "csv", err) from None


def _csv_blocks(table: Table, block_size: int, types: dict):
    import pyarrow.csv as pacsv

    with open_csv(table.path) as stream:
        yield from pacsv.open_csv(
            stream,
            read_options=pacsv.ReadOptions(block_size=block_size),
            convert_options=pacsv.ConvertOptions(include_columns=table.present, column_types=types),
        )


def _widened(arrow_type, is_time: bool):
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return pa.int64() if is_time else pa.float64()
    return pa.string() if pa.types.is_null(arrow_type) else arrow_type
