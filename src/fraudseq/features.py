"""FeatureEncoder: per-transaction encoding, fitted on training data only, stored as JSON.

Raw features are computed per entity in time order, so each transaction's features depend
only on itself and the same entity's earlier transactions. Fitting learns only scaling
statistics and categorical vocabularies, from the rows passed to `fit`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.schema import Schema
from fraudseq.windows import entity_order, group_starts

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_DAY = 86_400
PAD_CODE = 0  # categorical code of padding steps
OOV_CODE = 1  # categorical code of values not in the training vocabulary


@dataclass
class SortedFrame:
    """The columns a feature block needs, in entity-sorted order."""

    time_ns: np.ndarray
    amount: np.ndarray
    starts: np.ndarray
    extra_numeric: dict[str, np.ndarray]

    @property
    def has_previous(self) -> np.ndarray:
        return np.arange(len(self.time_ns)) > self.starts


@dataclass
class EncodedFrame:
    """Encoded transactions in entity-sorted order, ready for window gathering."""

    numeric: np.ndarray  # (n, F) float32
    categorical: np.ndarray  # (n, C) int64
    order: np.ndarray  # sorted position -> frame row
    starts: np.ndarray  # sorted position -> sorted position of the entity's first row

    def __len__(self) -> int:
        return len(self.order)

    def positions_of(self, rows: np.ndarray) -> np.ndarray:
        """Sorted positions of the given frame rows."""
        inverse = np.empty_like(self.order)
        inverse[self.order] = np.arange(len(self.order))
        return inverse[np.asarray(rows, dtype=np.int64)]


def event_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """What the transaction alone shows: signed log-amount, cyclic time of day and week."""
    seconds = frame.time_ns // NS_PER_SECOND
    day_fraction = (seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY
    week_fraction = ((seconds // SECONDS_PER_DAY + 3) % 7) / 7  # 1970-01-01 was a Thursday
    return {
        "log_amount": np.sign(frame.amount) * np.log1p(np.abs(frame.amount)),
        "hour_sin": np.sin(2 * np.pi * day_fraction),
        "hour_cos": np.cos(2 * np.pi * day_fraction),
        "dow_sin": np.sin(2 * np.pi * week_fraction),
        "dow_cos": np.cos(2 * np.pi * week_fraction),
    }


def recency_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """Time since the entity's previous transaction (0 with has_previous=0 for its first)."""
    has_prev = frame.has_previous
    gap = np.zeros(len(frame.time_ns), dtype=np.float64)
    gap[1:] = (frame.time_ns[1:] - frame.time_ns[:-1]) / NS_PER_SECOND
    gap[~has_prev] = 0.0
    return {"log_gap_seconds": np.log1p(gap), "has_previous": has_prev.astype(np.float64)}


# Blocks are computed in entity-sorted order; each may only look backwards in time.
FEATURE_BLOCKS = {"event": event_features, "recency": recency_features}


