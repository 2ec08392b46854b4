"""Unlabelled rows in training (issue 22, part 2): an empty label is not known. Such a row is
history (its features and windows use it, as any transaction's) but never a training or
validation target; in the counterparty features it is not a known fraud. In memory and
through shards alike."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import TRAIN_UNTIL
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import UNKNOWN_LABELS, Schema, load_transactions
from test_cli import run
from test_engine_training import assert_same_encoder, assert_same_history, fit

VALID_FROM = "2026-01-24"  # TRAIN_UNTIL minus the default 7 validation days
BLANKED = 0.3
#: The counterparty features built from (delayed) labels; the others never read a label.
LABEL_FEATURES = ("cp_risk_1d", "cp_risk_7d", "cp_risk_30d", "cp_first_fraud_days",
                  "cp_last_fraud_days")  # fmt: skip


@pytest.fixture(scope="module")
def blanked_frame(small_frame) -> pd.DataFrame:
    """The small simulator frame with 30% of its labels (a seeded draw, frauds among them)
    emptied."""
    frame = small_frame.assign(is_fraud=small_frame["is_fraud"].astype(np.float64))
    blank = np.random.default_rng(22).random(len(frame)) < BLANKED
    frame.loc[blank, "is_fraud"] = np.nan
    assert (small_frame["is_fraud"].to_numpy()[blank] == 1).sum() > 5  # frauds lose labels too
    return frame


@pytest.fixture(scope="module")
def blanked_csv(tmp_path_factory, blanked_frame) -> str:
    path = tmp_path_factory.mktemp("blanked") / "tx.csv"
    blanked_frame.to_csv(path, index=False)
    return str(path)


def labelled_rows(frame: pd.DataFrame, start, end) -> np.ndarray:
    times = frame["ts"]
    period = ((times >= pd.Timestamp(start)) if start else True) & (times < pd.Timestamp(end))
    return np.flatnonzero(period.to_numpy() & frame["is_fraud"].notna().to_numpy())


def test_a_file_with_30_percent_blank_labels_trains_on_its_labelled_rows_only(
    blanked_csv, monkeypatch
):
    windows = {}
    fit_windows = FraudModel._fit_windows

    def spy(self, train, valid):
        windows.update(train=train, valid=valid)
        return fit_windows(self, train, valid)

    monkeypatch.setattr(FraudModel, "_fit_windows", spy)
    model = fit("xgboost", blanked_csv)
    frame = load_transactions(blanked_csv, Schema.simulator(), require_label=UNKNOWN_LABELS)
    frame = frame[frame["ts"] < pd.Timestamp(TRAIN_UNTIL)]  # fit keeps this prefix in time
    train, valid = windows["train"], windows["valid"]
    for got, rows in (
        (train, labelled_rows(frame, None, VALID_FROM)),
        (valid, labelled_rows(frame, VALID_FROM, TRAIN_UNTIL)),
    ):
        # a window per labelled row of the period, ending at it: no blanked row is a target
        np.testing.assert_array_equal(got.positions, got.source.positions_of(rows))
        np.testing.assert_array_equal(got.labels, frame["is_fraud"].to_numpy()[rows])
        assert not np.isnan(got.labels).any()
    assert model.training_period_["n_train"] == len(train) < (frame["ts"] < VALID_FROM).sum()
    assert model.training_period_["n_valid"] == len(valid)
    # the blanked rows are in the windows: every row of the data is encoded, in order
    assert len(train.source.encoded) == len(frame)


def test_unlabelled_rows_are_history_with_the_features_of_the_labelled_file(
    trained, small_frame, blanked_frame
):
    """Encoded with one encoder, the blanked file's rows (and so every window) have the
    features of the fully labelled file, except the counterparty features built from
    labels, where an unknown label is not a known fraud: those are the features of the file
    whose blanked labels are 0. It still counts as the counterparty's activity."""
    encoder = trained.encoder_
    names = encoder.numeric_names_
    assert set(LABEL_FEATURES) <= set(names)
    full = encoder.transform(small_frame)
    blanked = encoder.transform(blanked_frame)
    as_legitimate = encoder.transform(blanked_frame.fillna({"is_fraud": 0}))
    np.testing.assert_array_equal(blanked.order, full.order)
    np.testing.assert_array_equal(blanked.starts, full.starts)
    np.testing.assert_array_equal(blanked.categorical, full.categorical)
    from_labels = np.isin(names, LABEL_FEATURES)
    np.testing.assert_array_equal(blanked.numeric[:, ~from_labels], full.numeric[:, ~from_labels])
    np.testing.assert_array_equal(blanked.numeric, as_legitimate.numeric)
    # a blanked fraud label no longer counts as a known fraud somewhere
    assert (blanked.numeric[:, from_labels] != full.numeric[:, from_labels]).any()


