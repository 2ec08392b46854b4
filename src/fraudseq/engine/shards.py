"""A transactions file partitioned by entity hash into on-disk Parquet shards.

One pass over the file in chunks writes each row to the shard of its entity, so a shard
holds whole entity histories and the feature kernel runs per shard exactly as over the
whole file. The same pass writes each row's counterparty, time and label to the partition
of its counterparty (`counterparty_partition`), where the blocks keyed by counterparty
run over the whole file (`fraudseq.engine.keyed`), and gathers what else crosses entities:
the ids (duplicates are refused, as `load_transactions` does) and the rows per day (to
merge outputs in time order).

The shards of a source are written under `work_dir/shards-<fingerprint>`, first as
`<name>.partial` and renamed when complete, so a finished directory is always whole: a
later run on the same file, schema and shard count reuses it, and a `.partial` left by a
crashed run (or one still running) is refused by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.engine.chunks import ROW, file_order, read_chunks
from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.features.constants import NS_PER_DAY
from fraudseq.schema import Schema, open_table

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Column of a counterparty partition: the shard of the row's entity.
SHARD = "_shard"
#: Rows per shard aimed at when the shard count is chosen from the file's size.
SHARD_ROWS = 1_000_000


class ShardSet:
    """The shards of one source (see the module docstring). `frame(i)` loads shard i as
    `load_transactions` would load its rows (plus `ROW`, the file position)."""

    def __init__(self, directory: Path, schema: Schema) -> None:
        self.directory = Path(directory)
        self.schema = schema
        self.manifest = json.loads((self.directory / MANIFEST).read_text())

    def __len__(self) -> int:
        return len(self.manifest["shards"])

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    def frame(
        self,
        i: int,
        *,
        until_ns: int | None = None,
        columns: list[str] | None = None,
        entities: list | None = None,
    ) -> pd.DataFrame:
        """Shard i's rows with time before `until_ns` (of the entities `entities` only, when
        given: their whole histories), sorted stably by time (file order within a time),
        index 0..n-1; only `columns` (and the time and `ROW`) if given."""
        import pyarrow.parquet as pq

        time = self.schema.time
        filters = [_before(time, until_ns)] if until_ns is not None else []
        if entities is not None:
            filters.append((self.schema.entity_column, "in", list(entities)))
        if columns is not None:
            columns = list(dict.fromkeys([*columns, time, ROW]))
        path = self.directory / self.manifest["shards"][i]
        frame = pq.read_table(path, columns=columns, filters=filters or None).to_pandas()
        frame = frame.iloc[file_order(frame, time)].reset_index(drop=True)
        label = self.schema.label
        if label in frame.columns and not frame[label].isna().any():
            frame[label] = frame[label].astype(np.int8)  # as load_transactions gives it
        return frame

    def count(self, i: int, *, until_ns: int) -> int:
        """How many of shard i's rows have time before `until_ns` (reads the time column)."""
        import pyarrow.parquet as pq

        time = self.schema.time
        path = self.directory / self.manifest["shards"][i]
        table = pq.read_table(path, columns=[time], filters=[_before(time, until_ns)])
        return table.num_rows

    def counterparty_partition(self, i: int) -> pd.DataFrame:
        """Counterparty partition i: `ROW`, `SHARD`, the counterparty, time and label (if
        any) of every row whose counterparty hashes to it."""
        import pyarrow.parquet as pq

        return pq.read_table(self.directory / self.manifest["counterparty"][i]).to_pandas()

    def day_counts(self) -> pd.Series:
        """Rows per UTC day (days since the epoch), sorted by day."""
        days = self.manifest["days"]
        return pd.Series(days["rows"], index=np.asarray(days["day"], dtype=np.int64))

    @classmethod
    def build(
        cls,
        source: str | Path,
        schema: Schema | str | Path | None,
        work_dir: str | Path,
        *,
        shards: int | None = None,
        chunk_rows: int = 500_000,
        require_label: bool | str = False,
    ) -> ShardSet:
        """The shards of `source` under `work_dir`: reused if a finished run made them,
        else written (see the module docstring)."""
        table = open_table(source, schema, require_label=require_label)
        schema = table.schema
        shards = shards or _shard_count(table.path)
        work_dir = Path(work_dir)
        name = f"shards-{_fingerprint(table.path, schema, shards, require_label)}"
        final, partial = work_dir / name, work_dir / f"{name}.partial"
        if (final / MANIFEST).is_file():
            return cls(final, schema)
        if partial.exists():
            raise FraudseqError(
                f"{partial} holds the shards of a run that did not finish (it crashed or is "
                f"still running). Fix: if no other fraudseq command is using it, remove it; "
                f"or choose another --work-dir."
            )
        try:
            partial.mkdir(parents=True)
            manifest = _write(source, schema, partial, shards, chunk_rows, require_label)
            (partial / MANIFEST).write_text(json.dumps(manifest))
            os.replace(partial, final)
        except OSError as err:
            shutil.rmtree(partial, ignore_errors=True)
            raise FraudseqError(
                f"cannot write the shards of {table.name} under {work_dir}: "
                f"{err.strerror or err}. Nothing was kept. Fix: free space there, or choose "
                f"--work-dir on a disk with room for about the size of the data."
            ) from err
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return cls(final, schema)


