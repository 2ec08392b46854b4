"""The common suite every model family must pass (scikit-learn's estimator checks, in spirit)."""

import numpy as np
import pandas as pd
import pytest

from fraudseq.fraud_model import FraudModel
from fraudseq.models import MODELS
from test_artifacts import strict_json

TRAIN_UNTIL = "2026-01-31"
TINY = {"epochs": 6, "hidden_size": 8, "n_estimators": 20, "max_depth": 3, "progress": False}


@pytest.fixture(scope="module", params=MODELS)
def fitted(request, small_frame):
    model = FraudModel(request.param, seed=5, **TINY)
    return model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)


def test_scores_shape_and_range(fitted, small_frame):
    scores = fitted.score(small_frame, start=TRAIN_UNTIL)
    assert len(scores) == int((small_frame["ts"] >= TRAIN_UNTIL).sum())
    assert np.isfinite(scores["score"]).all()
    assert scores["score"].between(0, 1).all()
    assert scores["score"].nunique() > 1


def test_save_load_round_trip(fitted, small_frame, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = FraudModel.load(tmp_path / "m")
    pd.testing.assert_frame_equal(
        fitted.score(small_frame, start=TRAIN_UNTIL), loaded.score(small_frame, start=TRAIN_UNTIL)
    )
    # strict JSON, though a threshold may be +inf (the autoencoder's precision:0.8)
    strict_json((tmp_path / "m" / "model.json").read_text())
    assert loaded.thresholds_ == fitted.thresholds_


def test_same_seed_same_scores(fitted, small_frame):
    again = FraudModel(fitted.model, seed=5, **TINY).fit(
        small_frame, train_until=TRAIN_UNTIL, valid_days=7
    )
    pd.testing.assert_frame_equal(
        fitted.score(small_frame, start=TRAIN_UNTIL), again.score(small_frame, start=TRAIN_UNTIL)
    )


def test_beats_chance_on_validation(fitted):
    assert fitted.validation_metrics_["auc_roc"] > 0.6