class FeatureEncoder:
    """Encode transactions into scaled numeric features and categorical codes.

    Parameters are stored as given; `fit` learns `numeric_names_`, `means_`, `scales_` and
    `vocabularies_` from training rows only.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        blocks: tuple[str, ...] = ("event", "recency"),
        min_count: int = 5,
        max_vocabulary: int = 5000,
    ) -> None:
        self.schema = schema
        self.blocks = blocks
        self.min_count = min_count
        self.max_vocabulary = max_vocabulary

    # -- fitting -------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> FeatureEncoder:
        """Learn scaling and vocabularies from `frame`, which must hold training rows only."""
        unknown = [b for b in self.blocks if b not in FEATURE_BLOCKS]
        if unknown:
            raise FraudseqError(f"unknown feature blocks {unknown}; known: {list(FEATURE_BLOCKS)}")
        if len(frame) == 0:
            raise FraudseqError("cannot fit the feature encoder on zero training rows")
        raw, _ = self._raw_numeric(frame)
        self.numeric_names_ = list(raw)
        values = np.column_stack([raw[name] for name in self.numeric_names_])
        self.means_ = np.nanmean(values, axis=0)
        scales = np.nanstd(values, axis=0)
        self.scales_ = np.where(scales > 1e-9, scales, 1.0)
        self.vocabularies_ = {
            column: self._vocabulary(frame[column]) for column in self.schema.categorical
        }
        return self

    def _vocabulary(self, values: pd.Series) -> list[str]:
        counts = values.value_counts(sort=True)
        counts = counts[counts >= self.min_count].iloc[: self.max_vocabulary]
        return sorted(str(value) for value in counts.index)

    # -- transforming --------------------------------------------------------------------
    def transform(self, frame: pd.DataFrame) -> EncodedFrame:
        """Encode every row of `frame` (training, validation or scoring data alike)."""
        self._check_fitted()
        raw, sorted_frame = self._raw_numeric(frame)
        order = sorted_frame.order
        values = np.column_stack([raw[name] for name in self.numeric_names_])
        scaled = (values - self.means_) / self.scales_
        numeric = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        categorical = np.zeros((len(frame), len(self.schema.categorical)), dtype=np.int64)
        for j, column in enumerate(self.schema.categorical):
            categorical[:, j] = self._codes(frame[column].to_numpy()[order], column)
        return EncodedFrame(numeric, categorical, order, sorted_frame.sorted.starts)

    def _codes(self, values: np.ndarray, column: str) -> np.ndarray:
        vocabulary = self.vocabularies_[column]
        codes = pd.Categorical(values.astype(str), categories=vocabulary).codes.astype(np.int64)
        return np.where(codes < 0, OOV_CODE, codes + 2)

    def _raw_numeric(self, frame: pd.DataFrame) -> tuple[dict[str, np.ndarray], _Sorted]:
        sorted_frame = _sort_by_entity(frame, self.schema)
        raw: dict[str, np.ndarray] = {}
        for block in self.blocks:
            raw.update(FEATURE_BLOCKS[block](sorted_frame.sorted))
        for column, values in sorted_frame.sorted.extra_numeric.items():
            raw[f"numeric:{column}"] = values
        return raw, sorted_frame

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column (padding and OOV included)."""
        self._check_fitted()
        return [len(self.vocabularies_[c]) + 2 for c in self.schema.categorical]

    @property
    def n_numeric(self) -> int:
        self._check_fitted()
        return len(self.numeric_names_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "numeric_names_"):
            raise FraudseqError("FeatureEncoder is not fitted; call fit() on training data first")

    # -- persistence ---------------------------------------------------------------------
    def to_json(self) -> dict:
        self._check_fitted()
        return {
            "blocks": list(self.blocks),
            "min_count": self.min_count,
            "max_vocabulary": self.max_vocabulary,
            "numeric_names": self.numeric_names_,
            "means": [float(v) for v in self.means_],
            "scales": [float(v) for v in self.scales_],
            "vocabularies": self.vocabularies_,
        }

    @classmethod
    def from_json(cls, state: dict, schema: Schema) -> FeatureEncoder:
        encoder = cls(
            schema,
            blocks=tuple(state["blocks"]),
            min_count=state["min_count"],
            max_vocabulary=state["max_vocabulary"],
        )
        encoder.numeric_names_ = list(state["numeric_names"])
        encoder.means_ = np.asarray(state["means"], dtype=np.float64)
        encoder.scales_ = np.asarray(state["scales"], dtype=np.float64)
        encoder.vocabularies_ = {k: list(v) for k, v in state["vocabularies"].items()}
        return encoder


@dataclass
class _Sorted:
    order: np.ndarray
    sorted: SortedFrame


def _sort_by_entity(frame: pd.DataFrame, schema: Schema) -> _Sorted:
    entity_codes, _ = pd.factorize(frame[schema.entity], sort=False)
    time_ns = frame[schema.time].to_numpy(dtype="datetime64[ns]").view(np.int64)
    order = entity_order(entity_codes, time_ns)
    sorted_frame = SortedFrame(
        time_ns=time_ns[order],
        amount=frame[schema.amount].to_numpy(dtype=np.float64)[order],
        starts=group_starts(entity_codes[order]),
        extra_numeric={
            c: frame[c].to_numpy(dtype=np.float64)[order] for c in schema.numeric
        },
    )
    return _Sorted(order, sorted_frame)
