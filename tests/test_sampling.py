import numpy as np
import pytest

import fraudseq.training as training
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.sampling import check_sampling, epoch_indices
from fraudseq.training import Trainer

LABELS = np.r_[np.ones(10), np.zeros(990)].astype(np.float32)


def test_oversample_reaches_ratio_and_keeps_every_negative():
    idx = epoch_indices(LABELS, np.random.default_rng(0), oversample=0.5)
    y = LABELS[idx]
    assert (y == 0).sum() == 990
    assert (y == 1).sum() == 495
    assert set(np.flatnonzero(LABELS == 0)) <= set(idx)


def test_fraud_ratio_subsamples_negatives_per_epoch():
    a = epoch_indices(LABELS, np.random.default_rng(1), fraud_ratio=0.2)
    b = epoch_indices(LABELS, np.random.default_rng(2), fraud_ratio=0.2)
    assert LABELS[a].mean() == pytest.approx(0.2)
    assert (LABELS[a] == 1).sum() == 10
    assert set(a) != set(b)  # fresh negatives each epoch


def test_no_sampler_is_a_permutation():
    idx = epoch_indices(LABELS, np.random.default_rng(0))
    assert sorted(idx) == list(range(len(LABELS)))


def test_bad_sampling_options():
    with pytest.raises(FraudseqError, match="either"):
        check_sampling(1.0, 0.1)
    with pytest.raises(FraudseqError, match="fraud-ratio"):
        check_sampling(None, 1.5)
    with pytest.raises(FraudseqError, match="oversample"):
        check_sampling(-1, None)


@pytest.mark.parametrize(
    "options",
    [{"oversample": 0.5}, {"fraud_ratio": 0.2}, {"loss": "focal"}, {"class_weight": 10.0}],
)
def test_samplers_never_touch_validation_or_test(small_frame, monkeypatch, options):
    """Every window the trainer draws is a training window, and the windows it scores for
    validation are exactly the validation set, unsampled."""
    drawn, validated = [], []
    real_predict = training.predict_logits

    def spy_predict(net, windows, batch_size=4096):
        validated.append(windows.positions.copy())
        return real_predict(net, windows, batch_size)

    real_indices = Trainer._epoch_indices

    def spy_indices(self, labels, epoch):
        idx = real_indices(self, labels, epoch)
        drawn.append((len(labels), idx))
        return idx

    monkeypatch.setattr(training, "predict_logits", spy_predict)
    monkeypatch.setattr(Trainer, "_epoch_indices", spy_indices)
    model = FraudModel("lstm", epochs=2, hidden_size=8, progress=False, **options)
    model.fit(small_frame, train_until="2026-01-31", valid_days=7)
    n_valid = model.training_period_["n_valid"]
    n_train = model.training_period_["n_train"]
    assert all(n == n_train and idx.max() < n_train for n, idx in drawn)
    assert validated and all(len(v) == n_valid for v in validated)
    scores = model.score(small_frame, start="2026-01-31")
    assert len(scores) == int((small_frame["ts"] >= "2026-01-31").sum())
