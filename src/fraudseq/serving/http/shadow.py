"""Shadow scoring: a challenger model scores what the champion scores, off the request path.

``fraudseq serve CHAMPION --shadow CHALLENGER`` (or ``create_app(..., shadow=...)``) serves
a :class:`ShadowPair`: the Detector interface of the champion, whose replies are the only
ones returned. After each champion call, on the detector thread, the same call is put on a
bounded queue (``put_nowait``: it never waits) that one background thread feeds to the
challenger. So a challenger that fails or is slow never changes or delays a reply:

- a full queue drops the call, counted in ``fraudseq_shadow_dropped_total{operation}``;
- a challenger error is logged (warning) and counted in ``fraudseq_shadow_errors_total``;
- a challenger call longer than ``ShadowOptions.timeout`` is logged and counted in
  ``fraudseq_shadow_slow_calls_total`` (a Python call cannot be interrupted: it finishes
  on the shadow thread, and the queue behind it fills and drops).

Feedback goes to both models: the champion's answer is returned, the challenger's is queued
after the scores before it, so its label-dependent features stay correct.

**State namespaces.** Each model keeps its own state: their features may differ, and a
shared account state would count every event twice. The champion uses ``--state`` as
given; the challenger's namespace is derived from its model version (the digest of its
model.json, :func:`~fraudseq.serving.detector.model_version`) by :func:`shadow_state`:
``memory`` is a store of its own, ``sqlite:///state.db`` becomes
``sqlite:///state.<version>.db`` (a file next to it) and a Redis prefix ``fraudseq:``
becomes ``fraudseq:<version>:``. A model keeps its store when promoted. A new challenger
(its store has no history log) first replays the champion's history log (:func:`warm_up`),
so both score with the same account histories.

**Agreement.** For each transaction both models scored new (the challenger's replays are
not counted again), ``fraudseq_shadow_pairs_total`` and
``fraudseq_shadow_alerts_total{agreement="both"|"champion_only"|"challenger_only"}`` move,
one structured line (JSON) is logged on ``fraudseq.shadow``, and the pair of probabilities
enters a rolling window of the last ``ShadowOptions.window`` pairs. Spearman's rank
correlation over it, ``fraudseq_shadow_rank_correlation`` (NaN until ``every`` pairs came,
or while either model's scores are all equal; a promote empties the window), is
recomputed every ``every`` pairs.

**Promote.** :meth:`ShadowPair.promote` swaps the two models. It runs on the detector
thread, which runs every champion call one at a time, so no request sees a mixed pair; it
first waits (at most ``drain_timeout``) for the queued challenger calls to finish, so the
former challenger is never called from two threads, and raises :class:`ShadowBusyError`
(nothing swapped) if they do not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fraudseq.errors import FraudseqError
from fraudseq.redaction import redact
from fraudseq.serving.http.metrics import LATENCY_BUCKETS

__all__ = [
    "ShadowBusyError",
    "ShadowMetrics",
    "ShadowOptions",
    "ShadowPair",
    "load_challenger",
    "shadow_state",
]

log = logging.getLogger("fraudseq.shadow")

OPERATIONS = ("score", "score_batch", "feedback")
AGREEMENTS = ("both", "champion_only", "challenger_only")
DEFAULT_REDIS_PREFIX = "fraudseq:"
WARM_BATCH = 1000  # transactions per batch when a challenger replays the champion's log


class ShadowBusyError(FraudseqError):
    """Promote found challenger calls still queued or running after its drain timeout."""


@dataclass(frozen=True)
class ShadowOptions:
    """queue_size: challenger calls waiting at most (more are dropped and counted);
    window: scored pairs the rank correlation covers; every: pairs between two
    recomputations of it; timeout: seconds after which a challenger call counts as slow;
    drain_timeout: seconds promote waits for the queued challenger calls."""

    queue_size: int = 1000
    window: int = 1000
    every: int = 100
    timeout: float = 1.0
    drain_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("queue_size", "window", "every"):
            if getattr(self, name) < 1:
                raise FraudseqError(f"shadow {name} must be at least 1, got {getattr(self, name)}")
        for name in ("timeout", "drain_timeout"):
            if not getattr(self, name) > 0:
                raise FraudseqError(f"shadow {name} must be more than 0 seconds")


class ShadowMetrics:
    """The shadow's Prometheus metrics (``fraudseq_shadow_`` prefix), in the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name, text, labels=()):
            return Counter(f"fraudseq_shadow_{name}", text, labels, registry=registry)

        self.pairs = counter("pairs", "Transactions scored new by both champion and challenger.")
        self.alerts = counter(
            "alerts",
            "Scored pairs with an alert, by agreement: both, champion_only, challenger_only.",
            ["agreement"],
        )
        self.errors = counter("errors", "Challenger calls that failed (logged).", ["operation"])
        self.dropped = counter(
            "dropped", "Challenger calls dropped because its queue was full.", ["operation"]
        )
        self.slow = counter(
            "slow_calls", "Challenger calls longer than the shadow timeout.", ["operation"]
        )
        self.promotions = counter("promotions", "Champion and challenger swaps.")
        self.duration = Histogram(
            "fraudseq_shadow_call_duration_seconds",
            "Time the challenger took per call (on the shadow thread).",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rank_correlation = Gauge(
            "fraudseq_shadow_rank_correlation",
            "Spearman rank correlation of champion and challenger probabilities over the "
            "rolling window of scored pairs (NaN until enough pairs).",
            registry=registry,
        )
        self.window_pairs = Gauge(
            "fraudseq_shadow_window_pairs",
            "Scored pairs in the rolling window of the rank correlation.",
            registry=registry,
        )
        self.model_info = Gauge(
            "fraudseq_shadow_model_info",
            "The challenger model (value 1).",
            ["model_version"],
            registry=registry,
        )
        for operation in OPERATIONS:
            for metric in (self.errors, self.dropped, self.slow):
                metric.labels(operation)
        for agreement in AGREEMENTS:
            self.alerts.labels(agreement)
        self.rank_correlation.set(math.nan)


class RankWindow:
    """The last `size` (champion, challenger) probability pairs in a ring buffer, and their
    Spearman rank correlation, recomputed (vectorised: two rankings and a correlation) once
    `every` or more pairs came since the last time, so not on every request."""

    def __init__(self, size: int, every: int) -> None:
        self.size, self.every = size, every
        self.reset()

    def reset(self) -> None:
        self._pairs = np.empty((self.size, 2))
        self._next = self.filled = self._since = 0
        self.value = math.nan

    def add(self, champion: np.ndarray, challenger: np.ndarray) -> bool:
        """Add pairs; True when the correlation was recomputed."""
        rows = np.column_stack([champion, challenger])[-self.size :]
        self._pairs[(self._next + np.arange(len(rows))) % self.size] = rows
        self._next = (self._next + len(rows)) % self.size
        self.filled = min(self.size, self.filled + len(rows))
        self._since += len(rows)
        if self._since < self.every:
            return False
        self._since = 0
        self.value = spearman(self._pairs[: self.filled])
        return True


def spearman(pairs: np.ndarray) -> float:
    """Spearman's rank correlation of the two columns (average ranks for ties); NaN with
    fewer than two pairs or a constant column."""
    if len(pairs) < 2:
        return math.nan
    return float(pd.DataFrame(pairs).corr(method="spearman").iloc[0, 1])


class ShadowPair:
    """The Detector interface of `champion`; `challenger` scores the same calls in the
    background (see the module docstring). The caller owns both detectors (closes them);
    :meth:`stop` ends the shadow thread."""

    def __init__(
        self, champion: Any, challenger: Any, metrics: ShadowMetrics, options: ShadowOptions
    ) -> None:
        check_pair(champion, challenger)
        self.champion, self.challenger = champion, challenger
        self.metrics, self.options = metrics, options
        self._queue: queue.Queue = queue.Queue(options.queue_size)
        self._window = RankWindow(options.window, options.every)
        metrics.model_info.labels(str(challenger.model_version)).set(1)
        self._thread = threading.Thread(target=self._run, name="fraudseq-shadow", daemon=True)
        self._thread.start()

    # -- the Detector interface: the champion's --------------------------------------------
    @property
    def schema(self):
        return self.champion.schema

    @property
    def model_version(self) -> str:
        return self.champion.model_version

    @property
    def counts(self):
        return self.champion.counts

    @property
    def explain(self) -> str | None:
        return getattr(self.champion, "explain", None)

    def score(self, tx: dict) -> dict:
        result = self.champion.score(tx)
        self._submit("score", (tx,), [result])
        return result

    def score_batch(self, txs: list[dict]) -> list[dict]:
        results = self.champion.score_batch(txs)
        self._submit("score_batch", (txs,), results)
        return results

    def feedback(self, transaction_id: str, label: int) -> dict:
        answer = self.champion.feedback(transaction_id, label)
        self._submit("feedback", (transaction_id, label), None)
        return answer

    def ready(self) -> bool:
        return self.champion.ready()

    def close(self) -> None:
        self.stop()

    # -- promote and stop ------------------------------------------------------------------
    def promote(self) -> dict[str, str]:
        """Swap champion and challenger once the queued challenger calls are done (call it
        where the champion calls run: the app's detector thread)."""
        if not self._drained(self.options.drain_timeout):
            raise ShadowBusyError(
                f"the shadow model still has {self._queue.unfinished_tasks} calls queued or "
                f"running after {self.options.drain_timeout:g}s; nothing was swapped, retry "
                f"later"
            )
        self.champion, self.challenger = self.challenger, self.champion
        self._window.reset()
        self.metrics.rank_correlation.set(math.nan)
        self.metrics.window_pairs.set(0)
        self.metrics.model_info.clear()
        self.metrics.model_info.labels(str(self.challenger.model_version)).set(1)
        self.metrics.promotions.inc()
        swapped = {
            "champion": str(self.champion.model_version),
            "challenger": str(self.challenger.model_version),
        }
        log.warning("promoted model %(champion)s; model %(challenger)s now shadows", swapped)
        return swapped

    def stop(self, timeout: float = 5.0) -> None:
        """End the shadow thread once the calls queued are done; waits `timeout` at most. With
        the queue full, the oldest calls are dropped (and counted) to make room."""
        if not self._thread.is_alive():
            return
        while True:  # make room for the sentinel: what is still queued is dropped
            try:
                self._queue.put(None, timeout=0.01)
                break
            except queue.Full:
                self._drop_one()
        self._thread.join(timeout)

    def _drop_one(self) -> None:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return
        self._queue.task_done()
        if item is not None:
            self.metrics.dropped.labels(item[0]).inc()

    def _drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    # -- the shadow thread -----------------------------------------------------------------
    def _submit(self, operation: str, args: tuple, champion_results: list | None) -> None:
        try:
            self._queue.put_nowait((operation, args, champion_results))
        except queue.Full:
            self.metrics.dropped.labels(operation).inc()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._shadow(*item)
            finally:
                self._queue.task_done()

    def _shadow(self, operation: str, args: tuple, champion_results: list | None) -> None:
        challenger = self.challenger
        replayed = challenger.counts["replayed"]
        started = time.perf_counter()
        try:
            answer = getattr(challenger, operation)(*args)
            if champion_results is not None and challenger.counts["replayed"] == replayed:
                ours = answer if operation == "score_batch" else [answer]
                self._compare(champion_results, ours, str(challenger.model_version))
        except Exception as err:  # never reaches a client: logged and counted
            self.metrics.errors.labels(operation).inc()
            log.warning(
                "shadow model %s failed in %s: %s",
                challenger.model_version,
                operation,
                redact(f"{type(err).__name__}: {err}"),
            )
        finally:
            self._timed(operation, time.perf_counter() - started)

    def _timed(self, operation: str, seconds: float) -> None:
        self.metrics.duration.labels(operation).observe(seconds)
        if seconds > self.options.timeout:
            self.metrics.slow.labels(operation).inc()
            log.warning(
                "shadow model %s took %.3fs in %s (timeout %gs)",
                self.challenger.model_version,
                seconds,
                operation,
                self.options.timeout,
            )

    def _compare(self, champion: list[dict], challenger: list[dict], version: str) -> None:
        if len(champion) != len(challenger):
            raise FraudseqError(f"{len(challenger)} results for {len(champion)} transactions")
        pairs = list(zip(champion, challenger, strict=True))
        probability = np.array([[a["fraud_probability"], b["fraud_probability"]] for a, b in pairs])
        alert = np.array([[bool(a["alert"]), bool(b["alert"])] for a, b in pairs])
        ours, theirs = alert[:, 0], alert[:, 1]
        metrics = self.metrics
        metrics.pairs.inc(len(pairs))
        masks = (ours & theirs, ours & ~theirs, ~ours & theirs)
        for agreement, mask in zip(AGREEMENTS, masks, strict=True):
            if mask.any():
                metrics.alerts.labels(agreement).inc(int(mask.sum()))
        if self._window.add(probability[:, 0], probability[:, 1]):
            metrics.rank_correlation.set(self._window.value)
            metrics.window_pairs.set(self._window.filled)
        for a, b in pairs:
            log.info("shadow %s", _pair_line(a, b, version))


def _pair_line(champion: dict, challenger: dict, version: str) -> str:
    """One pair as a JSON line: the id, each model's version, probability and alert."""
    return json.dumps(
        {
            "transaction_id": champion["transaction_id"],
            "champion": _scored(champion, champion.get("model_version")),
            "challenger": _scored(challenger, version),
        },
        separators=(",", ":"),
    )


def _scored(result: dict, version: Any) -> dict:
    return {
        "model_version": version,
        "fraud_probability": result["fraud_probability"],
        "alert": bool(result["alert"]),
    }


def check_pair(champion: Any, challenger: Any) -> None:
    """Both models read the same requests: the same schema."""
    if challenger.schema != champion.schema:
        raise FraudseqError(
            f"the shadow model {challenger.model_version} has another schema than the "
            f"served model {champion.model_version}: both must read the same requests"
        )


# -- the challenger's state and loading ---------------------------------------------------
def shadow_state(state: str, version: str) -> str:
    """The challenger's state URL: `state`'s namespace with `version` added (see the module
    docstring). The champion's URL is used as given."""
    url = state.strip()
    if url in ("memory", "memory://"):
        return url  # every Detector gets a store of its own
    base, _, query = url.partition("?")
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = Path(base[len("sqlite:///") :])
        base = "sqlite:///" + path.with_name(f"{path.stem}.{version}{path.suffix}").as_posix()
    elif scheme in ("redis", "rediss", "unix"):
        options = dict(parse_qsl(query))
        options["prefix"] = f"{options.get('prefix', DEFAULT_REDIS_PREFIX)}{version}:"
        query = urlencode(options, safe=":")
    else:
        raise FraudseqError(f"cannot derive a shadow state namespace from {redact(url)!r}")
    return f"{base}?{query}" if query else base


def load_challenger(
    champion: Any, model_dir: str | Path, state: str, detector_options: dict | None = None
) -> Any:
    """The challenger's Detector for `champion`: its state in :func:`shadow_state`'s
    namespace, no reasons (explanations of shadow scores are never returned)."""
    from fraudseq.serving.detector import Detector, model_version

    url = shadow_state(state, model_version(model_dir))
    detector = Detector.load(model_dir, url, **(detector_options or {}))
    try:
        check_pair(champion, detector)
    except BaseException:
        detector.close()
        raise
    detector.explain = "none"
    log.info("shadow model %s from %s, state %s", detector.model_version, model_dir, redact(url))
    started = time.perf_counter()
    replayed, labels = warm_up(detector, champion)
    if replayed:
        log.info(
            "shadow model %s: replayed %d transactions and %d labels of the champion's "
            "history log in %.1fs",
            detector.model_version, replayed, labels, time.perf_counter() - started,
        )  # fmt: skip
    return detector


def warm_up(challenger: Any, champion: Any, batch: int = WARM_BATCH) -> tuple[int, int]:
    """Replay the champion store's history log into a challenger whose store has none: its
    transactions in time order, then the labels received, so that the challenger scores
    with the same account histories from its first request instead of empty ones. A store
    that already has a log (a restart) is left as it is. Returns (transactions, labels)
    replayed; a transaction the challenger refuses (older than its state keeps) is left
    out."""
    from fraudseq.serving.export_history import LABEL_TIME, history_table

    if not hasattr(champion, "store") or challenger.store.history().entries:
        return 0, 0
    history = champion.store.history()
    if not history.entries:
        return 0, 0
    schema = champion.schema
    frame, _ = history_table(history, schema, label_delay_days=0, unlabelled="keep")
    frame = frame.drop(columns=[schema.label or "label", LABEL_TIME])  # as history_table names
    if pd.api.types.is_datetime64_any_dtype(frame[schema.time]):
        frame[schema.time] = frame[schema.time].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    for start in range(0, len(rows), batch):
        _replay(challenger, rows[start : start + batch])
    labelled = 0
    for tx_id, label in history.labels.items():
        with contextlib.suppress(FraudseqError):  # its transaction left the log
            challenger.feedback(tx_id, label)
            labelled += 1
    return len(rows), labelled


def _replay(challenger: Any, rows: list[dict]) -> None:
    """Score `rows` with the challenger as one batch; if it refuses the batch, one by one,
    leaving out those it refuses."""
    try:
        challenger.score_batch(rows)
    except FraudseqError:
        for row in rows:
            with contextlib.suppress(FraudseqError):
                challenger.score(row)
