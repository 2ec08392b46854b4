"""FeatureEncoder: per-transaction encoding, fitted on training data only, stored as JSON.

Raw features are computed per entity in time order, so each transaction's features depend
only on itself and the same entity's earlier transactions. Fitting learns only scaling
statistics, the range of each scaled feature and categorical vocabularies, from the rows
passed to `fit`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.features.blocks import BLOCKS
from fraudseq.features.constants import delay_buckets_of_days
from fraudseq.features.kernel import Chunk, Context, compute
from fraudseq.features.state import StateTable
from fraudseq.schema import Schema
from fraudseq.windows import entity_order, group_starts

PAD_CODE = 0  # categorical code of padding steps
#: Scaled features are clipped to their fitted range (see `_fitted_range`), which lies within
#: +-FEATURE_LIMIT (standard deviations); models saved before ranges existed clip at
#: +-FEATURE_LIMIT only. An extreme raw value (a huge amount or extra numeric value) must
#: not overflow float32 into inf, which a network turns into NaN scores for that window and
#: every later window of the account.
FEATURE_LIMIT = 1e6
#: The fitted range of a scaled feature is its training [min, max] widened by this fraction
#: of max - min on each side.
RANGE_MARGIN = 0.1
OOV_CODE = 1  # categorical code of values not in the training vocabulary


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


class FeatureEncoder:
    """Encode transactions into scaled numeric features and categorical codes.

    Parameters are stored as given; `fit` learns `numeric_names_`, `means_`, `scales_`,
    `low_`, `high_` (the range scaled features are clipped to) and `vocabularies_` from
    training rows only.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        blocks: tuple[str, ...] = ("event", "recency"),
        min_count: int = 5,
        max_vocabulary: int = 300,
        label_delay_days: float = 7,
    ) -> None:
        self.schema = schema
        self.blocks = blocks
        self.label_delay_days = label_delay_days
        self.min_count = min_count
        self.max_vocabulary = max_vocabulary

    # -- fitting -------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame) -> FeatureEncoder:
        """Learn scaling and vocabularies from `frame`, which must hold training rows only."""
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if unknown:
            raise FraudseqError(f"unknown feature blocks {unknown}; known: {list(BLOCKS)}")
        if len(frame) == 0:
            raise FraudseqError("cannot fit the feature encoder on zero training rows")
        raw, _ = self._raw_numeric(frame)
        self.numeric_names_ = list(raw)
        values = np.column_stack([raw[name] for name in self.numeric_names_])
        self.means_ = np.nanmean(values, axis=0)
        scales = np.nanstd(values, axis=0)
        self.scales_ = np.where(scales > 1e-9, scales, 1.0)
        self.low_, self.high_ = _fitted_range(
            clean_features((values - self.means_) / self.scales_, NO_RANGE)
        )
        self.vocabularies_ = {
            column: self._vocabulary(frame[column]) for column in self.schema.categorical
        }
        return self

    def fit_parts(self, parts: Iterable[tuple[pd.DataFrame, dict | None]]) -> FeatureEncoder:
        """`fit` on training rows given in parts, none held with another: each part
        complete entity histories (a shard's training rows) with the keyed features those
        rows have among all training rows (`given`, as `transform` takes it), so that its
        raw features are those of the whole training frame. Learns what `fit` on their
        concatenation learns:

        - means and scales: per part the count, mean and sum of squared deviations of each
          feature's non-NaN values, merged pairwise (Chan et al.): nanmean and nanstd of
          the whole, to rounding (about 1e-15 relative), without its cancellation;
        - the range: each feature's cleaned scaled value is a non-decreasing function of its
          raw value (subtraction, division by a positive scale, clipping and the float32
          cast all are; NaN and infinities become 0, which the range always holds), so
          its min and max are those of the smallest and largest finite raw values, exactly;
        - vocabularies: from each column's value counts summed over the parts.
        """
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if unknown:
            raise FraudseqError(f"unknown feature blocks {unknown}; known: {list(BLOCKS)}")
        moments = None
        counts: dict[str, pd.Series] = {}
        for frame, given in parts:
            if not len(frame):
                continue
            raw, _ = self._raw_numeric(frame, given)
            self.numeric_names_ = list(raw)
            values = np.column_stack([raw[name] for name in self.numeric_names_])
            part = _Moments.of(values)
            moments = part if moments is None else moments.merge(part)
            for column in self.schema.categorical:
                new = frame[column].value_counts(sort=False)
                old = counts.get(column)
                counts[column] = new if old is None else _summed_counts(old, new)
        if moments is None:
            raise FraudseqError("cannot fit the feature encoder on zero training rows")
        self.means_ = moments.mean
        scales = moments.std
        self.scales_ = np.where(scales > 1e-9, scales, 1.0)
        extremes = np.vstack([moments.low, moments.high])
        with np.errstate(invalid="ignore"):
            scaled = (extremes - self.means_) / self.scales_
        self.low_, self.high_ = _fitted_range(clean_features(scaled, NO_RANGE))
        self.vocabularies_ = {
            column: self._frequent(counts[column]) for column in self.schema.categorical
        }
        return self

    def adopt(self, other: FeatureEncoder) -> FeatureEncoder:
        """Take `other`'s scaling of the features both have, and its vocabularies (a model
        fine-tuned from a pretrained encoder, with blocks of its own added: the encoder's
        inputs must mean what they meant in pretraining). Returns self."""
        self._check_fitted()
        at = [self.numeric_names_.index(name) for name in other.numeric_names_]
        for fitted in ("means_", "scales_", "low_", "high_"):
            values = np.array(getattr(self, fitted), dtype=np.float64)
            values[at] = getattr(other, fitted)
            setattr(self, fitted, values)
        self.vocabularies_ = {k: list(v) for k, v in other.vocabularies_.items()}
        return self

    def _vocabulary(self, values: pd.Series) -> list[str]:
        """Values seen `min_count` times. A column with more such values than
        `max_vocabulary` is an identifier (card, device, terminal): embedding its values
        memorises training-period entities, so it gets an empty vocabulary and contributes
        through the novelty and counterparty features instead."""
        return self._frequent(values.value_counts(sort=False))

    def _frequent(self, counts: pd.Series) -> list[str]:
        """`_vocabulary` of values with these counts."""
        frequent = counts.index[counts >= self.min_count]
        if len(frequent) > self.max_vocabulary:
            return []
        return sorted(str(value) for value in frequent)

    # -- transforming --------------------------------------------------------------------
    def transform(
        self, frame: pd.DataFrame, given: dict[str, np.ndarray] | None = None
    ) -> EncodedFrame:
        """Encode every row of `frame` (training, validation or scoring data alike).

        `given`: raw features computed elsewhere, by name, in frame order: the blocks keyed
        by counterparty, computed over a whole file when `frame` is a shard of it (see
        `fraudseq.engine.keyed`). Blocks all of whose features are given do not run."""
        self._check_fitted()
        raw, sorted_frame = self._raw_numeric(frame, given)
        order = sorted_frame.order
        values = np.column_stack([raw[name] for name in self.numeric_names_])
        numeric = clean_features((values - self.means_) / self.scales_, self.feature_range)
        categorical = np.zeros((len(frame), len(self.schema.categorical)), dtype=np.int64)
        for j, column in enumerate(self.schema.categorical):
            categorical[:, j] = self._codes(sorted_frame, column)
        return EncodedFrame(numeric, categorical, order, sorted_frame.starts)

    def _codes(self, sorted_frame: _Sorted, column: str) -> np.ndarray:
        """Vocabulary codes, looked up once per distinct value rather than once per row."""
        vocabulary = pd.Index(self.vocabularies_[column], dtype=object)
        lookup = vocabulary.get_indexer(sorted_frame.uniques[column].astype(object))
        lookup = np.where(lookup < 0, OOV_CODE, lookup + 2)
        return lookup[sorted_frame.chunk.categorical[self.schema.categorical.index(column)]]

    def _raw_numeric(
        self, frame: pd.DataFrame, given: dict[str, np.ndarray] | None = None
    ) -> tuple[dict[str, np.ndarray], _Sorted]:
        """Every block's kernel over the whole frame from an empty state (or the `given`
        features), and the frame's extra numeric columns, in entity-sorted order."""
        sorted_frame = _sort_by_entity(frame, self.schema)
        chunk = sorted_frame.chunk
        state = StateTable.empty(sorted_frame.entities, len(chunk.categorical))
        context = Context(state, chunk, self.schema.categorical, self.delay_buckets)
        given = given or {}
        shape = (self.schema.categorical, bool(self.schema.counterparty))
        raw: dict[str, np.ndarray] = {}
        for block in (BLOCKS[b] for b in self.blocks):
            names = block.names(*shape)
            if names and set(names) <= set(given):
                raw.update({n: np.asarray(given[n], np.float64)[sorted_frame.order] for n in names})
            else:
                raw.update(compute([block], context))
        for column in self.schema.numeric:
            raw[f"numeric:{column}"] = frame[column].to_numpy(dtype=np.float64)[sorted_frame.order]
        return raw, sorted_frame

    @property
    def delay_buckets(self) -> int:
        """The label delay in counterparty buckets."""
        return delay_buckets_of_days(self.label_delay_days)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column (padding and OOV included)."""
        self._check_fitted()
        return [len(self.vocabularies_[c]) + 2 for c in self.schema.categorical]

    @property
    def feature_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high): what `clean_features` clips each scaled feature to."""
        self._check_fitted()
        return self.low_, self.high_

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
        state = {
            "blocks": list(self.blocks),
            "min_count": self.min_count,
            "max_vocabulary": self.max_vocabulary,
            "label_delay_days": self.label_delay_days,
            "numeric_names": self.numeric_names_,
            "means": [float(v) for v in self.means_],
            "scales": [float(v) for v in self.scales_],
            "vocabularies": self.vocabularies_,
        }
        # A model saved before ranges existed has none: saved again, it keeps its JSON (and
        # the fingerprint of a live store's state).
        legacy = (self.low_ == -FEATURE_LIMIT).all() and (self.high_ == FEATURE_LIMIT).all()
        if not legacy:
            state["low"], state["high"] = _floats(self.low_), _floats(self.high_)
        return state

    @classmethod
    def from_json(cls, state: dict, schema: Schema) -> FeatureEncoder:
        encoder = cls(
            schema,
            blocks=tuple(state["blocks"]),
            min_count=state["min_count"],
            max_vocabulary=state["max_vocabulary"],
            label_delay_days=state["label_delay_days"],
        )
        encoder.numeric_names_ = list(state["numeric_names"])
        encoder.means_ = np.asarray(state["means"], dtype=np.float64)
        encoder.scales_ = np.asarray(state["scales"], dtype=np.float64)
        encoder.vocabularies_ = {k: list(v) for k, v in state["vocabularies"].items()}
        # Without a stored range (a model saved before ranges existed), clip at
        # +-FEATURE_LIMIT only, as that model did when it was trained.
        n = len(encoder.numeric_names_)
        encoder.low_ = np.asarray(state.get("low", [-FEATURE_LIMIT] * n), dtype=np.float64)
        encoder.high_ = np.asarray(state.get("high", [FEATURE_LIMIT] * n), dtype=np.float64)
        return encoder


