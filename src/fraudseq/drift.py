"""Drift of a model's inputs and scores between a reference period and a current period.

Per encoded input feature (what the model sees: the scaled numeric features and the
vocabulary codes of the categorical columns) and for the score:

- PSI, the population stability index of bank model-risk practice: the reference's values
  cut into `PSI_BINS` bins at its quantiles (bins closed on the right, as pandas.qcut; tied
  quantiles merged), an empty bin's share taken as `PSI_EPSILON`, and
  ``sum((current - reference) * ln(current / reference))`` over the bins. Conventional
  reading: below 0.1 stable, 0.1 to 0.25 moderate, 0.25 and above significant.
- a distance, as Evidently's data drift does for more than 1,000 reference rows: for a
  numeric feature the Wasserstein distance divided by the reference's standard deviation
  (at least 0.001), for a categorical one the Jensen-Shannon distance (scipy's, natural
  logarithm) of the category shares; drift at 0.1 by default.

A feature has `drifted` when its PSI reaches the moderate threshold or its distance the
distance threshold; entries are listed worst first, by `severity`: the larger of PSI over
the PSI threshold and distance over the distance threshold (drifted when >= 1).

The alert rate over the current period is set against the expected rate: the model's own
on its validation period (kept in the model), else the reference period's.

The same score comparison runs in the service over a rolling window of live scores
(`fraudseq.serving.http.metrics.ScoreDriftGauges`), against the score reference that
training stores in model.json (`training_reference`).

Everything is vectorised: a bin is found with searchsorted and counted with bincount.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fraudseq.errors import FraudseqError

PSI_BINS = 10
#: Share given to an empty bin (reference or current) so that PSI stays finite.
PSI_EPSILON = 1e-4
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
#: Evidently's default drift threshold for the normed Wasserstein and Jensen-Shannon distances.
DISTANCE_THRESHOLD = 0.1
#: The alert rate has drifted when it is this many times the expected rate, or this many
#: times smaller.
ALERT_RATE_RATIO = 2.0
#: Evidently's floor for the reference's standard deviation in the normed Wasserstein distance.
STD_FLOOR = 1e-3
#: A stored distribution keeps this many quantiles, at the middles of equal-mass slices
#: (probabilities (i + 0.5) / STORED_QUANTILES): the Wasserstein distance from them is the
#: midpoint rule of its integral over the quantile function (on the simulator within 0.004
#: of the exact one, heavy-tailed amounts included).
STORED_QUANTILES = 200

WASSERSTEIN = "wasserstein_normed"
JENSEN_SHANNON = "jensen_shannon"


@dataclass(frozen=True)
class Thresholds:
    """When an entry counts as drifted (see the module docstring)."""

    psi: float = PSI_MODERATE
    psi_significant: float = PSI_SIGNIFICANT
    distance: float = DISTANCE_THRESHOLD
    alert_rate_ratio: float = ALERT_RATE_RATIO

    def __post_init__(self) -> None:
        if not (0 < self.psi <= self.psi_significant):
            raise FraudseqError(
                f"PSI thresholds must satisfy 0 < --psi-threshold ({self.psi}) <= "
                f"--psi-significant ({self.psi_significant})"
            )
        if not self.distance > 0:
            raise FraudseqError(f"--distance-threshold must be > 0, got {self.distance}")
        if not self.alert_rate_ratio > 1:
            raise FraudseqError(f"--alert-rate-ratio must be > 1, got {self.alert_rate_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)


# -- the measures ------------------------------------------------------------------------
def quantile_edges(values: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """The inner bin edges of `values`: its quantiles at 1/bins .. (bins-1)/bins, ties merged."""
    values = _finite(values)
    if not len(values):
        return np.empty(0)
    return np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each of the len(edges) + 1 bins (-inf, e1], (e1, e2], ...,
    (ek, inf); NaN is left out."""
    values = _finite(values)
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def category_shares(codes: np.ndarray, categories: int) -> np.ndarray:
    """The share of each code 0 .. categories-1 among `codes`."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=categories)
    return counts / max(len(codes), 1)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two vectors of bin shares."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    q = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def normed_wasserstein(reference: np.ndarray, current: np.ndarray, std: float) -> float:
    """Wasserstein distance of two samples over the reference's standard deviation `std`
    (at least STD_FLOOR), as Evidently's `wasserstein` test."""
    from scipy.stats import wasserstein_distance

    reference, current = _finite(reference), _finite(current)
    if not len(reference) or not len(current):
        return math.nan
    return float(wasserstein_distance(reference, current) / max(std, STD_FLOOR))


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (scipy's, natural logarithm) of two vectors of shares."""
    from scipy.spatial.distance import jensenshannon

    if not np.sum(reference) or not np.sum(current):
        return math.nan
    return float(jensenshannon(reference, current))


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


# -- a numeric distribution, kept or stored --------------------------------------------------
@dataclass(frozen=True)
class NumericReference:
    """What a numeric reference needs: its PSI bin edges and shares, the values a
    distance compares with (the sample itself, or its stored quantiles), and its std."""

    edges: np.ndarray
    shares: np.ndarray
    values: np.ndarray
    std: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray, bins: int = PSI_BINS) -> NumericReference:
        values = _finite(values)
        edges = quantile_edges(values, bins)
        std = float(values.std()) if len(values) else math.nan
        return cls(edges, bin_shares(values, edges), values, std, len(values))

    def to_json(self) -> dict:
        """The reference in a few hundred numbers: the values are kept as STORED_QUANTILES
        quantiles."""
        probabilities = (np.arange(STORED_QUANTILES) + 0.5) / STORED_QUANTILES
        quantiles = np.quantile(self.values, probabilities) if self.n else np.empty(0)
        return {
            "edges": self.edges.tolist(),
            "shares": self.shares.tolist(),
            "quantiles": quantiles.tolist(),
            "std": self.std,
            "n": self.n,
        }

    @classmethod
    def from_json(cls, stored: dict) -> NumericReference:
        return cls(
            np.asarray(stored["edges"], dtype=np.float64),
            np.asarray(stored["shares"], dtype=np.float64),
            np.asarray(stored["quantiles"], dtype=np.float64),
            math.nan if stored["std"] is None else float(stored["std"]),
            int(stored["n"]),
        )

    def compare(self, name: str, current: np.ndarray, thresholds: Thresholds) -> dict:
        """The drift entry of `current` values against this reference."""
        current = _finite(current)
        value = psi(self.shares, bin_shares(current, self.edges)) if len(current) else math.nan
        distance = normed_wasserstein(self.values, current, self.std)
        return entry(name, "numeric", value, WASSERSTEIN, distance, len(current), thresholds)


