"""`fraudseq train --engine ray`: torch families trained by Ray Train's TorchTrainer (DDP on
gloo, 2 workers on a local Ray) compute what the single-process Trainer computes on the
same shards, and a failed worker fails the command with its error and no model."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TRAIN_UNTIL
from fraudseq.cli import app, main
from fraudseq.engine import ray_train
from fraudseq.engine.ray_train import DataParallel
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.metrics import average_precision
from fraudseq.training import Replicas, Trainer, WindowSet, padded_windows

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fraudseq[ray]')")

TINY = {"epochs": 2, "hidden_size": 8, "dropout": 0.0, "seed": 0}
SCORE_TOLERANCE = 1e-5  # docs/scale.md, "Training on Ray": dropout 0 is float rounding
DROPOUT_SCORE_TOLERANCE, DROPOUT_AP_TOLERANCE = 0.1, 0.02  # dropout > 0: the same place


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance (2 CPUs) for the module; the commands join it."""
    from fraudseq.engine.run import ray_mapper

    with ray_mapper(workers=2) as run:
        yield run


class _Parts:
    """Windows in several parts, as a ShardedWindowSet yields them."""

    def __init__(self, parts: list[WindowSet]) -> None:
        self.pieces = parts
        self.labels = np.concatenate([p.labels for p in parts])

    def parts(self, rng=None):
        order = rng.permutation(len(self.pieces)) if rng is not None else range(len(self.pieces))
        return (self.pieces[k] for k in order)


def _windows(n: int, fraud_every: int) -> WindowSet:
    windows = padded_windows(np.zeros((n, 1, 1)), np.zeros((n, 1, 0)), np.ones(n), 1)
    windows.labels = (np.arange(n) % fraud_every == 0).astype(np.float32)
    return windows


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("sampling", [{}, {"fraud_ratio": 0.3}])
def test_ddp_slices_make_up_the_single_process_batches(world, sampling):
    """Every rank walks the single process's batches (parts shuffled, sampler, uneven last
    batches, one of 2 windows for 3 ranks) and takes a slice: the slices are the batch, and
    the loss weights make DDP's averaged gradient the batch's mean."""
    train = _Parts([_windows(23, 4), _windows(9, 3), _windows(2, 2)])
    trainer = Trainer(batch_size=7, seed=5, **sampling)
    for epoch in (1, 2):
        single = [picked for _, _, picked in trainer.batches(train, epoch)]
        ranks = [DataParallel(rank, world) for rank in range(world)]
        sliced = [[r.share(b) for _, _, b in trainer.batches(train, epoch)] for r in ranks]
        assert all(len(steps) == len(single) for steps in sliced)  # the same number of steps
        for step, picked in enumerate(single):
            shares = [steps[step] for steps in sliced]
            counted = [mine[:n] for mine, n in shares]
            np.testing.assert_array_equal(np.concatenate(counted), picked)
            for (mine, n), rank in zip(shares, ranks, strict=True):
                assert len(mine) >= 1  # a rank without windows still steps (weight 0)
                assert rank.weight(n, len(picked)) == pytest.approx(n * world / len(picked))
        mine, n = Replicas().share(single[0])  # one process: the whole batch
        assert mine is single[0] and n == len(single[0])


def same_as_local_training(
    distributed: FraudModel, small_csv, work_dir, family: str = "lstm"
) -> FraudModel:
    """The local Trainer's `family` (TINY) on the same 2 shards, after checking that its test
    scores are `distributed`'s to SCORE_TOLERANCE."""
    local = FraudModel(family, progress=False, **TINY).fit(
        small_csv, train_until=TRAIN_UNTIL, valid_days=7, work_dir=work_dir, shards=2
    )
    got = distributed.score(small_csv, start=TRAIN_UNTIL)["score"].to_numpy()
    expected = local.score(small_csv, start=TRAIN_UNTIL)["score"].to_numpy()
    np.testing.assert_allclose(got, expected, atol=SCORE_TOLERANCE, rtol=0)
    return local


