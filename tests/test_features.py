import json

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.features import OOV_CODE, FeatureEncoder
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import Schema, load_transactions

SCHEMA = Schema.simulator()


@pytest.fixture(scope="module")
def frame(small_frame):
    return load_transactions(small_frame, SCHEMA)


def test_json_round_trip_gives_identical_encoding(frame):
    encoder = FeatureEncoder(SCHEMA).fit(frame)
    restored = FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())), SCHEMA)
    a, b = encoder.transform(frame), restored.transform(frame)
    np.testing.assert_array_equal(a.numeric, b.numeric)
    np.testing.assert_array_equal(a.categorical, b.categorical)


def test_fitted_on_training_rows_only(frame):
    cut = pd.Timestamp("2026-01-20")
    train = frame[frame["ts"] < cut]
    later = frame.copy()
    later.loc[later["ts"] >= cut, "country"] = "ZZ"  # a value that exists only after the cut
    later.loc[later["ts"] >= cut, "amount"] *= 1000
    a = FeatureEncoder(SCHEMA, min_count=1).fit(train)
    b = FeatureEncoder(SCHEMA, min_count=1).fit(later[later["ts"] < cut])
    assert a.to_json() == b.to_json()  # later rows cannot influence what is learned
    assert "ZZ" not in a.vocabularies_["country"]
    encoded = a.transform(later)
    rows = encoded.positions_of(np.flatnonzero((later["ts"] >= cut).to_numpy()))
    column = list(SCHEMA.categorical).index("country")
    assert (encoded.categorical[rows, column] == OOV_CODE).all()


def test_model_encoder_never_sees_validation_rows(small_frame):
    frame = small_frame.copy()
    frame.loc[frame["ts"] >= "2026-01-24", "mcc"] = "9999"  # only in validation and later
    model = FraudModel("xgboost", n_estimators=5, min_count=1, progress=False)
    model.fit(frame, train_until="2026-01-31", valid_days=7)
    assert "9999" not in model.encoder_.vocabularies_["mcc"]


def test_scaled_training_features_are_standardised(frame):
    encoder = FeatureEncoder(SCHEMA).fit(frame)
    numeric = encoder.transform(frame).numeric
    assert numeric.dtype == np.float32 and np.isfinite(numeric).all()
    np.testing.assert_allclose(numeric.mean(axis=0), 0, atol=1e-3)


def test_errors(frame):
    with pytest.raises(FraudseqError, match="not fitted"):
        FeatureEncoder(SCHEMA).transform(frame)
    with pytest.raises(FraudseqError, match="unknown feature blocks"):
        FeatureEncoder(SCHEMA, blocks=("nope",)).fit(frame)
    with pytest.raises(FraudseqError, match="zero training rows"):
        FeatureEncoder(SCHEMA).fit(frame.iloc[:0])
