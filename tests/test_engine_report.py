"""The report of a sharded run: the scored period kept alone (its history counted), the top
alerts explained from their entities' rows in their shards, and the same report as the
whole file in memory."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd
import pytest

from fraudseq.cli import main
from fraudseq.engine.report import sharded_period
from fraudseq.engine.run import sharded_run
from fraudseq.explain import explain_rows
from fraudseq.report import build_model_report
from fraudseq.report.data import score_period

PERIOD = {"start": "2026-01-31", "end": "2026-02-07"}
TOP = 5


def _deterministic(document: str) -> str:
    """The report minus when it was generated and how long it took."""
    document = re.sub(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d", "Generated", document)
    return re.sub(r"Report built in [0-9.]+ s", "Report built", document)


@pytest.fixture(scope="module")
def in_memory(trained, small_csv):
    return score_period(trained, small_csv, **PERIOD)


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "model"
    trained.save(path)
    return path


@pytest.fixture(scope="module")
def loaded(model_dir):
    """The model as `fraudseq report` loads it (a loaded model lists some hyperparameters
    differently in the report than the fitted one)."""
    from fraudseq.fraud_model import FraudModel

    return FraudModel.load(model_dir)


@pytest.fixture(scope="module")
def in_memory_html(loaded, small_csv, model_dir):
    return _deterministic(_report(loaded, small_csv, model_dir, None))


def _report(model, data, model_dir, scored) -> str:
    options = {"top": TOP, "n_resamples": 20, "model_dir": model_dir, **PERIOD}
    return build_model_report(model, data, scored=scored, **options)


def test_the_sharded_period_is_the_scored_rows_alone(tmp_path, trained, small_csv, in_memory):
    s = trained.schema_
    with sharded_run(small_csv, s, work_dir=tmp_path, shards=3, require_label=True) as (built, _):
        scored = sharded_period(trained, built, **PERIOD)
    # Only the period's rows, with only the columns the report reads (and shard, file row).
    assert len(scored.frame) == len(scored) == len(in_memory)
    report = {s.id_column, s.entity_column, s.time, s.amount, s.label, s.scenario}
    report.add(s.counterparty)  # the common points of compromise
    assert set(scored.frame.columns) == report | {"_row", "_shard"}
    assert scored.history == in_memory.history == len(in_memory.frame) - len(in_memory) > 0
    assert scored.frame[s.id_column].tolist() == in_memory.column(s.id_column).tolist()
    np.testing.assert_allclose(scored.score, in_memory.score, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(scored.labels, in_memory.labels)
    np.testing.assert_array_equal(scored.amount, in_memory.amount)
    np.testing.assert_array_equal(scored.entity, in_memory.entity)
    np.testing.assert_array_equal(scored.day, in_memory.day)
    np.testing.assert_array_equal(scored.scenario, in_memory.scenario)
    kept = scored.subset(scored.labels == 1)
    assert type(kept) is type(scored) and kept.history == scored.history


def test_top_alerts_are_explained_from_their_entities_rows_as_in_memory(
    tmp_path, trained, small_csv, in_memory
):
    s = trained.schema_
    picked = np.argsort(-in_memory.score, kind="stable")[:TOP]
    expected = explain_rows(trained, *in_memory.explained(trained, picked))
    with sharded_run(small_csv, s, work_dir=tmp_path, shards=3, require_label=True) as (built, _):
        scored = sharded_period(trained, built, **PERIOD)
        assert (np.argsort(-scored.score, kind="stable")[:TOP] == picked).all()
        frame, encoded, rows = scored.explained(trained, picked)
        assert scored.frame["_shard"].iloc[picked].nunique() > 1  # read from several shards
        got = explain_rows(trained, frame, encoded, rows)
    # Only the alerted entities' histories up to the period's end were read.
    alerted = set(scored.entity[picked])
    assert set(frame[s.entity_column]) == alerted
    whole = in_memory.frame
    assert len(frame) == whole[s.entity_column].isin(alerted).sum()
    for e, g in zip(expected, got, strict=True):
        assert (g.transaction_id, g.entity, g.time, g.label) == (
            e.transaction_id,
            e.entity,
            e.time,
            e.label,
        )
        assert g.scenario == e.scenario
        assert g.score == pytest.approx(e.score, abs=1e-6)
        assert g.window["transaction_id"].tolist() == e.window["transaction_id"].tolist()
        np.testing.assert_allclose(g.window["attribution"], e.window["attribution"], atol=1e-5)
        assert g.features["feature"].tolist() == e.features["feature"].tolist()
        pd.testing.assert_series_equal(g.features["value"], e.features["value"], atol=1e-6)
        np.testing.assert_allclose(g.features["attribution"], e.features["attribution"], atol=1e-5)


def test_cli_report_with_a_work_dir_equals_the_in_memory_report(
    tmp_path, monkeypatch, small_csv, model_dir, in_memory_html
):
    """`fraudseq report --work-dir`: the same HTML (metrics, charts, per-scenario recall, the
    explained alerts) but for the generation time and build time."""
    out = tmp_path / "report.html"
    args = ["report", model_dir, small_csv, "--out", out, "--top", TOP, "--resamples", 20]
    args += ["--from", PERIOD["start"], "--until", PERIOD["end"]]
    args += ["--work-dir", tmp_path / "work", "--shards", 3]
    monkeypatch.setattr(sys, "argv", ["fraudseq", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 0
    assert list((tmp_path / "work").glob("shards-*/shard-*.parquet"))  # it did shard
    document = _deterministic(out.read_text(encoding="utf-8"))
    assert f"Top {TOP} alerts, explained" in document
    assert "Recall by scenario" in document
    assert "Common points of compromise" in document
    assert document == in_memory_html


def test_report_on_ray_equals_the_in_memory_report(
    tmp_path, loaded, small_csv, model_dir, in_memory_html
):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'fraudseq[ray]')")
    from fraudseq.engine.run import ray_mapper

    s = loaded.schema_
    with (
        sharded_run(small_csv, s, work_dir=tmp_path, shards=3, require_label=True) as (built, _),
        ray_mapper(workers=2) as mapper,
    ):
        scored = sharded_period(loaded, built, mapper=mapper, **PERIOD)
        document = _report(loaded, small_csv, model_dir, scored)
    assert _deterministic(document) == in_memory_html
