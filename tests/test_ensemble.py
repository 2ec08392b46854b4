import numpy as np
import pytest
import torch

from fraudseq.errors import FraudseqError
from fraudseq.features import FeatureEncoder
from fraudseq.metrics import average_precision
from fraudseq.models import build_model
from fraudseq.models.ensemble import (
    EnsembleWindowModel,
    average_logits,
    parse_members,
    simplex_grid,
)
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import WindowSet, WindowSource

PARAMS = {
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.1,
    "epochs": 1,
    "batch_size": 256,
    "class_weight": "auto",
    "n_estimators": 20,
    "max_depth": 3,
    "progress": False,
}


def test_simplex_grid_holds_the_corners():
    grid = simplex_grid(3)
    assert grid.shape == (66, 3)
    np.testing.assert_allclose(grid.sum(1), 1.0)
    assert (grid >= 0).all()
    for corner in np.eye(3):
        assert (grid == corner).all(1).any()
    assert simplex_grid(1).tolist() == [[1.0]]


def test_average_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (100, 3)).astype(np.float32)
    np.testing.assert_array_equal(average_logits(logits, np.array([0.0, 1.0, 0.0])), logits[:, 1])
    weights = np.array([0.2, 0.5, 0.3])
    probability = 1 / (1 + np.exp(-logits.astype(np.float64))) @ weights
    np.testing.assert_allclose(
        average_logits(logits, weights), np.log(probability / (1 - probability)), rtol=1e-5
    )
    extreme = np.array([[60.0, -60.0], [-80.0, -90.0]], dtype=np.float32)
    assert np.isfinite(average_logits(extreme, np.array([0.5, 0.5]))).all()


def test_parse_members():
    assert parse_members(None) == ["lstm", "xgboost"]
    assert parse_members("gru, xgboost,") == ["gru", "xgboost"]
    assert parse_members(["lstm", "autoencoder"]) == ["lstm", "autoencoder"]
    with pytest.raises(FraudseqError):
        parse_members("lstm,ensemble")


class FixedMember:
    """A member whose logits are fixed per window position."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.history_ = logits, []

    def fit(self, train, valid):
        return self

    def decision_function(self, windows):
        return self.logits[windows.positions]

    def state(self):
        return {}, {}  # the logits are fixed: nothing to save

    def load_state(self, tensors, files):
        pass


@pytest.mark.parametrize("seed", range(3))
def test_ensemble_ap_is_at_least_the_best_members(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(3000) < 0.03).astype(np.float32)
    members = [
        ("a", FixedMember((labels * s + rng.normal(0, 1, 3000)).astype(np.float32)))
        for s in rng.uniform(0.2, 3.0, 3)
    ]
    valid = WindowSet(None, np.arange(3000), labels)
    ensemble = EnsembleWindowModel(members).fit(valid, valid)
    best = max(average_precision(labels, m.decision_function(valid)) for _, m in members)
    assert average_precision(labels, ensemble.decision_function(valid)) >= best
    assert ensemble.weights_.sum() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def windows(small_frame):
    frame = load_transactions(small_frame, Schema.simulator())
    encoder = FeatureEncoder(Schema.simulator()).fit(frame)
    source = WindowSource(encoder.transform(frame), 8)
    labels = frame["is_fraud"].to_numpy()[source.encoded.order].astype(np.float32)
    train = WindowSet(source, np.arange(6000), labels[:6000])
    valid = WindowSet(source, np.arange(6000, 9000), labels[6000:9000])
    assert valid.labels.sum() > 0
    return encoder, train, valid


@pytest.mark.parametrize("combiner", ["average", "stacker"])
def test_real_members_round_trip(windows, combiner):
    encoder, train, valid = windows
    params = {**PARAMS, "members": "xgboost,rnn", "combiner": combiner}
    torch.manual_seed(0)
    model = build_model("ensemble", encoder.n_numeric, encoder.cardinalities, params, 0)
    model.fit(train, valid)
    record = model.history_[0]
    assert [m["name"] for m in record["members"]] == ["xgboost", "rnn"]
    if combiner == "average":
        assert record["valid_ap"] >= max(m["valid_ap"] for m in record["members"])
        assert model.stacker_ is None
    else:
        assert model.stacker_ is not None
    tensors, files = model.state()
    assert list(files) == ["m0.booster.ubj"]
    assert all("/" not in name for name in [*tensors, *files])
    assert any(name.startswith("m1.") for name in tensors)
    loaded = build_model("ensemble", encoder.n_numeric, encoder.cardinalities, params, 0)
    loaded.load_state(tensors, files)
    np.testing.assert_array_equal(loaded.decision_function(valid), model.decision_function(valid))
    assert (loaded.stacker_ is None) == (combiner == "average")


def novelty_case(seed: int, n: int = 20_000):
    """Known frauds that the supervised member sees, and a novelty member whose logits are
    the autoencoder's kind (the logit of a rank among validation windows): legitimate
    windows are uniform in rank, half of the known frauds are unusual too (above 0.99)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.02).astype(np.float32)
    supervised = (3.0 * labels + rng.normal(-4, 1, n)).astype(np.float32)
    unusual = (labels == 1) & (rng.random(n) < 0.5)
    rank = np.where(unusual, 1 - rng.random(n) * 0.01, rng.random(n))
    rank = np.clip(rank, 1e-6, 1 - 1e-6)
    novelty = np.log(rank / (1 - rank)).astype(np.float32)
    return labels, supervised, novelty


