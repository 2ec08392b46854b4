"""Ranking and alerting metrics for rare-event detection: never accuracy first."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def auc_roc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present."""
    return float(roc_auc_score(y, score)) if _both_classes(y) else float("nan")


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN without positives."""
    return float(average_precision_score(y, score)) if np.sum(y) > 0 else float("nan")


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    """The highest recall reachable while the false-positive rate stays at or under `max_fpr`."""
    if not _both_classes(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, score)
    return float(np.max(tpr[fpr <= max_fpr]))


def confusion(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of true/false positives/negatives when alerting on `score >= threshold`."""
    y = np.asarray(y).astype(bool)
    alert = np.asarray(score) >= threshold
    return {
        "tp": int(np.sum(alert & y)),
        "fp": int(np.sum(alert & ~y)),
        "fn": int(np.sum(~alert & y)),
        "tn": int(np.sum(~alert & ~y)),
    }


def precision_recall_f1(counts: dict[str, int]) -> dict[str, float]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def summary(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """The headline metrics, ranking first, then the alerting view at `threshold`."""
    y = np.asarray(y)
    counts = confusion(y, score, threshold)
    return {
        "n": int(len(y)),
        "n_fraud": int(np.sum(y)),
        "auc_roc": auc_roc(y, score),
        "average_precision": average_precision(y, score),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, 0.01),
        "threshold": float(threshold),
        **precision_recall_f1(counts),
        "confusion": counts,
    }


def card_precision_at_k(
    entity: np.ndarray, day: np.ndarray, y: np.ndarray, score: np.ndarray, k: int = 100
) -> float:
    """The Fraud Detection Handbook's daily Card Precision@k, averaged over days.

    Each day, every entity not yet detected gets its highest score and label of the day; the
    share of fraudulent entities among the k highest-scored is that day's precision. The
    fraudulent entities found this way count as detected and leave later days.
    """
    frame = pd.DataFrame({"entity": entity, "day": day, "y": y, "score": score})
    daily = frame.groupby(["day", "entity"], sort=True).agg(y=("y", "max"), score=("score", "max"))
    detected: set = set()
    precisions = []
    for day_value in daily.index.get_level_values("day").unique():
        today = daily.loc[day_value]
        today = today[~today.index.isin(detected)]
        top = today.nlargest(k, "score", keep="first")
        found = top.index[top["y"] > 0]
        precisions.append(len(found) / k)
        detected.update(found)
    return float(np.mean(precisions)) if precisions else float("nan")


# -- money, cost and scenarios ---------------------------------------------------------------

#: Default alerting costs, in units of one false alert's review cost: a missed fraud costs as
#: much as 10 reviews. Pass your own (and `amount`) to `cost_at_threshold` for money costs.
COST_FP = 1.0
COST_FN = 10.0


