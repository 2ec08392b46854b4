"""Every command on every data shape, from the example schemas in schemas/, with no
preprocessing: tiny files with the public data sets' exact columns (tests/public_shapes.py).

The shapes cover: minimal (id, entity, time, amount, label only); numeric-only and without
id and entity (ULB); without id and with a numeric time in hours (PaySim); a composite
entity with missing parts (IEEE-CIS); text times and many columns (Sparkov); the handbook.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import public_shapes
from fraudseq.models import MODELS
from fraudseq.schema import Schema, load_transactions
from test_cli import run

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


@dataclass(frozen=True)
class Shape:
    data: str  # a public_shapes function
    schema: str  # a file in schemas/ (or TOML text for the minimal schema)
    train_until: str
    valid_days: float
    rows: int = 400


MINIMAL = """[columns]
id = "TRANSACTION_ID"
entity = "CUSTOMER_ID"
time = "TX_DATETIME"
amount = "TX_AMOUNT"
label = "TX_FRAUD"
"""

SHAPES = {
    # ULB: two days, no id, no entity, numeric features only, Time in seconds.
    "ulb": Shape("ulb", "ulb_creditcard.toml", "2013-09-02T08:00", 0.33, rows=600),
    # PaySim: 720 hours from the schema's nominal origin, no id.
    "paysim": Shape("paysim", "paysim.toml", "2000-01-22", 7),
    # IEEE-CIS: card1 + addr1, TransactionDT in seconds.
    "ieee_cis": Shape("ieee_cis", "ieee_cis.toml", "2017-12-22", 7),
    "sparkov": Shape("sparkov", "sparkov.toml", "2019-02-10", 10),
    "handbook": Shape("handbook", "handbook.toml", "2018-04-22", 7),
    "minimal": Shape("handbook", MINIMAL, "2018-04-22", 7),
}


@dataclass(frozen=True)
class Files:
    data: Path
    schema: Path
    shape: Shape


@pytest.fixture(scope="module", params=sorted(SHAPES))
def files(request, tmp_path_factory) -> Files:
    shape = SHAPES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    data = public_shapes.write_shape(shape.data, folder / "data.csv", n=shape.rows)
    if shape.schema.endswith(".toml"):
        schema = SCHEMAS / shape.schema
    else:
        schema = folder / "schema.toml"
        schema.write_text(shape.schema)
    return Files(data, schema, shape)


# -- the Python API: every family ----------------------------------------------------------


@pytest.mark.parametrize("family", MODELS)
def test_every_family_fits_scores_and_explains(files, family):
    from fraudseq.explain import explain_many
    from fraudseq.fraud_model import FraudModel

    schema = Schema.from_toml(files.schema)
    model = FraudModel(family, epochs=1, hidden_size=8, window=8, seed=0, progress=False)
    model.fit(
        files.data, schema, train_until=files.shape.train_until, valid_days=files.shape.valid_days
    )
    scores = model.score(files.data, start=files.shape.train_until)
    assert len(scores) > 20 and scores["score"].between(0, 1).all()
    assert scores["transaction_id"].is_unique
    top = scores.nlargest(2, "score")["transaction_id"].tolist()
    explanations = explain_many(model, files.data, top)
    assert [e.transaction_id for e in explanations] == top
    assert all(len(e.window) >= 1 and len(e.features) > 0 for e in explanations)


# -- the command line: every command ---------------------------------------------------------


def test_every_command(files, tmp_path, monkeypatch, capsys):
    shape, data = files.shape, files.data
    model = tmp_path / "model"
    period = ["--from", shape.train_until]
    assert (
        run(
            monkeypatch,
            "train",
            data,
            "--schema",
            files.schema,
            "--out",
            model,
            "--train-until",
            shape.train_until,
            "--valid-days",
            shape.valid_days,
            "--epochs",
            1,
            "--hidden-size",
            8,
            "--window",
            8,
            "--seed",
            0,
        )  # fmt: skip
        == 0
    )
    scores_csv = tmp_path / "scores.csv"
    assert run(monkeypatch, "score", model, data, "--out", scores_csv, *period) == 0
    scores = pd.read_csv(scores_csv, dtype={"transaction_id": str})
    frame = load_transactions(data, Schema.from_toml(files.schema))
    schema = Schema.from_toml(files.schema)
    scored = frame[frame[schema.time] >= pd.Timestamp(shape.train_until)]
    assert scores["transaction_id"].tolist() == scored[schema.id_column].tolist()
    if schema.id is None:  # ids are 1-based data rows of the file
        raw = pd.read_csv(data)
        rows = scores["transaction_id"].astype(int).to_numpy() - 1
        assert np.allclose(raw[schema.amount].to_numpy()[rows], scored[schema.amount])

    metrics_json = tmp_path / "metrics.json"
    assert run(monkeypatch, "evaluate", model, data, *period, "--json", metrics_json) == 0
    assert 0 <= json.loads(metrics_json.read_text())["average_precision"] <= 1

    report = tmp_path / "report.html"
    assert run(monkeypatch, "report", model, data, *period, "--out", report) == 0
    html = report.read_text()
    assert "alerts, explained</h2>" in html and "Explanations unavailable" not in html
    # Real dates, not 1970, whatever the time column holds.
    assert pd.Timestamp(shape.train_until).strftime("%Y-%m-%d") in html

    top = scores.nlargest(1, "score")["transaction_id"].iloc[0]
    explain_json = tmp_path / "explain.json"
    capsys.readouterr()
    assert (
        run(monkeypatch, "explain", model, data, "--transaction-id", top, "--json", explain_json)
        == 0
    )
    assert f"transaction {top} of {schema.entity_column}" in capsys.readouterr().out
    assert json.loads(explain_json.read_text())["transaction_id"] == top

    assert run(monkeypatch, "threshold", model, data, "--strategy", "budget:5") == 0
    assert (
        run(
            monkeypatch,
            "compare",
            data,
            "--schema",
            files.schema,
            "--models",
            "rnn,xgboost",
            "--train-until",
            shape.train_until,
            "--valid-days",
            shape.valid_days,
            "--epochs",
            1,
        )  # fmt: skip
        == 0
    )
    _serve_one(model, frame, schema, scored)


def _serve_one(model: Path, frame: pd.DataFrame, schema: Schema, scored: pd.DataFrame):
    """The service of this model takes a transaction of this shape, fields as in the file."""
    from fastapi.testclient import TestClient

    from fraudseq.serving.http import create_app

    raw = scored.iloc[0]
    body = {schema.id_column: str(raw[schema.id_column])}
    for part in schema.entity_parts:
        body[part] = None  # filled from the file below
    body[schema.time] = pd.Timestamp(raw[schema.time]).isoformat()
    body[schema.amount] = float(raw[schema.amount])
    source = _source_row(frame, schema, raw)
    for column in [*schema.entity_parts, *schema.categorical, schema.counterparty]:
        if column is not None:
            body[column] = source[column]
    for column in schema.numeric:
        value = raw[column]
        body[column] = None if pd.isna(value) else float(value)
    app = create_app(model_dir=model, state="memory", detector_options={"clock": "data"})
    with TestClient(app) as client:
        reply = client.post("/v1/score", json=body)
        assert reply.status_code == 200, reply.text
        result = reply.json()
    assert result["transaction_id"] == body[schema.id_column]
    assert 0 <= result["fraud_probability"] <= 1


def _source_row(frame: pd.DataFrame, schema: Schema, raw: pd.Series) -> dict:
    """The request values of one loaded row: entity parts split back out of the key."""
    values = {c: raw[c] for c in [*schema.categorical, schema.counterparty] if c is not None}
    parts = schema.entity_parts
    if len(parts) == 1:
        values[parts[0]] = raw[schema.entity_column]
    elif parts:
        split = str(raw[schema.entity_column]).split("|")
        values.update({p: None if v == "<NA>" else v for p, v in zip(parts, split, strict=True)})
    return {k: None if v == "<NA>" else v for k, v in values.items()}
