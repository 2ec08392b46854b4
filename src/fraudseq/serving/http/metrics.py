"""The service's Prometheus metrics.

Metrics (``fraudseq_`` prefix): ``http_requests_total{route,method,status}``,
``http_request_duration_seconds{route,method}`` (histogram), ``transactions_scored_total``
(new transactions), ``transactions_replayed_total`` (retries answered from the store),
``alerts_total`` (new alerts), ``transactions_late_inserted_total`` (late, inserted in time
order), ``transactions_not_inserted_total`` (too late to insert), ``feedback_total{label}``,
``state_store_errors_total{kind}``, ``model_info{model_version}``.
Routes outside the API are counted as ``route="other"``. Each app has its own
``CollectorRegistry``. With several workers the CLI turns on prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, a private temporary directory unless already set), so
``/metrics`` on any worker reports the sum over all workers.
"""

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["LATENCY_BUCKETS", "Metrics"]

#: Latency buckets (seconds): fine below 25 ms, where the single-transaction target lies.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "fraudseq_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "fraudseq_http_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.scored = Counter(
            "fraudseq_transactions_scored",
            "Transactions scored (new ids; retries are counted as replayed).",
            registry=registry,
        )
        self.replayed = Counter(
            "fraudseq_transactions_replayed",
            "Retried transactions answered with their stored result.",
            registry=registry,
        )
        self.alerts = Counter(
            "fraudseq_alerts",
            "Newly scored transactions at or above the threshold.",
            registry=registry,
        )
        self.feedback = Counter(
            "fraudseq_feedback", "Feedback labels received.", ["label"], registry=registry
        )
        self.late_inserted = Counter(
            "fraudseq_transactions_late_inserted",
            "New transactions older than their account's latest event, inserted into its "
            "history in time order.",
            registry=registry,
        )
        self.not_inserted = Counter(
            "fraudseq_transactions_not_inserted",
            "New transactions too late to insert into their account's history (more than "
            "the allowed lateness older than its latest event): scored, recorded, not added.",
            registry=registry,
        )
        self.store_errors = Counter(
            "fraudseq_state_store_errors",
            "State store failures answered with 503, by kind (transient or permanent).",
            ["kind"],
            registry=registry,
        )
        self.model_info = Gauge(
            "fraudseq_model_info",
            "The loaded model (value 1).",
            ["model_version"],
            registry=registry,
            multiprocess_mode="max",
        )

    def exposition(self) -> bytes:
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return generate_latest(self.registry)


# -- drift of live scores over a rolling window (issue 20, part 4) ------------------------------
#: Live scores the drift gauges look back over, and how many new scores between two updates.
DRIFT_WINDOW = 5000
DRIFT_EVERY = 100


class ScoreDriftGauges:
    """The score and alert-rate drift of `fraudseq monitor` over the last `window` new
    scores, as gauges updated every `every` scores (until the first update they are NaN):

    - ``fraudseq_score_psi`` and ``fraudseq_score_wasserstein`` (normed by the reference's
      std): against the score reference training stored in the model (`reference`, a
      `drift.NumericReference`); NaN for a model saved before it was stored;
    - ``fraudseq_alert_rate`` over the window, ``fraudseq_alert_rate_expected`` (the model's
      on validation) and ``fraudseq_drift_window_scores`` (scores in the window).

    Per call, only a ring buffer is written; the PSI (a searchsorted and a bincount) and the
    distance (a sort of the window) run every `every` scores. Each worker keeps its own
    window (in multiprocess mode every worker's gauges are reported, by pid).
    """

    def __init__(
        self, registry: CollectorRegistry, *, window: int = DRIFT_WINDOW, every: int = DRIFT_EVERY
    ) -> None:
        import numpy as np

        if window < 1 or every < 1:
            raise ValueError(f"the drift window and period must be >= 1, got {window}, {every}")
        self.window, self.every = window, every
        self.reference = None
        self._scores = np.full(window, np.nan)
        self._alerts = np.zeros(window, dtype=bool)
        self._next = self._filled = self._since = 0

        def gauge(name: str, text: str) -> Gauge:
            g = Gauge(name, text, registry=registry, multiprocess_mode="all")
            g.set(float("nan"))
            return g

        self.psi = gauge("fraudseq_score_psi", "PSI of the window's scores against the model's.")
        self.wasserstein = gauge(
            "fraudseq_score_wasserstein",
            "Wasserstein distance of the window's scores from the model's, over their std.",
        )
        self.alert_rate = gauge("fraudseq_alert_rate", "Share of alerts among the window's scores.")
        self.expected = gauge(
            "fraudseq_alert_rate_expected", "The model's alert rate on its validation period."
        )
        self.size = gauge("fraudseq_drift_window_scores", "Scores in the drift window.")

    def set_model(self, model) -> None:
        """The reference of `model` (a FraudModel, or anything without one: no reference),
        with an empty window: another model's scores (before a promote) are not compared."""
        from fraudseq.drift import expected_alert_rate, score_reference

        self._scores[:] = float("nan")
        self._next = self._filled = self._since = 0
        for gauge in (self.psi, self.wasserstein, self.alert_rate):
            gauge.set(float("nan"))
        self.size.set(0)
        has_model = hasattr(model, "training_period_")
        self.reference = score_reference(model) if has_model else None
        self.expected.set(expected_alert_rate(model)[0] if has_model else float("nan"))

    def observe_call(self, result, counts) -> None:
        """Add the new scores of a scoring call's `result` (a reply or a list of them).
        A call that answered any retry is left out: which of its replies are new is not
        known here, and a retried transaction was counted when it was first scored."""
        replies = result if isinstance(result, list) else [result]
        first = {r.get("transaction_id"): r for r in reversed(replies) if isinstance(r, dict)}
        if not counts["scored"] or counts["scored"] != len(first):
            return
        self.observe(
            [r.get("fraud_probability", float("nan")) for r in first.values()],
            [bool(r.get("alert")) for r in first.values()],
        )

    def observe(self, probabilities, alerts) -> None:
        import numpy as np

        scores = np.asarray(probabilities, dtype=np.float64)[-self.window :]
        flags = np.asarray(alerts, dtype=bool)[-self.window :]
        at = (self._next + np.arange(len(scores))) % self.window
        self._scores[at], self._alerts[at] = scores, flags
        self._next = (self._next + len(scores)) % self.window
        self._filled = min(self._filled + len(scores), self.window)
        self._since += len(scores)
        if self._since >= self.every:
            self.update()

    def update(self) -> None:
        """Set the gauges from the window as it is."""
        import numpy as np

        from fraudseq.drift import bin_shares, normed_wasserstein, psi

        self._since = 0
        scores, alerts = self._scores[: self._filled], self._alerts[: self._filled]
        known = np.isfinite(scores)
        self.size.set(int(known.sum()))
        self.alert_rate.set(float(alerts[known].mean()) if known.any() else float("nan"))
        ref = self.reference
        if ref is None or not known.any():
            return
        self.psi.set(psi(ref.shares, bin_shares(scores, ref.edges)))
        self.wasserstein.set(normed_wasserstein(ref.values, scores, ref.std))
