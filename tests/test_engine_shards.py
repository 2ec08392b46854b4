"""Bounded memory: a file read in chunks, sharded by entity, scored shard by shard, with
the same features and scores as the whole file in memory."""

from __future__ import annotations

import errno
import os

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import fraudseq
from fraudseq.cli import app
from fraudseq.engine.chunks import ROW, read_chunks
from fraudseq.engine.keyed import keyed_features
from fraudseq.engine.scoring import score_file, scored_labels
from fraudseq.engine.shards import ShardSet
from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.schema import Schema, load_transactions

PERIOD = {"start": "2026-01-25", "end": "2026-02-07"}


@pytest.fixture(scope="module")
def unlabelled_csv(tmp_path_factory, small_frame) -> str:
    """The small data with a tenth of its labels not known yet (empty)."""
    frame = small_frame.copy()
    frame["is_fraud"] = frame["is_fraud"].astype(float)
    frame.loc[frame.index % 10 == 3, "is_fraud"] = np.nan
    path = tmp_path_factory.mktemp("scale") / "tx.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_chunks_are_the_loaded_file_in_file_order(small_csv):
    chunks = list(read_chunks(small_csv, rows=2_000))
    assert len(chunks) > 3
    joined = pd.concat(chunks, ignore_index=True)
    assert joined[ROW].tolist() == list(range(len(joined)))
    whole = load_transactions(small_csv)
    order = joined.sort_values(["ts", ROW], kind="stable").drop(columns=ROW)
    pd.testing.assert_frame_equal(order.reset_index(drop=True), whole)


def test_a_bad_value_in_a_later_chunk_names_its_file_row(tmp_path, small_frame):
    frame = small_frame.head(5_000).copy()
    frame["amount"] = frame["amount"].astype(object)
    frame.loc[4_321, "amount"] = "12,50"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"rows? 4322 .*'12,50'"):
        list(read_chunks(path, rows=1_000))


def test_types_guessed_from_the_first_block_widen_for_later_ones(tmp_path):
    """Whole amounts first, cents later: the later block still reads (as floats)."""
    n = 40_000
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "account_id": [f"a{i % 50}" for i in range(n)],
            "ts": pd.date_range("2026-01-01", periods=n, freq="min").astype(str),
            "amount": [str(i % 90) if i < n - 10 else f"{i % 90}.5" for i in range(n)],
        }
    )
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    schema = Schema(id="transaction_id", entity="account_id", time="ts", amount="amount")
    chunks = list(read_chunks(path, schema, rows=5_000))
    assert pd.concat(chunks)["amount"].iloc[-1] == (n - 1) % 90 + 0.5


@pytest.mark.parametrize("shards", [1, 3, 8])
def test_sharded_scores_equal_the_whole_file(tmp_path, trained, unlabelled_csv, shards):
    """Every shard count: same ids in the same order, scores to 1e-6 (unknown labels too)."""
    expected = trained.score(unlabelled_csv, **PERIOD)
    built = ShardSet.build(
        unlabelled_csv, trained.schema_, tmp_path / "work", shards=shards, chunk_rows=3_000
    )
    assert len(built) == shards
    out = tmp_path / "scores.csv"
    n, alerts = score_file(trained, built, out, slice_rows=2_000, **PERIOD)
    got = pd.read_csv(out, dtype={"transaction_id": str})
    assert (n, alerts) == (len(expected), int(expected["alert"].sum()))
    assert got["transaction_id"].tolist() == expected["transaction_id"].astype(str).tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6, rtol=0)
    assert (got["alert"].to_numpy() == expected["alert"].to_numpy()).all()


def test_sharded_features_equal_the_whole_file(tmp_path, trained, unlabelled_csv):
    """Each shard's encoded rows (with the keyed stage's counterparty features) are those
    rows of the whole file's encoding, every feature to 1e-6."""
    whole = load_transactions(unlabelled_csv, trained.schema_)
    encoded = trained.encoder_.transform(whole)
    by_id = pd.Series(np.arange(len(whole)), index=whole["tx_id"])
    expected = np.empty_like(encoded.numeric)
    expected[encoded.order] = encoded.numeric  # back to frame order
    built = ShardSet.build(unlabelled_csv, trained.schema_, tmp_path / "w", shards=4)
    keyed = keyed_features(built, trained.encoder_)
    assert "cp_risk_7d" in keyed.names
    for i in range(len(built)):
        frame = built.frame(i)
        part = trained.encoder_.transform(frame, keyed.of(i, frame[ROW].to_numpy()))
        numeric = np.empty_like(part.numeric)
        numeric[part.order] = part.numeric
        rows = by_id[frame["tx_id"]].to_numpy()
        np.testing.assert_allclose(numeric, expected[rows], atol=1e-6, rtol=0)