@pytest.mark.slow  # 48-90 s measured at load average 7-15 on 2 cores: mostly Ray Train startup
def test_engine_ray_trains_the_single_process_model(tmp_path, small_csv, local_ray):
    """`fraudseq train --engine ray` without --work-dir (a temporary one) against the local
    Trainer on the same 2 shards: dropout 0, so the same model to float rounding."""
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train", small_csv, "--out", str(out), "--model", "lstm", "--epochs", "2",
            "--hidden-size", "8", "--dropout", "0", "--train-until", TRAIN_UNTIL,
            "--shards", "2", "--engine", "ray", "--ray-workers", "2",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    distributed = FraudModel.load(out)
    local = same_as_local_training(distributed, small_csv, tmp_path / "w")
    for a, b in zip(distributed.history_, local.history_, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["valid_ap"] == pytest.approx(b["valid_ap"], rel=1e-6)
    assert distributed.training_period_ == local.training_period_
    assert distributed.threshold_ == pytest.approx(local.threshold_, abs=SCORE_TOLERANCE)


@pytest.mark.slow  # 77 s measured at load average 8-10 on 2 cores (mostly Ray Train startup)
def test_engine_ray_trains_the_transformer_as_the_single_process(tmp_path, small_csv, local_ray):
    """The transformer (attention, time positions, masks) through DDP: the same model."""
    distributed = FraudModel("transformer", progress=False, **TINY).fit(
        small_csv, train_until=TRAIN_UNTIL, valid_days=7, work_dir=tmp_path / "ray", shards=2,
        engine="ray",
    )  # fmt: skip
    same_as_local_training(distributed, small_csv, tmp_path / "local", family="transformer")


@pytest.mark.slow  # 43 s measured at load average 7-13 on 2 cores
def test_with_dropout_ray_training_differs_as_a_reseeded_dropout(tmp_path, small_csv, local_ray):
    """Dropout draws each worker's masks from its own generator: not the single process's
    masks. docs/scale.md's tolerance (measured on this run: AP 0.0007 apart, scores at most
    0.024; another seed moves AP by 0.06 and scores by up to 0.30)."""
    params = {**TINY, "epochs": 5, "hidden_size": 16, "patience": 5, "dropout": 0.1}
    split = {"train_until": TRAIN_UNTIL, "valid_days": 7, "shards": 2}
    scores, aps = [], []
    for engine in ("local", "ray"):
        model = FraudModel("lstm", progress=False, **params)
        model.fit(small_csv, **split, work_dir=tmp_path / engine, engine=engine)
        scored = model.score(small_csv, start=TRAIN_UNTIL)
        labels = pd.read_csv(small_csv).set_index("tx_id").loc[scored["transaction_id"]]
        scores.append(scored["score"].to_numpy())
        aps.append(average_precision(labels["is_fraud"].to_numpy(), scores[-1]))
    assert np.abs(scores[0] - scores[1]).max() < DROPOUT_SCORE_TOLERANCE
    assert abs(aps[0] - aps[1]) < DROPOUT_AP_TOLERANCE


@pytest.mark.slow  # 47-78 s measured at load average 7-15 on 2 cores
def test_a_failed_training_worker_fails_the_command_and_writes_no_model(
    tmp_path, small_csv, local_ray, monkeypatch, capsys
):
    """The workers read the encoded shards from the work directory; here they are gone (as
    on a cluster node that does not see it): the command fails with the worker's error."""
    train_on_workers = ray_train._train_on_workers

    def without_encoded_shards(config, *args):
        for path in config["train"].shards.directory.glob("*.npy"):
            path.unlink()
        return train_on_workers(config, *args)

    monkeypatch.setattr(ray_train, "_train_on_workers", without_encoded_shards)
    out = tmp_path / "model"
    argv = [
        "fraudseq", "train", small_csv, "--out", str(out), "--model", "gru", "--epochs", "1",
        "--hidden-size", "4", "--train-until", TRAIN_UNTIL, "--engine", "ray",
        "--work-dir", str(tmp_path / "w"), "--shards", "2",
    ]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0
    assert "a Ray worker failed: FileNotFoundError" in capsys.readouterr().err
    assert not out.exists()
    assert [p.name.split("-")[0] for p in (tmp_path / "w").iterdir()] == ["shards"]


def test_families_ray_cannot_train_fail_before_any_work(tmp_path, small_csv):
    model = FraudModel("ensemble", members=("lstm", "xgboost"))
    with pytest.raises(FraudseqError, match="--engine ray trains the torch families"):
        model.fit(small_csv, train_until=TRAIN_UNTIL, engine="ray", work_dir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_xgboost_trains_through_its_ray_trainer():
    """The one dispatch by family: XGBoost goes to engine.ray_xgboost (its own tests train
    it), the torch families to fit_torch."""
    from fraudseq.engine.ray_xgboost import fit_xgboost_ray

    assert ray_train.ray_trainer("xgboost") is fit_xgboost_ray
    assert ray_train.ray_trainer("lstm") is ray_train.fit_torch
