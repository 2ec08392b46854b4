"""WindowScorer: one-window logits run in ONNX Runtime when its graph matches torch, and in
torch otherwise; batches run in torch; all give the network's logits."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fraudseq.fraud_model import FraudModel
from fraudseq.serving import window_scorer
from fraudseq.serving.window_scorer import ONNX_TOLERANCE, WindowScorer, random_windows
from test_state import TINY, TRAIN_UNTIL, accounts_slice

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["lstm", "bilstm-attention"])
def model(request, small_frame):
    """A recurrent network and a packed bidirectional one with attention."""
    return FraudModel(request.param, seed=2, **TINY).fit(
        accounts_slice(small_frame, 0, 60), train_until=TRAIN_UNTIL, valid_days=7
    )


def torch_logits(model, numeric, codes, lengths) -> np.ndarray:
    with torch.inference_mode():
        out = model.model_.network(*(torch.from_numpy(x) for x in (numeric, codes, lengths)))
    return out.reshape(-1).numpy()


def test_onnx_runs_single_windows_with_torchs_logits(model):
    scorer = WindowScorer(model)
    assert scorer.session is not None, "the network should export to ONNX and verify"
    lengths = np.array([1, 2, model.window, model.window // 2, model.window])
    numeric, codes, lengths = random_windows(model, lengths, seed=11)
    expected = torch_logits(model, numeric, codes, lengths)
    for i, length in enumerate(lengths):  # a long window first: the buffers are reused
        got = scorer.logit(numeric[i, :length], codes[i, :length])
        assert got == pytest.approx(float(expected[i]), abs=ONNX_TOLERANCE)


def test_batches_run_in_torch(model):
    scorer = WindowScorer(model)
    lengths = np.random.default_rng(0).integers(1, model.window + 1, 300)
    numeric, codes, lengths = random_windows(model, lengths, seed=12)
    np.testing.assert_array_equal(
        scorer.logits(numeric, codes, lengths), torch_logits(model, numeric, codes, lengths)
    )


def test_failed_export_falls_back_to_torch(model, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter unavailable")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with caplog.at_level("INFO", logger="fraudseq"):
        scorer = WindowScorer(model)
    assert scorer.session is None
    assert "exporter unavailable" in caplog.text
    numeric, codes, lengths = random_windows(model, np.array([model.window]), seed=13)
    logit = scorer.logit(numeric[0], codes[0])
    assert logit == float(torch_logits(model, numeric, codes, lengths)[0])


def test_graph_that_disagrees_with_torch_is_not_used(model, monkeypatch, caplog):
    run_one = window_scorer.OnnxNetwork.run_one
    monkeypatch.setattr(
        window_scorer.OnnxNetwork,
        "run_one",
        lambda self, *a: run_one(self, *a) + 10 * ONNX_TOLERANCE,
    )
    with caplog.at_level("WARNING", logger="fraudseq"):
        assert WindowScorer(model).session is None
    assert "differ" in caplog.text


@pytest.mark.parametrize("model", ["lstm"], indirect=True)  # one family is enough here
def test_onnx_runtime_telemetry_is_off(model, tmp_path):
    """ONNX Runtime >= 1.29 on Linux keeps a telemetry cache under ~/.cache/Microsoft and
    posts events to Microsoft unless ORT_DISABLE_TELEMETRY=1 is set before it initialises.
    A fresh process (ORT not yet loaded) builds a session: nothing lands in its home."""
    model.save(tmp_path / "model")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    script = (
        "import os, sys\n"
        "from fraudseq.fraud_model import FraudModel\n"
        "from fraudseq.serving.window_scorer import WindowScorer\n"
        "scorer = WindowScorer(FraudModel.load(sys.argv[1]))\n"
        "assert scorer.session is not None\n"
        "print(os.environ['ORT_DISABLE_TELEMETRY'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
    assert list(home.rglob("*")) == [], "ONNX Runtime wrote telemetry files"


@pytest.mark.parametrize("numeric", [(), ("risk",)], ids=["minimal", "numeric-only"])
def test_a_model_without_categorical_columns_loads_and_scores(numeric, small_frame, tmp_path):
    """No categorical (or counterparty) column: the codes have width 0, the exported graph
    drops its unused codes input, and a batch decodes states with no code columns. Before,
    `random_windows` failed with "need at least one array to stack" at load."""
    from fraudseq.schema import Schema
    from fraudseq.serving import Detector

    frame = accounts_slice(small_frame, 0, 40)[["tx_id", "card_id", "ts", "amount", "is_fraud"]]
    frame = frame.assign(risk=np.linspace(-1.0, 1.0, len(frame)))
    schema = Schema(
        id="tx_id", entity="card_id", time="ts", amount="amount", label="is_fraud",
        numeric=numeric,
    )  # fmt: skip
    model = FraudModel("lstm", seed=2, **TINY).fit(
        frame, schema, train_until=TRAIN_UNTIL, valid_days=7
    )
    assert model.encoder_.cardinalities == []
    numeric_windows, codes, _ = random_windows(model, np.array([1, model.window]), seed=0)
    assert codes.shape == (2, model.window, 0) and numeric_windows.shape[:2] == (2, model.window)
    scorer = WindowScorer(model)
    assert scorer.session is not None, "the network should export to ONNX and verify"
    model.save(tmp_path / "model")
    later = frame[frame["ts"] >= TRAIN_UNTIL].head(30)
    txs = [
        {"tx_id": r.tx_id, "card_id": r.card_id, "ts": r.ts.isoformat(), "amount": r.amount}
        | ({"risk": r.risk} if numeric else {})
        for r in later.itertuples()
    ]
    with (
        Detector.load(tmp_path / "model", clock="data") as one,
        Detector.load(tmp_path / "model", clock="data") as many,
    ):
        single = [one.score(tx) for tx in txs]
        batch = many.score_batch(txs[:15]) + many.score_batch(txs[15:])
    for a, b in zip(single, batch, strict=True):
        assert 0.0 <= a["fraud_probability"] <= 1.0
        assert a["fraud_probability"] == pytest.approx(b["fraud_probability"], abs=1e-6)
