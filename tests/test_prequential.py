"""Prequential validation: fold arithmetic, the handbook's known-card removal, and an
end-to-end `fraudseq evaluate --protocol prequential` run."""

import json

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.prequential import known_fraud_mask, prequential, prequential_folds
from fraudseq.schema import Schema
from test_cli import run

DAY = pd.Timedelta(days=1)


def test_folds_anchored_at_start_shift_back_by_the_test_period():
    folds = prequential_folds(
        pd.Timestamp("2018-04-01"),
        pd.Timestamp("2018-09-30 23:00"),
        folds=4,
        train_days=7,
        delay_days=7,
        test_days=7,
        start="2018-07-25",
    )
    assert [f.index for f in folds] == [0, 1, 2, 3]
    first = folds[0]  # the handbook's test week
    assert (first.train_from, first.train_until) == (
        pd.Timestamp("2018-07-25"),
        pd.Timestamp("2018-08-01"),
    )
    assert (first.test_from, first.test_until) == (
        pd.Timestamp("2018-08-08"),
        pd.Timestamp("2018-08-15"),
    )
    for later, earlier in zip(folds, folds[1:], strict=False):
        assert later.train_from - earlier.train_from == 7 * DAY
        assert earlier.test_until == later.test_from  # adjacent, disjoint test periods
    for f in folds:
        assert f.test_from - f.train_until == 7 * DAY  # the delay gap
        assert (f.valid_from, f.valid_until) == (f.train_from - 7 * DAY, f.train_from)


def test_folds_default_to_end_of_data_and_validate_inside_when_history_is_short():
    folds = prequential_folds(
        pd.Timestamp("2026-01-01 00:10"),
        pd.Timestamp("2026-02-09 23:50"),
        folds=2,
        train_days=7,
        delay_days=3,
        test_days=5,
    )
    assert folds[0].test_until == pd.Timestamp("2026-02-10")
    assert folds[1].test_until == pd.Timestamp("2026-02-05")
    short = prequential_folds(
        pd.Timestamp("2026-01-05"),
        pd.Timestamp("2026-01-20"),
        folds=1,
        train_days=7,
        delay_days=2,
        test_days=3,
    )[0]
    assert short.train_from == pd.Timestamp("2026-01-09")  # only 4 days of data before it
    assert (short.valid_from, short.valid_until) == (pd.Timestamp("2026-01-14"), short.train_until)
    with pytest.raises(FraudseqError, match="before the data starts"):
        prequential_folds(pd.Timestamp("2026-01-05"), pd.Timestamp("2026-01-20"), folds=3)


def _handbook_known(frame, train_from, train_days, delay, test_days):
    """The handbook's get_train_test_set loop, literally: ids of known compromised customers
    per test day, growing day by day from the training week's frauds."""
    day = (frame["ts"].dt.normalize() - train_from).dt.days
    known = set(frame.loc[(day >= 0) & (day < train_days) & (frame["y"] == 1), "c"])
    kept = []
    for d in range(test_days):
        today = frame[day == train_days + delay + d]
        late = frame[(day == train_days + d - 1) & (frame["y"] == 1)]
        known |= set(late["c"])
        kept.append(today[~today["c"].isin(known)])
    return pd.concat(kept).index


def test_known_fraud_mask_matches_the_handbook_loop():
    rng = np.random.default_rng(0)
    n = 4000
    frame = pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(n)],
            "c": rng.integers(0, 150, n).astype(str),
            "ts": pd.Timestamp("2026-03-01") + pd.to_timedelta(rng.uniform(0, 40, n), "D"),
            "amount": 1.0,
            "y": (rng.random(n) < 0.03).astype(int),
        }
    ).sort_values("ts", ignore_index=True)
    schema = Schema(id="id", entity="c", time="ts", amount="amount", label="y")
    train_from, train_days, delay, test_days = pd.Timestamp("2026-03-10"), 7, 5, 7
    test_from = train_from + (train_days + delay) * DAY
    rows = np.flatnonzero(
        ((frame["ts"] >= test_from) & (frame["ts"] < test_from + test_days * DAY)).to_numpy()
    )
    known = known_fraud_mask(frame, schema, rows, train_from, delay)
    expected = _handbook_known(frame, train_from, train_days, delay, test_days)
    assert 0 < known.sum() < len(rows)
    assert sorted(rows[~known]) == sorted(expected)


