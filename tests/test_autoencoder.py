import numpy as np
import pytest
import torch

from fraudseq.features import FeatureEncoder
from fraudseq.models import build_model
from fraudseq.models.autoencoder import (
    EPS,
    ReconstructionObjective,
    SequenceAutoencoder,
    error_rank,
)
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import WindowSet, WindowSource, predict_logits

PARAMS = {
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.1,
    "epochs": 2,
    "batch_size": 256,
    "progress": False,
}


@pytest.fixture(scope="module")
def windows(small_frame):
    """Training windows (the first 4,000 sorted positions, frauds included) and validation
    windows (the next 2,000), with labels."""
    frame = load_transactions(small_frame, Schema.simulator())
    encoder = FeatureEncoder(Schema.simulator()).fit(frame)
    source = WindowSource(encoder.transform(frame), 8)
    labels = frame["is_fraud"].to_numpy()[source.encoded.order].astype(np.float32)
    train = WindowSet(source, np.arange(4000), labels[:4000])
    valid = WindowSet(source, np.arange(4000, 6000), labels[4000:6000])
    assert train.labels.sum() > 0
    return encoder, train, valid


def fitted(windows, train=None, seed=0):
    encoder, default_train, valid = windows
    torch.manual_seed(seed)
    model = build_model("autoencoder", encoder.n_numeric, encoder.cardinalities, PARAMS, seed)
    return model.fit(train or default_train, valid)


@pytest.fixture(scope="module")
def model(windows):
    return fitted(windows)


def test_fit_ignores_positive_windows(windows, model):
    _, train, _ = windows
    legit = train.labels == 0
    without_fraud = WindowSet(train.source, train.positions[legit], train.labels[legit])
    again = fitted(windows, without_fraud)
    tensors, _ = model.state()
    again_tensors, _ = again.state()
    assert tensors.keys() == again_tensors.keys()
    for name, value in tensors.items():
        torch.testing.assert_close(value, again_tensors[name], atol=0, rtol=0)


def test_works_without_any_fraud_label(windows):
    _, train, valid = windows
    unlabelled = WindowSet(train.source, train.positions, np.zeros(len(train), np.float32))
    no_valid_labels = WindowSet(valid.source, valid.positions, np.zeros(len(valid), np.float32))
    encoder = windows[0]
    torch.manual_seed(0)
    model = build_model("autoencoder", encoder.n_numeric, encoder.cardinalities, PARAMS, 0)
    model.fit(unlabelled, no_valid_labels)
    assert all("valid_loss" in h and "valid_ap" not in h for h in model.history_)
    assert np.isfinite(model.decision_function(valid)).all()


def test_early_stopping_keeps_the_best_reconstruction(windows, model):
    _, _, valid = windows
    best = min(h["valid_loss"] for h in model.history_)
    error = predict_logits(ReconstructionObjective(model.network), valid).astype(np.float64).mean()
    assert error == pytest.approx(best, rel=1e-6)


def test_rank_mapping_is_monotone_and_in_unit_interval():
    rng = np.random.default_rng(0)
    reference = np.sort(rng.gamma(2.0, 1.0, 1000))
    errors = np.linspace(-1.0, reference[-1] + 20, 5000)
    rank = error_rank(errors, reference)
    assert ((rank >= EPS) & (rank <= 1 - EPS)).all()
    assert (np.diff(rank) >= 0).all()
    inside = (errors > reference[0]) & (errors < reference[-1])
    assert (np.diff(rank[inside]) > 0).all()
    just_above = error_rank(reference[-1] + np.array([0.01, 0.1, 1.0]), reference)
    assert (np.diff(just_above) > 0).all() and (just_above < 1 - EPS).all()
    # the rank is the share of reference errors at or below the value
    for q in (0.1, 0.5, 0.9, 0.99):
        assert error_rank(np.quantile(reference, [q]), reference)[0] == pytest.approx(q, abs=2e-3)


def test_scores_are_validation_ranks_and_default_threshold(windows, model):
    _, _, valid = windows
    probability = 1 / (1 + np.exp(-model.decision_function(valid).astype(np.float64)))
    errors = model.reconstruction_error(valid)
    order = np.argsort(errors)
    assert (np.diff(probability[order]) >= 0).all()
    assert np.mean(probability <= 0.5) == pytest.approx(0.5, abs=0.01)
    threshold = model.default_threshold(99.0)
    assert threshold == pytest.approx(0.99, abs=1e-6)
    assert np.mean(probability >= threshold) == pytest.approx(0.01, abs=0.002)
    assert model.default_threshold(90.0) < threshold


def test_state_round_trip(windows, model):
    encoder, _, valid = windows
    tensors, files = model.state()
    assert files == {}
    loaded = build_model("autoencoder", encoder.n_numeric, encoder.cardinalities, PARAMS, 1)
    loaded.load_state(tensors, files)
    np.testing.assert_array_equal(loaded.decision_function(valid), model.decision_function(valid))


def test_padding_content_does_not_change_the_error():
    torch.manual_seed(0)
    net = SequenceAutoencoder(5, [4, 6], hidden_size=8).eval()
    lengths = torch.tensor([1, 3, 7, 5])
    numeric, categorical = torch.randn(4, 7, 5), torch.randint(0, 4, (4, 7, 2))
    padding = torch.arange(7)[None, :] >= lengths[:, None]
    noisy_numeric, noisy_categorical = numeric.clone(), categorical.clone()
    noisy_numeric[padding] = torch.randn(int(padding.sum()), 5) * 10
    noisy_categorical[padding] = torch.randint(0, 4, (int(padding.sum()), 2))
    with torch.no_grad():
        clean = net(numeric, categorical, lengths)
        noisy = net(noisy_numeric, noisy_categorical, lengths)
    torch.testing.assert_close(clean, noisy, atol=0, rtol=0)


def test_default_autoencoder_uses_no_label_derived_features(small_frame):
    """Unsupervised by default: the delayed-label counterparty block is left out, so the
    scores do not depend on the labels present in the scored data."""
    from fraudseq.fraud_model import FraudModel, default_features

    model = FraudModel("autoencoder", hidden_size=8, epochs=1, seed=0, progress=False)
    model.fit(small_frame, train_until="2026-01-24", valid_days=5)
    assert "counterparty_risk" not in model.encoder_.blocks
    assert "counterparty_risk" in default_features("lstm")
    unlabelled = small_frame.assign(is_fraud=0)
    np.testing.assert_array_equal(
        model.score(small_frame, start="2026-01-24")["score"].to_numpy(),
        model.score(unlabelled, start="2026-01-24")["score"].to_numpy(),
    )
