"""The `transformer` family (issue 22, part 4): time-aware positions read from the window's
own rows, padding that cannot matter, a separable encoder, explanations with attention and
its hyperparameters on the command line. The common model suite (test_model_suite), live
parity (test_detector), ONNX export (test_export) and the attention networks' masks
(test_attention) take it through MODELS and their family lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TRAIN_UNTIL
from fraudseq.explain import explain
from fraudseq.features import FeatureEncoder
from fraudseq.fraud_model import FraudModel
from fraudseq.models.transformer import GAP_FEATURE, TransformerClassifier, gap_scaling
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import WindowSource
from test_cli import run

WINDOW = 8
TINY = {"epochs": 2, "hidden_size": 8, "window": WINDOW, "progress": False}


@pytest.fixture(scope="module")
def fitted(small_frame):
    return FraudModel("transformer", seed=1, **TINY).fit(
        small_frame, train_until=TRAIN_UNTIL, valid_days=7
    )


@pytest.fixture(scope="module")
def encoded(small_frame):
    frame = load_transactions(small_frame, Schema.simulator())
    encoder = FeatureEncoder(Schema.simulator(), blocks=("event", "recency")).fit(frame)
    return frame, encoder, WindowSource(encoder.transform(frame), WINDOW)


def test_positions_are_the_seconds_to_the_scored_event_from_the_window_rows(encoded):
    """log(1 + seconds from each event to the scored one), derived from the scaled gap
    column alone, is what the raw times give; 0 on padding."""
    frame, encoder, source = encoded
    assert encoder.numeric_names_.index(GAP_FEATURE) == gap_scaling(encoder)[0]
    net = TransformerClassifier(
        encoder.n_numeric,
        encoder.cardinalities,
        window=WINDOW,
        gap=gap_scaling(encoder),
        hidden_size=8,
    ).eval()
    positions = np.arange(0, len(source.starts), 97)
    numeric, categorical, lengths = source.batch(positions)
    index, _ = source.index(positions)
    with torch.no_grad():
        events = net.embed(numeric, categorical)
        valid = torch.arange(WINDOW)[None, :] < lengths[:, None]
        got = net.encoder.time_to_scored(events, valid).numpy()
    times = frame["ts"].to_numpy().view("int64")[source.encoded.order] / 1e9
    times = np.append(times, np.nan)  # the padding row
    row_times = times[index.numpy()]
    last = row_times[np.arange(len(positions)), lengths.numpy() - 1]
    expected = np.where(valid.numpy(), np.log1p(last[:, None] - row_times), 0.0)
    assert (expected[valid.numpy()] > 1).any()  # real gaps, not only zeros
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_nothing_in_padding_changes_a_logit_not_even_nan_or_huge_values(encoded):
    _, encoder, source = encoded
    torch.manual_seed(0)
    net = TransformerClassifier(
        encoder.n_numeric, encoder.cardinalities, window=WINDOW, gap=gap_scaling(encoder)
    ).eval()
    positions = np.arange(0, len(source.starts), 13)
    numeric, categorical, lengths = source.batch(positions)
    padding = torch.arange(WINDOW)[None, :] >= lengths[:, None]
    assert padding.any()
    noisy_numeric, noisy_categorical = numeric.clone(), categorical.clone()
    values = torch.tensor([float("nan"), float("inf"), -1e30, 1e6])
    noisy_numeric[padding] = values[torch.randint(0, 4, noisy_numeric[padding].shape)]
    noisy_categorical[padding] = 1
    with torch.no_grad():
        clean = net(numeric, categorical, lengths)
        noisy = net(noisy_numeric, noisy_categorical, lengths)
    assert torch.isfinite(clean).all()
    torch.testing.assert_close(noisy, clean, atol=0, rtol=0)


def test_the_encoder_is_a_separable_module_whose_weights_another_can_take(encoded):
    """What a pretrained encoder fills (issue 22, parts 1 and 3): the `encoder.` part of
    the state dict, without the values derived from the feature encoder."""
    _, encoder, source = encoded
    shape = (encoder.n_numeric, encoder.cardinalities)
    gap = gap_scaling(encoder)
    torch.manual_seed(0)
    first = TransformerClassifier(*shape, window=WINDOW, gap=gap).eval()
    torch.manual_seed(1)
    second = TransformerClassifier(*shape, window=WINDOW, gap=gap).eval()
    keys = first.state_dict().keys()
    assert {k.split(".")[0] for k in keys} == {"encoder", "head"}
    assert not any(k.endswith((".mean", ".scale", ".later")) for k in keys)
    second.encoder.load_state_dict(first.encoder.state_dict())
    numeric, categorical, lengths = source.batch(np.arange(50))
    with torch.no_grad():
        events = first.embed(numeric, categorical)
        ours, _ = first.encoder.forward_events(events, lengths)
        theirs, _ = second.encoder.forward_events(events, lengths)
        assert not torch.equal(
            first(numeric, categorical, lengths), second(numeric, categorical, lengths)
        )
    torch.testing.assert_close(theirs, ours, atol=0, rtol=0)


def test_explanations_report_the_transformers_attention(fitted, small_frame):
    tx = small_frame["tx_id"].iloc[12000]
    e = explain(fitted, small_frame, tx)
    scored = fitted.score(small_frame)
    expected = scored.loc[scored["transaction_id"] == tx, "score"].iloc[0]
    assert e.score == pytest.approx(float(expected), abs=1e-6)
    assert len(e.window) > 1
    assert "attention" in e.window.columns
    assert e.window["attention"].sum() == pytest.approx(1.0, abs=1e-5)
    assert (e.window["attention"] > 0).all()
    assert np.isfinite(e.window["attribution"]).all() and len(e.features) > 0


def test_a_transformer_without_the_recency_block_uses_step_positions_only(small_frame):
    model = FraudModel("transformer", seed=1, features=("event", "amount_history"), **TINY)
    model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)
    assert GAP_FEATURE not in model.encoder_.numeric_names_
    assert model.model_.network.encoder.time_to_scored.column is None
    scores = model.score(small_frame, start=TRAIN_UNTIL)["score"]
    assert np.isfinite(scores).all() and scores.nunique() > 1


def test_cli_trains_a_transformer_of_the_size_asked(small_csv, tmp_path, monkeypatch):
    out = tmp_path / "m"
    args = ["train", small_csv, "--out", out, "--model", "transformer", "--epochs", 1]
    args += ["--hidden-size", 16, "--transformer-layers", 1, "--transformer-heads", 4]
    args += ["--window", WINDOW, "--train-until", TRAIN_UNTIL]
    assert run(monkeypatch, *args) == 0
    model = FraudModel.load(out)
    params = model.get_params()
    assert (params["transformer_layers"], params["transformer_heads"]) == (1, 4)
    encoder = model.model_.network.encoder
    assert len(encoder.blocks) == 1 and encoder.blocks[0].heads == 4
    assert encoder.project.out_features == 16
