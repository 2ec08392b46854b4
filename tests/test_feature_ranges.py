"""Fitted feature ranges (issue 17, item 7): scaled features are clipped to the range seen on
the training rows, so that an amount far beyond anything in training cannot drive a model
outside the region it learned (an LSTM gave 0.0 to 1e5 on an account of 20.00 purchases)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraudseq.features import BLOCKS as FEATURE_BLOCKS
from fraudseq.features import FEATURE_LIMIT, FeatureEncoder
from fraudseq.fraud_model import FraudModel
from fraudseq.models import MODELS
from fraudseq.schema import Schema, load_transactions
from fraudseq.serving import Detector
from test_live_features import replay as live_replay
from test_state import accounts_slice, transactions

SCHEMA = Schema.simulator()
TRAIN_UNTIL = "2026-01-31"  # as in conftest.py; validation is the 7 days before it
FIT_UNTIL = pd.Timestamp("2026-01-24")  # the encoder's rows: training minus validation
PROBE_AMOUNTS = (1e3, 1e5, 1e7)
ALL_BLOCKS = tuple(FEATURE_BLOCKS)


@pytest.fixture(scope="module")
def frame(small_frame):
    return load_transactions(small_frame, SCHEMA)


_TRAINED: dict[str, FraudModel] = {}


@pytest.fixture(scope="module")
def trained_family(small_frame):
    """Each family trained once per test process, tiny, on the small simulator frame."""

    def get(family: str) -> FraudModel:
        if family not in _TRAINED:
            model = FraudModel(family, epochs=2, hidden_size=16, seed=3, progress=False)
            _TRAINED[family] = model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)
        return _TRAINED[family]

    return get


# -- the range is learned on training rows only --------------------------------------------
def test_range_is_learned_from_training_rows_only(frame):
    train = frame[frame["ts"] < FIT_UNTIL]
    encoder = FeatureEncoder(SCHEMA, blocks=ALL_BLOCKS).fit(train)
    assert encoder.low_.shape == encoder.high_.shape == (encoder.n_numeric,)
    assert (encoder.low_ <= 0).all() and (encoder.high_ >= 0).all()
    # Every training row is inside the range: fitting, and so training, is unchanged.
    raw = encoder.transform(train).numeric
    assert (raw >= encoder.low_.astype(np.float32)).all()
    assert (raw <= encoder.high_.astype(np.float32)).all()

    # Extreme values after the cut (validation/scoring rows) change nothing that is learned...
    later = frame.copy()
    after = (later["ts"] >= FIT_UNTIL).to_numpy()
    later.loc[after, "amount"] = np.where(np.arange(after.sum()) % 2, 1e9, -1e9)
    again = FeatureEncoder(SCHEMA, blocks=ALL_BLOCKS).fit(later[~after])
    assert again.to_json() == encoder.to_json()
    # ...and are clipped to the learned range when transformed.
    encoded = encoder.transform(later)
    rows = encoded.positions_of(np.flatnonzero(after))
    amount = encoder.numeric_names_.index("amount")
    values = encoded.numeric[rows, amount]
    assert values.max() == np.float32(encoder.high_[amount])
    assert values.min() == np.float32(encoder.low_[amount])
    assert (encoded.numeric >= encoder.low_.astype(np.float32)).all()
    assert (encoded.numeric <= encoder.high_.astype(np.float32)).all()


def test_model_range_ignores_validation_rows(small_frame):
    """FraudModel fits the encoder (and its range) on training rows, not validation rows."""
    frame = small_frame.copy()
    frame.loc[frame["ts"] >= "2026-01-24", "amount"] *= 1000  # validation and later only
    model = FraudModel("xgboost", n_estimators=5, progress=False)
    model.fit(frame, train_until=TRAIN_UNTIL, valid_days=7)
    loaded = load_transactions(small_frame, SCHEMA)
    reference = FeatureEncoder(SCHEMA, blocks=model.encoder_.blocks).fit(
        loaded[loaded["ts"] < FIT_UNTIL]
    )
    np.testing.assert_array_equal(model.encoder_.low_, reference.low_)
    np.testing.assert_array_equal(model.encoder_.high_, reference.high_)


def test_range_round_trips_and_old_models_load_without_it(frame):
    encoder = FeatureEncoder(SCHEMA).fit(frame[frame["ts"] < FIT_UNTIL])
    state = json.loads(json.dumps(encoder.to_json()))
    restored = FeatureEncoder.from_json(state, SCHEMA)
    np.testing.assert_array_equal(restored.low_, encoder.low_)
    np.testing.assert_array_equal(restored.high_, encoder.high_)

    # A model saved before ranges existed has none in its JSON: it loads and clips at
    # +-FEATURE_LIMIT only, as it did when it was saved.
    old = {k: v for k, v in state.items() if k not in ("low", "high")}
    legacy = FeatureEncoder.from_json(old, SCHEMA)
    assert (legacy.low_ == -FEATURE_LIMIT).all() and (legacy.high_ == FEATURE_LIMIT).all()
    extreme = frame.copy()
    extreme.loc[extreme.index[-5:], "amount"] = 1e7  # 70 000 standard deviations
    numeric = legacy.transform(extreme).numeric
    scaled_max = (1e7 - legacy.means_) / legacy.scales_
    amount = legacy.numeric_names_.index("amount")
    assert numeric[:, amount].max() == pytest.approx(scaled_max[amount], rel=1e-6)
    assert "low" not in legacy.to_json()  # re-saving keeps the old behaviour too


# -- one clip for batch transform, live scoring and live batches -----------------------------
def _with_extremes(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    late = np.flatnonzero((frame["ts"] >= TRAIN_UNTIL).to_numpy())
    frame.loc[late[::7], "amount"] = 1e7
    frame.loc[late[3::11], "amount"] = -1e6  # refunds far beyond training
    frame.loc[late[5::13], "amount"] = 5e4
    return frame


def test_live_features_clip_exactly_as_batch_transform(frame):
    stream = _with_extremes(accounts_slice(frame, 0, 40))
    encoder = FeatureEncoder(SCHEMA, blocks=ALL_BLOCKS).fit(frame[frame["ts"] < FIT_UNTIL])
    batch = encoder.transform(stream)
    numeric, *_ = live_replay(encoder, stream, SCHEMA)
    np.testing.assert_allclose(numeric[batch.order], batch.numeric, rtol=0, atol=1e-6)
    clipped = (batch.numeric == encoder.high_.astype(np.float32)) | (
        batch.numeric == encoder.low_.astype(np.float32)
    )
    # The extremes were clipped, in several features (amount, log-amount, history ratios).
    assert clipped.any(axis=0).sum() >= 3


def test_detector_scores_extremes_as_batch_scoring(trained_family, small_frame, tmp_path):
    model = trained_family("lstm")
    stream = _with_extremes(accounts_slice(small_frame, 0, 12))
    expected = model.score(stream)
    expected = dict(zip(expected["transaction_id"], expected["score"], strict=True))
    txs, labels = transactions(stream)
    path = model.save(tmp_path / "model")
    single, batch = {}, {}
    with Detector.load(path, clock="data") as one, Detector.load(path, clock="data") as many:
        one.explain = many.explain = "none"
        for start in range(0, len(txs), 64):
            chunk, chunk_labels = txs[start : start + 64], labels[start : start + 64]
            for tx in chunk:
                result = one.score(tx)
                single[result["transaction_id"]] = result["fraud_probability"]
            for result in many.score_batch(chunk):
                batch[result["transaction_id"]] = result["fraud_probability"]
            for tx, label in zip(chunk, chunk_labels, strict=True):
                one.feedback(tx["tx_id"], label)
                many.feedback(tx["tx_id"], label)
    ids = list(expected)
    np.testing.assert_allclose([single[i] for i in ids], [expected[i] for i in ids], atol=1e-6)
    np.testing.assert_allclose([batch[i] for i in ids], [expected[i] for i in ids], atol=1e-6)


# -- every family: a huge amount scores at least as high as a large one ----------------------
def _probe_frame(small_frame: pd.DataFrame, amount: float) -> tuple[pd.DataFrame, str, str]:
    """The data plus an account whose history is five 20.00 purchases, then `amount`."""
    common = {c: small_frame[c].mode().iloc[0] for c in ("mcc", "country", "channel")}
    merchant = small_frame["merchant_id"].mode().iloc[0]
    times = [pd.Timestamp("2026-02-01 10:00") + pd.Timedelta(days=d) for d in range(5)]
    times.append(pd.Timestamp("2026-02-06 12:00:00.123"))
    probe = pd.DataFrame(
        {
            "tx_id": [f"PROBE{i}" for i in range(6)],
            "card_id": "CPROBE",
            "ts": times,
            "amount": [20.0] * 5 + [amount],
            **common,
            "device_id": "DPROBE",
            "merchant_id": merchant,
            "is_fraud": 0,
            "fraud_type": "none",
        }
    )
    frame = pd.concat([small_frame, probe], ignore_index=True)
    return frame, "PROBE5", str(times[-1])


_SCORES: dict[str, dict[float, float]] = {}


@pytest.fixture(scope="module")
def probe_scores(trained_family, small_frame):
    """Per family, the score of each probe amount after five 20.00 purchases."""

    def get(family: str) -> dict[float, float]:
        if family not in _SCORES:
            model, scores = trained_family(family), {}
            for amount in PROBE_AMOUNTS:
                data, probe_id, at = _probe_frame(small_frame, amount)
                end = pd.Timestamp(at) + pd.Timedelta(microseconds=1)
                scored = model.score(data, start=at, end=end).set_index("transaction_id")
                scores[amount] = float(scored["score"][probe_id])
            _SCORES[family] = scores
        return _SCORES[family]

    return get


@pytest.mark.parametrize("family", MODELS)
def test_amounts_beyond_training_score_as_the_edge_of_the_range(family, probe_scores):
    """1e5 and 1e7 are both far beyond every training amount: clipped to the same features,
    they get the same score (before ranges, the LSTM gave 8e-14 and 0.0, GRU 0.46 and 1.0)."""
    scores = probe_scores(family)
    assert scores[1e7] == pytest.approx(scores[1e5], rel=1e-9, abs=0), (family, scores)


# Families whose tiny model (2 epochs, 16 units) still scores 1e5 below 1e3 with ranges. Not
# extrapolation any more (1e5 scores exactly as 1e7, and as the largest training amounts):
# these models' score falls with the amount inside the training range too (8000.00 after five
# 20.00 purchases scores below 1000.00), on simulator data whose training amounts above
# 2000.00 are all legitimate. Clipping cannot make that response monotone; see issue 17.
STILL_BELOW = {"lstm", "gru", "rnn", "lstm-attention", "bilstm-attention", "transformer"}


@pytest.mark.parametrize(
    "family",
    [
        pytest.param(
            family,
            marks=pytest.mark.xfail(
                strict=True,
                reason="the model's in-range score falls with the amount (issue 17, item 7)",
            ),
        )
        if family in STILL_BELOW
        else family
        for family in MODELS
    ],
)
def test_huge_amount_scores_at_least_as_high_as_a_large_one(family, probe_scores):
    scores = probe_scores(family)
    for amount in PROBE_AMOUNTS[1:]:
        assert scores[amount] >= scores[1e3] - 1e-6, (family, scores)


def test_explanations_say_when_a_feature_is_clipped():
    from fraudseq.explain import at_range_edge, describe_feature

    low, high = np.array([-2.0, 0.0, -1.0]), np.array([3.0, 5.0, 0.0])
    scaled = np.array([3.0, 0.0, 0.5], dtype=np.float32)
    assert at_range_edge(scaled, low, high).tolist() == [True, False, False]
    assert describe_feature("amount", 9042.43, True).endswith(
        "or beyond (clipped to the training range)"
    )
    assert "clipped" not in describe_feature("amount", 20.0)
