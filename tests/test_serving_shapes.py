"""Live scoring over HTTP for every shape of data the schema supports: a minimal schema,
numeric columns only (ULB credit-card-like), no id column, no entity (one stream), a
composite entity key with missing parts, and a numeric time column (PaySim-like hours).

For each shape a tiny XGBoost model is trained once; the app is started as `fraudseq serve`
starts it (the detector loaded from the model directory in the lifespan). The history is
replayed through the detector with the parity tests' helper (`test_state.replay`), the
scored period through /v1/score and /v1/score/batch with the shape's own request fields;
every probability equals batch `FraudModel.score` to 1e-6, and late events are reported
as `out_of_order`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraudseq.fraud_model import FraudModel
from fraudseq.schema import TIME_UNITS, Schema, load_transactions
from fraudseq.serving.http import create_app
from fraudseq.simulate import simulate
from fraudseq.transaction import request_columns as _request_columns
from test_state import replay

TOLERANCE = 1e-6
PERIOD = pd.Timestamp("2026-01-19")  # the scored period: its last three days
TRAIN_UNTIL = "2026-01-15"
ORIGIN = "2026-01-01"  # simulate() starts here; the origin of the numeric times


@dataclass
class Shape:
    schema: Schema
    frame: pd.DataFrame  # the data as a file would hold it, in time order
    integer_ids: bool = False  # send ids (or the row numbers) as JSON integers


def _base() -> pd.DataFrame:
    frame = simulate(accounts=30, days=21, seed=11)
    rng = np.random.default_rng(0)
    # Extra fraud labels: a tiny model needs some in training and validation.
    frame["is_fraud"] = (frame["is_fraud"].to_numpy() == 1) | (rng.random(len(frame)) < 0.04)
    frame["is_fraud"] = frame["is_fraud"].astype(int)
    assert frame["ts"].is_monotonic_increasing
    return frame


def _shapes() -> dict[str, Shape]:
    base = _base()
    rng = np.random.default_rng(1)
    n = len(base)
    seconds = (base["ts"] - pd.Timestamp(ORIGIN)).dt.total_seconds()
    ulb = pd.DataFrame(
        {
            "Time": seconds.to_numpy(dtype=float),
            "V1": np.log1p(base["amount"].to_numpy()) + rng.normal(size=n),
            "V2": base["ts"].dt.hour.to_numpy(dtype=float),
            "V3": np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n)),
            "Amount": base["amount"],
            "Class": base["is_fraud"],
        }
    )
    no_entity = base.drop(columns=["card_id", "fraud_type"]).assign(
        tx_id=np.arange(1001, 1001 + n)  # an integer id column
    )
    composite = base.assign(
        card1=base["card_id"].str[1:].astype(int),  # integers, as IEEE-CIS's card1
        addr1=base["country"].where(rng.random(n) > 0.2, None),  # some parts missing
    ).drop(columns=["card_id"])
    paysim = pd.DataFrame(
        {
            "tx_id": base["tx_id"],
            "step": (seconds // 3600).astype(int),  # hours since the origin: many ties
            "type": base["channel"],
            "amount": base["amount"],
            "nameOrig": base["card_id"],
            "nameDest": base["merchant_id"],
            "isFraud": base["is_fraud"],
        }
    )
    common = {"time": "ts", "amount": "amount", "label": "is_fraud"}
    return {
        "minimal": Shape(
            Schema(id="tx_id", entity="card_id", **common),
            base[["tx_id", "card_id", "ts", "amount", "is_fraud"]],
        ),
        "numeric-only": Shape(
            Schema(
                time="Time", amount="Amount", label="Class", numeric=("V1", "V2", "V3"),
                time_unit="s", time_origin=ORIGIN,
            ),
            ulb,
            integer_ids=True,
        ),
        "without-id": Shape(
            Schema(
                entity="card_id", categorical=("mcc", "channel"), counterparty="merchant_id",
                **common,
            ),
            base.drop(columns=["tx_id"]),
            integer_ids=True,
        ),
        "without-entity": Shape(
            Schema(id="tx_id", categorical=("country",), counterparty="merchant_id", **common),
            no_entity,
            integer_ids=True,
        ),
        "composite-entity": Shape(
            Schema(id="tx_id", entity=("card1", "addr1"), categorical=("mcc",), **common),
            composite,
        ),
        "numeric-time": Shape(
            Schema(
                id="tx_id", entity="nameOrig", time="step", amount="amount", label="isFraud",
                categorical=("type",), counterparty="nameDest", time_unit="h",
                time_origin=ORIGIN,
            ),
            paysim,
        ),
    }  # fmt: skip


SHAPES = _shapes()


def _json(value):
    """A frame's value as a JSON client sends it: numbers, strings, null, ISO times."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def requests_of(shape: Shape) -> list[dict]:
    """The frame's rows as request bodies with the shape's own fields."""
    schema = shape.schema
    fields = _request_columns(schema)
    rows = shape.frame.to_dict("records")
    out = []
    for i, row in enumerate(rows):
        body = {c: _json(row.get(c)) for c in fields if c in row}
        if schema.id is None:
            body[schema.id_column] = i + 1  # the file's 1-based data row
        elif shape.integer_ids:
            body[schema.id_column] = int(row[schema.id])
        out.append({c: body[c] for c in fields})
    return out


