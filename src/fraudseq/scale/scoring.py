"""Scoring and evaluating a file shard by shard, in memory bounded by a shard.

Each shard holds whole entity histories, and the counterparty buckets of the whole file
come with it (`ShardSet.counterparty`), so a shard's probabilities equal those of
`FraudModel.score` over the whole file. The scores file is merged in time order (ties
in file order, as `score` gives them) a slice of days at a time.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.features.constants import NS_PER_DAY
from fraudseq.fraud_model import FraudModel, no_transactions
from fraudseq.io import TableWriter
from fraudseq.scale.chunks import ROW
from fraudseq.scale.shards import ShardSet
from fraudseq.splits import in_period, parse_time


@dataclass
class ScoredShard:
    """The scored rows of one shard (`frame`, in its time order) and their probabilities."""

    frame: pd.DataFrame
    probability: np.ndarray


def scored_shards(
    model: FraudModel, shards: ShardSet, *, start=None, end=None
) -> Iterator[ScoredShard]:
    """Each shard's transactions in [start, end), scored after their history."""
    counterparty = shards.counterparty()
    until = parse_time(end, "--until")
    until_ns = None if until is None else until.value
    time = shards.schema.time
    any_rows = False
    for i in range(len(shards)):
        frame = shards.frame(i, until_ns=until_ns)
        rows = np.flatnonzero(in_period(frame[time], start, None))
        if not len(rows):
            continue
        any_rows = True
        probability = model.probabilities(frame, rows, counterparty)
        yield ScoredShard(frame.iloc[rows].reset_index(drop=True), probability)
    if not any_rows:
        raise no_transactions(start, end)


def score_file(
    model: FraudModel,
    shards: ShardSet,
    out: str | Path,
    *,
    start=None,
    end=None,
    slice_rows: int = 1_000_000,
) -> tuple[int, int]:
    """Write `transaction_id, score, alert` of [start, end) to `out` as `FraudModel.score`
    orders them; return (transactions, alerts)."""
    schema = shards.schema
    parts = Path(tempfile.mkdtemp(prefix="scores-", dir=shards.directory.parent))
    try:
        n = alerts = 0
        for i, scored in enumerate(scored_shards(model, shards, start=start, end=end)):
            alert = (scored.probability >= model.threshold_).astype(np.int8)
            part = pd.DataFrame(
                {
                    "transaction_id": scored.frame[schema.id_column],
                    "score": scored.probability,
                    "alert": alert,
                    "_time": scored.frame[schema.time],
                    ROW: scored.frame[ROW],
                }
            )
            part.to_parquet(parts / f"part-{i:05d}.parquet", index=False, row_group_size=65_536)
            n, alerts = n + len(part), alerts + int(alert.sum())
        crlf = shards.manifest["carriage_return_in_ids"]
        with TableWriter(out, for_spreadsheets=True, crlf=crlf) as writer:
            for piece in _time_slices(parts, shards.day_counts(), slice_rows):
                writer.write(piece.drop(columns=["_time", ROW]))
        return n, alerts
    finally:
        shutil.rmtree(parts, ignore_errors=True)


def _time_slices(parts: Path, day_counts: pd.Series, slice_rows: int) -> Iterator[pd.DataFrame]:
    """The parts' rows in (time, file row) order, a run of whole days at a time."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(parts, format="parquet")
    days = day_counts.index.to_numpy()
    runs = np.cumsum(day_counts.to_numpy()) // max(slice_rows, 1)
    cuts = np.flatnonzero(np.diff(runs)) + 1  # a new slice starts at these days
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(days)], strict=True):
        if lo >= hi:
            continue
        start = pd.Timestamp(int(days[lo]) * NS_PER_DAY)
        stop = pd.Timestamp((int(days[hi - 1]) + 1) * NS_PER_DAY)
        window = (ds.field("_time") >= start) & (ds.field("_time") < stop)
        piece = dataset.to_table(filter=window).to_pandas()
        if len(piece):
            yield piece.sort_values(["_time", ROW], kind="stable")


def scored_labels(
    model: FraudModel, shards: ShardSet, *, start=None, end=None
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of [start, end), shard by shard (`FraudModel.evaluation`
    gives `evaluate`'s metrics of them)."""
    labels, probabilities = [], []
    for scored in scored_shards(model, shards, start=start, end=end):
        labels.append(scored.frame[shards.schema.label].to_numpy())
        probabilities.append(scored.probability)
    return np.concatenate(labels), np.concatenate(probabilities)
