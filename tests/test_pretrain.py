"""`fraudseq pretrain` and `fraudseq train --init` (issue 22, parts 1 and 3): a sequence
encoder pretrained without labels by masked-event modelling, its directory, and a classifier
fine-tuned from it that is a normal model everywhere else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import TRAIN_UNTIL
from fraudseq.errors import FraudseqError, ModelDirectoryError
from fraudseq.fraud_model import DEFAULT_FEATURES, FraudModel
from fraudseq.pretraining import HEAD, PretrainedEncoder, pretrain
from fraudseq.serving import Detector
from test_cli import run
from test_detector import PARITY_TOLERANCE
from test_state import accounts_slice, transactions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PRETRAIN_UNTIL = "2026-02-05"  # after TRAIN_UNTIL: the newest, unlabelled days too
SMALL = ("--hidden-size", 16, "--epochs", 3, "--seed", 1)


@pytest.fixture(scope="module")
def encoders(small_csv, tmp_path_factory, monkeypatch_module):
    """A transformer and an LSTM encoder pretrained by the CLI: {family: directory}."""
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for family in ("transformer", "lstm"):
        out[family] = root / family
        args = ("pretrain", small_csv, "--out", out[family], "--model", family)
        assert run(monkeypatch_module, *args, "--until", PRETRAIN_UNTIL, *SMALL) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def fine_tuned(encoders, small_csv, tmp_path_factory, monkeypatch_module):
    """A transformer fine-tuned from the pretrained encoder by `train --init`."""
    model = tmp_path_factory.mktemp("fine_tuned") / "model"
    args = ("train", small_csv, "--out", model, "--model", "transformer")
    args += ("--init", encoders["transformer"], "--train-until", TRAIN_UNTIL, "--epochs", 2)
    assert run(monkeypatch_module, *args) == 0
    return model


def test_the_encoder_directory_round_trips_and_is_checked_like_a_model(encoders, tmp_path):
    encoder = PretrainedEncoder.load(encoders["transformer"])
    config = json.loads((encoders["transformer"] / "model.json").read_text())
    manifest = json.loads((encoders["transformer"] / "manifest.json").read_text())
    assert manifest["kind"] == "encoder" and config["kind"] == "encoder"
    assert config["pretraining"]["until"] == "2026-02-05 00:00:00"
    assert config["pretraining"]["rows"] > 10_000 and len(config["history"]) >= 1
    assert "counterparty_risk" not in config["encoder"]["blocks"]  # built from labels
    # saved again, the same tensors under the classifier's own key names
    again = PretrainedEncoder.load(encoder.save(tmp_path / "again"))
    state, other = encoder.encoder_state(), again.encoder_state()
    assert state and all(torch.equal(state[k], other[k]) for k in state)
    assert all(k.startswith("encoder.") for k in state)  # the transformer's encoder module
    lstm = PretrainedEncoder.load(encoders["lstm"]).encoder_state()
    assert {k.split(".")[0] for k in lstm} == {"embed", "rnn"}
    # tampering is caught by the manifest, as for a model
    copy = tmp_path / "tampered"
    copy.mkdir()
    for f in encoders["lstm"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    text = (copy / "model.json").read_text()
    (copy / "model.json").write_text(text.replace('"mask_rate": 0.15', '"mask_rate": 0.5'))
    with pytest.raises(ModelDirectoryError, match="SHA-256 does not match"):
        PretrainedEncoder.load(copy)


def test_the_masked_objective_beats_the_majority_class_on_held_out_days(encoders):
    for family, directory in encoders.items():
        evaluation = PretrainedEncoder.load(directory).info["evaluation"]
        codes = {k: v for k, v in evaluation.items() if k.startswith("code:")}
        assert codes and evaluation["amount"]["events"] > 1000
        best = max(v["accuracy"] - v["majority"] for v in codes.values())
        print(family, {k: (round(v["accuracy"], 3), round(v["majority"], 3))
                       for k, v in evaluation.items()})  # fmt: skip
        assert best > 0.1, f"{family}: {codes}"
        assert np.mean([v["accuracy"] for v in codes.values()]) > np.mean(
            [v["majority"] for v in codes.values()]
        )


def _pretrained(frame, **options) -> dict[str, torch.Tensor]:
    model = FraudModel("lstm", hidden_size=8, epochs=1, seed=2, progress=False)
    encoder = pretrain(frame, None, model, windows_per_epoch=2000, **options)
    return {k: v for k, v in encoder.network.state_dict().items()}


def test_labels_are_never_read_and_later_rows_change_nothing(small_frame):
    frame = small_frame[small_frame["ts"] < pd.Timestamp("2026-01-20")]
    base = _pretrained(frame, until="2026-01-20")
    blank = frame.assign(is_fraud=np.nan, fraud_type=None)
    shuffled = frame.assign(is_fraud=np.random.default_rng(0).permutation(frame["is_fraud"]))
    for other in (blank, shuffled, frame.drop(columns=["is_fraud", "fraud_type"])):
        state = _pretrained(other, until="2026-01-20")
        assert all(torch.equal(base[k], state[k]) for k in base)
    later = _pretrained(small_frame, until="2026-01-20")
    assert all(torch.equal(base[k], later[k]) for k in base)


def test_init_starts_the_classifier_from_the_pretrained_encoder(encoders, small_frame):
    encoder = PretrainedEncoder.load(encoders["lstm"])
    # a learning rate of 1e-12 moves no weight by more than about 1e-11
    model = FraudModel.from_encoder(encoders["lstm"], epochs=1, learning_rate=1e-12, seed=5)
    assert (model.model, model.hidden_size) == ("lstm", 16)
    # the label block pretraining never has is added, fitted on the training rows
    assert model.features == (*encoder.feature_encoder.blocks, "counterparty_risk")
    model.fit(small_frame, train_until=TRAIN_UNTIL)
    fitted = model.model_.network.state_dict()
    mine, own = model.encoder_, encoder.feature_encoder
    at = [mine.numeric_names_.index(name) for name in own.numeric_names_]
    added = [i for i, name in enumerate(mine.numeric_names_) if name.startswith("cp_")]
    assert added and len(mine.numeric_names_) == len(at) + len(added)
    for fitted_value in ("means_", "scales_", "low_", "high_"):  # the encoder's scaling
        assert np.array_equal(getattr(mine, fitted_value)[at], getattr(own, fitted_value))
    assert mine.vocabularies_ == own.vocabularies_
    weight = "rnn.weight_ih_l0"  # the input layer: the encoder's columns, zeros for cp_
    n, m = len(own.numeric_names_), len(mine.numeric_names_)
    pretrained = encoder.encoder_state()[weight]
    assert torch.allclose(fitted[weight][:, at], pretrained[:, :n], atol=1e-8)
    assert torch.allclose(fitted[weight][:, m:], pretrained[:, n:], atol=1e-8)
    assert fitted[weight][:, added].abs().max() <= 1e-8
    for key, value in encoder.encoder_state().items():
        if key != weight:
            assert torch.allclose(fitted[key], value, atol=1e-8), key
    assert any(k.startswith(HEAD) for k in fitted)
    assert model.pretrained_["encoder"] == str(encoders["lstm"])
    # with the encoder's blocks only, the encoder's feature encoder as it is
    same = FraudModel.from_encoder(encoders["lstm"], features=own.blocks, epochs=1, seed=5)
    same.fit(small_frame, train_until=TRAIN_UNTIL)
    assert same.encoder_.to_json() == own.to_json()
    scratch = FraudModel("lstm", hidden_size=16, features=encoder.feature_encoder.blocks,
                         epochs=1, learning_rate=1e-12, seed=5)  # fmt: skip
    scratch.fit(small_frame, train_until=TRAIN_UNTIL)
    assert not torch.allclose(
        scratch.model_.network.state_dict()[weight], same.model_.network.state_dict()[weight]
    )


def test_an_ensemble_starts_its_member_of_the_encoders_family_from_it(
    encoders, small_frame, tmp_path
):
    encoder = PretrainedEncoder.load(encoders["lstm"])
    model = FraudModel.from_encoder(encoders["lstm"], "ensemble", epochs=1, learning_rate=1e-12,
                                    n_estimators=10, seed=5)  # fmt: skip
    model.fit(small_frame, train_until=TRAIN_UNTIL)
    members = dict(model.model_.members)
    assert set(members) == {"lstm", "xgboost"}
    fitted = members["lstm"].network.state_dict()
    for key, value in encoder.encoder_state().items():
        if key != "rnn.weight_ih_l0":  # widened for counterparty_risk: the test above
            assert torch.allclose(fitted[key], value, atol=1e-8), key
    assert model.pretrained_["encoder"] == str(encoders["lstm"])
    again = FraudModel.load(model.save(tmp_path / "ensemble"))
    assert again.pretrained_ == model.pretrained_
    part = accounts_slice(small_frame, 0, 20)
    assert np.allclose(again.score(part)["score"], model.score(part)["score"], atol=1e-6)
    with pytest.raises(FraudseqError, match="not a member of the ensemble"):
        FraudModel.from_encoder(encoders["lstm"], "ensemble", members=("xgboost", "gru"),
                                epochs=1).fit(small_frame, train_until=TRAIN_UNTIL)  # fmt: skip


def test_a_fine_tuned_model_scores_and_replays_live_as_in_batch(
    fine_tuned, small_csv, small_frame, tmp_path, monkeypatch
):
    scores = tmp_path / "scores.csv"
    assert run(monkeypatch, "score", fine_tuned, small_csv, "--out", scores,
               "--from", TRAIN_UNTIL) == 0  # fmt: skip
    assert pd.read_csv(scores)["score"].nunique() > 1
    parity = accounts_slice(small_frame, 200, 6)
    batch = FraudModel.load(fine_tuned).score(parity)
    txs, labels = transactions(parity)
    live = {}
    with Detector.load(fine_tuned, "memory", clock="data") as detector:
        detector.explain = "none"
        for tx, label in zip(txs, labels, strict=True):
            result = detector.score(tx)
            live[result["transaction_id"]] = result["fraud_probability"]
            detector.feedback(tx["tx_id"], label)
    difference = np.abs(batch["transaction_id"].map(live).to_numpy() - batch["score"].to_numpy())
    assert difference.max() <= PARITY_TOLERANCE


def test_mismatches_stop_before_training_naming_the_mismatch_and_the_fix(
    encoders, fine_tuned, small_csv, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "model"
    train = ("train", small_csv, "--out", out, "--epochs", 1)
    cases = [
        (("--model", "lstm", "--init", encoders["transformer"]),
         "pretrained for the transformer family, not lstm: train with --model transformer"),
        (("--model", "transformer", "--hidden-size", 64, "--init", encoders["transformer"]),
         "has hidden_size=16 but the model asks for 64: leave out --hidden-size"),
        (("--model", "lstm", "--window", 8, "--init", encoders["lstm"]),
         "has window=16 but the model asks for 8"),
        (("--model", "xgboost", "--init", encoders["lstm"]), "only, not xgboost"),
        (("--model", "transformer", "--init", fine_tuned),
         "is a model directory (from `fraudseq train`), not a pretrained encoder"),
    ]  # fmt: skip
    schema = tmp_path / "schema.toml"
    text = Path("schemas/simulator.toml").read_text()
    schema.write_text(text.replace('"country", ', "").replace(', "country"', ""))
    assert "country" not in schema.read_text().split("categorical")[1].split("\n")[0]
    cases.append(
        (("--model", "lstm", "--schema", schema, "--init", encoders["lstm"]),
         "the schema's categorical lacks column country that the encoder was pretrained on")
    )  # fmt: skip
    for args, message in cases:
        assert run(monkeypatch, *train, *args) == 1
        assert message in " ".join(capsys.readouterr().err.split()), args
        assert not out.exists()
    # a model's commands refuse an encoder
    assert run(monkeypatch, "score", encoders["lstm"], small_csv, "--out", tmp_path / "s.csv") == 1
    assert "a pretrained encoder (from `fraudseq pretrain`), not a model" in " ".join(
        capsys.readouterr().err.split()
    )
    without = tuple(b for b in DEFAULT_FEATURES if b != "novelty")
    with pytest.raises(FraudseqError, match="feature blocks .* without novelty"):
        FraudModel.from_encoder(encoders["lstm"], features=without).fit(small_csv)
