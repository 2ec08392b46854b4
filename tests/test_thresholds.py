import numpy as np
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.metrics import confusion, precision_recall_f1
from fraudseq.thresholds import choose_threshold

rng = np.random.default_rng(0)
Y = (rng.random(2000) < 0.05).astype(int)
SCORE = np.clip(rng.normal(0.3 + 0.4 * Y, 0.15), 0, 1)


def brute_force(objective):
    """The best of every distinct score as threshold, by direct counting."""
    candidates = np.unique(SCORE)
    values = [objective(confusion(Y, SCORE, t)) for t in candidates]
    return candidates[int(np.argmax(values))]


def test_best_f1_matches_brute_force():
    expected = brute_force(lambda c: precision_recall_f1(c)["f1"])
    assert choose_threshold("best-f1", Y, SCORE) == pytest.approx(expected)


def test_cost_matches_brute_force():
    expected = brute_force(lambda c: -(10 * c["fn"] + 1 * c["fp"]))
    assert choose_threshold("cost:10,1", Y, SCORE) == pytest.approx(expected)


def test_cost_weighted_by_amount():
    amount = rng.uniform(1, 100, len(Y))
    t = choose_threshold("cost:1,5,amount", Y, SCORE, amount=amount)
    alert = SCORE >= t
    cost = np.sum(amount[(Y == 1) & ~alert]) + 5 * np.sum((Y == 0) & alert)
    for other in np.unique(SCORE)[::50]:
        a = SCORE >= other
        assert cost <= np.sum(amount[(Y == 1) & ~a]) + 5 * np.sum((Y == 0) & a) + 1e-9


def test_recall_and_precision_targets():
    t = choose_threshold("recall:0.7", Y, SCORE)
    assert precision_recall_f1(confusion(Y, SCORE, t))["recall"] >= 0.7
    # the highest such threshold: one step higher misses the target
    higher = np.unique(SCORE)[np.unique(SCORE) > t]
    assert precision_recall_f1(confusion(Y, SCORE, higher[0]))["recall"] < 0.7
    t = choose_threshold("precision:0.6", Y, SCORE)
    assert precision_recall_f1(confusion(Y, SCORE, t))["precision"] >= 0.6


def test_budget_and_percentile():
    t = choose_threshold("budget:10", Y, SCORE, days=5)
    assert np.sum(SCORE >= t) == 50
    assert choose_threshold("percentile:99", Y, SCORE) == pytest.approx(np.percentile(SCORE, 99))


@pytest.mark.parametrize("bad", ["nope", "recall:", "cost:1", "budget:x"])
def test_bad_strategies_are_explained(bad):
    with pytest.raises(FraudseqError, match="strateg|expected"):
        choose_threshold(bad, Y, SCORE)
