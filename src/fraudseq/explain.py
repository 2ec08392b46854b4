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
from fraudseq.training import WindowSet, WindowSource
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
    """The `n` strongest reasons towards fraud, as plain dicts, largest attribution first.

    Candidates are the earlier events of the window (``kind="event"``) and the features of
    the current event (``kind="feature"``); only positive attributions (pushing the score up)
    are reasons. Each dict has `kind`, `attribution` (log-odds), `description` and the
    event's `transaction_id`, `time`, `amount`, `steps_before`, or the feature's `feature`
    and `value`.
    """
    reasons = []
    window = explanation.window
    n_steps = len(window)
    for _, event in window[~window["current"]].iterrows():  # at most K-1 rows
        steps_before = int(n_steps - 1 - event["step"])
        reasons.append(
            {
                "kind": "event",
                "attribution": float(event["attribution"]),
                "transaction_id": str(event["transaction_id"]),
                "time": pd.Timestamp(event["event_time"]).isoformat(),
                "amount": float(event["event_amount"]),
                "steps_before": steps_before,
                "description": (
                    f"earlier transaction {event['transaction_id']} ({steps_before} before, "
                    f"amount {event['event_amount']:.2f})"
                ),
            }
        )
    for _, feature in explanation.features.iterrows():
        reasons.append(
            {
                "kind": "feature",
                "attribution": float(feature["attribution"]),
                "feature": str(feature["feature"]),
                "value": _plain(feature["value"]),
                "description": describe_feature(
                    str(feature["feature"]), feature["value"], bool(feature["clipped"])
                ),
            }
        )
    reasons = [r for r in reasons if r["attribution"] > 0]
    reasons.sort(key=lambda r: -r["attribution"])
    return reasons[:n]


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
    numeric_names = list(model.encoder_.numeric_names_)
    categorical_names = list(model.schema_.categorical)
    n_num, n_cat = len(numeric_names), len(categorical_names)

    # One batch: per explained window, [original, K event occlusions, feature occlusions].
    copies, offsets, total = [], [], 0
    for i in range(len(rows)):
        length = int(lengths[i])
        sorted_rows = index[i, :length]
        num = encoded.numeric[sorted_rows]
        cat = encoded.categorical[sorted_rows]
        batch_num = np.repeat(num[None], 1 + length + n_num + n_cat, axis=0)
        batch_cat = np.repeat(cat[None], 1 + length + n_num + n_cat, axis=0)
        steps = np.arange(length)
        batch_num[1 + steps, steps, :] = 0.0
        batch_cat[1 + steps, steps, :] = PAD_CODE
        first = 1 + length
        batch_num[first + np.arange(n_num), length - 1, np.arange(n_num)] = 0.0
        first += n_num
        batch_cat[first + np.arange(n_cat), length - 1, np.arange(n_cat)] = PAD_CODE
        offsets.append(total)
        total += len(batch_num)
        copies.append((batch_num, batch_cat))
    logits = _score_windows(model, [c[0] for c in copies], [c[1] for c in copies], k)
    attention = _attention(model, encoded, positions, lengths)

    schema = model.schema_
    out = []
    for i, row in enumerate(rows):
        length = int(lengths[i])
        block = logits[offsets[i] : offsets[i] + 1 + length + n_num + n_cat]
        base = float(block[0])
        events = block[1 : 1 + length]
        feats = block[1 + length :]
        frame_rows = encoded.order[index[i, :length]]
        window = _window_table(frame, schema, frame_rows, base, events)
        if attention is not None:
            window["attention"] = attention[i][:length]
        current = encoded.numeric[index[i, length - 1]]
        values = list(feature_values(current, model.encoder_.scales_, model.encoder_.means_))
        values += [str(frame[c].iloc[row]) for c in categorical_names]
        clipped = [*at_range_edge(current, *model.encoder_.feature_range), *[False] * n_cat]
        features = pd.DataFrame(
            {
                "feature": numeric_names + categorical_names,
                "kind": ["numeric"] * n_num + ["categorical"] * n_cat,
                "value": values,
                "clipped": clipped,
                "attribution": base - feats,
                "score_without": _sigmoid(feats),
            }
        )
        features = features.reindex(
            features["attribution"].abs().sort_values(ascending=False, kind="stable").index
        ).reset_index(drop=True)
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


def _score_windows(model, numerics: list, categoricals: list, k: int) -> np.ndarray:
    """Logits of explicit windows (each (L, F) numeric and (L, C) codes, L <= K), through the
    window model's own `decision_function` on a small WindowSource built from them."""
    numeric = np.concatenate([_rows(n) for n in numerics]).astype(np.float32)
    categorical = np.concatenate([_rows(c) for c in categoricals])  # may have 0 columns
    sizes = np.concatenate([np.full(n.shape[0], n.shape[1]) for n in numerics])
    window_starts = np.r_[0, np.cumsum(sizes)[:-1]]
    starts = np.repeat(window_starts, sizes)
    encoded = EncodedFrame(numeric, categorical, np.arange(len(numeric)), starts)
    source = WindowSource(encoded, k)
    windows = WindowSet(source, window_starts + sizes - 1)
    return np.asarray(model.model_.decision_function(windows), dtype=np.float64)


def _rows(windows: np.ndarray) -> np.ndarray:
    """(m, L, F) windows as (m * L, F) event rows; unlike reshape(-1, F), works for F = 0."""
    return windows.reshape(windows.shape[0] * windows.shape[1], windows.shape[-1])


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
    frame: pd.DataFrame, schema, frame_rows: np.ndarray, base: float, occluded: np.ndarray
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
    table["attribution"] = base - occluded
    table["score_without"] = _sigmoid(occluded)
    # Stable names for the id, time and amount, whatever the schema calls them.
    rows = frame.iloc[frame_rows]
    table["transaction_id"] = rows[schema.id_column].astype(str).to_numpy()
    table["event_time"] = rows[schema.time].to_numpy()
    table["event_amount"] = rows[schema.amount].to_numpy(dtype=float)
    return table


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def _records(table: pd.DataFrame) -> list[dict]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")]


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
