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
