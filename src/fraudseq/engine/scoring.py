"""Scoring and evaluating a file shard by shard, in memory bounded by a shard.

Each shard holds whole entity histories and gets the counterparty features of the whole
file from the keyed stage (`fraudseq.engine.keyed`), so its probabilities equal those of
`FraudModel.score` over the whole file. Shards run through a `Mapper`: the builtin `map`
in this process, or Ray tasks (`fraudseq.engine.run.ray_mapper`). The scores file is merged
in time order (ties in file order, as `score` gives them) a slice of days at a time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.engine.chunks import ROW
from fraudseq.engine.keyed import KeyedFeatures, Mapper, keyed_features
from fraudseq.engine.shards import ShardSet
from fraudseq.features.constants import NS_PER_DAY
from fraudseq.fraud_model import FraudModel, no_transactions
from fraudseq.io import TableWriter
from fraudseq.splits import in_period, parse_time


def score_shard(
    model: FraudModel, shards: ShardSet, i: int, keyed: KeyedFeatures, *, start=None, end=None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Shard i's transactions in [start, end) (in its time order) and their probabilities,
    scored after their history."""
    until = parse_time(end, "--until")
    frame = shards.frame(i, until_ns=None if until is None else until.value)
    rows = np.flatnonzero(in_period(frame[shards.schema.time], start, None))
    if not len(rows):
        return frame.iloc[:0], np.zeros(0)
    probability = model.probabilities(frame, rows, keyed.of(i, frame[ROW].to_numpy()))
    return frame.iloc[rows].reset_index(drop=True), probability


def score_file(
    model: FraudModel,
    shards: ShardSet,
    out: str | Path,
    *,
    start=None,
    end=None,
    mapper: Mapper = map,
    slice_rows: int = 1_000_000,
) -> tuple[int, int]:
    """Write `transaction_id, score, alert` of [start, end) to `out` as `FraudModel.score`
    orders them; return (transactions, alerts)."""
    keyed = keyed_features(shards, model.encoder_, mapper)
    parts = Path(tempfile.mkdtemp(prefix="scores-", dir=shards.directory.parent))
    try:
        tasks = [(model, shards, i, keyed, start, end, parts) for i in range(len(shards))]
        counts = np.array(list(mapper(_score_part, tasks))).reshape(-1, 2)
        n, alerts = (int(v) for v in counts.sum(axis=0))
        if not n:
            raise no_transactions(start, end)
        crlf = shards.manifest["carriage_return_in_ids"]
        with TableWriter(out, for_spreadsheets=True, crlf=crlf) as writer:
            for piece in _time_slices(parts, shards.day_counts(), slice_rows):
                writer.write(piece.drop(columns=["_time", ROW]))
        return n, alerts
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _score_part(task) -> tuple[int, int]:
    """One shard's scores into a Parquet part, for the merge; (transactions, alerts)."""
    model, shards, i, keyed, start, end, parts = task
    frame, probability = score_shard(model, shards, i, keyed, start=start, end=end)
    if not len(frame):
        return 0, 0
    alert = (probability >= model.threshold_).astype(np.int8)
    schema = shards.schema
    part = pd.DataFrame(
        {
            "transaction_id": frame[schema.id_column],
            "score": probability,
            "alert": alert,
            "_time": frame[schema.time],
            ROW: frame[ROW],
        }
    )
    part.to_parquet(Path(parts) / f"part-{i:05d}.parquet", index=False, row_group_size=65_536)
    return len(part), int(alert.sum())


def _time_slices(parts: Path, day_counts: pd.Series, slice_rows: int) -> Iterator[pd.DataFrame]:
    """The parts' rows in (time, file row) order, a run of whole days at a time."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(parts, format="parquet")
    days = day_counts.index.to_numpy()
    runs = np.cumsum(day_counts.to_numpy()) // max(slice_rows, 1)
    cuts = np.flatnonzero(np.diff(runs)) + 1  # a new slice starts at these days
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(days)], strict=True):
        start = pd.Timestamp(int(days[lo]) * NS_PER_DAY)
        stop = pd.Timestamp((int(days[hi - 1]) + 1) * NS_PER_DAY)
        window = (ds.field("_time") >= start) & (ds.field("_time") < stop)
        piece = dataset.to_table(filter=window).to_pandas()
        if len(piece):
            yield piece.sort_values(["_time", ROW], kind="stable")


def scored_labels(
    model: FraudModel, shards: ShardSet, *, start=None, end=None, mapper: Mapper = map
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of [start, end), shard by shard (`FraudModel.evaluation`
    gives `evaluate`'s metrics of them)."""
    keyed = keyed_features(shards, model.encoder_, mapper)
    tasks = [(model, shards, i, keyed, start, end) for i in range(len(shards))]
    pairs = list(mapper(_labels_part, tasks))
    labels = np.concatenate([p[0] for p in pairs])
    if not len(labels):
        raise no_transactions(start, end)
    return labels, np.concatenate([p[1] for p in pairs])


def _labels_part(task) -> tuple[np.ndarray, np.ndarray]:
    model, shards, i, keyed, start, end = task
    frame, probability = score_shard(model, shards, i, keyed, start=start, end=end)
    return frame[shards.schema.label].to_numpy(), probability
