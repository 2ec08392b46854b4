"""Money recall, cost, threshold curves, per-scenario recall and bootstrap intervals."""

import numpy as np
import pytest

from fraudseq import metrics


@pytest.fixture
def example():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.03).astype(int)
    score = np.round(rng.random(2000) * 0.7 + 0.3 * y, 3)  # rounded: many ties
    amount = rng.lognormal(3, 1, 2000)
    return y, score, amount


def test_money_recall_counts_caught_fraud_amount():
    y = np.array([1, 1, 1, 0])
    score = np.array([0.9, 0.2, 0.7, 0.95])
    amount = np.array([100.0, 300.0, -50.0, 1000.0])  # the refund puts nothing at risk
    assert metrics.money_recall(y, score, amount, 0.5) == pytest.approx(100 / 400)
    assert metrics.money_recall(y, score, amount, 0.1) == 1.0
    assert np.isnan(metrics.money_recall(np.zeros(3), np.ones(3), np.ones(3), 0.5))


def test_cost_counts_and_amount_weighting():
    y = np.array([1, 1, 0, 0, 0])
    score = np.array([0.9, 0.2, 0.8, 0.6, 0.1])
    # threshold 0.5: tp 1, fn 1, fp 2
    assert metrics.cost_at_threshold(y, score, 0.5, cost_fp=1, cost_fn=10) == 12
    amount = np.array([50.0, 70.0, 1, 1, 1])
    assert metrics.cost_at_threshold(y, score, 0.5, cost_fp=5, cost_fn=1, amount=amount) == 80


def test_threshold_curve_matches_pointwise_metrics(example):
    y, score, amount = example
    curve = metrics.threshold_curve(y, score, amount=amount, cost_fp=2, cost_fn=30)
    by_count = metrics.threshold_curve(
        y, score, amount=amount, cost_fp=2, cost_fn=30, cost_by_amount=False
    )
    assert curve["threshold"][0] == np.inf and curve["alerts"][0] == 0
    assert np.all(np.diff(curve["threshold"]) < 0)
    for i in (1, 7, len(curve["threshold"]) // 2, len(curve["threshold"]) - 1):
        t = curve["threshold"][i]
        counts = metrics.confusion(y, score, t)
        prf = metrics.precision_recall_f1(counts)
        assert curve["tp"][i] == counts["tp"] and curve["fp"][i] == counts["fp"]
        assert curve["precision"][i] == pytest.approx(prf["precision"])
        assert curve["recall"][i] == pytest.approx(prf["recall"])
        assert curve["money_recall"][i] == pytest.approx(metrics.money_recall(y, score, amount, t))
        assert curve["cost"][i] == pytest.approx(
            metrics.cost_at_threshold(y, score, t, cost_fp=2, cost_fn=30, amount=amount)
        )
        assert by_count["cost"][i] == pytest.approx(
            metrics.cost_at_threshold(y, score, t, cost_fp=2, cost_fn=30)
        )


def test_recall_by_scenario():
    y = np.array([1, 1, 1, 0, 0, 0])
    score = np.array([0.9, 0.1, 0.8, 0.7, 0.2, 0.1])
    scenario = np.array(["a", "a", "b", "none", "none", "none"])
    out = metrics.recall_by_scenario(y, score, 0.5, scenario, amount=np.array([10, 30, 5, 1, 1, 1]))
    assert out["a"]["recall"] == 0.5 and out["a"]["money_recall"] == pytest.approx(0.25)
    assert out["b"] == pytest.approx(
        {
            "n": 1,
            "n_fraud": 1,
            "alerts": 1,
            "caught": 1,
            "recall": 1.0,
            "alert_rate": 1.0,
            "mean_score": 0.8,
            "money_recall": 1.0,
        }
    )
    assert np.isnan(out["none"]["recall"]) and out["none"]["alert_rate"] == pytest.approx(1 / 3)


def test_vectorised_resamples_equal_scikit_learn(example):
    y, score, _ = example
    index = np.random.default_rng(5).integers(0, len(y), size=(6, len(y)))
    ap, auc = metrics.resampled_ap_auc(y, score, index)
    for b in range(len(index)):
        assert ap[b] == pytest.approx(metrics.average_precision(y[index[b]], score[index[b]]))
        assert auc[b] == pytest.approx(metrics.auc_roc(y[index[b]], score[index[b]]))


def test_resamples_without_positives_are_nan():
    y = np.array([0, 0, 0, 1])
    ap, auc = metrics.resampled_ap_auc(y, np.arange(4.0), np.array([[0, 1, 2, 0], [3, 3, 0, 1]]))
    assert np.isnan(ap[0]) and np.isnan(auc[0])
    assert ap[1] == 1.0 and auc[1] == 1.0


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate(example):
    y, score, _ = example
    a = metrics.bootstrap_ci(y, score, n_resamples=120, seed=1)
    b = metrics.bootstrap_ci(y, score, n_resamples=120, seed=1, max_elements=5000)  # chunked
    assert a == b
    for name in ("average_precision", "auc_roc"):
        ci = a[name]
        assert ci["low"] < ci["value"] < ci["high"]
        assert ci["n_resamples"] == 120 and ci["level"] == 0.95
    narrow = metrics.bootstrap_ci(y, score, n_resamples=120, seed=1, level=0.5)
    assert (
        narrow["auc_roc"]["high"] - narrow["auc_roc"]["low"]
        < a["auc_roc"]["high"] - (a["auc_roc"]["low"])
    )
    assert metrics.bootstrap_ci(y, score, n_resamples=120, seed=2) != a


def test_evaluate_ci_prints_intervals(trained, small_csv, tmp_path, monkeypatch, capsys):
    import json
    import sys

    from fraudseq.cli import main

    trained.save(tmp_path / "model")
    argv = ["fraudseq", "evaluate", str(tmp_path / "model"), small_csv, "--from", "2026-01-31"]
    monkeypatch.setattr(
        sys, "argv", [*argv, "--ci", "--resamples", "50", "--json", str(tmp_path / "m.json")]
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "95% interval" in printed and "50 resamples" in printed
    intervals = json.loads((tmp_path / "m.json").read_text())["intervals"]
    ap = intervals["average_precision"]
    assert ap["low"] <= ap["value"] <= ap["high"] and ap["n_resamples"] == 50
