"""The model report of a sharded run, in memory bounded by a shard and the scored period.

`sharded_period` scores the period shard by shard (`score_shard`, through the mapper) and
keeps of each scored row only what the report reads (id, entity, time, amount, label,
scenario): its frame holds the period, never the history, which it counts. The top alerts
are explained from their entities' histories alone (`ShardedPeriod.explained`), read from
their shards with the counterparty features of the keyed stage, so their features, scores
and explanations equal the in-memory report's. The report itself is the one
`fraudseq.report.html` builds (`build_model_report(..., scored=...)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.engine.chunks import ROW, file_order
from fraudseq.engine.keyed import KeyedFeatures, Mapper, keyed_features
from fraudseq.engine.scoring import score_shard
from fraudseq.engine.shards import SHARD, ShardSet
from fraudseq.fraud_model import no_transactions
from fraudseq.report.data import ScoredPeriod
from fraudseq.splits import parse_time


@dataclass
class ShardedPeriod(ScoredPeriod):
    """A ScoredPeriod whose `frame` holds only the scored rows (the report's columns, plus
    each row's shard and file position), in scoring order; see the module docstring."""

    shards: ShardSet | None = None
    keyed: KeyedFeatures | None = None

    def explained(self, model, picked: np.ndarray):
        """The picked rows' entities' histories up to `end`, read from their shards and
        encoded with their keyed features given; the picked rows' positions in them."""
        rows = self.frame.iloc[self.rows[picked]]
        until = None if self.end is None else self.end.value
        entity = self.schema.entity_column
        parts, given = [], []
        for shard, alerted in rows.groupby(SHARD, sort=True):
            part = self.shards.frame(
                int(shard), until_ns=until, entities=alerted[entity].unique().tolist()
            )
            parts.append(part)
            given.append(self.keyed.of(int(shard), part[ROW].to_numpy()))
        frame = pd.concat(parts, ignore_index=True)
        order = file_order(frame, self.schema.time)
        frame = frame.iloc[order].reset_index(drop=True)
        names = given[0].keys()
        features = {n: np.concatenate([g[n] for g in given])[order] for n in names}
        at = pd.Index(frame[ROW]).get_indexer(rows[ROW])
        return frame, model.encoder_.transform(frame, features), at


def sharded_period(
    model, shards: ShardSet, *, start=None, end=None, mapper: Mapper = map
) -> ShardedPeriod:
    """The labelled period [start, end) of `shards` scored by `model`, shard by shard."""
    start, end = parse_time(start, "--from"), parse_time(end, "--until")
    keyed = keyed_features(shards, model.encoder_, mapper)
    tasks = [(model, shards, i, keyed, start, end) for i in range(len(shards))]
    parts = list(mapper(_period_part, tasks))
    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    if not len(frame):
        raise no_transactions(start, end)
    score = np.concatenate([p[1] for p in parts])
    order = file_order(frame, shards.schema.time)
    frame = frame.iloc[order].reset_index(drop=True)
    return ShardedPeriod(
        shards.schema,
        frame,
        np.arange(len(frame)),
        score[order],
        model.threshold_,
        start,
        end,
        history_rows=sum(p[2] for p in parts),
        shards=shards,
        keyed=keyed,
    )


def _period_part(task) -> tuple[pd.DataFrame, np.ndarray, int]:
    """Shard i's scored rows (the report's columns), their probabilities, and how many of
    its rows before the period were loaded as their history."""
    model, shards, i, keyed, start, end = task
    s = shards.schema
    frame, probability = score_shard(model, shards, i, keyed, start=start, end=end)
    columns = [s.id_column, s.entity_column, s.time, s.amount, s.label, s.scenario]
    columns.append(s.counterparty)  # the report's common points of compromise
    columns = list(dict.fromkeys(c for c in columns if c and c in frame.columns))
    part = frame[[*columns, ROW]].assign(**{SHARD: np.int32(i)})
    history = 0
    if start is not None:
        before = start if end is None else min(start, end)
        history = shards.count(i, until_ns=before.value)
    return part, probability, history