def test_novelty_is_fused_not_averaged_and_keeps_the_known_schemes_ap():
    labels, supervised, novelty = novelty_case(0)
    members = [("lstm", FixedMember(supervised)), ("autoencoder", FixedMember(novelty))]
    valid = WindowSet(None, np.arange(len(labels)), labels)
    ensemble = EnsembleWindowModel(members).fit(valid, valid)
    assert ensemble.weights_.tolist() == [1.0, 0.0]  # the autoencoder is not averaged in
    boost, gate = ensemble.novelty_
    assert boost > 0 and gate >= np.log(99) - 1e-9
    fused = ensemble.decision_function(valid)
    base = average_precision(labels, supervised)
    assert average_precision(labels, fused) >= base
    # below the gate nothing moves; above it, the score rises with the novelty
    calm = novelty <= gate
    np.testing.assert_array_equal(fused[calm], supervised[calm])
    assert (fused[~calm] > supervised[~calm]).all()
    assert ensemble.history_[0]["novelty_boost"] == boost


def test_an_unseen_scheme_outranks_legitimate_traffic_only_with_the_novelty_member():
    labels, supervised, novelty = novelty_case(1)
    valid = WindowSet(None, np.arange(len(labels)), labels)
    members = [("xgboost", FixedMember(supervised)), ("autoencoder", FixedMember(novelty))]
    ensemble = EnsembleWindowModel(members).fit(valid, valid)
    # After the cutoff: 200 windows of a scheme the supervised member never saw (scored like
    # legitimate traffic) and that is more unusual than 99.9% of the validation windows.
    rng = np.random.default_rng(2)
    legit = np.flatnonzero(labels == 0)[:5000]
    unseen_sup = rng.normal(-4, 1, 200).astype(np.float32)
    unseen_nov = np.full(200, np.log(0.9995 / 0.0005), np.float32)
    ensemble.members[0][1].logits = np.r_[supervised[legit], unseen_sup]
    ensemble.members[1][1].logits = np.r_[novelty[legit], unseen_nov]
    test = WindowSet(None, np.arange(len(legit) + 200), None)
    fused = ensemble.decision_function(test)
    cut = np.quantile(fused[: len(legit)], 0.99)  # the alert line at 1% false positives
    assert (fused[len(legit) :] > cut).mean() >= 0.5  # the goal: recall 0.5 there
    alone = np.quantile(supervised[legit], 0.99)
    assert (unseen_sup > alone).mean() < 0.1


def test_a_novelty_member_that_costs_ap_on_known_schemes_gets_no_boost():
    labels, supervised, _ = novelty_case(3)
    # novelty that is high exactly on legitimate windows that the supervised member ranks
    # with the frauds: any boost would push them above the frauds
    novelty = np.where(labels == 0, 12.0, -5.0).astype(np.float32)
    members = [("lstm", FixedMember(supervised)), ("autoencoder", FixedMember(novelty))]
    valid = WindowSet(None, np.arange(len(labels)), labels)
    ensemble = EnsembleWindowModel(members).fit(valid, valid)
    assert ensemble.novelty_[0] == 0.0
    np.testing.assert_array_equal(ensemble.decision_function(valid), supervised)


def test_novelty_state_round_trips_and_old_models_average_every_member():
    labels, supervised, novelty = novelty_case(4)
    valid = WindowSet(None, np.arange(len(labels)), labels)

    def make():
        return EnsembleWindowModel(
            [("lstm", FixedMember(supervised)), ("autoencoder", FixedMember(novelty))]
        )

    fitted = make().fit(valid, valid)
    tensors, files = fitted.state()
    loaded = make()
    loaded.load_state(tensors, files)
    assert loaded.novelty_ == fitted.novelty_
    np.testing.assert_array_equal(loaded.decision_function(valid), fitted.decision_function(valid))
    # saved before the fusion: no novelty tensor, the weights average both members
    old = make()
    old.load_state({"ensemble.weights": torch.tensor([0.5, 0.5], dtype=torch.float64)}, {})
    assert old.novelty_ is None
    np.testing.assert_allclose(
        old.decision_function(valid),
        average_logits(np.column_stack([supervised, novelty]), np.array([0.5, 0.5])),
    )


def test_an_ap_allowance_buys_a_stronger_boost_within_it():
    labels, supervised, novelty = novelty_case(6)
    valid = WindowSet(None, np.arange(len(labels)), labels)

    def fitted(allowance: float) -> EnsembleWindowModel:
        members = [("lstm", FixedMember(supervised)), ("surprise", FixedMember(novelty))]
        return EnsembleWindowModel(members, novelty_ap_loss=allowance).fit(valid, valid)

    strict, allowed = fitted(0.0), fitted(0.05)
    lift = [b * (np.log(0.9995 / 0.0005) - g) for b, g in (strict.novelty_, allowed.novelty_)]
    assert lift[1] > lift[0]
    base = average_precision(labels, supervised)
    assert average_precision(labels, allowed.decision_function(valid)) >= base * 0.95