@dataclass
class _Moments:
    """Per column: the number of non-NaN values, their mean and sum of squared deviations,
    and the smallest and largest finite value (+inf and -inf when there is none)."""

    n: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> _Moments:
        present = ~np.isnan(values)
        n = present.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(present, values, 0.0).sum(axis=0) / n
            m2 = np.where(present, (values - mean) ** 2, 0.0).sum(axis=0)
        finite = np.isfinite(values)
        low = np.where(finite, values, np.inf).min(axis=0)
        high = np.where(finite, values, -np.inf).max(axis=0)
        return cls(n, mean, m2, low, high)

    def merge(self, other: _Moments) -> _Moments:
        n = self.n + other.n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other.mean - self.mean
            mean = np.where(other.n == 0, self.mean, self.mean + delta * (other.n / n))
            mean = np.where(self.n == 0, other.mean, mean)
            m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        m2 = np.where(self.n == 0, other.m2, np.where(other.n == 0, self.m2, m2))
        low, high = np.minimum(self.low, other.low), np.maximum(self.high, other.high)
        return _Moments(n, mean, m2, low, high)

    @property
    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self.m2 / self.n)


def _summed_counts(a: pd.Series, b: pd.Series) -> pd.Series:
    return pd.concat([a, b]).groupby(level=0, sort=False).sum()