def later(shape: Shape, body: dict, hours: float, new_id) -> dict:
    """`body` moved `hours` in time (in the shape's own way of writing time), new id."""
    schema = shape.schema
    value = body[schema.time]
    if isinstance(value, str):
        moved = (pd.Timestamp(value) + pd.Timedelta(hours=hours)).isoformat()
    else:
        moved = value + hours * TIME_UNITS["h"] / TIME_UNITS[schema.time_unit]
        moved = int(moved) if float(moved).is_integer() else moved
    return {**body, schema.id_column: new_id, schema.time: moved}


@pytest.fixture(scope="module", params=list(SHAPES))
def served(request, tmp_path_factory):
    """(shape, model directory) of a tiny XGBoost model trained on the shape's data."""
    shape = SHAPES[request.param]
    model_dir = tmp_path_factory.mktemp(request.param) / "model"
    model = FraudModel("xgboost", n_estimators=20, max_depth=3, seed=1, progress=False)
    model.fit(shape.frame, shape.schema, train_until=TRAIN_UNTIL, valid_days=4).save(model_dir)
    return shape, Path(model_dir)


def test_live_scores_over_http_equal_batch_scores(served):
    shape, model_dir = served
    schema = shape.schema
    batch = FraudModel.load(model_dir).score(shape.frame)  # every row; earlier = history
    expected = dict(zip(batch["transaction_id"], batch["score"], strict=True))
    loaded = load_transactions(shape.frame, schema)  # time order is file order here
    ids = loaded[schema.id_column].tolist()
    period = (loaded[schema.time] >= PERIOD).to_numpy()
    labels = loaded[schema.label].astype(int).tolist()
    bodies = requests_of(shape)
    first = int(np.argmax(period))
    assert period[first:].all() and 100 < len(bodies) - first < len(bodies) // 3

    # As `fraudseq serve --clock data` loads it (the data is from January 2026).
    app = create_app(model_dir=model_dir, state="memory", detector_options={"clock": "data"})
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        detector = app.state.serving.detector
        detector.explain = "none"
        live = replay(detector, bodies[:first], labels[:first])  # the history, in order

        def feedback(replies, start):
            for reply, label in zip(replies, labels[start : start + len(replies)], strict=True):
                body = {"transaction_id": reply["transaction_id"], "label": label}
                assert client.post("/v1/feedback", json=body).status_code == 200

        replies = []
        singles = first + 40
        for i in range(first, singles):  # one at a time, each label fed back after it
            response = client.post("/v1/score", json=bodies[i])
            assert response.status_code == 200, response.text
            replies.append(response.json())
            feedback(replies[-1:], i)
        days = loaded[schema.time].dt.floor("D").to_numpy()
        start = singles
        while start < len(bodies):  # the rest as one batch per day, then its labels
            stop = start + int(np.sum(days[start:] == days[start]))
            response = client.post("/v1/score/batch", json={"transactions": bodies[start:stop]})
            assert response.status_code == 200, response.text
            replies.extend(response.json()["results"])
            feedback(replies[-(stop - start) :], start)
            start = stop
        assert [r["transaction_id"] for r in replies] == ids[first:]
        assert not any(r["out_of_order"] for r in replies)  # the file is in time order
        live.update({r["transaction_id"]: r["fraud_probability"] for r in replies})
        assert len(live) == len(expected) == len(bodies)
        difference = max(abs(live[i] - expected[i]) for i in ids)
        print(f"{schema.to_dict()}: max |live - batch| = {difference:.3g} over {len(ids)}")
        assert difference <= TOLERANCE
        assert batch["score"].nunique() > 1

        # Late events: older than the account's (or stream's) latest one.
        last = bodies[-1]
        new_id = (lambda k: 10**6 + k) if shape.integer_ids else (lambda k: f"LATE{k}")
        late = later(shape, last, -24, new_id(1))
        reply = client.post("/v1/score", json=late).json()
        assert reply["out_of_order"] is True and reply["transaction_id"] == str(new_id(1))
        assert client.post("/v1/score", json=late).json() == reply  # the retry: same flag
        # In a batch, relative to the history and to earlier transactions of the batch.
        pair = [later(shape, last, 2, new_id(2)), later(shape, last, 1, new_id(3)), late]
        results = client.post("/v1/score/batch", json={"transactions": pair}).json()["results"]
        assert [r["out_of_order"] for r in results] == [False, True, True]
        assert results[2] == reply
        again = client.post("/v1/score/batch", json={"transactions": pair}).json()["results"]
        assert again == results