def compare_categorical(
    name: str, reference: np.ndarray, current: np.ndarray, thresholds: Thresholds
) -> dict:
    """The drift entry of the codes `current` against the reference's `category_shares`."""
    p, q = reference, category_shares(current, len(reference))
    distance = jensen_shannon(p, q)
    return entry(name, "categorical", psi(p, q), JENSEN_SHANNON, distance, len(current), thresholds)


def entry(
    name: str, kind: str, psi_value: float, distance_kind: str, distance: float, n: int, t
) -> dict:
    """One feature's (or the score's) drift, with its verdict."""
    severity = max(_ratio(psi_value, t.psi), _ratio(distance, t.distance))
    return {
        "name": name,
        "kind": kind,
        "psi": psi_value,
        "psi_level": psi_level(psi_value, t),
        "distance_kind": distance_kind,
        "distance": distance,
        "severity": severity,
        "drifted": bool(severity >= 1),
        "n": n,
    }


def psi_level(value: float, t: Thresholds) -> str:
    if math.isnan(value):
        return "n/a"
    if value >= t.psi_significant:
        return "significant"
    return "moderate" if value >= t.psi else "stable"


def _ratio(value: float, threshold: float) -> float:
    return -math.inf if math.isnan(value) else value / threshold


def alert_rate(
    current: np.ndarray, threshold: float, expected: float, expected_from: str, t: Thresholds
) -> dict:
    """The current period's alert rate at `threshold` against the `expected` rate."""
    current = _finite(current)
    alerts = int(np.sum(current >= threshold))
    rate = alerts / len(current) if len(current) else math.nan
    return {
        "threshold": threshold,
        "alerts": alerts,
        "n": len(current),
        **rate_verdict(rate, expected, t),
        "expected_from": expected_from,
    }


