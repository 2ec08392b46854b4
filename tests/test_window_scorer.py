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
