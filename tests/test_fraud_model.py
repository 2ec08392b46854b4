import math

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from fraudseq.artifacts import load_model_dir, save_model_dir
from fraudseq.errors import ConfigError, FraudseqError, ModelDirectoryError
from fraudseq.fraud_model import FraudModel
from test_artifacts import strict_json

TRAIN_UNTIL = "2026-01-31"  # as in conftest.py


def test_scores_are_probabilities_for_the_period(trained, small_frame):
    scores = trained.score(small_frame, start=TRAIN_UNTIL)
    period = small_frame[small_frame["ts"] >= TRAIN_UNTIL]
    assert list(scores.columns) == ["transaction_id", "score", "alert"]
    assert len(scores) == len(period)
    assert set(scores["transaction_id"]) == set(period["tx_id"])
    assert scores["score"].between(0, 1).all()
    assert (scores["alert"] == (scores["score"] >= trained.threshold_)).all()


def test_save_load_gives_identical_scores(trained, small_frame, tmp_path):
    trained.save(tmp_path / "model")
    loaded = FraudModel.load(tmp_path / "model")
    a = trained.score(small_frame, start=TRAIN_UNTIL)
    b = loaded.score(small_frame, start=TRAIN_UNTIL)
    pd.testing.assert_frame_equal(a, b)
    assert loaded.threshold_ == trained.threshold_


def test_same_seed_same_scores(small_frame):
    def fit():
        model = FraudModel("lstm", epochs=1, hidden_size=8, seed=11, progress=False)
        return model.fit(small_frame, train_until=TRAIN_UNTIL).score(small_frame, start=TRAIN_UNTIL)

    pd.testing.assert_frame_equal(fit(), fit())


def test_input_frame_not_mutated(small_frame):
    before = small_frame.copy()
    model = FraudModel("gru", epochs=1, hidden_size=8, progress=False)
    model.fit(small_frame, train_until=TRAIN_UNTIL).score(small_frame, start=TRAIN_UNTIL)
    pd.testing.assert_frame_equal(small_frame, before)


def test_history_before_the_period_is_used(trained, small_frame):
    """Scoring [start, end) equals scoring everything then selecting: earlier rows are history,
    and later rows never matter."""
    full = trained.score(small_frame).set_index("transaction_id")["score"]
    part = trained.score(small_frame, start=TRAIN_UNTIL, end="2026-02-05")
    assert len(part) > 0
    np.testing.assert_allclose(
        part["score"], full.loc[part["transaction_id"]].to_numpy(), atol=1e-6
    )


def test_future_transactions_do_not_change_scores(trained, small_frame):
    cut = pd.Timestamp("2026-02-03")
    past = small_frame[small_frame["ts"] < cut]
    a = trained.score(past, start=TRAIN_UNTIL)
    b = trained.score(small_frame, start=TRAIN_UNTIL, end=cut)
    pd.testing.assert_frame_equal(a, b)


def test_training_record(trained):
    assert 1 <= len(trained.history_) <= 2
    assert {"epoch", "train_loss", "valid_ap"} <= set(trained.history_[0])
    assert 0 <= trained.threshold_ <= 1
    assert trained.validation_metrics_["n_fraud"] > 0


def test_clear_errors(small_frame, tmp_path):
    with pytest.raises(FraudseqError, match="no training transactions"):
        FraudModel(epochs=1).fit(small_frame, train_until="2026-01-03", valid_days=7)
    with pytest.raises(FraudseqError, match="not fitted"):
        FraudModel().score(small_frame)
    with pytest.raises(ModelDirectoryError):
        FraudModel.load(tmp_path / "missing")


def test_validation_without_transactions_or_fraud_is_an_error(small_frame):
    """Never a threshold and 'validation' metrics silently taken from the training data."""
    with pytest.raises(FraudseqError, match=r"no transactions in the validation period.*data runs"):
        FraudModel(epochs=1).fit(small_frame, train_until="2030-01-01")
    quiet = small_frame[small_frame["ts"].between("2026-01-09", "2026-01-11", inclusive="left")]
    assert quiet["is_fraud"].sum() == 0  # while training, up to 2026-01-09, has some
    with pytest.raises(FraudseqError, match="no fraud in the validation period .*--valid-days"):
        FraudModel(epochs=1).fit(small_frame, train_until="2026-01-11", valid_days=2)


def test_valid_days_zero_trains_in_sample_with_a_warning(small_frame, caplog):
    model = FraudModel("lstm", epochs=1, hidden_size=8, progress=False)
    model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=0)
    assert "--valid-days 0: no validation" in caplog.text
    assert model.training_period_["n_valid"] == 0
    in_sample = small_frame[small_frame["ts"] < TRAIN_UNTIL]
    assert model.validation_metrics_["n"] == len(in_sample)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"model": "lstmx"}, r"unknown model 'lstmx'; choose one of lstm, gru"),
        ({"model": "lstm", "dropout": 5}, r"dropout=5: expected a number in \[0, 1\)"),
        ({"model": "lstm", "dropout": "0.1"}, r"dropout='0.1': expected a number in \[0, 1\)"),
        ({"model": "lstm", "class_weight": "x"}, r"class_weight='x': expected 'auto'"),
        ({"model": "gru", "epochs": 0}, r"epochs=0: expected an integer >= 1"),
        ({"members": ("lstm", "gruu")}, r"ensemble member 'gruu'.*choose among lstm"),
        ({"model": "lstm", "loss": "hinge"}, r"loss='hinge'.*bce or focal"),
        ({"model": "lstm", "features": ("event", "nope")}, r"features=.*blocks among event"),
    ],
)
def test_invalid_configuration_fails_before_the_data_is_read(tmp_path, params, match):
    """A ConfigError naming the parameter and its valid values; still a ValueError for
    callers that catch that."""
    with pytest.raises(ConfigError, match=match) as raised:
        FraudModel(**params).fit(tmp_path / "never-read.csv")
    assert isinstance(raised.value, ValueError)