def rate_verdict(rate: float, expected: float, t: Thresholds) -> dict:
    """`rate` against `expected`: their ratio, and drifted when it is at least
    t.alert_rate_ratio or at most its inverse."""
    if math.isnan(rate) or math.isnan(expected):
        ratio = math.nan
    elif expected == 0:
        ratio = math.inf if rate > 0 else math.nan
    else:
        ratio = rate / expected
    drifted = not math.isnan(ratio) and (
        ratio >= t.alert_rate_ratio or ratio <= 1 / t.alert_rate_ratio
    )
    return {"rate": rate, "expected": expected, "ratio": ratio, "drifted": drifted}


# -- what training stores, and what a model offers -------------------------------------------
def training_reference(
    probability: np.ndarray, threshold: float, encoder=None, features=None
) -> dict:
    """The reference kept in model.json, of the rows the threshold was chosen on (the
    validation period): the scores' distribution and alert rate and, given the `encoder`
    and those rows' encoded `features` (numeric, categorical), each feature's distribution:
    PSI bins, quantiles and std of a numeric one, the category shares of a categorical one."""
    probability = _finite(probability)
    rate = float(np.mean(probability >= threshold)) if len(probability) else math.nan
    stored = {"score": NumericReference.of(probability).to_json(), "alert_rate": rate}
    if features is not None:
        numeric, categorical = features
        stored["features"] = {
            "numeric": {
                name: NumericReference.of(numeric[:, j]).to_json()
                for j, name in enumerate(encoder.numeric_names_)
            },
            "categorical": {
                column: category_shares(categorical[:, j], size).tolist()
                for j, (column, size) in enumerate(
                    zip(encoder.schema.categorical, encoder.cardinalities, strict=True)
                )
            },
        }
    return stored


def expected_alert_rate(model) -> tuple[float, str]:
    """The model's alert rate on its validation period and where it comes from: the
    stored reference, else the validation confusion counts (models saved before it)."""
    reference = getattr(model, "reference_", None)
    if reference is not None and reference.get("alert_rate") is not None:
        return float(reference["alert_rate"]), "validation"
    confusion = model.validation_metrics_.get("confusion") or {}
    n = sum(int(confusion.get(k, 0)) for k in ("tp", "fp", "fn", "tn"))
    if n:
        return (int(confusion["tp"]) + int(confusion["fp"])) / n, "validation"
    return math.nan, "none"


def score_reference(model) -> NumericReference | None:
    """The score distribution training stored, or None (a model saved before it was)."""
    reference = getattr(model, "reference_", None)
    if not reference or not reference.get("score"):
        return None
    return NumericReference.from_json(reference["score"])


# -- the monitor ---------------------------------------------------------------------------
def reference_period(model, start=None, end=None) -> tuple[object, object, str]:
    """The reference period: as given, else the model's validation period (scored out of
    sample, what the threshold and the stored score reference come from), else its
    training period."""
    if start is not None or end is not None:
        return start, end, "given"
    period = model.training_period_
    if period.get("valid_from") is not None:
        return period["valid_from"], period["valid_end"], "the model's validation period"
    return period.get("train_from"), period["train_until"], "the model's training period"


@dataclass(frozen=True)
class Reference:
    """What a current period is compared with: per numeric feature a NumericReference, per
    categorical column its category shares, the score's NumericReference, its alert rate
    at the model's threshold, and where it comes from (`period`)."""

    numeric: list[NumericReference]
    categorical: list[np.ndarray]
    score: NumericReference
    alert_rate: float
    period: dict


def stored_reference(model) -> Reference:
    """The reference training stored in the model (of its validation period)."""
    stored = getattr(model, "reference_", None) or {}
    if "features" not in stored:
        raise FraudseqError(
            "this model stores no feature reference (saved before fraudseq kept one); "
            "retrain it, or read a reference period from the data (without "
            "--stored-reference, or with --reference-from/--reference-until)"
        )
    features = stored["features"]
    start, end, source = reference_period(model)
    numeric = [
        NumericReference.from_json(features["numeric"][n]) for n in model.encoder_.numeric_names_
    ]
    return Reference(
        numeric,
        [
            np.asarray(features["categorical"][c], dtype=np.float64)
            for c in model.schema_.categorical
        ],
        NumericReference.from_json(stored["score"]),
        math.nan if stored.get("alert_rate") is None else float(stored["alert_rate"]),
        _period(start, end, int(stored["score"]["n"]), f"stored in the model: {source}"),
    )


