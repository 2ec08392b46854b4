"""Why did a transaction score high? Occlusion of window events and of current-event features.

The explanation of a transaction is measured on its encoded window (the last K events of the
same entity, ending with it), the exact input the model scored:

- **Event attribution.** Each event of the window in turn is replaced by a *baseline event*
  and the window is re-scored. The attribution of the event is the drop in log-odds,
  ``logit(score) - logit(score without the event)``: positive means the event pushed the score
  towards fraud (+1 multiplies the odds of fraud by e), negative means it made the transaction
  look more normal.
- **Feature attribution** of the current (last) event: the same, replacing one numeric
  feature or one categorical column of that event at a time.
- **Attention** weights, for models whose network offers them
  (``forward_events(events, lengths, return_attention=True)``). Attention shows where the
  model looked; it is not an attribution and is reported separately.

The baseline event has every numeric feature at its training mean (0 after the encoder's
scaling, which is also what missing values become) and every categorical column at the
padding code, whose embedding is the zero vector: an event that carries no information. The
window's length and the other events stay as they are. Occlusion works on the encoded rows,
so it measures what the model reads from the event's own row; an earlier event's influence
through the current event's history features (counts over the last hour, the amount against
the account's past) is part of those features' attribution instead.

All occluded copies of all explained windows go through the model in one batched call of
the window model's `decision_function`, so this works for every model family (recurrent,
attention, boosted trees, ...) without knowing its internals.

The core is one implementation for every caller: `occlude` (padded windows + a scoring
callable, vectorised over many windows), `described_features` and `rank_reasons` (which
reasons, in which order, in which words). `fraudseq explain` and the report call it through
`explain_rows`; the Detector calls it for its live reasons with its own window scorer and
the logit it just scored, so a transaction gets the same reasons live and offline.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from fraudseq.errors import FraudseqError
from fraudseq.features import PAD_CODE, EncodedFrame
from fraudseq.features.plain import plain_quantity
from fraudseq.schema import load_transactions
from fraudseq.training import WindowSet, WindowSource, padded_windows
from fraudseq.windows import window_index

log = logging.getLogger("fraudseq")

BASELINE = (
    "each occluded event (or feature) is replaced by the training mean for numeric features "
    "(0 after scaling) and the padding code (a zero embedding) for categorical columns"
)


@dataclass
class Explanation:
    """The explanation of one transaction's score.

    `window` holds the window's transactions, oldest first (the explained one last), with the
    schema's columns plus `step` (0 = oldest), `current`, `attribution` (log-odds change when
    the event is occluded), `score_without` (probability with the event occluded) and, for
    attention models, `attention`. `features` holds the current event's features with
    `feature`, `kind` (numeric/categorical), `value` (unscaled), `attribution` and
    `score_without`, sorted by absolute attribution.
    """

    transaction_id: str
    entity: str
    time: pd.Timestamp
    score: float
    logit: float
    threshold: float
    window: pd.DataFrame
    features: pd.DataFrame
    label: int | None = None
    scenario: str | None = None
    attention: np.ndarray | None = None
    baseline: str = BASELINE
    notes: list[str] = field(default_factory=list)

    @property
    def alert(self) -> bool:
        return self.score >= self.threshold

    @property
    def earlier_events(self) -> pd.DataFrame:
        """The events before the explained one, by absolute attribution (largest first)."""
        earlier = self.window[~self.window["current"]]
        return earlier.reindex(earlier["attribution"].abs().sort_values(ascending=False).index)

    def to_dict(self) -> dict:
        """Plain JSON-able data (for `--json` and services)."""
        return {
            "transaction_id": self.transaction_id,
            "entity": self.entity,
            "time": self.time.isoformat(),
            "score": self.score,
            "threshold": self.threshold,
            "alert": self.alert,
            "label": self.label,
            "scenario": self.scenario,
            "baseline": self.baseline,
            "window": _records(self.window),
            "features": _records(self.features),
            "top_reasons": top_reasons(self),
            "notes": list(self.notes),
        }


def top_reasons(explanation: Explanation, n: int = 3) -> list[dict]:
    """The `n` strongest reasons towards fraud of an explanation (`rank_reasons`)."""
    window, features = explanation.window, explanation.features
    earlier = window[~window["current"]]
    return rank_reasons(
        earlier["attribution"].to_numpy(dtype=np.float64),
        (
            earlier["transaction_id"].tolist(),
            earlier["event_time"].to_numpy(),
            earlier["event_amount"].to_numpy(dtype=float),
        ),
        features["attribution"].to_numpy(dtype=np.float64),
        (features["feature"].tolist(), features["value"].tolist(), features["clipped"].tolist()),
        n,
    )


# -- the core: occlusion, ranking and wording (the Detector's live reasons too) -------


@dataclass(frozen=True)
class Occlusion:
    """Logits of B windows as they are (`logits`, (B,)), with each event replaced by the
    baseline event (`events`, (B, K), NaN past a window's length) and with each numeric
    feature, then each categorical column, of the last event replaced by its baseline
    (`features`, (B, F + C)). An attribution is the drop: ``logits - occluded``."""

    logits: np.ndarray
    events: np.ndarray
    features: np.ndarray

    @property
    def event_drops(self) -> np.ndarray:
        return self.logits[:, None] - self.events

    @property
    def feature_drops(self) -> np.ndarray:
        return self.logits[:, None] - self.features


def occlude(numeric, codes, lengths, score, logits=None) -> Occlusion:
    """Occlusion of B windows: numeric (B, K, F) and codes (B, K, C), left-aligned and zero
    padded, with their lengths (B,). Every occluded copy of every window goes through
    `score(numeric, codes, lengths) -> logits` in one call; so do the windows themselves,
    unless their `logits` are given (the live score, already computed)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    n_windows, k, n_num = numeric.shape
    n_cat = codes.shape[2]
    own = int(logits is None)  # copy 0 of each window: the window itself
    per_window = own + lengths + n_num + n_cat
    window = np.repeat(np.arange(n_windows), per_window)
    slot = np.arange(len(window)) - np.repeat(np.cumsum(per_window) - per_window, per_window)
    slot -= own  # then slots 0..L-1 occlude events, L.. features, L+F.. categorical columns
    batch_numeric, batch_codes, length = numeric[window], codes[window], lengths[window]
    event = np.flatnonzero((slot >= 0) & (slot < length))
    batch_numeric[event, slot[event]] = 0.0
    batch_codes[event, slot[event]] = PAD_CODE
    feature = slot - length
    column = np.flatnonzero((feature >= 0) & (feature < n_num))
    batch_numeric[column, length[column] - 1, feature[column]] = 0.0
    column = np.flatnonzero(feature >= n_num)
    batch_codes[column, length[column] - 1, feature[column] - n_num] = PAD_CODE
    scored = np.asarray(score(batch_numeric, batch_codes, length), dtype=np.float64)

    first = np.cumsum(per_window) - per_window  # each window's copy 0
    base = scored[first] if own else np.asarray(logits, dtype=np.float64)
    events = np.full((n_windows, k), np.nan)
    events[window[event], slot[event]] = scored[event]
    features = scored[np.flatnonzero(feature >= 0)].reshape(n_windows, n_num + n_cat)
    return Occlusion(base, events, features)


def described_features(encoder, scaled: np.ndarray, categories) -> list[tuple]:
    """Names, unscaled values and clipped flags of the features of B events, as
    `rank_reasons` words them: their scaled numeric rows (B, F), then their categorical
    values (B sequences of text). Vectorised: one call for all alerts of a batch."""
    names = [*encoder.numeric_names_, *encoder.schema.categorical]
    values = feature_values(scaled, encoder.scales_, encoder.means_).tolist()
    clipped = at_range_edge(scaled, *encoder.feature_range).tolist()
    return [
        (names, [*v, *c], [*e, *[False] * len(c)])
        for v, e, c in zip(values, clipped, categories, strict=True)
    ]


def rank_reasons(event_drops, earlier, feature_drops, features, n: int = 3) -> list[dict]:
    """The `n` strongest reasons towards fraud, as plain dicts, largest attribution first.

    Candidates are the window's earlier events (`event_drops`, oldest first, with `earlier`
    = their ids, times and amounts) and the current event's features (`feature_drops`,
    with `features` = their names, unscaled values and whether each was clipped); only
    positive attributions (pushing the score up) are reasons, ties kept in that order
    (events, then features by absolute attribution). Each dict has `kind`, `attribution`
    (log-odds), `description` and the event's `transaction_id`, `time`, `amount`,
    `steps_before`, or the feature's `feature` and `value`.
    """
    n_events = len(event_drops)
    by_size = np.argsort(-np.abs(feature_drops), kind="stable")
    drops = np.concatenate([event_drops, feature_drops[by_size]])
    top = [int(c) for c in np.argsort(-drops, kind="stable")[:n] if drops[c] > 0]
    return [
        _event_reason(float(drops[c]), c, earlier, n_events)
        if c < n_events
        else _feature_reason(float(drops[c]), *(f[by_size[c - n_events]] for f in features))
        for c in top
    ]


def _event_reason(attribution: float, j: int, earlier, n_events: int) -> dict:
    tx_id, when, amount = str(earlier[0][j]), earlier[1][j], float(earlier[2][j])
    steps_before = n_events - j
    return {
        "kind": "event",
        "attribution": attribution,
        "transaction_id": tx_id,
        "time": pd.Timestamp(when).isoformat(),  # datetime64 or nanoseconds, both UTC
        "amount": amount,
        "steps_before": steps_before,
        "description": f"earlier transaction {tx_id} ({steps_before} before, amount {amount:.2f})",
    }


def _feature_reason(attribution: float, name: str, value, clipped: bool) -> dict:
    return {
        "kind": "feature",
        "attribution": attribution,
        "feature": str(name),
        "value": _plain(value),
        "description": describe_feature(str(name), value, bool(clipped)),
    }


def describe_feature(name: str, value, clipped: bool = False) -> str:
    """`name = value`, plus the plain quantity behind a log-scaled feature; a value clipped
    to the training range says so (the model saw the edge of that range, not the value)."""
    text = f"{name} = {_format_value(value)}"
    plain = plain_quantity(name, value) if isinstance(value, float | np.floating) else None
    text = f"{text} ({plain})" if plain else text
    return f"{text} or beyond (clipped to the training range)" if clipped else text


def at_range_edge(scaled: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Which scaled features sit on a non-zero edge of the fitted range: clipped there (the
    range is widened past every training value, so no training value lies on its edge)."""
    scaled = np.asarray(scaled, dtype=np.float32)
    edges = [np.asarray(b, dtype=np.float32) for b in (low, high)]
    return np.logical_or.reduce([(scaled == b) & (b != 0) for b in edges])


def feature_values(scaled: np.ndarray, scales: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Feature values back from their float32 scaled form; a value within float32 rounding
    of 0 is 0 (has_previous = 0 read back as -3e-09, say)."""
    values = scaled.astype(np.float64) * scales + means
    rounding = (np.abs(scaled.astype(np.float64)) + 1.0) * scales * np.finfo(np.float32).eps
    return np.where(np.abs(values) <= rounding, 0.0, values)


# -- entry points ------------------------------------------------------------------------


def explain(model, data, transaction_id: str) -> Explanation:
    """Explain the score of transaction `transaction_id` of `data` (a path or DataFrame),
    using the transactions before it as its history."""
    return explain_many(model, data, [transaction_id])[0]


def explain_many(model, data, transaction_ids) -> list[Explanation]:
    """Explanations of several transactions of `data`, computed in one batched pass."""
    if not hasattr(model, "model_"):
        raise FraudseqError("this FraudModel is not fitted; call fit() or FraudModel.load()")
    schema = model.schema_
    frame = load_transactions(data, schema, require_label=False)
    ids = [str(t) for t in transaction_ids]
    rows = pd.Index(frame[schema.id_column]).get_indexer(ids)
    if (rows < 0).any():
        missing = [t for t, r in zip(ids, rows, strict=True) if r < 0]
        raise FraudseqError(
            f"transaction id(s) {', '.join(missing[:5])} not found in column {schema.id_column!r}; "
            "check --transaction-id"
        )
    # Later transactions never enter a window: drop them to encode less.
    last = frame[schema.time].iloc[rows].max()
    keep = (frame[schema.time] <= last).to_numpy()
    frame = frame[keep].reset_index(drop=True)
    rows = pd.Index(frame[schema.id_column]).get_indexer(ids)
    return explain_rows(model, frame, model.encoder_.transform(frame), rows)


def explain_rows(
    model, frame: pd.DataFrame, encoded: EncodedFrame, rows: np.ndarray
) -> list[Explanation]:
    """Explanations of `frame` rows, given the model encoder's `transform(frame)`.

    `frame` must come from `load_transactions` with the model's schema (the report passes the
    frame it scored, and encodes it once for all its top alerts).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return []
    k = model.window
    positions = encoded.positions_of(rows)
    index, lengths = window_index(positions, encoded.starts, k, len(encoded))
    numeric, codes, _ = (t.numpy() for t in WindowSource(encoded, k).batch(positions))
    occlusion = occlude(numeric, codes, lengths, _scorer(model))
    attention = _attention(model, encoded, positions, lengths)
    schema = model.schema_
    categories = frame[list(schema.categorical)].iloc[rows].astype(str).to_numpy().tolist()
    last = numeric[np.arange(len(rows)), lengths - 1]
    described = described_features(model.encoder_, last, categories)

    out = []
    for i, row in enumerate(rows):
        length = int(lengths[i])
        base = float(occlusion.logits[i])
        frame_rows = encoded.order[index[i, :length]]
        window = _window_table(
            frame, schema, frame_rows, occlusion.event_drops[i, :length], occlusion.events[i]
        )
        if attention is not None:
            window["attention"] = attention[i][:length]
        features = _feature_table(
            described[i],
            model.encoder_.n_numeric,
            occlusion.feature_drops[i],
            occlusion.features[i],
        )
        label = schema.label if schema.label in frame.columns else None
        scenario = schema.scenario if schema.scenario in frame.columns else None
        out.append(
            Explanation(
                transaction_id=str(frame[schema.id_column].iloc[row]),
                entity=str(frame[schema.entity_column].iloc[row]),
                time=pd.Timestamp(frame[schema.time].iloc[row]),
                score=float(_sigmoid(np.array([base]))[0]),
                logit=base,
                threshold=float(model.threshold_),
                window=window,
                features=features,
                label=int(frame[label].iloc[row])
                if label and pd.notna(frame[label].iloc[row])
                else None,
                scenario=str(frame[scenario].iloc[row]) if scenario else None,
                attention=None if attention is None else attention[i][:length],
            )
        )
    return out


# -- helpers -------------------------------------------------------------------------------


def _scorer(model):
    """`occlude`'s scoring callable for a FraudModel: its window model's own
    `decision_function`, so every family (recurrent, attention, boosted, ...) works."""
    k = model.window

    def score(numeric, codes, lengths):
        return model.model_.decision_function(padded_windows(numeric, codes, lengths, k))

    return score


def supports_attention(model) -> bool:
    """Whether the model's window model or network can report attention weights."""
    window_model = getattr(model, "model_", None)
    if callable(getattr(window_model, "attention", None)):
        return True
    return _network_with_attention(window_model) is not None


def _network_with_attention(window_model):
    network = getattr(window_model, "network", None)
    forward = getattr(network, "forward_events", None)
    if forward is None or not hasattr(network, "embed"):
        return None
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return None
    return network if "return_attention" in parameters else None


def _attention(model, encoded: EncodedFrame, positions: np.ndarray, lengths: np.ndarray):
    """Attention over window steps, (B, K), for models that expose it; None otherwise.

    Uses the window model's `attention(windows)` when it has one, else the network's
    `forward_events(events, lengths, return_attention=True)` (duck typing: any family that
    offers either gets attention in explanations and reports)."""
    if not supports_attention(model):
        return None
    windows = WindowSet(WindowSource(encoded, model.window), positions)
    try:
        if callable(getattr(model.model_, "attention", None)):
            weights = np.asarray(model.model_.attention(windows))
        else:
            network = _network_with_attention(model.model_)
            network.eval()
            with torch.inference_mode():
                numeric, categorical, step_lengths = windows.source.batch(positions)
                out = network.forward_events(
                    network.embed(numeric, categorical), step_lengths, return_attention=True
                )
            weights = out[1].detach().float().numpy()
        k = model.window
        return np.stack([_steps(w, int(n), k) for w, n in zip(weights, lengths, strict=True)])
    except Exception as err:  # an unexpected attention shape: skip, never fail a report
        log.warning("attention weights unavailable: %s", err)
        return None


def _steps(weights: np.ndarray, length: int, k: int) -> np.ndarray:
    """Reduce one window's attention to one weight per step: heads are averaged and, for
    self-attention (K x K), the row of the last valid step (the scored event) is taken."""
    while weights.ndim > 2:
        weights = weights.mean(0)
    if weights.ndim == 2:
        weights = weights[length - 1] if weights.shape == (k, k) else weights.mean(0)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)[:k]
    return np.pad(weights, (0, k - len(weights)), constant_values=np.nan)


_OWN = ("step", "current", "attribution", "score_without", "event_time", "event_amount")


def _window_table(
    frame: pd.DataFrame, schema, frame_rows: np.ndarray, drops: np.ndarray, occluded: np.ndarray
) -> pd.DataFrame:
    # The id, time and amount are carried under stable names below, so a data column of
    # theirs named like one of the table's own columns (PaySim's time is `step`) is left out.
    stable = {schema.id_column, schema.time, schema.amount}
    columns = [
        c for c in schema.columns() if c in frame.columns and not (c in stable and c in _OWN)
    ]
    table = frame.iloc[frame_rows][columns].reset_index(drop=True)
    table.insert(0, "step", np.arange(len(table)))
    table["current"] = table["step"] == len(table) - 1
    table["attribution"] = drops
    table["score_without"] = _sigmoid(occluded[: len(table)])
    # Stable names for the id, time and amount, whatever the schema calls them.
    rows = frame.iloc[frame_rows]
    table["transaction_id"] = rows[schema.id_column].astype(str).to_numpy()
    table["event_time"] = rows[schema.time].to_numpy()
    table["event_amount"] = rows[schema.amount].to_numpy(dtype=float)
    return table


def _feature_table(
    described: tuple, n_num: int, drops: np.ndarray, occluded: np.ndarray
) -> pd.DataFrame:
    """The current event's features (`described_features`; the first `n_num` numeric), by
    absolute attribution."""
    names, values, clipped = described
    table = pd.DataFrame(
        {
            "feature": names,
            "kind": ["numeric"] * n_num + ["categorical"] * (len(names) - n_num),
            "value": values,
            "clipped": clipped,
            "attribution": drops,
            "score_without": _sigmoid(occluded),
        }
    )
    order = table["attribution"].abs().sort_values(ascending=False, kind="stable").index
    return table.reindex(order).reset_index(drop=True)


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _records(table: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]


def _plain(value):
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _format_value(value) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    return str(value)
