"""`fraudseq serve` (the HTTP scoring API, FastAPI on uvicorn) and `fraudseq consume` (a
Redis Stream consumer)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fraudseq.cli.app import ModelDirArg, app, model_label
from fraudseq.errors import FraudseqError

log = logging.getLogger("fraudseq")


class Reasons(StrEnum):
    alerts = "alerts"
    all = "all"
    none = "none"


MinHistoryOpt = Annotated[
    int,
    typer.Option(
        min=0, help="Earlier transactions an account needs before its scores are trusted."
    ),
]
TtlOpt = Annotated[
    int | None,
    typer.Option(min=1, help="Forget an account's state after this long without activity."),
]
HistoryDaysOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Keep the transactions scored in the state store's history log this many days "
        "(by the --clock), for `fraudseq export-history`; 0 keeps none. Default: the "
        "state's retention, the model's label delay + 37 days.",
    ),
]


@app.command()
def serve(
    model_dir: ModelDirArg,
    state: Annotated[
        str,
        typer.Option(
            help="Per-account state store: 'memory' (one process only) or a store URL such as "
            "sqlite:///path/state.db (needed with --workers > 1, kept across restarts).",
        ),
    ] = "memory",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes (each loads the model).")
    ] = 1,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            help="Name of an environment variable holding the API key; clients then send it "
            "in the X-API-Key header on every route but /healthz and /readyz.",
        ),
    ] = None,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Transactions per /v1/score/batch request.")
    ] = 1000,
    max_body_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Request body limit (default: 4 KiB x --max-batch, >= 1 MiB)."),
    ] = None,
    min_history: MinHistoryOpt = 3,
    ttl_seconds: TtlOpt = None,
    reasons: Annotated[
        Reasons,
        typer.Option(
            help="Which replies list reasons (occlusion explanations, several model "
            "evaluations each): alerts, all or none (lowest tail latency).",
        ),
    ] = Reasons.alerts,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Seconds a client has to send a request's headers (from connecting, or "
            "from the request's first byte); then 408 and the connection is closed.",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds a client has to send a request's body once its headers arrived; "
            "then 408 and the connection is closed.",
        ),
    ] = 30,
    clock: Annotated[
        str,
        typer.Option(
            help="What transaction times are checked against (at most 1 day ahead, no older "
            "than the state keeps) and state is purged by: 'wall' (the server's clock), "
            "'data' (the newest time accepted so far: replays of historical data; each "
            "transaction may pass it by 1 day at most) or a fixed ISO 8601 time.",
        ),
    ] = "wall",
    shadow: Annotated[
        str | None,
        typer.Option(
            help="A challenger model directory: it scores every request in the background, "
            "with its own state (the --state namespace plus its version); only the served "
            "model's replies are returned. POST /v1/admin/promote swaps them (needs "
            "--api-key-env). One worker only.",
        ),
    ] = None,
    shadow_queue: Annotated[
        int, typer.Option(min=1, help="Challenger calls waiting at most; more are dropped.")
    ] = 1000,
    shadow_window: Annotated[
        int,
        typer.Option(min=2, help="Scored pairs in the rolling window of the rank correlation."),
    ] = 1000,
    shadow_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds after which a challenger call is counted slow."),
    ] = 1.0,
    history_days: HistoryDaysOpt = None,
) -> None:
    """Serve the model over HTTP with per-account state.

    POST /v1/score, /v1/score/batch, /v1/feedback, /v1/admin/promote; GET /healthz, /readyz,
    /metrics, /docs.
    """
    import uvicorn

    from fraudseq import http_limits
    from fraudseq.redaction import RedactingFilter
    from fraudseq.serving import Detector
    from fraudseq.serving.event_time import EventClock
    from fraudseq.serving.http.app import create_app, redact_state_url, set_reasons
    from fraudseq.serving.http.settings import ServeSettings, resolve_api_key
    from fraudseq.serving.http.shadow import ShadowOptions, load_challenger

    EventClock(clock)  # a bad --clock is one clear error before anything starts
    settings = ServeSettings(
        clock=clock,
        model_dir=str(model_dir),
        state=state,
        api_key_env=api_key_env,
        max_batch=max_batch,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        min_history=min_history,
        ttl_seconds=ttl_seconds,
        reasons=reasons.value,
        history_days=history_days,
    )
    # Refuse to start on a bad configuration before any worker is spawned.
    resolve_api_key(api_key_env)
    if workers > 1 and state.strip().lower() == "memory":
        raise FraudseqError(
            f"--workers {workers} with --state memory would give each worker its own, partial "
            f"account histories. Fix: use a shared store, e.g. --state sqlite:///state.db, "
            f"or --workers 1."
        )
    if workers > 1 and shadow is not None:
        raise FraudseqError(
            f"--shadow runs with one worker: with --workers {workers} each worker would hold "
            f"its own pair, and a promote would swap only one. Fix: --workers 1."
        )
    shadow_options = ShadowOptions(
        queue_size=shadow_queue,
        window=shadow_window,
        every=min(100, shadow_window),
        timeout=shadow_timeout,
    )
    # Every log line of this process and of the workers is redacted (state URLs carry
    # passwords), uvicorn's included.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # Loading the detector here turns a bad model directory or state store into one clear
    # error message before the server starts.
    detector = Detector.load(
        model_dir,
        state,
        min_history=min_history,
        ttl_seconds=ttl_seconds,
        clock=clock,
        history_days=history_days,
    )
    set_reasons(detector, reasons.value)
    challenger = None
    if shadow is not None:
        try:
            options = {
                "min_history": min_history,
                "ttl_seconds": ttl_seconds,
                "clock": clock,
                "history_days": history_days,  # its store is whole: it serves once promoted
            }
            challenger = load_challenger(detector, shadow, state, options)
        except BaseException:
            detector.close()
            raise
    log.info(
        "model %s from %s, state %s, clock %s",
        detector.model_version, model_label(model_dir), redact_state_url(state), clock,
    )  # fmt: skip
    if not api_key_env and host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s without an API key (see --api-key-env)", host)

    run = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": "info",
        "log_config": _redacted_log_config(),
        # Slow clients: a header deadline and size limit (the body's deadline is the app's);
        # idle kept-alive connections close after uvicorn's timeout_keep_alive (5 s).
        "http": http_limits.protocol(header_timeout),
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": 10,
    }
    if workers == 1:
        try:
            app_kwargs = settings.app_kwargs()
            for name in ("model_dir", "state", "detector_options", "reasons"):
                del app_kwargs[name]
            app = create_app(
                detector, shadow=challenger, shadow_options=shadow_options, **app_kwargs
            )
            with _sigterm_ends_cleanly():
                uvicorn.run(app, **run)
        finally:
            detector.close()
            if challenger is not None:
                challenger.close()
        return
    detector.close()  # each worker loads its own

    # Several processes: each worker builds its app from the environment (factory mode),
    # and metrics use prometheus-client's multiprocess mode so /metrics sums all workers.
    os.environ.update(settings.to_env())
    own_metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_metrics_dir = tempfile.mkdtemp(prefix="fraudseq-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_metrics_dir
    try:
        uvicorn.run("fraudseq.serving.http:app_from_env", factory=True, workers=workers, **run)
    finally:
        if own_metrics_dir is not None:
            shutil.rmtree(own_metrics_dir, ignore_errors=True)


class _Terminated(Exception):
    """SIGTERM arrived after (or before) uvicorn's graceful shutdown."""