def _fraud_amounts(y: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Amounts at risk: refunds and zero amounts (negative or 0) put nothing at risk."""
    return np.where(np.asarray(y).astype(bool), np.clip(np.asarray(amount, float), 0, None), 0.0)


def money_recall(y: np.ndarray, score: np.ndarray, amount: np.ndarray, threshold: float) -> float:
    """Share of the fraudulent amount that alerts at `score >= threshold` catch.

    Negative amounts (refunds) count as zero. NaN when there is no fraudulent amount.

    >>> money_recall(np.array([1, 1, 0]), np.array([0.9, 0.1, 0.8]), np.array([300, 100, 5]), 0.5)
    0.75
    """
    at_risk = _fraud_amounts(y, amount)
    total = at_risk.sum()
    if total <= 0:
        return float("nan")
    return float(at_risk[np.asarray(score) >= threshold].sum() / total)


def cost_at_threshold(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    *,
    cost_fp: float = COST_FP,
    cost_fn: float = COST_FN,
    amount: np.ndarray | None = None,
) -> float:
    """Cost of alerting at `score >= threshold`: FP·cost_fp + FN·cost_fn.

    With `amount`, each missed fraud costs `cost_fn` times its amount instead of `cost_fn`
    (for example cost_fn=1 for the lost money and cost_fp=5 for a review in the same currency).

    >>> cost_at_threshold(np.array([1, 1, 0]), np.array([0.9, 0.1, 0.8]), 0.5)
    11.0
    >>> cost_at_threshold(np.array([1, 1, 0]), np.array([0.9, 0.1, 0.8]), 0.5,
    ...                   cost_fn=1, cost_fp=5, amount=np.array([300, 100, 5]))
    105.0
    """
    y = np.asarray(y).astype(bool)
    alert = np.asarray(score) >= threshold
    fp = float(np.sum(alert & ~y))
    missed = ~alert & y
    fn = float(_fraud_amounts(y, amount)[missed].sum()) if amount is not None else missed.sum()
    return float(cost_fp * fp + cost_fn * fn)


def threshold_curve(
    y: np.ndarray,
    score: np.ndarray,
    *,
    amount: np.ndarray | None = None,
    cost_fp: float = COST_FP,
    cost_fn: float = COST_FN,
    cost_by_amount: bool = True,
) -> dict[str, np.ndarray]:
    """Alerting metrics at every distinct threshold, computed in one sort.

    Returns arrays `threshold` (decreasing; alert on `score >= threshold`, the first entry
    `inf` is "no alert"), `alerts`, `tp`, `fp`, `precision` (1 where nothing is alerted),
    `recall`, `cost` (as `cost_at_threshold`: missed frauds weighted by their amount when
    `amount` is given and `cost_by_amount`) and, with `amount`, `money_recall`.
    """
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1] if len(s) else np.zeros(0, int)
    tp = np.r_[0, np.cumsum(yy)[last]].astype(np.float64)
    alerts = np.r_[0, last + 1].astype(np.float64)
    fp = alerts - tp
    positives = float(y.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(alerts > 0, tp / alerts, 1.0)
        recall = tp / positives if positives else np.full_like(tp, np.nan)
    out = {
        "threshold": np.r_[np.inf, s[last]],
        "alerts": alerts,
        "tp": tp,
        "fp": fp,
        "precision": precision,
        "recall": recall,
    }
    if amount is not None:
        at_risk = _fraud_amounts(y, amount)[order]
        caught = np.r_[0.0, np.cumsum(at_risk)[last]]
        total = at_risk.sum()
        out["money_recall"] = caught / total if total > 0 else np.full_like(caught, np.nan)
    if amount is not None and cost_by_amount:
        out["cost"] = cost_fp * fp + cost_fn * (total - caught)
    else:
        out["cost"] = cost_fp * fp + cost_fn * (positives - tp)
    return out


def recall_by_scenario(
    y: np.ndarray,
    score: np.ndarray,
    threshold: float,
    scenario: np.ndarray,
    amount: np.ndarray | None = None,
) -> dict[str, dict]:
    """Per value of a scenario column: transactions, frauds, alerts, recall (NaN for values
    without fraud, such as the legitimate "none"), alert rate and, with `amount`, money recall.

    >>> out = recall_by_scenario(np.array([1, 1, 0, 0]), np.array([.9, .2, .8, .1]), 0.5,
    ...                          np.array(["a", "a", "none", "none"]))
    >>> out["a"]["recall"], out["none"]["alert_rate"]
    (0.5, 0.5)
    """
    y = np.asarray(y).astype(bool)
    alert = np.asarray(score) >= threshold
    scenario = np.asarray(scenario).astype(str)
    result = {}
    for name in sorted(np.unique(scenario)):
        rows = scenario == name
        n_fraud = int(np.sum(y[rows]))
        entry = {
            "n": int(rows.sum()),
            "n_fraud": n_fraud,
            "alerts": int(np.sum(alert[rows])),
            "caught": int(np.sum(alert[rows] & y[rows])),
            "recall": float(np.sum(alert[rows] & y[rows]) / n_fraud) if n_fraud else float("nan"),
            "alert_rate": float(np.mean(alert[rows])),
            "mean_score": float(np.mean(np.asarray(score)[rows])),
        }
        if amount is not None:
            entry["money_recall"] = money_recall(
                y[rows], np.asarray(score)[rows], np.asarray(amount)[rows], threshold
            )
        result[str(name)] = entry
    return result


# -- bootstrap confidence intervals ----------------------------------------------------------

BOOTSTRAP_METRICS = ("average_precision", "auc_roc")


def bootstrap_ci(
    y: np.ndarray,
    score: np.ndarray,
    *,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    max_elements: int = 4_000_000,
) -> dict[str, dict]:
    """Percentile bootstrap intervals for average precision and AUC ROC.

    Resamples transactions with replacement (`n_resamples` index vectors drawn with
    `np.random.default_rng(seed)`), in chunks of at most `max_elements` indices, and computes
    both metrics for a whole chunk at once from resample counts on one sorted order (ties are
    handled as scikit-learn does, so each resample's values equal `average_precision` and
    `auc_roc` on the resampled arrays). Resamples with one class only are left out.

    Returns `{metric: {"value", "low", "high", "level", "n_resamples"}}`.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    y = np.asarray(y).astype(np.float64)
    score = np.asarray(score, dtype=np.float64)
    n = len(y)
    values = {"average_precision": [], "auc_roc": []}
    rng = np.random.default_rng(seed)
    per_chunk = max(1, max_elements // max(n, 1))
    for start in range(0, n_resamples if n else 0, per_chunk):
        index = rng.integers(0, n, size=(min(per_chunk, n_resamples - start), n))
        ap, auc = resampled_ap_auc(y, score, index)
        values["average_precision"].append(ap)
        values["auc_roc"].append(auc)
    point = {"average_precision": average_precision(y, score), "auc_roc": auc_roc(y, score)}
    out = {}
    for name in BOOTSTRAP_METRICS:
        sample = np.concatenate(values[name]) if values[name] else np.zeros(0)
        sample = sample[np.isfinite(sample)]
        low, high = (
            np.percentile(sample, [50 * (1 - level), 50 * (1 + level)])
            if len(sample)
            else (np.nan, np.nan)
        )
        out[name] = {
            "value": point[name],
            "low": float(low),
            "high": float(high),
            "level": level,
            "n_resamples": int(len(sample)),
        }
    return out


def resampled_ap_auc(
    y: np.ndarray, score: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Average precision and AUC ROC of each resample `y[index[b]], score[index[b]]`.

    Vectorised over resamples: each row of `index` becomes per-item counts, items are sorted
    once by score and grouped by tied score, and both metrics follow from cumulative weighted
    positives and negatives per tie group. NaN where a resample lacks a class.
    """
    y = np.asarray(y, dtype=np.float64)
    n, b = len(y), index.shape[0]
    order = np.argsort(score, kind="mergesort")  # ascending
    sorted_score = np.asarray(score)[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_score) != 0) + 1]
    flat = (index + (n * np.arange(b))[:, None]).ravel()
    counts = np.bincount(flat, minlength=b * n).reshape(b, n)[:, order].astype(np.float64)
    pos = counts * y[order]
    neg = counts - pos
    group_pos = np.add.reduceat(pos, group_start, axis=1)
    group_neg = np.add.reduceat(neg, group_start, axis=1)
    n_pos, n_neg = group_pos.sum(1), group_neg.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.cumsum(group_neg, axis=1) - group_neg
        auc = (group_pos * (below + 0.5 * group_neg)).sum(1) / (n_pos * n_neg)
        tp = np.cumsum(group_pos[:, ::-1], axis=1)
        alerts = tp + np.cumsum(group_neg[:, ::-1], axis=1)
        precision = np.where(alerts > 0, tp / np.maximum(alerts, 1e-300), 0.0)
        ap = (group_pos[:, ::-1] * precision).sum(1) / n_pos
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    ap[n_pos == 0] = np.nan
    return ap, auc
