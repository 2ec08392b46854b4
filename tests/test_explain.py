"""Occlusion explanations: consistent with scoring, generic over families, and faithful on
simulated card testing (tiny test charges drive the big purchase's score)."""

import json

import numpy as np
import pandas as pd
import pytest

from fraudseq.explain import explain, explain_many, top_reasons
from fraudseq.fraud_model import FraudModel
from fraudseq.simulate import FRAUD_TYPES

TRAIN_UNTIL = "2026-01-31"  # as in conftest.py

TINY = 3.0  # the simulator's test charges are 0.5-3.0


@pytest.fixture(scope="module")
def boosted(small_frame):
    model = FraudModel("xgboost", n_estimators=150, seed=0, progress=False)
    return model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)


def card_testing_purchases(frame: pd.DataFrame) -> pd.DataFrame:
    """The first large purchase after each card-testing burst."""
    assert "card_testing" in FRAUD_TYPES
    incidents = frame[frame["fraud_type"] == "card_testing"].sort_values(["card_id", "ts"])
    return incidents[incidents["amount"] > 20].groupby("card_id").head(1)


def test_explanation_matches_score_and_has_every_event_and_feature(trained, small_frame):
    ids = small_frame["tx_id"].iloc[[5000, 15000, 20000]].tolist()
    explanations = explain_many(trained, small_frame, ids)
    scores = trained.score(small_frame).set_index("transaction_id")["score"]
    for tx, e in zip(ids, explanations, strict=True):
        assert e.transaction_id == tx
        assert e.score == pytest.approx(scores[tx], abs=1e-6)
        history = small_frame[(small_frame["card_id"] == e.entity) & (small_frame["ts"] <= e.time)]
        assert len(e.window) == min(trained.window, len(history))
        assert e.window["current"].tolist() == [False] * (len(e.window) - 1) + [True]
        assert e.window["transaction_id"].iloc[-1] == tx
        assert e.window["event_time"].is_monotonic_increasing
        n_features = trained.encoder_.n_numeric + len(trained.schema_.categorical)
        assert len(e.features) == n_features
        assert np.all(np.diff(e.features["attribution"].abs().to_numpy()) <= 1e-12)
        assert np.allclose(
            e.window["attribution"], np.log(e.score / (1 - e.score)) - _logit(e.window)
        )
        assert "attention" not in e.window.columns  # the LSTM has no attention
        values = e.features.loc[e.features["kind"] == "numeric", "value"].astype(float).abs()
        assert not ((values > 0) & (values < 1e-6)).any()  # a zero reads 0, not float noise
    assert small_frame.equals(small_frame.copy())  # the caller's frame is untouched


def _logit(window: pd.DataFrame) -> np.ndarray:
    p = window["score_without"].to_numpy()
    return np.log(p / (1 - p))


def test_top_reasons_are_plain_positive_and_sorted(trained, small_frame):
    e = explain(trained, small_frame, card_testing_purchases(small_frame)["tx_id"].iloc[0])
    reasons = top_reasons(e, n=3)
    assert 1 <= len(reasons) <= 3
    assert [r["attribution"] for r in reasons] == sorted(
        (r["attribution"] for r in reasons), reverse=True
    )
    assert all(r["attribution"] > 0 and r["kind"] in ("event", "feature") for r in reasons)
    json.dumps(reasons)  # plain data for the service
    json.dumps(e.to_dict())


def test_unknown_transaction_id_is_a_clear_error(trained, small_frame):
    from fraudseq.errors import FraudseqError

    with pytest.raises(FraudseqError, match="NOPE"):
        explain(trained, small_frame, "NOPE")


@pytest.mark.parametrize("family", ["trained", "boosted"])
def test_card_testing_charges_drive_the_big_purchase(family, request, small_frame):
    """Over every card-testing incident of the data: a tiny test charge is among the three
    earlier events with the largest absolute attribution (nearly always), and the earlier
    event that raises the score most is a tiny test charge (in most incidents; chance would
    give about a third)."""
    model = request.getfixturevalue(family)
    purchases = card_testing_purchases(small_frame)
    assert len(purchases) >= 5
    in_top3 = top_is_tiny = 0
    for e in explain_many(model, small_frame, purchases["tx_id"].tolist()):
        earlier = e.earlier_events  # by absolute attribution, largest first
        tiny = (
            (earlier["fraud_type"] == "card_testing") & (earlier["event_amount"] <= TINY)
        ).to_numpy()
        assert 2 <= tiny.sum() < len(earlier)  # genuine history and test charges compete
        in_top3 += tiny[:3].any()
        top_is_tiny += tiny[np.argmax(earlier["attribution"].to_numpy())]
    n = len(purchases)
    assert in_top3 >= int(np.ceil(0.8 * n)), (in_top3, n)
    assert top_is_tiny > n / 2, (top_is_tiny, n)


