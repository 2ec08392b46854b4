"""Scores of a period joined back to its transactions: what reports and evaluations work on."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.schema import Schema, load_transactions
from fraudseq.splits import parse_time


@dataclass
class ScoredPeriod:
    """Transactions loaded up to `end` (the history), and the scores of those in [start, end).

    `rows` are the scored rows of `frame` in scoring order and `score` their fraud
    probabilities, exactly as `FraudModel.score` (and so `fraudseq score`) returns them.

    A sharded run (`fraudseq.engine.report.sharded_period`) keeps only the scored rows in
    `frame` and counts the earlier ones in `history_rows`; it overrides `explained`, which
    gives the frame the report's explanations read.
    """

    schema: Schema
    frame: pd.DataFrame
    rows: np.ndarray
    score: np.ndarray
    threshold: float
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    history_rows: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def history(self) -> int:
        """How many transactions before the period (up to `end`) were loaded as history."""
        if self.history_rows is not None:
            return self.history_rows
        return len(self.frame) - len(self.rows)

    def explained(self, model, picked: np.ndarray):
        """What `explain_rows` needs to explain the scored rows `picked` (indices into
        `rows`): a loaded frame holding their histories, the model encoder's transform of
        it, and their rows in it. Here: the whole frame."""
        return self.frame, model.encoder_.transform(self.frame), self.rows[picked]

    def column(self, name: str | None) -> np.ndarray | None:
        """A column's values for the scored rows, or None when the data lacks it."""
        if name is None or name not in self.frame.columns:
            return None
        return self.frame[name].to_numpy()[self.rows]

    @property
    def labels(self) -> np.ndarray:
        labels = self.column(self.schema.label)
        if labels is None:
            raise FraudseqError(
                f"the data has no label column {self.schema.label!r}; metrics need labels"
            )
        return labels.astype(np.int64)

    @property
    def amount(self) -> np.ndarray:
        return self.column(self.schema.amount).astype(np.float64)

    @property
    def entity(self) -> np.ndarray:
        return self.column(self.schema.entity_column)

    @property
    def time(self) -> pd.Series:
        return self.frame[self.schema.time].iloc[self.rows].reset_index(drop=True)

    @property
    def day(self) -> np.ndarray:
        return self.time.dt.normalize().to_numpy()

    @property
    def scenario(self) -> np.ndarray | None:
        return self.column(self.schema.scenario)

    def subset(self, keep: np.ndarray) -> ScoredPeriod:
        """The same period restricted to scored rows where `keep` is true."""
        keep = np.asarray(keep, dtype=bool)
        return dataclasses.replace(self, rows=self.rows[keep], score=self.score[keep])


def score_period(
    model, data, *, start=None, end=None, require_label: bool = True, loaded: bool = False
) -> ScoredPeriod:
    """Score `data` in [start, end) with a fitted FraudModel, keeping the transactions.

    `loaded=True` says `data` is already a frame returned by `load_transactions` with the
    model's schema, which skips a second validation pass.
    """
    schema = model.schema_
    if loaded and isinstance(data, pd.DataFrame):
        frame = data
    else:
        frame = load_transactions(data, schema, require_label=require_label)
    end = parse_time(end, "--until")
    start = parse_time(start, "--from")
    if end is not None:
        frame = frame[(frame[schema.time] < end).to_numpy()].reset_index(drop=True)
    scores = model.score(frame, start=start)
    rows = pd.Index(frame[schema.id_column]).get_indexer(scores["transaction_id"])
    if (rows < 0).any():  # cannot happen unless ids change while loading twice
        raise FraudseqError("scored transaction ids do not match the loaded transactions")
    return ScoredPeriod(
        schema, frame, rows, scores["score"].to_numpy(np.float64), model.threshold_, start, end
    )