def test_request_fields_of_each_shape(served):
    """The OpenAPI document lists the shape's request fields; a field of another shape is
    refused; a number for the time only with a [time] table, an ISO time always."""
    shape, model_dir = served
    schema = shape.schema
    bodies = requests_of(shape)
    app = create_app(model_dir=model_dir, state="memory", detector_options={"clock": "data"})
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()["components"]["schemas"]["Transaction"]
        assert list(spec["properties"]) == list(_request_columns(schema))
        required = [schema.id_column, *schema.entity_parts, schema.time, schema.amount]
        assert spec["required"] == required
        body = bodies[0]
        response = client.post("/v1/score", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["out_of_order"] is False
        if schema.id is None:  # the id column of another shape is unknown here
            wrong = {**body, "tx_id": "T1"}
            assert client.post("/v1/score", json=wrong).status_code == 422
        if not schema.entity_parts:
            wrong = {**body, "stream": "all"}
            assert client.post("/v1/score", json=wrong).status_code == 422
        if schema.time_unit is None:
            number = {**body, schema.time: 1767225600}
            refused = client.post("/v1/score", json=number)
            assert refused.status_code == 422 and "[time]" in refused.json()["message"]
        else:  # the same instant written as an ISO time is the same transaction
            iso = (
                pd.Timestamp(ORIGIN)
                + pd.Timedelta(body[schema.time] * TIME_UNITS[schema.time_unit])
            ).isoformat()
            retry = client.post("/v1/score", json={**body, schema.time: iso})
            assert retry.status_code == 200 and retry.json() == response.json()
        if len(schema.entity_parts) > 1:
            nobody = {**body, schema.id_column: "X1", **dict.fromkeys(schema.entity_parts)}
            refused = client.post("/v1/score", json=nobody)
            assert refused.status_code == 422
            assert "every part of the entity key" in refused.json()["message"]
            half = {**body, schema.id_column: "X2", schema.entity_parts[1]: None}
            assert client.post("/v1/score", json=half).status_code == 200