def _data_reference(model, encoded, rows: np.ndarray, period: dict) -> Reference:
    """The reference of the encoded `rows` of a frame."""
    positions = encoded.positions_of(rows)
    numeric, categorical = encoded.numeric[positions], encoded.categorical[positions]
    scores = model.encoded_probabilities(encoded, rows)
    return Reference(
        [NumericReference.of(numeric[:, j]) for j in range(numeric.shape[1])],
        [
            category_shares(categorical[:, j], size)
            for j, size in enumerate(model.encoder_.cardinalities)
        ],
        NumericReference.of(scores),
        float(np.mean(scores >= model.threshold_)),
        period,
    )


def monitor(
    model,
    data,
    *,
    start=None,
    end=None,
    reference_start=None,
    reference_end=None,
    stored: bool = False,
    thresholds: Thresholds | None = None,
) -> dict:
    """Drift of `model`'s features, score and alert rate on the transactions of `data`
    (a file or a DataFrame) in [start, end) against the reference: the model's stored one
    (`stored`), else a period of `data` (see `reference_period`). Earlier transactions are
    each period's history, as in `score`."""
    from fraudseq.fraud_model import no_transactions
    from fraudseq.schema import load_transactions
    from fraudseq.splits import in_period, parse_time

    t = thresholds or Thresholds()
    model._check_fitted()
    if stored and (reference_start is not None or reference_end is not None):
        raise FraudseqError(
            "--stored-reference compares with what training stored; it takes no "
            "--reference-from/--reference-until"
        )
    reference = stored_reference(model) if stored else None
    ref_start, ref_end, ref_source = reference_period(model, reference_start, reference_end)
    frame = load_transactions(data, model.schema_, require_label=False)
    ends = [parse_time(e) for e in ((end,) if stored else (end, ref_end))]
    if all(e is not None for e in ends):  # later rows are no one's history
        frame = frame[(frame[model.schema_.time] < max(ends)).to_numpy()].reset_index(drop=True)
    times = frame[model.schema_.time]
    rows = np.flatnonzero(in_period(times, start, end))
    if not len(rows):
        raise no_transactions(start, end)
    if not stored:
        ref_rows = np.flatnonzero(in_period(times, ref_start, ref_end))
        if not len(ref_rows):
            raise no_transactions(ref_start, ref_end, "--reference-from/--reference-until")
    encoded = model.encoder_.transform(frame)
    if reference is None:
        period = _period(ref_start, ref_end, len(ref_rows), ref_source)
        reference = _data_reference(model, encoded, ref_rows, period)
    return compare(model, reference, encoded, rows, t, _period(start, end, len(rows), "given"))


def compare(model, reference: Reference, encoded, rows: np.ndarray, t: Thresholds, period) -> dict:
    """`monitor`'s result for the encoded `rows` against `reference`."""
    positions = encoded.positions_of(rows)
    numeric, categorical = encoded.numeric[positions], encoded.categorical[positions]
    names = model.encoder_.numeric_names_
    features = [
        ref.compare(n, numeric[:, j], t)
        for j, (n, ref) in enumerate(zip(names, reference.numeric, strict=True))
    ]
    features += [
        compare_categorical(column, shares, categorical[:, j], t)
        for j, (column, shares) in enumerate(
            zip(model.schema_.categorical, reference.categorical, strict=True)
        )
    ]
    features.sort(key=lambda e: e["severity"], reverse=True)
    scores = model.encoded_probabilities(encoded, rows)
    expected, expected_from = expected_alert_rate(model)
    if math.isnan(expected):
        expected, expected_from = reference.alert_rate, "reference"
    return {
        "reference": reference.period,
        "current": period,
        "thresholds": t.to_dict(),
        "features": features,
        "drifted_features": [e["name"] for e in features if e["drifted"]],
        "score": reference.score.compare("score", scores, t),
        "alert_rate": {
            **alert_rate(scores, model.threshold_, expected, expected_from, t),
            "reference_rate": reference.alert_rate,
        },
    }


def _period(start, end, n: int, source: str) -> dict:
    from fraudseq.splits import parse_time

    def text(value):
        return None if value is None else str(parse_time(value))

    return {"from": text(start), "until": text(end), "n": n, "source": source}