@dataclass
class _Sorted:
    order: np.ndarray  # sorted position -> frame row
    starts: np.ndarray  # sorted position -> sorted position of its entity's first row
    entities: int
    chunk: Chunk  # the whole frame, entity-sorted; categorical values as codes
    uniques: dict[str, np.ndarray]  # categorical column -> its distinct values, by code


def _sort_by_entity(frame: pd.DataFrame, schema: Schema) -> _Sorted:
    entity_codes, _ = pd.factorize(frame[schema.entity_column], sort=False)
    time_ns = frame[schema.time].to_numpy(dtype="datetime64[ns]").view(np.int64)
    order = entity_order(entity_codes, time_ns)
    starts = group_starts(entity_codes[order])
    entity = np.cumsum(starts == np.arange(len(starts))) - 1
    has_label = schema.label is not None and schema.label in frame.columns
    factorized = {c: pd.factorize(frame[c], sort=False) for c in schema.categorical}
    chunk = Chunk(
        entity=entity,
        time_ns=time_ns[order],
        amount=frame[schema.amount].to_numpy(dtype=np.float64)[order],
        categorical=[codes[order].astype(np.int64) for codes, _ in factorized.values()],
        counterparty=(
            _factorized(frame[schema.counterparty])[order] if schema.counterparty else None
        ),
        label=frame[schema.label].to_numpy(dtype=np.float64)[order] if has_label else None,
    )
    uniques = {c: np.asarray(u) for c, (_, u) in factorized.items()}
    return _Sorted(order, starts, int(entity[-1]) + 1 if len(entity) else 0, chunk, uniques)


