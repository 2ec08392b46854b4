"""Raw features of time-ordered chunks of a transactions file, carrying each entity's state
and the counterparties' buckets from chunk to chunk: the same kernel as training over the
whole file, with the same results, in memory bounded by the state rather than the file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError
from fraudseq.features.blocks import BLOCKS, exposure
from fraudseq.features.constants import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
    delay_buckets_of_days,
)
from fraudseq.features.kernel import (
    Buckets,
    Chunk,
    Context,
    Retention,
    advance,
    compute,
    known_frauds,
)
from fraudseq.features.state import StateTable, value_hashes
from fraudseq.schema import Schema
from fraudseq.windows import entity_order


class FeatureStream:
    """`push(frame)` gives the raw features of each row of a loaded chunk (frame order), as
    the blocks' kernel over every chunk pushed so far would; chunks come in time order (an
    entity's rows may not be older than its rows of an earlier chunk)."""

    def __init__(self, schema: Schema, blocks: tuple[str, ...], label_delay_days: float) -> None:
        self.schema = schema
        self.blocks = [BLOCKS[name] for name in blocks]
        # Exactly what the blocks read of an entity's past (no window rows, no lateness).
        self.retention = Retention.of(self.blocks, schema.categorical, bool(schema.counterparty))
        self.delay = delay_buckets_of_days(label_delay_days)
        self.entities: dict[str, int] = {}
        self.counterparties: dict[str, int] = {}
        self.state = StateTable.empty(0, len(schema.categorical))
        self.buckets = Buckets.empty()
        # The exposure block's entity lists and counterparty tables (blocks/exposure.py).
        self.exposure = None
        self._exposure = any(need.kind == "exposure" for b in self.blocks for need in b.needs)

    def push(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        schema = self.schema
        entity = self._codes(self.entities, frame[schema.entity_column])
        self.state = self.state.extended(len(self.entities) - len(self.state.n))
        time_ns = frame[schema.time].to_numpy(dtype="datetime64[ns]").view(np.int64)
        order = entity_order(entity, time_ns)
        self._check_order(entity[order], time_ns[order])
        has_label = schema.label is not None and schema.label in frame.columns
        chunk = Chunk(
            entity=entity[order],
            time_ns=time_ns[order],
            amount=frame[schema.amount].to_numpy(dtype=np.float64)[order],
            categorical=[value_hashes(frame[c].to_numpy())[order] for c in schema.categorical],
            label=frame[schema.label].to_numpy(dtype=np.float64)[order] if has_label else None,
        )
        if schema.counterparty:
            chunk.counterparty = self._codes(self.counterparties, frame[schema.counterparty])[order]
        context = Context(
            self.state, chunk, schema.categorical, self.delay, self.buckets, self.exposure
        )
        raw = compute(self.blocks, context)
        self.state = advance(context, self.retention)
        if self._exposure:
            self.exposure = exposure.advance(context)
        if schema.counterparty:
            self.buckets = self._carried_buckets(chunk)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return {name: values[inverse] for name, values in raw.items()}

    @staticmethod
    def _codes(known: dict[str, int], values: pd.Series) -> np.ndarray:
        """Codes of `values`, giving each value not seen before the next free code."""
        index, distinct = pd.factorize(values.astype(str), sort=False)
        for value in distinct.tolist():
            known.setdefault(value, len(known))
        return np.array([known[v] for v in distinct.tolist()], dtype=np.int64)[index]

    def _check_order(self, entity: np.ndarray, time_ns: np.ndarray) -> None:
        first = np.r_[True, entity[1:] != entity[:-1]] if len(entity) else np.zeros(0, bool)
        earlier = first & (self.state.n[entity] > 0) & (time_ns < self.state.last_time[entity])
        if earlier.any():
            raise DataValidationError(
                "chunks must come in time order: an entity has a transaction older than its "
                "transactions of an earlier chunk. Fix: sort the file by time before reading "
                "it in chunks."
            )

    def _carried_buckets(self, chunk: Chunk) -> Buckets:
        """The buckets after the chunk, without those no later row can see."""
        known = chunk.counterparty >= 0
        fraud = known_frauds(chunk.label, len(chunk))
        old = self.buckets
        code = np.concatenate([old.code, chunk.counterparty[known]])
        bucket = np.concatenate([old.bucket, chunk.time_ns[known] // COUNTERPARTY_BUCKET_NS])
        count = np.concatenate([old.count, np.ones(int(known.sum()), dtype=np.int64)])
        frauds = np.concatenate([old.fraud, fraud[known]])
        if len(chunk):
            longest = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY
            horizon = int(chunk.time_ns.max()) // COUNTERPARTY_BUCKET_NS - self.delay - longest
            keep = bucket >= horizon
            code, bucket, count, frauds = code[keep], bucket[keep], count[keep], frauds[keep]
        keys, index = np.unique(np.stack([code, bucket]), axis=1, return_inverse=True)
        index = index.reshape(-1)
        width = keys.shape[1]
        return Buckets(
            keys[0].copy(),
            keys[1].copy(),
            np.bincount(index, weights=count, minlength=width).astype(np.int64),
            np.bincount(index, weights=frauds, minlength=width).astype(np.int64),
        )