def _shard_count(path: Path) -> int:
    """About SHARD_ROWS rows per shard, from the row count a Parquet file states or the
    size of a CSV file (about 60 bytes a row, 4 times less gzipped)."""
    if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
        import pyarrow.dataset as ds

        rows = ds.dataset(path, format="parquet").count_rows()
    else:
        per_row = 15 if path.name.lower().endswith(".gz") else 60
        rows = path.stat().st_size / per_row
    return max(1, math.ceil(rows / SHARD_ROWS))


def _fingerprint(path: Path, schema: Schema, shards: int, require_label: bool | str) -> str:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    stamp = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    text = json.dumps([FORMAT_VERSION, stamp, schema.to_dict(), shards, require_label])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write(source, schema: Schema, directory: Path, shards: int, chunk_rows: int, require_label):
    files = [f"shard-{i:05d}.parquet" for i in range(shards)]
    by_counterparty = [f"counterparty-{i:05d}.parquet" for i in range(shards)]
    gathered = _Gathered(schema, str(source))
    with (
        _Partitions(directory, files) as entity_parts,
        _Partitions(directory, by_counterparty) as counterparty_parts,
    ):
        for chunk in read_chunks(source, schema, rows=chunk_rows, require_label=require_label):
            gathered.add(chunk)
            if schema.label in chunk.columns:  # one type in every chunk (NaN: not known)
                chunk[schema.label] = chunk[schema.label].astype(np.float64)
            shard = _partition_of(chunk[schema.entity_column], shards)
            entity_parts.write(chunk, shard)
            if schema.counterparty:
                keyed = [ROW, schema.counterparty, schema.time]
                keyed += [schema.label] if schema.label in chunk.columns else []
                part = chunk[keyed].assign(**{SHARD: shard.astype(np.int32)})
                counterparty_parts.write(part, _partition_of(chunk[schema.counterparty], shards))
    manifest = gathered.finish(directory, files)
    manifest["counterparty"] = by_counterparty if schema.counterparty else []
    return manifest


class _Partitions:
    """One Parquet writer per partition file; a partition without rows gets an empty file
    of the same columns."""

    def __init__(self, directory: Path, files: list[str]) -> None:
        self.directory, self.files = directory, files
        self.writers: list = [None] * len(files)

    def __enter__(self) -> _Partitions:
        return self

    def write(self, frame: pd.DataFrame, partition: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(len(self.files) + 1))
        for i in np.flatnonzero(np.diff(bounds)):
            part = pa.Table.from_pandas(
                frame.iloc[order[bounds[i] : bounds[i + 1]]], preserve_index=False
            )
            if self.writers[i] is None:
                self.writers[i] = pq.ParquetWriter(self.directory / self.files[i], part.schema)
            self.writers[i].write_table(part)

    def __exit__(self, *exc) -> None:
        import pyarrow.parquet as pq

        for writer in self.writers:
            if writer is not None:
                writer.close()
        if exc[0] is None and any(w is not None for w in self.writers):
            columns = next(w.schema for w in self.writers if w is not None)
            for file, writer in zip(self.files, self.writers, strict=True):
                if writer is None:
                    pq.write_table(columns.empty_table(), self.directory / file)