def test_params_follow_scikit_learn_conventions():
    model = FraudModel("gru", dropout=0.3, members=("lstm", "gru"), progress=False)
    params = model.get_params(deep=True)
    assert params["model"] == "gru" and params["progress"] is False
    assert FraudModel(**params).get_params() == params
    copy = clone(model)
    assert copy is not model and copy.get_params() == params
    assert model.set_params(dropout=0.5, window=4) is model
    assert (model.dropout, model.window) == (0.5, 4)
    with pytest.raises(ConfigError, match="no parameter dropuot; valid: model, window"):
        model.set_params(dropuot=0.2)


def test_clone_of_a_fitted_model_is_unfitted_with_equal_params(trained):
    copy = clone(trained)
    assert copy.get_params() == trained.get_params()
    assert not hasattr(copy, "model_")
    with pytest.raises(FraudseqError, match="not fitted"):
        copy.score(pd.DataFrame())


def test_model_directories_load_with_or_without_model_in_params(trained, small_frame, tmp_path):
    """Directories written before `model` was among the params still load."""
    trained.save(tmp_path / "new")
    config, tensors, files = load_model_dir(tmp_path / "new")
    assert config["params"]["model"] == "lstm" and "progress" not in config["params"]
    del config["params"]["model"]
    save_model_dir(tmp_path / "old", config, tensors, files)
    expected = trained.score(small_frame, start=TRAIN_UNTIL)
    for name in ("new", "old"):
        loaded = FraudModel.load(tmp_path / name)
        assert loaded.model == "lstm"
        pd.testing.assert_frame_equal(loaded.score(small_frame, start=TRAIN_UNTIL), expected)


# Training ends as the first fraud starts (2026-01-07 13:54); validation holds fraud.
NO_TRAINING_FRAUD = {"train_until": "2026-01-07", "valid_period": ("2026-01-07", "2026-01-09")}


@pytest.mark.parametrize(
    "params",
    [
        {"model": "xgboost", "n_estimators": 5},
        {"model": "lstm", "epochs": 1},
        {"model": "ensemble", "members": ("autoencoder", "xgboost")},
    ],
)
def test_a_training_period_without_fraud_is_an_error_for_supervised_models(small_frame, params):
    """XGBoost trained silently to a constant score there, and every transaction alerted."""
    with pytest.raises(
        FraudseqError,
        match=r"no fraud in the training period \[2026-01-01 .*, 2026-01-07 .*first fraud at "
        r"2026-01-07 .*earlier --train-from or a later --train-until",
    ):
        FraudModel(**params).fit(small_frame, **NO_TRAINING_FRAUD)


def test_the_autoencoder_trains_without_fraud(small_frame):
    model = FraudModel("autoencoder", epochs=1, hidden_size=8, progress=False)
    model.fit(small_frame, **NO_TRAINING_FRAUD)
    assert model.training_period_["n_train"] > 0


def test_an_infinite_threshold_and_undefined_metrics_round_trip(trained, small_frame, tmp_path):
    """model.json stores them as null (strict JSON); loading gives +inf (alerts on nothing)
    and NaN back."""
    model = FraudModel.load(trained.save(tmp_path / "fitted"))  # a copy to modify
    model.threshold_ = model.thresholds_["best-f1"] = math.inf
    model.validation_metrics_ = {**model.validation_metrics_, "auc_roc": math.nan}
    model.validation_metrics_["threshold"] = math.inf
    model.save(tmp_path / "m")
    stored = strict_json((tmp_path / "m" / "model.json").read_text())
    assert stored["threshold"]["value"] is None and stored["validation_metrics"]["auc_roc"] is None
    loaded = FraudModel.load(tmp_path / "m")
    assert loaded.threshold_ == math.inf and loaded.thresholds_ == model.thresholds_
    assert loaded.validation_metrics_["threshold"] == math.inf
    assert math.isnan(loaded.validation_metrics_["auc_roc"])
    scores = loaded.score(small_frame, start=TRAIN_UNTIL)
    pd.testing.assert_frame_equal(scores, model.score(small_frame, start=TRAIN_UNTIL))
    assert scores["alert"].sum() == 0


def test_a_missing_label_leaves_the_known_ones_in_use(trained, small_frame):
    """Scoring files have unlabelled recent rows: one missing label must not drop every label
    (the counterparty risk features would all become 0 and the scores change)."""
    start = "2026-02-01"
    full = trained.score(small_frame, start=start)["score"].to_numpy()
    partial = small_frame.assign(is_fraud=small_frame["is_fraud"].astype(float))
    partial.loc[partial["ts"].idxmax(), "is_fraud"] = np.nan  # the newest: no one sees it
    np.testing.assert_array_equal(trained.score(partial, start=start)["score"].to_numpy(), full)
    unlabelled = small_frame.drop(columns=["is_fraud"])
    assert not np.array_equal(trained.score(unlabelled, start=start)["score"].to_numpy(), full)


def test_a_seed_beyond_64_bits_is_a_config_error():
    with pytest.raises(ConfigError, match=r"seed=.*an integer in \[0, 9223372036854775807\]"):
        FraudModel("lstm", seed=2**64).fit("no-such-file.csv")