def test_the_encoder_fits_on_the_same_rows_labelled_or_not(small_frame, blanked_frame):
    """Unlabelled training rows are fitted on, as history; unlabelled validation rows are
    not (a label never decides which rows the encoder sees)."""
    features = ("event", "recency", "amount_history", "novelty", "velocity")  # no label read
    full = fit("xgboost", small_frame, n_estimators=2, features=features)
    blanked = fit("xgboost", blanked_frame, n_estimators=2, features=features)
    assert_same_encoder(blanked.encoder_, full.encoder_)
    np.testing.assert_array_equal(blanked.encoder_.means_, full.encoder_.means_)


def test_sharded_training_on_blank_labels_is_the_in_memory_training(tmp_path, blanked_csv):
    memory = fit("lstm", blanked_csv)
    one_shard = fit("lstm", blanked_csv, tmp_path / "w1", 1)
    got, expected = (
        one_shard.score(blanked_csv, start=TRAIN_UNTIL),
        memory.score(blanked_csv, start=TRAIN_UNTIL),
    )
    np.testing.assert_array_equal(got["score"].to_numpy(), expected["score"].to_numpy())
    assert one_shard.thresholds_ == memory.thresholds_
    assert_same_history(one_shard.history_, memory.history_)
    assert one_shard.training_period_ == memory.training_period_
    three = fit("xgboost", blanked_csv, tmp_path / "w3", 3, n_estimators=2)
    assert_same_encoder(three.encoder_, memory.encoder_)
    assert three.training_period_ == memory.training_period_


def test_rethreshold_chooses_on_the_labelled_rows_of_its_period(blanked_frame):
    model = fit("xgboost", blanked_frame, n_estimators=5)
    chosen = model.threshold_
    model.rethreshold(blanked_frame, "best-f1")  # the stored validation period, as training
    assert model.threshold_ == chosen


def test_cli_train_takes_blank_labels_and_still_names_bad_ones(
    tmp_path, blanked_frame, monkeypatch, capsys
):
    data = tmp_path / "tx.csv"
    blanked_frame.to_csv(data, index=False)
    args = ["train", data, "--out", tmp_path / "m", "--model", "xgboost", "--n-estimators", 5]
    args += ["--train-until", TRAIN_UNTIL]
    assert run(monkeypatch, *args) == 0
    assert FraudModel.load(tmp_path / "m").training_period_["n_train"] > 0

    bad = blanked_frame.astype({"is_fraud": object})
    bad.loc[10, "is_fraud"] = "yes"
    bad.to_csv(data, index=False)
    capsys.readouterr()
    assert run(monkeypatch, *args) != 0
    err = capsys.readouterr().err
    for part in ("tx.csv", "'is_fraud'", "row 11", "'yes'", "use 1 for fraud"):
        assert part in err, (part, err)


def test_a_training_period_without_any_known_label_is_refused_by_name(blanked_frame):
    frame = blanked_frame.assign(
        is_fraud=blanked_frame["is_fraud"].where(blanked_frame["ts"] >= VALID_FROM)
    )
    with pytest.raises(FraudseqError, match="no labelled transactions in the training period"):
        fit("xgboost", frame, n_estimators=2)
    frame = blanked_frame.assign(
        is_fraud=blanked_frame["is_fraud"].where(blanked_frame["ts"] < VALID_FROM)
    )
    with pytest.raises(FraudseqError, match="no labelled transactions .* in the validation"):
        fit("xgboost", frame, n_estimators=2)


def test_evaluate_still_needs_every_label_of_its_period(trained, blanked_frame):
    with pytest.raises(FraudseqError, match="evaluation needs a 0/1 label on every row"):
        trained.evaluate(blanked_frame, start=TRAIN_UNTIL)