def _factorized(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=False)[0].astype(np.int64)


#: No fitted range: `clean_features` clips at +-FEATURE_LIMIT only.
NO_RANGE = (-FEATURE_LIMIT, FEATURE_LIMIT)


def clean_features(scaled: np.ndarray, feature_range=NO_RANGE) -> np.ndarray:
    """Scaled features as the model's float32 input: NaN and infinities (missing extra
    numeric values, overflow) become 0, the rest is clipped per feature to the fitted
    `feature_range` (low, high), which lies within +-FEATURE_LIMIT.

    The one implementation of this step: FeatureEncoder.transform (training, batch
    scoring), the live encoder and live batches all call it with the encoder's range."""
    low, high = feature_range
    finite = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(finite, low, high).astype(np.float32)


def _fitted_range(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the range to clip to, from the float32 training features.

    A network only learns from the values its training rows produce; far beyond them (an
    amount of 1e5 on an account of 20.00 purchases is hundreds of standard deviations out)
    its gates saturate and the score can be anything, 0.0 included (issue 17). So each
    feature is clipped to its training [min, max], widened by RANGE_MARGIN (10% of the
    span) on each side: a value a little beyond the largest seen still moves its feature a
    little, but never further than a tenth of the span the model learned from.

    Min and max rather than, say, the 0.1 and 99.9 percentiles: at 0.1-1% fraud the tails
    are largely fraud (on the simulator most training rows above the 99.9th percentile of
    count_1h are card-testing fraud), and a rare indicator (a value first seen in fewer
    than 0.1% of rows) would be erased. With min and max every training row is inside its
    range, so training and in-range scores are unchanged; only values beyond anything seen
    in training are clipped. The range always holds 0 (the mean, and the value a missing
    one gets) and lies within +-FEATURE_LIMIT.
    """
    low = np.minimum(features.min(axis=0).astype(np.float64), 0.0)
    high = np.maximum(features.max(axis=0).astype(np.float64), 0.0)
    margin = RANGE_MARGIN * (high - low)
    return (
        np.maximum(low - margin, -FEATURE_LIMIT),
        np.minimum(high + margin, FEATURE_LIMIT),
    )


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]
