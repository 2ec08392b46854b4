"""XGBoost through its distributed path on a local 2-worker Ray (`fit_xgboost_ray`), on the
windows of `fit_sharded`'s encoded shards, against the single-process sharded run."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from conftest import TRAIN_UNTIL
from fraudseq.engine.run import ray_mapper
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.models.boosted import BoostedWindowModel, window_summary

pytest.importorskip("ray", reason="Ray is not installed (pip install 'fraudseq[ray]')")
from fraudseq.engine.ray_xgboost import _run, _split, fit_xgboost_ray  # noqa: E402

TEST = {"start": TRAIN_UNTIL}
SHARDS = 3


@pytest.fixture(scope="module")
def mapper():
    with ray_mapper(workers=2) as run:
        yield run


def fit(data, work_dir, on_windows=None, n_estimators=10):
    """The sharded fit; `on_windows(model, train, valid)` trains instead of the model's
    own `_fit_windows`, while the encoded shards exist."""
    model = FraudModel("xgboost", seed=0, progress=False, n_estimators=n_estimators)
    with pytest.MonkeyPatch.context() as patch:
        if on_windows is not None:
            patch.setattr(FraudModel, "_fit_windows", on_windows)
        return model.fit(
            data, train_until=TRAIN_UNTIL, valid_days=7, work_dir=work_dir, shards=SHARDS
        )


@pytest.fixture(scope="module")
def single(tmp_path_factory, small_csv):
    work = tmp_path_factory.mktemp("single")
    model = fit(small_csv, work)
    return model, model.score(small_csv, **TEST)["score"].to_numpy(), work


def test_one_worker_trains_the_single_process_booster(small_csv, single, mapper):
    """One worker holds every shard in the set's order: the single-process run's matrix,
    parameters and early stopping, so its very trees, through the collective and back."""
    expected_model, expected, work = single
    model = fit(small_csv, work, lambda m, t, v: fit_xgboost_ray(m, t, v, workers=1))
    got = model.score(small_csv, **TEST)["score"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert model.history_ == expected_model.history_
    assert model.thresholds_ == expected_model.thresholds_


def test_two_workers_train_one_booster_validated_on_the_whole_validation_set(
    small_csv, single, mapper, monkeypatch
):
    """Two workers, each on its shards. Not the single-process trees (the cuts come from
    sketches merged over workers, and subsample draws by a worker's row index: see
    docs/scale.md); without subsampling, the two runs' scores stay close. The validation
    AP early stopping saw is the whole validation set's, as in one process."""
    params = BoostedWindowModel._params
    monkeypatch.setattr(
        BoostedWindowModel, "_params", lambda self, labels: {**params(self, labels), "subsample": 1}
    )
    _, _, work = single
    expected_model = fit(small_csv, work)
    expected = expected_model.score(small_csv, **TEST)["score"].to_numpy()
    seen = {}

    def on_ray(model, train, valid):
        assert [len(part) for part in _split(train.pieces, 2)] == [2, 1]
        fit_xgboost_ray(model, train, valid, workers=2)
        summaries = np.concatenate([window_summary(part) for part in valid.parts()])
        dvalid = xgb.DMatrix(summaries, label=valid.labels)
        booster = model.model_.booster_.copy()
        booster.set_param({"eval_metric": "aucpr"})  # XGBoost's AUC-PR in one process
        seen["valid_ap"] = float(booster.eval(dvalid).split(":")[1])

    model = fit(small_csv, work, on_ray)
    got = model.score(small_csv, **TEST)["score"].to_numpy()
    # measured on this data: 0.0079 (10 trees, 3 shards, 2 workers)
    assert np.abs(got - expected).max() < 0.03
    assert np.corrcoef(got, expected)[0, 1] > 0.999
    best = model.model_.booster_.num_boosted_rounds()
    assert seen["valid_ap"] == pytest.approx(model.history_[best - 1]["valid_ap"], abs=1e-6)


def test_a_failed_worker_fails_the_training_with_its_error(tmp_path, small_csv, mapper):
    def damaged(model, train, valid):
        # the last shard is the second worker's: the first waits on it in the collective
        (numeric,) = train.shards.directory.glob(f"{SHARDS - 1:05d}-numeric.npy")
        numeric.write_bytes(b"not an array")
        fit_xgboost_ray(model, train, valid, workers=2)

    with pytest.raises(FraudseqError, match=r"a Ray worker failed: ValueError: .*pickled"):
        fit(small_csv, tmp_path / "w", damaged)


def test_more_workers_than_the_cluster_has_cpus_are_refused(mapper):
    """The workers wait on each other: all of them must run at once."""
    import ray

    with pytest.raises(FraudseqError, match="needs 3 CPUs at once; the cluster has 2"):
        _run(ray, [()] * 3, [])


def test_only_the_xgboost_family_trains_on_ray(tmp_path, small_csv, mapper):
    model = FraudModel("lstm", epochs=1, hidden_size=8, progress=False)
    with pytest.raises(FraudseqError, match="trains the xgboost family, not 'lstm'"):
        fit_xgboost_ray(model, None, None)


def test_split_gives_each_worker_contiguous_pieces_of_about_equal_windows():
    pieces = [(i, np.zeros(n), np.zeros(n)) for i, n in enumerate([5, 1, 1, 1, 4, 4])]
    sizes = [[len(p) for _, p, _ in part] for part in _split(pieces, 2)]
    assert sizes == [[5, 1, 1, 1], [4, 4]]
    assert [len(part) for part in _split(pieces, 6)] == [1] * 6
    assert [len(part) for part in _split(pieces[:2], 4)] == [1, 1]  # a worker per piece
    with pytest.raises(FraudseqError, match="no training windows"):
        _split([], 2)