class _FakeAttention:
    """A window model with an `attention(windows)` method, as attention families have."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def decision_function(self, windows):
        return self.inner.decision_function(windows)

    def attention(self, windows):
        _, _, lengths = windows.source.batch(windows.positions)
        steps = np.arange(windows.source.window)[None, :]
        weights = (steps < lengths.numpy()[:, None]).astype(np.float32)
        return weights / weights.sum(1, keepdims=True)


def test_attention_is_reported_separately_when_the_model_has_it(trained, small_frame):
    import copy

    model = copy.copy(trained)
    model.model_ = _FakeAttention(trained.model_)
    e = explain(model, small_frame, small_frame["tx_id"].iloc[12000])
    assert "attention" in e.window.columns
    assert e.window["attention"].sum() == pytest.approx(1.0)
    assert e.attention is not None and len(e.attention) == len(e.window)


def test_explain_command_prints_and_writes_json(trained, small_csv, tmp_path, monkeypatch, capsys):
    import sys

    from fraudseq.cli import main

    trained.save(tmp_path / "model")
    tx = pd.read_csv(small_csv)["tx_id"].iloc[21000]
    out = tmp_path / "why.json"
    argv = ["fraudseq", "explain", str(tmp_path / "model"), small_csv, "--transaction-id", tx]
    monkeypatch.setattr(sys, "argv", [*argv, "--json", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert f"transaction {tx}" in printed and "attribution" in printed and "now" in printed
    data = json.loads(out.read_text())
    assert data["transaction_id"] == tx and data["window"][-1]["current"] is True
    assert len(data["top_reasons"]) <= 3


def test_log_scaled_features_are_described_in_plain_units():
    from fraudseq.explain import describe_feature

    assert describe_feature("count_1h", np.float64(np.log1p(3))) == (
        "count_1h = 1.386 (3 earlier transactions in the last 1h)"
    )
    assert describe_feature("amount_7d", -np.log1p(120.5)).endswith(
        "(-120.50 spent in the last 7d)"
    )
    assert describe_feature("cp_count_30d", np.log1p(41.0)).endswith(
        "(41 counterparty transactions in its 30d window)"
    )
    assert describe_feature("cp_risk_7d", 0.25) == "cp_risk_7d = 0.25"  # a rate as it is
    assert describe_feature("country", "FR") == "country = FR"


def test_occlude_replaces_each_event_and_feature_by_the_baseline_in_one_call():
    """`occlude` on padded windows of different lengths with a toy additive score: each
    drop is what the occluded value contributed, and everything is scored in one call."""
    from fraudseq.explain import occlude

    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(2, 4, 3)).astype(np.float32)
    codes = rng.integers(2, 9, size=(2, 4, 2))
    lengths = np.array([4, 2])
    numeric[1, 2:], codes[1, 2:] = 0.0, 0  # left-aligned padding
    calls = []

    def score(numeric, codes, lengths):
        calls.append(len(lengths))
        return numeric.sum((1, 2)) + 0.5 * codes.sum((1, 2))

    own = occlude(numeric, codes, lengths, score)
    given = occlude(numeric, codes, lengths, score, logits=score(numeric, codes, lengths))
    assert calls == [2 * (1 + 3 + 2) + 4 + 2, 2, 2 * (3 + 2) + 4 + 2]
    for occlusion in (own, given):
        for i, n in enumerate(lengths):
            per_event = numeric[i, :n].sum(1) + 0.5 * codes[i, :n].sum(1)
            assert np.allclose(occlusion.event_drops[i, :n], per_event)
            assert np.isnan(occlusion.events[i, n:]).all()
            last = np.r_[numeric[i, n - 1], 0.5 * codes[i, n - 1]]
            assert np.allclose(occlusion.feature_drops[i], last)


def test_live_reasons_equal_fraudseq_explain(tiny_lstm_dir, small_frame):
    """A file replayed through the Detector (labels fed back, as the live parity tests do)
    gets, for each transaction, the reasons `fraudseq explain` gives it on that file."""
    from fraudseq.serving import Detector
    from test_state import accounts_slice, transactions

    data = accounts_slice(small_frame, 150, 6)
    txs, labels = transactions(data)
    with Detector.load(tiny_lstm_dir, clock="data") as detector:
        detector.explain = "all"
        live = {}
        for tx, label in zip(txs, labels, strict=True):
            live[tx["tx_id"]] = detector.score(tx)["reasons"]
            detector.feedback(tx["tx_id"], label)
    model = FraudModel.load(tiny_lstm_dir)
    ids = [tx["tx_id"] for tx in txs]
    offline = {e.transaction_id: top_reasons(e) for e in explain_many(model, data, ids)}
    assert sum(bool(r) for r in live.values()) > len(ids) / 2
    for tx_id in ids:
        got, expected = live[tx_id], offline[tx_id]
        assert [_without_attribution(r) for r in got] == [
            _without_attribution(r) for r in expected
        ], tx_id
        assert [r["attribution"] for r in got] == pytest.approx(
            [r["attribution"] for r in expected], abs=1e-4
        )


def _without_attribution(reason: dict) -> dict:
    return {
        k: pytest.approx(v) if isinstance(v, float) else v
        for k, v in reason.items()
        if k != "attribution"
    }
