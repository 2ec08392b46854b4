"""The Ray engine on a local 2-worker Ray instance: the same shards, features and scores as
the single-process run, and a failed worker fails the command with its error."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraudseq.cli import app, main
from fraudseq.engine.keyed import keyed_features
from fraudseq.engine.run import ray_mapper, sharded_run
from fraudseq.engine.scoring import score_file, scored_labels
from fraudseq.errors import FraudseqError

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'fraudseq[ray]')")

PERIOD = {"start": "2026-01-25", "end": "2026-02-07"}


@pytest.fixture(scope="module")
def mapper():
    with ray_mapper(workers=2) as run:
        yield run


def test_scores_on_ray_equal_the_single_process_run(tmp_path, trained, small_csv, mapper):
    expected = trained.score(small_csv, **PERIOD)
    with sharded_run(small_csv, trained.schema_, work_dir=tmp_path, shards=3) as (built, _):
        local = keyed_features(built, trained.encoder_)
        distributed = keyed_features(built, trained.encoder_, mapper)  # found: same dir
        assert distributed.directory == local.directory
        score_file(trained, built, tmp_path / "ray.csv", mapper=mapper, **PERIOD)
        labels, scores = scored_labels(trained, built, mapper=mapper, **PERIOD)
    got = pd.read_csv(tmp_path / "ray.csv")
    assert got["transaction_id"].tolist() == expected["transaction_id"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6, rtol=0)
    assert trained.evaluation(labels, scores, None, None)["n"] == len(expected)


def test_keyed_features_computed_on_ray_equal_local_ones(tmp_path, trained, small_csv, mapper):
    with sharded_run(small_csv, trained.schema_, work_dir=tmp_path / "a", shards=2) as (a, _):
        local = keyed_features(a, trained.encoder_)
        with sharded_run(small_csv, trained.schema_, work_dir=tmp_path / "b", shards=2) as (b, _):
            remote = keyed_features(b, trained.encoder_, mapper)
            for i in range(2):
                rows = a.frame(i)["_row"].to_numpy()
                mine, theirs = local.of(i, rows), remote.of(i, rows)
                for name in local.names:
                    np.testing.assert_array_equal(mine[name], theirs[name])


def test_a_failed_worker_fails_the_map_with_its_error(mapper):
    with pytest.raises(FraudseqError, match=r"a Ray worker failed: JSONDecodeError: Expecting"):
        mapper(json.loads, ["1", "x"])


def test_cli_score_on_ray_writes_nothing_when_a_worker_fails(
    tmp_path, tiny_xgboost, monkeypatch, capsys
):
    """--engine ray end to end, then a worker error (a damaged shard): the command fails
    naming it and leaves the earlier scores file as it was."""
    model_dir, frame = tiny_xgboost
    data = tmp_path / "tx.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "scores.csv"
    args = ["score", str(model_dir), str(data), "--out", str(out), "--engine", "ray"]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--work-dir", str(tmp_path / "w"), "--shards", "2"])
    assert result.exit_code == 0, result.output
    memory = ["score", str(model_dir), str(data), "--out", str(tmp_path / "m.csv")]
    assert runner.invoke(app, memory).exit_code == 0
    a, b = pd.read_csv(out), pd.read_csv(tmp_path / "m.csv")
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6, rtol=0)
    before = out.read_bytes()

    (shard,) = (tmp_path / "w").glob("shards-*/shard-00001.parquet")  # reused by the rerun
    shard.write_bytes(b"not parquet")
    argv = ["fraudseq", *args, "--work-dir", str(tmp_path / "w"), "--shards", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code != 0
    assert "a Ray worker failed: ArrowInvalid" in capsys.readouterr().err
    assert out.read_bytes() == before
