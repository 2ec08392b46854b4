"""The production loop of the README, end to end through the real service and CLI:
serve -> feedback -> export-history -> train a challenger -> serve with --shadow -> promote.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from fraudseq.serving.http.app import create_app
from test_api import KEY, as_json
from test_cli import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEYED = {"X-API-Key": KEY}
SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schemas" / "simulator.toml"
SPLIT = "2026-01-24"  # the champion trained before it; the service sees the rest


def service(champion, state, **options):
    return TestClient(
        create_app(
            model_dir=champion,
            state=f"sqlite:///{state}",
            api_key=KEY,
            detector_options={"clock": "data"},  # replayed January 2026 data
            **options,
        )
    )


def test_serve_feedback_export_train_shadow_promote(served_xgboost, tmp_path, monkeypatch):
    champion, frame = served_xgboost
    state = tmp_path / "state.db"
    days = frame["ts"].dt.normalize()
    live, later = frame[days < "2026-01-28"], frame[days >= "2026-01-28"]

    # 1. serve: every transaction until the 28th, in batches; feedback for the frauds and
    # every fifth other transaction (the rest become legitimate once the label delay passed)
    with service(champion, state) as client:
        rows = [as_json(r) for r in live.itertuples()]
        for start in range(0, len(rows), 500):
            reply = client.post("/v1/score/batch", json={"transactions": rows[start:start + 500]},
                                headers=KEYED)  # fmt: skip
            assert reply.status_code == 200, reply.text
        labelled = live[(live["is_fraud"] == 1) | (live.index % 5 == 0)]
        for tx_id, label in zip(labelled["tx_id"], labelled["is_fraud"], strict=True):
            body = {"transaction_id": tx_id, "label": int(label)}
            assert client.post("/v1/feedback", json=body, headers=KEYED).status_code == 200

    # 2. export-history: the scored transactions with their labels, as a training file
    history = tmp_path / "history.parquet"
    assert 0 == run(monkeypatch, "export-history", f"sqlite:///{state}", "--out", history,
        "--model", champion)  # fmt: skip
    exported = pd.read_parquet(history)
    assert set(exported["tx_id"]) <= set(live["tx_id"])
    sent = labelled.set_index("tx_id")["is_fraud"]
    got = exported.set_index("tx_id")["is_fraud"]
    assert (got.reindex(sent.index).dropna() == sent.reindex(got.index).dropna()).all()
    assert exported["is_fraud"].sum() == live["is_fraud"][live["tx_id"].isin(got.index)].sum()

    # 3. train a challenger on it
    challenger = tmp_path / "challenger"
    assert 0 == run(monkeypatch, "train", history, "--schema", SCHEMA_FILE, "--model", "xgboost",
        "--n-estimators", 20, "--valid-days", 3, "--out", challenger)  # fmt: skip

    # 4. serve with the challenger in shadow, then 5. promote it
    with service(champion, state, shadow_dir=challenger) as client:
        pair = client.app.state.serving.detector
        rows = [as_json(r) for r in later.itertuples()]
        first = client.post("/v1/score/batch", json={"transactions": rows[:200]}, headers=KEYED)
        assert {r["model_version"] for r in first.json()["results"]} == {
            pair.champion.model_version
        }
        new_version = pair.challenger.model_version
        assert pair._drained(30.0)
        metrics = client.get("/metrics", headers=KEYED).text
        assert "fraudseq_shadow_pairs_total 200.0" in metrics
        assert client.post("/v1/admin/promote").status_code == 401
        promoted = client.post("/v1/admin/promote", headers=KEYED)
        assert promoted.status_code == 200 and promoted.json()["champion"] == new_version
        after = client.post("/v1/score", json=rows[200], headers=KEYED).json()
        assert after["model_version"] == new_version
