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
