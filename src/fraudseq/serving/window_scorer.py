"""WindowScorer: a fitted model's logits for encoded windows, tuned for live scoring.

Torch window models whose `decision_function` is the plain network call are called directly,
without building a WindowSet. One window at a time, the network runs in ONNX Runtime: for
such a small call torch's per-operator dispatch costs more than the arithmetic
(benchmarks/serving.py prints the one-window time as "the network alone"). The ONNX graph
(one window, fixed shape: half the nodes of a graph with a dynamic batch axis) is exported
in memory when the detector loads, nothing is written or read from disk, and it is used only
if it gives the torch network's logits on random windows of every length (`verified`);
otherwise, or without onnxruntime, torch runs everything. Batches (score_batch, the occluded
copies behind reasons) run in torch.

ONNX Runtime's telemetry is switched off before it is imported (`onnxruntime_module`):
since 1.29 the Linux and macOS wheels otherwise resolve and post to a Microsoft endpoint and
keep an event cache under ~/.cache/Microsoft, which a scoring host must never do.

Every other family (boosted trees, autoencoder ranks, ensembles, ...) goes through its own
`decision_function` on a WindowSet, the same code batch scoring runs.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import threading
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from fraudseq.fraud_model import FraudModel
from fraudseq.models.neural import NeuralWindowModel
from fraudseq.training import padded_windows

log = logging.getLogger("fraudseq")

#: Windows per torch forward pass in batch scoring.
BATCH_CHUNK = 2048
#: Largest |ONNX logit - torch logit| accepted; probabilities then differ by < 1e-6 / 4.
ONNX_TOLERANCE = 2e-6


class WindowScorer:
    """The model's logits for encoded windows: `logit` of one, `logits` of many."""

    def __init__(self, model: FraudModel, *, onnx: bool = True) -> None:
        self.window = model.window
        self.model = model.model_
        self.session = None
        _single_threaded_boosters(self.model)
        self.network = window_network(model)
        if self.network is not None and onnx:
            with single_thread():
                self.session = onnx_session(self.network, model)

    def logit(self, numeric: np.ndarray, codes: np.ndarray) -> float:
        """The logit of one window: numeric (L, F) and codes (L, C), oldest event first."""
        if self.session is not None:
            return self.session.run_one(numeric, codes)
        length = len(numeric)
        padded_numeric = np.zeros((1, self.window, numeric.shape[1]), dtype=np.float32)
        padded_codes = np.zeros((1, self.window, codes.shape[1]), dtype=np.int64)
        padded_numeric[0, :length] = numeric
        padded_codes[0, :length] = codes
        return float(self.logits(padded_numeric, padded_codes, np.array([length]))[0])

    def logits(self, numeric: np.ndarray, codes: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Logits (float32 values) of B windows: numeric (B, K, F) and codes (B, K, C),
        left-aligned and zero padded, with their lengths (B,)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if self.network is not None:
            out = np.empty(len(lengths), dtype=np.float32)
            with torch.inference_mode():
                for start in range(0, len(lengths), BATCH_CHUNK):
                    stop = start + BATCH_CHUNK
                    logits = self.network(
                        torch.from_numpy(np.ascontiguousarray(numeric[start:stop])),
                        torch.from_numpy(np.ascontiguousarray(codes[start:stop])),
                        torch.from_numpy(lengths[start:stop]),
                    )
                    out[start:stop] = logits.reshape(-1).numpy()
            return out
        return self._decision_function(numeric, codes, lengths)

    def _decision_function(self, numeric, codes, lengths) -> np.ndarray:
        windows = padded_windows(numeric, codes, lengths, self.window)
        return np.asarray(self.model.decision_function(windows), dtype=np.float32).reshape(-1)


class OnnxNetwork:
    """A window network exported to ONNX and run by one single-threaded ORT session."""

    INPUTS = ("numeric", "codes", "lengths")

    def __init__(self, graph: bytes, window: int, n_numeric: int, n_categorical: int) -> None:
        onnxruntime = onnxruntime_module()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # a window is far too small to share out
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self._session = onnxruntime.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        self._shape = (window, n_numeric, n_categorical)
        self._local = threading.local()  # one set of bound buffers per scoring thread

    def run_one(self, numeric: np.ndarray, codes: np.ndarray) -> float:
        """The logit of one window (L rows, oldest first), through buffers bound to the
        session once per thread: no input or output arrays are made per call."""
        bound = getattr(self._local, "bound", None)
        if bound is None:
            bound = self._local.bound = self._bind()
        binding, padded_numeric, padded_codes, lengths, out = bound
        length = len(numeric)
        padded_numeric[0, :length] = numeric
        padded_numeric[0, length:] = 0.0
        padded_codes[0, :length] = codes
        padded_codes[0, length:] = 0
        lengths[0] = length
        self._session.run_with_iobinding(binding)
        return float(out[0])

    def _bind(self):
        window, n_numeric, n_categorical = self._shape
        arrays = {
            "numeric": np.zeros((1, window, n_numeric), dtype=np.float32),
            "codes": np.zeros((1, window, n_categorical), dtype=np.int64),
            "lengths": np.ones(1, dtype=np.int64),
        }
        out = np.zeros(1, dtype=np.float32)
        binding = self._session.io_binding()
        # The exporter drops an input the graph never reads (codes, without categorical
        # columns): bind only the graph's own inputs.
        inputs = {node.name for node in self._session.get_inputs()}
        for name, array in arrays.items():
            if name in inputs:
                binding.bind_input(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
        binding.bind_output("logits", "cpu", 0, out.dtype, out.shape, out.ctypes.data)
        return binding, *arrays.values(), out


def window_network(model: FraudModel) -> torch.nn.Module | None:
    """The torch network (in eval mode) whose logits are `model`'s decision function, or
    None for a family whose score is not one network's output (boosted trees, the
    autoencoder's rank-mapped error, ensembles)."""
    inner = model.model_
    if (
        isinstance(inner, NeuralWindowModel)
        and type(inner).decision_function is NeuralWindowModel.decision_function
    ):
        return inner.network.eval()
    return None


def export_onnx(network: torch.nn.Module, model: FraudModel, *, batch_axis: bool = False) -> bytes:
    """`network` (see :func:`window_network`) as an ONNX graph: inputs numeric (B, K, F)
    float32, codes (B, K, C) int64 and lengths (B,) int64 (windows left-aligned and zero
    padded), output logits (B,). Without `batch_axis` B is fixed at 1 (the live one-window
    graph, half the nodes); with it B is a dynamic axis named "batch" (`fraudseq export`).
    An input the graph never reads (codes, without categorical columns) is dropped by the
    exporter."""
    example = random_windows(model, np.array([model.window]), seed=0)
    dynamic = {name: {0: "batch"} for name in (*OnnxNetwork.INPUTS, "logits")}
    graph = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            tuple(torch.from_numpy(x) for x in example),
            graph,
            input_names=list(OnnxNetwork.INPUTS),
            output_names=["logits"],
            dynamic_axes=dynamic if batch_axis else None,
            dynamo=False,  # the TorchScript exporter: 0.3 s, and no onnxscript needed
        )
    return graph.getvalue()


def onnx_session(network: torch.nn.Module, model: FraudModel) -> OnnxNetwork | None:
    """`network` exported to ONNX in memory and verified against torch, or None (with the
    reason logged) when onnxruntime is missing, the export fails or the logits differ."""
    if onnxruntime_module() is None:
        log.info("onnxruntime is not installed; live scoring runs the network in torch")
        return None
    try:
        encoder = model.encoder_
        session = OnnxNetwork(
            export_onnx(network, model),
            model.window,
            encoder.n_numeric,
            len(encoder.cardinalities),
        )
    except Exception as err:  # ONNX is an optimisation only
        log.info("network not exported to ONNX (%s); live scoring runs it in torch", err)
        return None
    try:
        agrees = verified(session, network, model)
    except Exception as err:  # an ONNX session that cannot run is not used
        log.info("ONNX Runtime cannot run the exported network (%s); live scoring runs torch", err)
        return None
    if not agrees:
        log.warning("ONNX Runtime logits differ from torch's; live scoring runs torch")
        return None
    return session


@functools.cache
def onnxruntime_module():
    """onnxruntime with its telemetry off, or None when it is not installed (once per
    process: a detector asks when it checks for ORT and again when it makes the session).

    ORT_DISABLE_TELEMETRY=1 must be set before ONNX Runtime initialises to stop everything
    (uploader, device id, offline cache); ORT latches it for the process. A value the user
    set is kept. `disable_telemetry_events` also covers an ORT that was loaded before."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    try:
        import onnxruntime
    except ImportError:
        return None
    if os.environ["ORT_DISABLE_TELEMETRY"] == "1":
        onnxruntime.disable_telemetry_events()
    return onnxruntime


def verified(session: OnnxNetwork, network: torch.nn.Module, model: FraudModel) -> bool:
    """Whether the session gives the network's logits (within ONNX_TOLERANCE) on a random
    window of every length 1..K."""
    k = model.window
    numeric, codes, lengths = random_windows(model, np.arange(1, k + 1), seed=1)
    with torch.inference_mode():
        expected = network(*(torch.from_numpy(x) for x in (numeric, codes, lengths)))
    expected = expected.reshape(-1).numpy()
    got = [session.run_one(numeric[i, :n], codes[i, :n]) for i, n in enumerate(lengths)]
    return bool(np.allclose(got, expected, rtol=0.0, atol=ONNX_TOLERANCE))


def random_windows(model: FraudModel, lengths: np.ndarray, seed: int):
    """Random left-aligned, zero-padded windows (numeric, codes, lengths) of the model's
    shape: standard normal features and valid vocabulary codes."""
    rng = np.random.default_rng(seed)
    k, encoder = model.window, model.encoder_
    padding = np.arange(k)[None, :] >= lengths[:, None]
    numeric = rng.standard_normal((len(lengths), k, encoder.n_numeric)).astype(np.float32)
    codes = np.zeros((len(lengths), k, len(encoder.cardinalities)), dtype=np.int64)
    for j, size in enumerate(encoder.cardinalities):  # none without categorical columns
        codes[:, :, j] = rng.integers(1, max(size, 2), (len(lengths), k))
    numeric[padding] = 0.0
    codes[padding] = 0
    return numeric, codes, lengths.astype(np.int64)


@contextmanager
def single_thread():
    """Run torch on one intra-op thread for the duration (then restore the setting).

    One window is far too small to split across threads: with 2 threads a 16-step LSTM call
    spends its time synchronising, 10x slower than one thread on a busy machine. Servers
    should call `torch.set_num_threads(1)` at startup, which makes this a no-op.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _single_threaded_boosters(model) -> None:
    """Predict with one thread in every XGBoost booster of the window model (members too)."""
    booster = getattr(model, "booster_", None)
    if booster is not None and hasattr(booster, "set_param"):
        booster.set_param({"nthread": 1})
    for member in getattr(model, "members", None) or []:
        _single_threaded_boosters(member[1] if isinstance(member, tuple) else member)