@contextmanager
def _sigterm_ends_cleanly() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    handler it found. With the default handler that killed the process (exit 143) before the
    detector and its state store were closed; this handler ends the server normally instead."""

    def stop(signum, frame) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except _Terminated:
        log.info("stopped by SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _redacted_log_config() -> dict:
    """uvicorn's logging configuration with every handler redacting URL credentials."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "fraudseq.redaction.RedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    return config


@app.command()
def consume(
    model_dir: ModelDirArg,
    stream: Annotated[
        str,
        typer.Option(
            help="The input Redis Stream: redis://[:password@]host:port/db?stream=NAME "
            "[&output=NAME (default NAME:results)][&prefix=STATE_PREFIX (default fraudseq:)]"
            "[&partitions=P (default 1)]. Each entry's field 'transaction' holds one "
            "transaction's JSON (the fields of POST /v1/score). With P > 1 the input is the "
            "streams NAME:0 .. NAME:P-1, an account's transactions all in partition "
            "crc32(utf-8 entity key) mod P, and each partition is read by one consumer at a "
            "time, in order.",
        ),
    ],
    group: Annotated[
        str, typer.Option(help="Consumer group; consumers of one group split the stream.")
    ] = "fraudseq",
    consumer: Annotated[
        str | None,
        typer.Option(help="This consumer's name in the group (default: hostname-pid)."),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            help="State store URL (default: the --stream server with its ?prefix=). Every "
            "consumer of the group must use the same one.",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Entries read and scored at a time.")] = 100,
    claim_idle_ms: Annotated[
        int,
        typer.Option(
            min=1,
            help="Claim entries another consumer has held unacknowledged this long (a "
            "crashed consumer's); checked at start and every half of it. Not used with "
            "partitions (a taken partition's pending entries are claimed at once).",
        ),
    ] = 30_000,
    lease_ms: Annotated[
        int,
        typer.Option(
            min=1,
            help="With partitions: how long a partition's lease lasts without renewal (it is "
            "renewed every loop; at least 3 s). A dead consumer's partitions are taken over "
            "after it.",
        ),
    ] = 10_000,
    max_idle_s: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Exit once no entry arrived for this many seconds and none is pending in "
            "the group (backfills, tests). Default: run until SIGTERM/SIGINT.",
        ),
    ] = None,
    min_history: MinHistoryOpt = 3,
    ttl_seconds: TtlOpt = None,
    reasons: Annotated[
        Reasons,
        typer.Option(help="Which results list reasons: alerts, all or none (fastest)."),
    ] = Reasons.alerts,
    clock: Annotated[
        str,
        typer.Option(
            help="What transaction times are checked against: 'wall', 'data' (replays of "
            "history in time order) or a fixed ISO 8601 time; as in fraudseq serve.",
        ),
    ] = "wall",
    history_days: HistoryDaysOpt = None,
) -> None:
    """Score transactions from a Redis Stream with a consumer group; results go to an output
    stream.

    Each output entry has transaction_id, entry (the input entry's id) and result (the
    score's JSON) or error (why the entry could not be scored: such entries are
    acknowledged too). An entry is acknowledged and its output written in one atomic step
    after its state is stored, and the transaction id is the idempotency key, so with any
    number of consumers, crashes and restarts, each transaction is scored and written once.
    Entries left pending by a crashed consumer are claimed after --claim-idle-ms; with
    partitions, a crashed consumer's partitions are taken over after --lease-ms, their
    pending entries first.
    SIGTERM/SIGINT finish the current batch, then exit 0. Prints the consumer's counts
    as JSON on exit.
    """
    import json

    import redis

    from fraudseq.redaction import RedactingFilter, redact
    from fraudseq.serving import Detector
    from fraudseq.serving.consumer import StreamAddress, StreamConsumer
    from fraudseq.serving.event_time import EventClock

    EventClock(clock)
    address = StreamAddress.parse(stream)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    state_url = state if state is not None else address.state_url
    detector = Detector.load(
        model_dir,
        state_url,
        min_history=min_history,
        ttl_seconds=ttl_seconds,
        clock=clock,
        history_days=history_days,
    )
    try:
        detector.explain = reasons.value
        # Longer than a blocking read (1 s), so a quiet stream is no timeout.
        client = redis.Redis.from_url(
            address.redis_url, socket_timeout=15, socket_connect_timeout=5
        )
        loop = StreamConsumer(
            detector,
            client,
            stream=address.stream,
            output=address.output,
            group=group,
            consumer=consumer,
            batch=batch,
            claim_idle_ms=claim_idle_ms,
            max_idle_s=max_idle_s,
            partitions=address.partitions,
            lease_ms=lease_ms,
        )
        log.info(
            "model %s from %s, stream %s, state %s, clock %s",
            detector.model_version, model_label(model_dir), redact(address.redis_url),
            redact(state_url), clock,
        )  # fmt: skip
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, loop.stop)
        try:
            stats = loop.run()
        finally:
            client.close()
    finally:
        detector.close()
    typer.echo(json.dumps({"consumer": loop.consumer, **stats.to_dict()}))


