import numpy as np
import pytest

from fraudseq import metrics, thresholds


def test_perfect_and_random_ranking():
    y = np.array([0, 0, 0, 1, 1])
    assert metrics.auc_roc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert metrics.average_precision(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert metrics.auc_roc(y, np.array([0.9, 0.8, 0.7, 0.2, 0.1])) == 0.0


def test_single_class_gives_nan_not_crash():
    assert np.isnan(metrics.auc_roc(np.zeros(4), np.arange(4.0)))
    assert np.isnan(metrics.average_precision(np.zeros(4), np.arange(4.0)))


def test_recall_at_fpr():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000), np.ones(10)]
    score = np.r_[rng.random(1000), np.linspace(0.985, 2, 10)]
    # at most 10 negatives may exceed the threshold at 1% FPR
    recall = metrics.recall_at_fpr(y, score, 0.01)
    assert 0.5 <= recall <= 1.0
    assert metrics.recall_at_fpr(y, score, 0.0) <= recall


def test_confusion_and_summary():
    y = np.array([0, 1, 1, 0])
    s = np.array([0.2, 0.7, 0.4, 0.9])
    assert metrics.confusion(y, s, 0.5) == {"tp": 1, "fp": 1, "fn": 1, "tn": 1}
    out = metrics.summary(y, s, 0.5)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert list(out)[:4] == ["n", "n_fraud", "auc_roc", "average_precision"]


def test_best_f1_threshold_separates():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    t = thresholds.best_f1(y, s)
    assert 0.3 < t <= 0.8
    assert metrics.summary(y, s, t)["f1"] == 1.0


def test_card_precision_at_k_removes_detected_cards():
    # day 0: cards a (fraud, 0.9), b (legit, 0.8), c (fraud, 0.1); day 1: a again (fraud, 0.9)
    entity = np.array(["a", "a", "b", "c", "a", "c", "d"])
    day = np.array([0, 0, 0, 0, 1, 1, 1])
    y = np.array([1, 0, 0, 1, 1, 1, 0])
    score = np.array([0.2, 0.9, 0.8, 0.1, 0.9, 0.5, 0.4])
    # day 0, top 2 by max score: a (max label 1), b (0) -> 1/2; a detected.
    # day 1 without a: c (1), d (0) -> 1/2.
    assert metrics.card_precision_at_k(entity, day, y, score, k=2) == pytest.approx(0.5)
    # k=1: day 0 -> a (1/1); day 1 -> c (1/1)
    assert metrics.card_precision_at_k(entity, day, y, score, k=1) == pytest.approx(1.0)