def test_sharded_evaluation_equals_evaluate(tmp_path, trained, small_csv):
    expected = trained.evaluate(small_csv, **PERIOD)
    built = ShardSet.build(small_csv, trained.schema_, tmp_path / "w", shards=3, require_label=True)
    labels, scores = scored_labels(trained, built, **PERIOD)
    got = trained.evaluation(labels, scores, PERIOD["start"], PERIOD["end"])
    for key, value in expected.items():
        if isinstance(value, float):
            assert got[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
        elif key != "at_thresholds":
            assert got[key] == value, key
    assert got["at_thresholds"].keys() == expected["at_thresholds"].keys()


def test_parquet_input_and_output(tmp_path, trained, small_frame):
    source = tmp_path / "tx.parquet"
    small_frame.to_parquet(source, index=False)
    expected = trained.score(source, **PERIOD)
    built = ShardSet.build(source, trained.schema_, tmp_path / "w", shards=2, chunk_rows=5_000)
    score_file(trained, built, tmp_path / "s.parquet", **PERIOD)
    got = pd.read_parquet(tmp_path / "s.parquet")
    assert got["transaction_id"].tolist() == expected["transaction_id"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6, rtol=0)


def test_finished_shards_are_reused_and_a_crashed_run_is_refused(tmp_path, small_csv):
    first = ShardSet.build(small_csv, None, tmp_path, shards=2)
    stamp = (first.directory / "manifest.json").stat().st_mtime_ns
    again = ShardSet.build(small_csv, None, tmp_path, shards=2)
    assert again.directory == first.directory
    assert (again.directory / "manifest.json").stat().st_mtime_ns == stamp  # not rewritten
    done = ShardSet.build(small_csv, None, tmp_path, shards=3).directory
    left = done.with_name(done.name + ".partial")
    done.rename(left)  # what a crash (or a run still going) leaves
    with pytest.raises(FraudseqError, match=rf"{left.name} holds the shards of a run that did"):
        ShardSet.build(small_csv, None, tmp_path, shards=3)
    assert left.exists()  # refused, never removed: it may be another run's


def test_a_bound_one_nanosecond_after_the_last_row_keeps_it(tmp_path, small_csv):
    """Times at whole seconds: a bound 1 ns after the last row (the end of a training
    run on the whole file) is exact, not cut to the microsecond before it."""
    built = ShardSet.build(small_csv, None, tmp_path, shards=2)
    for i in range(2):
        last = built.frame(i)[built.schema.time].max().value
        assert len(built.frame(i, until_ns=last + 1)) == len(built.frame(i))
        assert built.count(i, until_ns=last + 1) == len(built.frame(i))
        assert built.count(i, until_ns=last) == len(built.frame(i)) - 1


def test_a_full_disk_keeps_nothing_and_says_so(tmp_path, small_csv, monkeypatch):
    import pyarrow.parquet as pq

    calls = {"n": 0}
    real = pq.ParquetWriter.write_table

    def full(self, table, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(FraudseqError, match="No space left on device.*Nothing was kept"):
        ShardSet.build(small_csv, None, tmp_path / "w", shards=4, chunk_rows=2_000)
    assert list((tmp_path / "w").iterdir()) == []


def test_duplicate_ids_across_chunks_are_refused_with_their_rows(tmp_path, small_frame):
    frame = small_frame.head(6_000).copy()
    frame.loc[5_500, "tx_id"] = frame.loc[10, "tx_id"]
    path = tmp_path / "dup.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match=r"duplicate transaction ids at rows 11, 5501"):
        ShardSet.build(path, None, tmp_path / "w", shards=2, chunk_rows=1_000)
    assert not any((tmp_path / "w").iterdir())


def test_cli_score_and_evaluate_with_a_work_dir(tmp_path, tiny_xgboost):
    model_dir, frame = tiny_xgboost
    data = tmp_path / "tx.csv"
    frame.to_csv(data, index=False)
    runner = CliRunner()
    base = ["score", str(model_dir), str(data), "--from", "2026-01-24"]
    memory = runner.invoke(app, [*base, "--out", str(tmp_path / "a.csv")])
    sharded = runner.invoke(
        app,
        [
            *base,
            "--out",
            str(tmp_path / "b.csv"),
            "--work-dir",
            str(tmp_path / "w"),
            "--shards",
            "3",
        ],
    )
    assert memory.exit_code == 0 and sharded.exit_code == 0, sharded.output
    a, b = pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv")
    assert a["transaction_id"].tolist() == b["transaction_id"].tolist()
    np.testing.assert_allclose(a["score"], b["score"], atol=1e-6, rtol=0)
    evaluated = {}
    for name, extra in (("memory", []), ("sharded", ["--work-dir", str(tmp_path / "w2")])):
        out = tmp_path / f"{name}.json"
        result = runner.invoke(
            app,
            ["evaluate", str(model_dir), str(data), "--from", "2026-01-24", "--json", str(out),
             "--ci", "--resamples", "20", *extra],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        evaluated[name] = fraudseq.io.json.loads(out.read_text())
    assert evaluated["memory"] == evaluated["sharded"]