def _partition_of(keys: pd.Series, partitions: int) -> np.ndarray:
    """Each key's partition: a stable 64-bit hash of it, modulo the partition count."""
    hashes = pd.util.hash_pandas_object(keys, index=False).to_numpy()
    return (hashes % np.uint64(partitions)).astype(np.int64)


class _Gathered:
    """What else crosses entities, gathered chunk by chunk: id hashes and rows per day."""

    def __init__(self, schema: Schema, name: str) -> None:
        self.schema, self.name = schema, name
        self.ids: list[np.ndarray] = []
        self.days: list[pd.Series] = []
        self.rows = 0
        self.carriage_return = False

    def add(self, chunk: pd.DataFrame) -> None:
        s = self.schema
        ids = chunk[s.id_column]
        self.ids.append(pd.util.hash_pandas_object(ids, index=False).to_numpy())
        self.carriage_return |= bool(ids.str.contains("\r", regex=False).any())
        time_ns = chunk[s.time].to_numpy(dtype="datetime64[ns]").view(np.int64)
        self.days.append(pd.Series(time_ns // NS_PER_DAY).value_counts())
        self.rows += len(chunk)

    def finish(self, directory: Path, files: list[str]) -> dict:
        self._check_unique_ids(directory, files)
        days = pd.concat(self.days).groupby(level=0).sum().sort_index()
        return {
            "format_version": FORMAT_VERSION,
            "rows": self.rows,
            "shards": files,
            "carriage_return_in_ids": self.carriage_return,
            "days": {"day": days.index.tolist(), "rows": days.to_numpy().tolist()},
        }

    def _check_unique_ids(self, directory: Path, files: list[str]) -> None:
        """Raise as `load_transactions` does if an id repeats: hashes first, then the ids
        of the rows whose hashes repeat."""
        import pyarrow.parquet as pq

        repeated = []
        parts = 16  # sorted a sixteenth at a time: 8 bytes a row, never twice
        for p in range(parts):
            hashes = np.concatenate([h[h % np.uint64(parts) == p] for h in self.ids])
            hashes.sort()
            repeated.append(hashes[1:][hashes[1:] == hashes[:-1]])
        self.ids = []
        repeated = np.concatenate(repeated)
        if not len(repeated):
            return
        column = self.schema.id_column
        found = []
        for file in files:
            part = pq.read_table(directory / file, columns=[column, ROW]).to_pandas()
            mask = np.isin(
                pd.util.hash_pandas_object(part[column], index=False).to_numpy(), repeated
            )
            found.append(part[mask])
        rows = pd.concat(found)
        rows = rows[rows[column].duplicated(keep=False)].sort_values(ROW)
        if len(rows):
            shown = ", ".join(str(r + 1) for r in rows[ROW].head(5))
            raise DataValidationError(
                f"{self.name}: column {column!r}: duplicate transaction ids at rows {shown} (first "
                f"{min(len(rows), 5)} of {len(rows)}; 1-based data rows, header not counted) "
                f"with value(s) {', '.join(repr(v) for v in rows[column].head(5))}. Fix: ids "
                f"must be unique; remove duplicated rows (e.g. a file loaded twice) or point "
                f"'id' at a truly unique column."
            )


def _before(time: str, until_ns: int) -> tuple:
    """A Parquet filter for times before `until_ns`, exact to the nanosecond: a
    `pd.Timestamp` bound goes through microseconds and would drop a row at the bound's
    last microsecond (such as the last row, with `until` = the last time + 1 ns)."""
    import pyarrow as pa

    return (time, "<", pa.scalar(int(until_ns), pa.timestamp("ns")))
