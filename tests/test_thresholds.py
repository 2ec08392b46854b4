import re

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.metrics import confusion, precision_recall_f1
from fraudseq.thresholds import choose_threshold, parse_strategy

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
    half_a_day = choose_threshold("budget:10", Y, SCORE, days=0.5)
    assert np.sum(SCORE >= half_a_day) == 5
    assert choose_threshold("percentile:99", Y, SCORE) == pytest.approx(np.percentile(SCORE, 99))


@pytest.mark.parametrize("bad", ["nope", "recall:", "cost:1", "budget:x", "best-f1:2"])
def test_bad_strategies_are_explained(bad):
    with pytest.raises(FraudseqError, match="strateg|expected"):
        choose_threshold(bad, Y, SCORE)


def test_unknown_strategy_lists_the_choices_as_text():
    with pytest.raises(FraudseqError, match=r"choose one of best-f1, cost:FN,FP\[,amount\], "):
        parse_strategy("wat")


@pytest.mark.parametrize(
    ("bad", "valid"),
    [
        ("recall:1.5", "0 < R <= 1"),
        ("recall:0", "0 < R <= 1"),
        ("precision:-1", "0 < P <= 1"),
        ("percentile:150", "0 <= P <= 100"),
        ("percentile:nan", "0 <= P <= 100"),
        ("budget:0", "whole number >= 1"),
        ("budget:2.5", "whole number >= 1"),
        ("cost:-1,5", "FN, FP >= 0"),
        ("cost:0,0,amount", "not both 0"),
    ],
)
def test_out_of_range_values_name_the_valid_range(bad, valid):
    with pytest.raises(FraudseqError, match=re.escape(f"{bad!r}: expected")) as error:
        parse_strategy(bad)
    assert valid in str(error.value)


def test_parse_strategy():
    assert parse_strategy("cost:10, 1,amount") == ("cost", [10.0, 1.0], True)
    assert parse_strategy("percentile:0") == ("percentile", [0.0], False)
    assert parse_strategy("best-f1") == ("best-f1", [], False)


def test_a_budget_counts_the_period_length_not_the_dates_it_touches():
    from fraudseq.fraud_model import _period_days

    night = pd.Series(pd.to_datetime(["2026-02-01 18:00:05", "2026-02-02 05:59:40"]))
    assert _period_days(night) == 0.5  # two calendar dates, half a day
    week = pd.Series(pd.to_datetime(["2026-02-01 00:00:18", "2026-02-07 23:59:25"]))
    assert _period_days(week) == 7