@pytest.fixture(scope="module")
def boosted_dir(small_frame, tmp_path_factory):
    model = FraudModel("xgboost", n_estimators=40, seed=4, progress=False)
    model.fit(small_frame, train_until="2026-01-31", valid_days=7)
    return model.save(tmp_path_factory.mktemp("preq") / "model")


def test_prequential_cli_and_api_agree_and_are_reproducible(
    boosted_dir, small_csv, small_frame, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "preq.json"
    options = ["--folds", 2, "--train-days", 7, "--delay-days", 3, "--test-days", 5]
    code = run(
        monkeypatch,
        "evaluate",
        boosted_dir,
        small_csv,
        "--protocol",
        "prequential",
        *options,
        "--json",
        out,
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "mean ± std" in printed and "CP@100" in printed
    result = json.loads(out.read_text())
    assert [f["index"] for f in result["folds"]] == [0, 1]
    assert result["settings"]["drop_known_frauds"] is True
    assert result["folds"][0]["test_until"] == "2026-02-10"
    for fold in result["folds"]:
        assert 0.5 < fold["auc_roc"] <= 1 and 0 < fold["average_precision"] <= 1
        assert fold["n_test"] + fold["n_dropped_known"] == fold["n_scored"]
        assert fold["n_dropped_known"] > 0  # simulated incidents span several days
    aucs = [f["auc_roc"] for f in result["folds"]]
    assert result["mean"]["auc_roc"] == pytest.approx(np.mean(aucs))
    assert result["std"]["auc_roc"] == pytest.approx(np.std(aucs))

    # The same family, hyperparameters and seed through the API: the same numbers.
    model = FraudModel.load(boosted_dir)
    again = prequential(
        model.model,
        model.get_params(),
        small_frame,
        model.schema_,
        folds=1,
        train_days=7,
        delay_days=3,
        test_days=5,
    )
    for key in ("auc_roc", "average_precision", "cp_at_100", "n_test"):
        assert again["folds"][0][key] == result["folds"][0][key]


class Trained(Exception):
    """Raised by a stand-in FraudModel.fit: the run got as far as training."""


def test_a_fold_without_training_fraud_fails_before_any_training(small_frame, monkeypatch):
    """Fraud starts on 2026-01-07: fold 2 trains on [01-04, 01-07) without any. It used to
    train to a constant score, report AUC 0.5 and be averaged into the mean."""

    def fit(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(FraudModel, "fit", fit)
    folds = {"folds": 3, "train_days": 3, "delay_days": 1, "test_days": 3, "start": "2026-01-10"}
    with pytest.raises(
        FraudseqError,
        match=r"needs it in 2 of 3 folds: fold 1 has none in its validation period .*; fold 2 "
        r"has none in its training or validation period \(train \[2026-01-04, 2026-01-07\), "
        r"validation \[2026-01-01, 2026-01-04\), test \[2026-01-08, 2026-01-11\)\).*first "
        r"fraud at 2026-01-07.*fewer --folds, a later --start or more --train-days",
    ):
        prequential(
            "xgboost", FraudModel("xgboost").get_params(), small_frame, Schema.simulator(), **folds
        )
    # A threshold strategy that ranks scores only needs no validation fraud: fold 2 alone.
    by_budget = FraudModel("xgboost", threshold="budget:5").get_params()
    with pytest.raises(FraudseqError, match=r"needs it in 1 of 3 folds: fold 2 has none in its "):
        prequential("xgboost", by_budget, small_frame, Schema.simulator(), **folds)
    # The autoencoder needs no fraud to train on: it gets as far as training.
    with pytest.raises(Trained):
        prequential(
            "autoencoder",
            FraudModel("autoencoder").get_params(),
            small_frame,
            Schema.simulator(),
            **folds,
        )
