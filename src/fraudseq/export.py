"""`fraudseq export`: a model's window network as ONNX, with a JSON description of its inputs.

The graph is the one the live detector runs in ONNX Runtime (`serving.window_scorer.
export_onnx`), exported here with a dynamic batch axis. Before anything is written, ONNX
Runtime must give the torch network's logits, to EXPORT_TOLERANCE, on a random window of
every length 1..K; the largest difference measured is stored in inputs.json.

The directory written holds:

- ``model.onnx``: inputs numeric (B, K, F) float32, codes (B, K, C) int64 and lengths (B,)
  int64, windows left-aligned (oldest event first) and zero padded; output logits (B,).
  The fraud probability is sigmoid(logit); the model alerts when it is >= the threshold.
- ``inputs.json``: what each input column is: the numeric features' names, order and
  scaling (``clip(nan_to_num((raw - mean) / scale, 0), low, high)``), the categorical
  columns' vocabularies (code 0 padding, 1 unseen, 2 + i the vocabulary's i-th value), the
  window length, the padding, and the threshold.

The raw numeric features are computed by fraudseq's feature blocks from an account's
history (`fraudseq.features`); the graph covers what follows them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from fraudseq.artifacts import OS_FILES, atomic_directory
from fraudseq.errors import FraudseqError
from fraudseq.features.encoder import OOV_CODE, PAD_CODE
from fraudseq.fraud_model import FraudModel
from fraudseq.io import json_safe
from fraudseq.models.boosted import BOOSTER_FILE
from fraudseq.serving.window_scorer import (
    export_onnx,
    onnxruntime_module,
    random_windows,
    window_network,
)

log = logging.getLogger("fraudseq")

FORMATS = ("onnx",)
ONNX_FILE = "model.onnx"
INPUTS_FILE = "inputs.json"
EXPORT_FILES = (ONNX_FILE, INPUTS_FILE)
#: Largest |ONNX Runtime logit - torch logit| accepted on the parity check.
EXPORT_TOLERANCE = 1e-5
FORMAT_VERSION = 1


def export_model(model: FraudModel, out: str | Path, *, source: str | None = None) -> dict:
    """Write `model`'s window network as ONNX and its inputs' description to the directory
    `out` (atomically; `out` must be new, empty or an earlier export). Return the
    description. `source` names the model in messages and in the description."""
    out = Path(out)
    source = source or "the model"
    network = window_network(model)
    if network is None:
        raise FraudseqError(no_network(model, source))
    if onnxruntime_module() is None:
        raise FraudseqError(
            "onnxruntime is not installed, so the exported graph cannot be checked against "
            "torch: pip install onnxruntime"
        )
    check_export_dir(out)
    graph = export_onnx(network, model, batch_axis=True)
    difference = parity(graph, network, model)
    if not difference <= EXPORT_TOLERANCE:
        raise FraudseqError(
            f"the ONNX graph of {source} gives logits up to {difference:.3g} away from torch's "
            f"(more than {EXPORT_TOLERANCE:g}); nothing was written. Report this with the "
            "model's family and your torch and onnx versions"
        )
    description = describe(model, graph, difference, source)
    text = json.dumps(json_safe(description), indent=2, allow_nan=False) + "\n"
    with atomic_directory(out, check_export_dir) as staging:
        (staging / ONNX_FILE).write_bytes(graph)
        (staging / INPUTS_FILE).write_text(text)
    log.info(
        "exported %s's %s network to %s (ONNX Runtime within %.2g of torch on windows of "
        "every length 1..%d)",
        source, model.model, out, difference, model.window,
    )  # fmt: skip
    return description


def no_network(model: FraudModel, source: str) -> str:
    """Why `model` has no window network to export, and what there is instead."""
    family = model.model
    if family == "xgboost":
        return (
            f"{source} is an xgboost model: it has no window network to export as ONNX, and "
            f"nothing was written. Its trees are already in XGBoost's own format, "
            f"{BOOSTER_FILE} in the model directory (xgboost.Booster(model_file=...)), over "
            "fraudseq's window summaries; or export a network family (lstm, gru, rnn, "
            "lstm-attention, bilstm-attention)"
        )
    if family == "autoencoder":
        return (
            f"{source} is an autoencoder: its score is the rank of the network's "
            "reconstruction error among the validation windows', not a network output, so "
            "there is no window network to export as ONNX; nothing was written"
        )
    if family == "ensemble":
        members = ", ".join(model.members)
        return (
            f"{source} is an ensemble ({members}): its score combines its members, so there "
            "is no one window network to export as ONNX; nothing was written. Train a network "
            "family alone (e.g. --model lstm) to export it"
        )
    return f"{source} ({family}) has no window network to export as ONNX; nothing was written"


def check_export_dir(out: Path) -> None:
    """Raise unless `out` may be replaced by an export: it does not exist, or it is an empty
    directory or an earlier export (only its files)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FraudseqError(f"--out {out} exists and is not a directory; choose another name")
    others = sorted(e.name for e in out.iterdir() if e.name not in (*EXPORT_FILES, *OS_FILES))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise FraudseqError(
            f"--out {out} is not empty and not an earlier export (it holds {shown}); "
            "exporting would replace it and delete them: choose another directory, or empty "
            "it yourself"
        )


