"""Alert threshold strategies, chosen on validation scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve


def best_f1(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold that maximises F1 on (y, score); 0.5 when y has no positives."""
    if np.sum(y) == 0:
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, score)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    return float(thresholds[int(np.argmax(f1[:-1]))])