class Unlabelled(StrEnum):
    mature = "mature"
    drop = "drop"
    keep = "keep"


@app.command("export-history")
def export_history(
    state_url: Annotated[
        str,
        typer.Argument(
            help="The state store the service scored with: sqlite:///path/state.db or "
            "redis://host:port/db[?prefix=...].",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="File to write: .csv, .csv.gz or .parquet (replaced only on success)."),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="The model that served (default: the schema and label delay the store "
            "holds); its schema must be the stored one.",
        ),
    ] = None,
    schema: Annotated[
        Path | None,
        typer.Option(help="Schema TOML (default: the one the store holds); must be that one."),
    ] = None,
    unlabelled: Annotated[
        Unlabelled,
        typer.Option(
            help="Transactions without a label: 'mature' (those older than the newest minus "
            "the label delay are written as legitimate, 0, with an empty label_time; newer "
            "ones are left out), 'drop' (left out) or 'keep' (written with an empty label; "
            "`train` then refuses the file).",
        ),
    ] = Unlabelled.mature,
    label_delay_days: Annotated[
        float | None,
        typer.Option(min=0, help="For 'mature' (default: the model's label delay)."),
    ] = None,
) -> None:
    """Write the transactions the state store's history log holds, with the labels sent to
    /v1/feedback and when they arrived (label_time), as a file `fraudseq train` reads with
    the model's schema."""
    import json

    from fraudseq.cli.app import check_outputs
    from fraudseq.schema import Schema
    from fraudseq.serving.export_history import export_history as export
    from fraudseq.serving.stores.base import sqlite_path

    if model is not None and schema is not None:
        raise FraudseqError("give --model or --schema, not both")
    stored_file = sqlite_path(state_url.strip())
    check_outputs(
        {"--out": out},
        inputs={
            "the state store": Path(stored_file) if stored_file else None,
            "the schema": schema,
        },
        model_dir=model,
    )
    given = None
    if model is not None:
        from fraudseq.fraud_model import FraudModel

        fitted = FraudModel.load(model)
        given = fitted.schema_
        if label_delay_days is None:
            label_delay_days = float(fitted.label_delay_days)
    elif schema is not None:
        given = Schema.from_toml(schema)
    summary = export(
        state_url,
        out,
        schema=given,
        label_delay_days=label_delay_days,
        unlabelled=unlabelled.value,
    )
    typer.echo(
        json.dumps(
            {
                "out": str(summary.path),
                "rows": summary.rows,
                "labelled": summary.labelled,
                "assumed_legitimate": summary.assumed_legitimate,
                "left_out": summary.left_out,
                "labels_without_transaction": summary.labels_without_transaction,
            }
        )
    )