def parity(graph: bytes, network: torch.nn.Module, model: FraudModel, seed: int = 1) -> float:
    """The largest |logit difference| between ONNX Runtime running `graph` and torch running
    `network`, on one random window of every length 1..K, as one batch."""
    numeric, codes, lengths = random_windows(model, np.arange(1, model.window + 1), seed=seed)
    with torch.inference_mode():
        expected = network(*(torch.from_numpy(x) for x in (numeric, codes, lengths)))
    got = run_graph(graph, numeric, codes, lengths)
    return float(np.max(np.abs(got - expected.reshape(-1).numpy())))


def run_graph(graph: bytes, numeric, codes, lengths) -> np.ndarray:
    """An exported graph's logits for a batch of windows (its inputs only are fed)."""
    onnxruntime = onnxruntime_module()
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    feeds = {"numeric": numeric, "codes": codes, "lengths": lengths}
    names = [node.name for node in session.get_inputs()]
    return session.run(["logits"], {name: feeds[name] for name in names})[0].reshape(-1)


def describe(model: FraudModel, graph: bytes, difference: float, source: str) -> dict:
    """inputs.json: what the graph's inputs hold and how to build them."""
    encoder, k = model.encoder_, model.window
    n_numeric, n_categorical = encoder.n_numeric, len(encoder.schema.categorical)
    onnxruntime = onnxruntime_module()
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    graph_inputs = {node.name for node in session.get_inputs()}
    inputs = [
        {"name": "numeric", "dtype": "float32", "shape": ["batch", k, n_numeric]},
        {"name": "codes", "dtype": "int64", "shape": ["batch", k, n_categorical]},
        {"name": "lengths", "dtype": "int64", "shape": ["batch"]},
    ]
    low, high = encoder.feature_range
    return {
        "format": "fraudseq-onnx",
        "format_version": FORMAT_VERSION,
        "source": source,
        "family": model.model,
        "onnx_file": ONNX_FILE,
        "inputs": [i for i in inputs if i["name"] in graph_inputs],
        "output": {
            "name": "logits",
            "dtype": "float32",
            "shape": ["batch"],
            "probability": "sigmoid(logit)",
        },
        "threshold": model.threshold_,
        "alert": "probability >= threshold (null: the threshold alerts on nothing)",
        "window": k,
        "padding": {
            "alignment": "left: a window's events oldest first at positions 0..length-1, "
            "ending with the transaction scored",
            "numeric": 0.0,
            "codes": PAD_CODE,
            "lengths": "the number of real events, 1..window",
        },
        "numeric_features": [
            {
                "name": name,
                "mean": float(encoder.means_[j]),
                "scale": float(encoder.scales_[j]),
                "low": float(low[j]),
                "high": float(high[j]),
            }
            for j, name in enumerate(encoder.numeric_names_)
        ],
        "numeric_scaling": "clip(nan_to_num((raw - mean) / scale, nan=0, inf=0), low, high)",
        "categorical_features": [
            {"name": column, "vocabulary": encoder.vocabularies_[column]}
            for column in encoder.schema.categorical
        ],
        "categorical_codes": {
            "padding": PAD_CODE,
            "unseen": OOV_CODE,
            "vocabulary": "2 + the value's index in the column's vocabulary",
        },
        "raw_features": "computed by fraudseq's feature blocks from the account's history "
        f"(blocks: {', '.join(encoder.blocks)}); see fraudseq.features",
        "parity": {
            "max_abs_logit_difference": difference,
            "tolerance": EXPORT_TOLERANCE,
            "windows": f"one random window of every length 1..{k}",
        },
    }
