"""Detector: a trained FraudModel + per-account live state, scoring one transaction at a time.

>>> detector = Detector.load("model", state="sqlite:///state.db")          # doctest: +SKIP
>>> detector.score({"tx_id": "T1", "card_id": "C1", "ts": "2026-02-01T10:00:00Z",
...                 "amount": 12.5, "mcc": "5411", ...})                     # doctest: +SKIP
{'transaction_id': 'T1', 'fraud_probability': 0.0123, 'score': 1.23, 'alert': False, ...}
>>> detector.feedback("T1", 0)                                              # doctest: +SKIP

Parity: replaying a file through `score` in time order gives the probabilities of batch
`FraudModel.score` on that file (to float rounding, tested at 1e-6 for every model family),
when labels are fed back with `feedback` as they become known (batch features use labels
older than the label delay; so do the live counterparty features).

Semantics:

- **Idempotency.** The transaction id is the key. Scoring an id again with the same content
  returns the stored result and changes nothing; the same id with different content raises
  `ConflictError`.
- **Ties and order.** Transactions of an account are appended in arrival order; equal
  timestamps are fine (batch breaks ties by file order, live by arrival).
- **Out-of-order transactions.** A transaction older than the account's latest one is scored
  against the account's current state (its history features see every stored event; the
  time since the previous transaction counts as 0) and is *not* inserted into the account's
  history, so the account's later scores are as if it never came. It is recorded (a retry
  returns the same result, feedback works) and counts in its counterparty's day bucket.
- **Reasons.** For alerts, `reasons` lists the strongest reasons towards fraud from
  `fraudseq.explain` (occlusion of window events and current features, ~ms per alert);
  other transactions get ``[]``. Set `Detector.explain` to "all" or "none" to change that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fraudseq.artifacts import MANIFEST, MODEL_JSON
from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.features import EncodedFrame
from fraudseq.fraud_model import FraudModel
from fraudseq.models.neural import NeuralWindowModel
from fraudseq.schema import Schema
from fraudseq.serving.live_features import (
    AccountState,
    LiveEncoder,
    LiveTransaction,
    parse_transaction,
)
from fraudseq.serving.state import Snapshot, StateStore, Update, open_store
from fraudseq.training import WindowSet, WindowSource

log = logging.getLogger("fraudseq")

STATE_FORMAT = 1
EXPLAIN_MODES = ("alerts", "all", "none")


class ConflictError(FraudseqError):
    """A transaction id was scored before with different content."""


class UnknownTransactionError(FraudseqError):
    """Feedback for a transaction id this detector never scored (or whose record expired)."""


class Detector:
    """Score live transactions with a FraudModel and per-account state in a StateStore."""

    #: Which transactions get `reasons`: "alerts" (default), "all" or "none".
    explain: str = "alerts"

    def __init__(
        self,
        model: FraudModel,
        store: StateStore,
        *,
        model_version: str,
        min_history: int = 3,
    ) -> None:
        model._check_fitted()
        if min_history < 0:
            raise FraudseqError(f"min_history must be >= 0, got {min_history}")
        self.model = model
        self.schema: Schema = model.schema_
        self.model_version = model_version
        self.threshold = float(model.threshold_)
        self.min_history = min_history
        self.live = LiveEncoder(model.encoder_, model.window)
        self.store = store
        self._window = _WindowScorer(model)
        self._explain_failed = False
        fingerprint = self.fingerprint()
        stored = store.meta("state_fingerprint", fingerprint)
        if stored != fingerprint:
            raise FraudseqError(
                f"state store {store.url} holds state built for another model's features "
                f"(fingerprint {stored}, this model {fingerprint}). Account state is encoded "
                f"with the model's encoder, so each model needs its own store: use a new SQLite "
                f"file or Redis prefix, and warm it by replaying recent transactions."
            )

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        state: str | StateStore = "memory",
        *,
        min_history: int = 3,
        ttl_seconds: int | None = None,
    ) -> Detector:
        """Load a model directory (verified against its manifest) and open the state store:
        "memory", "sqlite:///relative.db" / "sqlite:////absolute.db", "redis://host:port/db",
        or a StateStore."""
        model = FraudModel.load(model_dir)
        manifest = json.loads((Path(model_dir) / MANIFEST).read_text())
        version = manifest["files"][MODEL_JSON][:12]
        if not isinstance(state, str) and ttl_seconds is not None:
            raise FraudseqError("ttl_seconds applies to a store URL; configure the store itself")
        live = LiveEncoder(model.encoder_, model.window)
        store = open_store(
            state, ttl_seconds=ttl_seconds, retention_days=live.counterparty_retention_days
        )
        try:
            return cls(model, store, model_version=version, min_history=min_history)
        except BaseException:
            if isinstance(state, str):
                store.close()
            raise

    def fingerprint(self) -> str:
        """What the stored state depends on: the encoder, the window and the state format."""
        content = json.dumps(
            {
                "state_format": STATE_FORMAT,
                "window": self.model.window,
                "schema": self.schema.to_dict(),
                "encoder": self.model.encoder_.to_json(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    # -- scoring -------------------------------------------------------------------------
    def score(self, tx: dict) -> dict:
        """Score one transaction (a dict keyed by the schema's column names, label omitted)
        and add it to its account's state. See the module docstring for the result."""
        return self._score(parse_transaction(tx, self.schema))

    def score_batch(self, txs: list[dict]) -> list[dict]:
        """Score transactions in order, with the same results as calling `score` on each.

        Every transaction is validated before any is scored, so invalid input changes no
        state; the error names the position of the first invalid one.
        """
        if not isinstance(txs, list | tuple):
            raise DataValidationError(
                f"score_batch takes a list of transactions, got {type(txs).__name__}"
            )
        parsed = []
        for i, tx in enumerate(txs):
            try:
                parsed.append(parse_transaction(tx, self.schema))
            except DataValidationError as err:
                raise DataValidationError(f"transaction at position {i}: {err}") from None
        return [self._score(tx) for tx in parsed]

    def _score(self, tx: LiveTransaction) -> dict:
        counterparty = tx.counterparty if self.live.counterparty else None
        update = self.store.transact(
            tx.id,
            tx.entity,
            counterparty,
            self.live.counterparty_days(tx),
            lambda snapshot: self._compute(tx, snapshot),
        )
        return {"transaction_id": tx.id, **update.result}

    def _compute(self, tx: LiveTransaction, snapshot: Snapshot) -> Update:
        if snapshot.record is not None:
            if snapshot.record.get("digest") != tx.digest:
                raise ConflictError(
                    f"transaction id {tx.id!r} was already scored with different content; "
                    f"a retry must resend the same transaction, a new transaction needs a new id"
                )
            return Update(result=dict(snapshot.record["result"]))
        live = self.live
        account = (
            AccountState.from_bytes(snapshot.account)
            if snapshot.account is not None
            else live.empty_state()
        )
        features = live.encode(tx, account, snapshot.counterparty)
        numeric, codes = live.window_rows(account, features)
        with single_thread():
            logit = self._window.logit(numeric, codes)
        probability = _sigmoid(logit)
        alert = probability >= self.threshold
        result = {
            "fraud_probability": probability,
            "score": round(100.0 * probability, 2),
            "alert": bool(alert),
            "threshold": self.threshold,
            "insufficient_history": account.n < self.min_history,
            "model_version": self.model_version,
            "reasons": [],
        }
        if self.explain == "all" or (self.explain == "alerts" and alert):
            with single_thread():
                result["reasons"] = self._reasons(tx, account, numeric, codes)
        in_order = account.n == 0 or tx.time_ns >= account.last_time
        if not in_order:
            log.info(
                "transaction %s of %s is older than the account's latest; scored against the "
                "current state and not added to its history",
                tx.id,
                tx.entity,
            )
        counted = live.counterparty
        record = {
            "digest": tx.digest,
            "entity": tx.entity,
            "time_ns": tx.time_ns,
            "counterparty": tx.counterparty if counted else None,
            "day": tx.day,
            "inserted": in_order,
            "counted": counted,
            "label": None,
            "result": result,
        }
        return Update(
            result=result,
            record=record,
            account=live.append(account, tx, features).to_bytes() if in_order else None,
            counterparty_day=tx.day if counted else None,
        )

    # -- feedback ------------------------------------------------------------------------
    def feedback(self, transaction_id: str, label: int) -> dict:
        """Record the 0/1 label of a scored transaction (idempotent; a new label replaces the
        old one). The counterparty features see it once it is older than the label delay,
        and it is kept in the store's labels table for retraining."""
        if isinstance(transaction_id, bool) or not isinstance(transaction_id, str | int):
            raise DataValidationError(
                f"transaction_id must be text, got {type(transaction_id).__name__}"
            )
        transaction_id = str(transaction_id)
        value = _label(label)
        change = self.store.label(transaction_id, value)
        if change is None:
            raise UnknownTransactionError(
                f"transaction id {transaction_id!r} was never scored by this detector (or its "
                f"record expired); score it first"
            )
        return {
            "transaction_id": transaction_id,
            "label": value,
            "previous_label": change.previous,
            "changed": change.changed,
        }

    # -- lifecycle -----------------------------------------------------------------------
    def ready(self) -> bool:
        """True when the model is loaded and the state store answers."""
        return hasattr(self.model, "model_") and self.store.ping()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- explanations (hook) -------------------------------------------------------------
    def _reasons(
        self, tx: LiveTransaction, account: AccountState, numeric: np.ndarray, codes: np.ndarray
    ) -> list[dict]:
        """Top reasons from `fraudseq.explain` on the exact window scored; [] when the
        explanations module is unavailable or fails (logged once)."""
        try:
            from fraudseq.explain import explain_rows, top_reasons

            frame = self._window_frame(tx, account, len(numeric))
            n = len(frame)
            encoded = EncodedFrame(
                numeric, codes, np.arange(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
            )
            explanation = explain_rows(self.model, frame, encoded, np.array([n - 1]))[0]
            return json.loads(json.dumps(top_reasons(explanation), default=str))
        except Exception as err:  # explanations must never fail a score
            if not self._explain_failed:
                self._explain_failed = True
                log.warning("reasons unavailable (fraudseq.explain): %s", err)
            return []

    def _window_frame(self, tx: LiveTransaction, account: AccountState, length: int):
        """The window's transactions as a frame with the schema's columns; earlier events
        carry their id, time and amount (categorical values are not stored: missing)."""
        s = self.schema
        earlier = length - 1
        ids = account.ids[len(account.ids) - earlier :] if earlier else []
        times = account.times[len(account.times) - earlier :] if earlier else []
        amounts = account.amounts[len(account.amounts) - earlier :] if earlier else []
        columns = {
            s.id: [*ids, tx.id],
            s.entity: [tx.entity] * length,
            s.time: pd.to_datetime(np.array([*times, tx.time_ns], dtype="datetime64[ns]")),
            s.amount: np.array([*amounts, tx.amount], dtype=np.float64),
        }
        for j, c in enumerate(s.categorical):
            columns[c] = [None] * earlier + [tx.categorical[j]]
        for j, c in enumerate(s.numeric):
            columns[c] = [math.nan] * earlier + [tx.numeric[j]]
        if s.counterparty and s.counterparty not in columns:
            columns[s.counterparty] = [None] * earlier + [tx.counterparty]
        return pd.DataFrame(columns)


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


class _WindowScorer:
    """The model's logit for one window of encoded rows.

    Torch window models whose `decision_function` is the plain network call get the network
    called directly under inference mode (about 10x less overhead than building a WindowSet);
    every other family (boosted trees, autoencoder ranks, ensembles, ...) goes through its
    own `decision_function` on a one-window WindowSet, the same code batch scoring runs.
    """

    def __init__(self, model: FraudModel, *, trace: bool = True) -> None:
        self.window = model.window
        self.model = model.model_
        self.network = None
        self.traced = False
        _single_threaded_boosters(self.model)
        if (
            isinstance(self.model, NeuralWindowModel)
            and type(self.model).decision_function is NeuralWindowModel.decision_function
        ):
            self.model.network.eval()
            self.network = self.model.network
            self.lengths = [torch.tensor([n]) for n in range(self.window + 1)]
            if trace:
                with single_thread():
                    traced = _trace(self.model.network, model)
                if traced is not None:
                    self.network, self.traced = traced, True

    def logit(self, numeric: np.ndarray, codes: np.ndarray) -> float:
        length = len(numeric)
        if self.network is not None:
            padded_numeric = np.zeros((1, self.window, numeric.shape[1]), dtype=np.float32)
            padded_codes = np.zeros((1, self.window, codes.shape[1]), dtype=np.int64)
            padded_numeric[0, :length] = numeric
            padded_codes[0, :length] = codes
            with torch.inference_mode():
                out = self.network(
                    torch.from_numpy(padded_numeric),
                    torch.from_numpy(padded_codes),
                    self.lengths[length],
                )
            return float(out.reshape(-1)[0])
        encoded = EncodedFrame(
            numeric,
            codes,
            np.arange(length, dtype=np.int64),
            np.zeros(length, dtype=np.int64),
        )
        windows = WindowSet(WindowSource(encoded, self.window), np.array([length - 1]))
        return float(np.asarray(self.model.decision_function(windows)).reshape(-1)[0])


def _trace(network: torch.nn.Module, model: FraudModel):
    """The network traced to TorchScript for one-window calls (no Python per module: about
    a third less time per call), or None. The trace is kept only if it gives the eager
    network's logits on random windows of every length 1..K; otherwise the eager network
    is used (e.g. networks whose control flow depends on the window's length)."""
    k = model.window
    n_numeric = model.encoder_.n_numeric
    cardinalities = model.encoder_.cardinalities
    generator = torch.Generator().manual_seed(0)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            example = (
                torch.zeros(1, k, n_numeric),
                torch.zeros(1, k, len(cardinalities), dtype=torch.int64),
                torch.tensor([k]),
            )
            traced = torch.jit.trace(network, example, check_trace=False)
            for _ in range(2):  # the second round runs the executor's optimised graph
                for length in range(1, k + 1):
                    numeric = torch.randn(1, k, n_numeric, generator=generator)
                    numeric[:, length:] = 0.0
                    codes = torch.zeros(1, k, len(cardinalities), dtype=torch.int64)
                    for j, size in enumerate(cardinalities):
                        codes[0, :length, j] = torch.randint(
                            1, max(size, 2), (length,), generator=generator
                        )
                    lengths = torch.tensor([length])
                    expected = network(numeric, codes, lengths)
                    got = traced(numeric, codes, lengths)
                    if not torch.allclose(got, expected, rtol=0.0, atol=1e-7):
                        log.info("TorchScript trace differs from the network; using eager")
                        return None
        return traced
    except Exception as err:  # tracing is an optimisation only
        log.info("network not traced (%s); using eager mode", err)
        return None


def _sigmoid(logit: float) -> float:
    """FraudModel's probability: 1 / (1 + exp(-logit)) in float64 of the float32 logit."""
    x = float(np.float32(logit))
    if x < -709.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def _label(label) -> int:
    if isinstance(label, bool | np.bool_):
        return int(label)
    if isinstance(label, int | np.integer | float | np.floating) and label in (0, 1):
        return int(label)
    if isinstance(label, str) and label.strip() in ("0", "1"):
        return int(label.strip())
    raise DataValidationError(f"label must be 0 or 1, got {type(label).__name__} {label!r}")
