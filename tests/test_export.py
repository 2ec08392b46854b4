"""`fraudseq export`: the window network as ONNX with its inputs described; parity with
torch on random windows of every length, for every family with a window network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fraudseq.errors import FraudseqError
from fraudseq.export import EXPORT_TOLERANCE, export_model, run_graph
from fraudseq.fraud_model import FraudModel
from fraudseq.serving.window_scorer import random_windows
from test_cli import run
from test_state import TINY, TRAIN_UNTIL, accounts_slice

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NETWORK_FAMILIES = ("lstm", "gru", "rnn", "lstm-attention", "bilstm-attention", "transformer")


@pytest.fixture(scope="module")
def frame(small_frame):
    return accounts_slice(small_frame, 0, 60)


def fitted(family: str, frame, **params) -> FraudModel:
    return FraudModel(family, seed=2, **{**TINY, **params}).fit(
        frame, train_until=TRAIN_UNTIL, valid_days=7
    )


def torch_logits(model, numeric, codes, lengths) -> np.ndarray:
    with torch.inference_mode():
        out = model.model_.network(*(torch.from_numpy(x) for x in (numeric, codes, lengths)))
    return out.reshape(-1).numpy()


@pytest.mark.parametrize("family", NETWORK_FAMILIES)
def test_onnx_matches_torch_on_windows_of_every_length(family, frame, tmp_path):
    model = fitted(family, frame, window=8)
    description = export_model(model, tmp_path / "onnx")
    graph = (tmp_path / "onnx" / "model.onnx").read_bytes()
    assert description["parity"]["max_abs_logit_difference"] <= EXPORT_TOLERANCE
    rng = np.random.default_rng(5)
    # every length 1..K, three random windows each, in one batch (a dynamic batch axis)
    lengths = np.repeat(np.arange(1, model.window + 1), 3)
    numeric, codes, lengths = random_windows(model, rng.permutation(lengths), seed=21)
    expected = torch_logits(model, numeric, codes, lengths)
    got = run_graph(graph, numeric, codes, lengths)
    np.testing.assert_allclose(got, expected, rtol=0, atol=EXPORT_TOLERANCE)
    # and one window at a time
    for i in (0, len(lengths) - 1):
        one = run_graph(graph, numeric[i : i + 1], codes[i : i + 1], lengths[i : i + 1])
        assert abs(float(one[0]) - float(expected[i])) <= EXPORT_TOLERANCE


def test_inputs_json_describes_features_scaling_window_and_padding(frame, tmp_path):
    model = fitted("lstm", frame)
    export_model(model, tmp_path / "onnx", source="m")
    described = json.loads((tmp_path / "onnx" / "inputs.json").read_text())
    encoder = model.encoder_
    assert described["window"] == model.window
    assert [f["name"] for f in described["numeric_features"]] == encoder.numeric_names_
    assert [f["mean"] for f in described["numeric_features"]] == pytest.approx(encoder.means_)
    assert [f["scale"] for f in described["numeric_features"]] == pytest.approx(encoder.scales_)
    categorical = [f["name"] for f in described["categorical_features"]]
    assert categorical == list(encoder.schema.categorical)
    assert (
        described["categorical_features"][0]["vocabulary"]
        == (encoder.vocabularies_[encoder.schema.categorical[0]])
    )
    assert described["padding"]["numeric"] == 0.0 and described["padding"]["codes"] == 0
    assert [i["name"] for i in described["inputs"]] == ["numeric", "codes", "lengths"]
    assert described["inputs"][0]["shape"] == ["batch", model.window, encoder.n_numeric]
    assert described["threshold"] == pytest.approx(model.threshold_)


def test_the_graph_scores_real_windows_as_the_model_does(frame, tmp_path):
    """Encoded windows of real transactions through the graph give the model's scores."""
    from fraudseq.schema import load_transactions
    from fraudseq.training import WindowSource

    model = fitted("gru", frame)
    export_model(model, tmp_path / "onnx")
    loaded = load_transactions(frame, model.schema_)
    rows = np.flatnonzero((loaded["ts"] >= TRAIN_UNTIL).to_numpy())
    source = WindowSource(model.encoder_.transform(loaded), model.window)
    numeric, codes, lengths = source.batch(source.positions_of(rows))
    got = run_graph(
        (tmp_path / "onnx" / "model.onnx").read_bytes(),
        *(x.numpy() for x in (numeric, codes, lengths)),
    )
    expected = model.probabilities(loaded, rows)
    np.testing.assert_allclose(1 / (1 + np.exp(-got.astype(np.float64))), expected, atol=1e-6)


def test_cli_exports_and_refuses_to_overwrite_data(tiny_lstm_dir, tmp_path, monkeypatch):
    out = tmp_path / "export"
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["inputs.json", "model.onnx"]
    # an earlier export is replaced
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", out, "--format", "onnx") == 0
    # a directory holding anything else is not
    other = tmp_path / "data"
    other.mkdir()
    (other / "keep.csv").write_text("x\n")
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", other) == 1
    assert (other / "keep.csv").exists()
    # nor the model directory, nor a directory inside it
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", tiny_lstm_dir) == 1
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", tiny_lstm_dir / "onnx") == 1
    assert not (tiny_lstm_dir / "onnx").exists()
    assert run(monkeypatch, "export", tiny_lstm_dir, "--out", tmp_path / "x", "--format", "pt") == 1


def test_xgboost_says_what_there_is_instead(tiny_xgboost, tmp_path, monkeypatch, capsys):
    model_dir, _ = tiny_xgboost
    assert run(monkeypatch, "export", model_dir, "--out", tmp_path / "onnx") == 1
    err = capsys.readouterr().err
    assert "no window network" in err and "booster.ubj" in err and "nothing was written" in err
    assert not (tmp_path / "onnx").exists()


@pytest.mark.parametrize("family", ["autoencoder", "ensemble"])
def test_families_without_one_network_are_refused(family, frame, tmp_path):
    model = fitted(family, frame, members=("lstm", "xgboost"))
    with pytest.raises(FraudseqError, match="nothing was written"):
        export_model(model, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
