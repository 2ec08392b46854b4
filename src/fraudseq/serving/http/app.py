"""The HTTP API over a :class:`~fraudseq.serving.detector.Detector` (FastAPI).

Build it with :func:`create_app` (in-process, e.g. tests and ``fraudseq serve --workers 1``)
or :func:`app_from_env` (uvicorn's factory mode, used by ``fraudseq serve --workers N``: each
worker process builds its own app from ``FRAUDSEQ_SERVE_*`` environment variables,
:mod:`fraudseq.serving.http.settings`).

Routes
    ``POST /v1/score``        one transaction (a JSON object keyed by the schema's columns)
    ``POST /v1/score/batch``  ``{"transactions": [...]}``, at most ``max_batch`` per request
    ``POST /v1/feedback``     ``{"transaction_id": "...", "label": 0 or 1}``, idempotent
    ``GET /healthz``          liveness: the process answers
    ``GET /readyz``           readiness: model loaded and state store healthy, else 503
    ``GET /metrics``          Prometheus text format (:mod:`~fraudseq.serving.http.metrics`)
    ``POST /v1/admin/promote`` with a shadow model: swap champion and challenger
                              (:mod:`~fraudseq.serving.http.shadow`); needs the API key
    ``GET /docs``, ``GET /openapi.json``

Requests are validated by models built from the model's schema
(:mod:`~fraudseq.serving.http.requests` states the rules); error replies are
:mod:`~fraudseq.serving.http.errors`'; the API key and body limits are
:mod:`~fraudseq.serving.http.middleware`'s.

Every reply (single and batch) carries ``out_of_order``: whether the transaction was older
than its account's (or stream's) latest event, and ``history``: ``appended``, ``inserted``
(late, placed in time order) or ``not_inserted`` (too late; see the Detector). A time more
than a day ahead of the server's clock (``--clock``) or older than the state keeps is
refused with 422 naming the accepted window.

Detector errors map to status codes: DataValidationError 422, ConflictError (a transaction
id reused with different content) 409, UnknownTransactionError (feedback for an id never
scored) 404, StateStoreError (the store is unreachable or refused the write: nothing was
stored) 503: transient with ``Retry-After: 1``, permanent (``"permanent": true``: a damaged
or read-only file, refused credentials; an operator must act) without; any other
FraudseqError 400.

Store health: a store error is logged at error level with its id and counted in
``state_store_errors_total{kind}``. /readyz is 503 when the store fails a cheap probe
(``Detector.ready``: SELECT 1 / PING, on its own thread, READY_TIMEOUT_SECONDS at most),
while the last store operation failed (STORE_FAILURE_WINDOW_SECONDS, none succeeded since),
and after a permanent fault until the server restarts.

The detector runs in one dedicated thread per process: calls are serialised in arrival
order (two transactions of one account are applied in the order they came) and the event
loop never waits on the model. Scale out with ``--workers`` (processes) and a shared state
store (SQLite or Redis; "memory" is refused with several workers).
"""

import asyncio
import functools
import gc
import json
import logging
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

import fraudseq
from fraudseq.errors import DataValidationError, FraudseqError, ModelDirectoryError
from fraudseq.redaction import RedactingFilter, redact
from fraudseq.schema import Schema
from fraudseq.serving.detector import ConflictError, UnknownTransactionError
from fraudseq.serving.http.errors import (
    ApiError,
    describe_errors,
    error_body,
    error_responses,
    internal_error,
    promote_responses,
)
from fraudseq.serving.http.metrics import DRIFT_EVERY, DRIFT_WINDOW, Metrics, ScoreDriftGauges
from fraudseq.serving.http.middleware import (
    API_KEY_HEADER,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    MetricsMiddleware,
)
from fraudseq.serving.http.requests import (
    BatchResult,
    Feedback,
    FeedbackResult,
    Health,
    NotReady,
    Promoted,
    Ready,
    ScoreResult,
    request_models,
)
from fraudseq.serving.http.settings import (
    BODY_TIMEOUT_SECONDS,
    DEFAULT_MAX_BATCH,
    ServeSettings,
    default_max_body_bytes,
)
from fraudseq.serving.http.shadow import (
    ShadowBusyError,
    ShadowMetrics,
    ShadowOptions,
    ShadowPair,
    load_challenger,
)
from fraudseq.serving.stores import StateStoreError
from fraudseq.transaction import request_columns

__all__ = [
    "app_from_env",
    "create_app",
    "read_model_schema",
    "redact_state_url",
    "set_reasons",
]

log = logging.getLogger("fraudseq.serving")

READY_TIMEOUT_SECONDS = 2.0
#: /readyz answers 503 while the last store operation failed less than this long ago
#: (and none succeeded since); a permanent fault keeps it at 503 until a restart.
STORE_FAILURE_WINDOW_SECONDS = 30.0
#: Detector methods that read or write the state store (their success clears a failure).
STORE_METHODS = frozenset({"score", "score_batch", "feedback"})
#: What the app uses of a detector (`Detector` has all of it).
DETECTOR_INTERFACE = (
    "schema", "model_version", "counts", "score", "score_batch", "feedback", "ready", "close",
)  # fmt: skip


def read_model_schema(model_dir: str | Path) -> Schema:
    """The schema stored in a model directory's model.json (cheap: no weights are read)."""
    from fraudseq.artifacts import MODEL_JSON

    path = Path(model_dir) / MODEL_JSON
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        columns = config["schema"]
    except FileNotFoundError:
        raise ModelDirectoryError(
            f"{model_dir}: no {MODEL_JSON} here, so this is not a model directory. "
            f"Fix: give the directory written by `fraudseq train --out`."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ModelDirectoryError(
            f"{path}: cannot read the model's schema ({type(err).__name__}: {err}). "
            f"Fix: retrain or restore the model directory."
        ) from None
    return Schema.from_document(columns, source=str(path))


@dataclass
class _StoreFailure:
    error_id: str
    permanent: bool
    at: float  # time.monotonic()
    since: str  # UTC, ISO 8601

    def describe(self) -> dict[str, Any]:
        return {"error_id": self.error_id, "permanent": self.permanent, "since": self.since}


@dataclass
class _Serving:
    """What the routes need at request time; filled in by the lifespan. Also what the
    scoring routes learnt of the state store's health, for /readyz: the last failure
    (cleared by the next store operation that succeeds) and the first permanent fault
    (kept until the server restarts)."""

    detector: Any = None
    executor: ThreadPoolExecutor | None = None
    probe_executor: ThreadPoolExecutor | None = None
    metrics: Any = None
    store_failure: _StoreFailure | None = None
    store_fault: _StoreFailure | None = None
    _probe: asyncio.Future | None = None

    async def call(self, method: str, *args: Any, counted: bool = False) -> Any:
        """Run ``detector.<method>(*args)`` on the detector thread; map user errors.
        `counted`: return (answer, how the detector's `counts` moved during the call), read
        on the detector thread, which runs one call at a time, so exact."""
        detector, executor = self.detector, self.executor
        if detector is None or executor is None:
            raise _unavailable("the model is not loaded (the server is starting or stopping)")
        loop = asyncio.get_running_loop()
        function = getattr(detector, method)
        if counted:
            function = functools.partial(_with_counts, detector, function)
        try:
            answer = await loop.run_in_executor(executor, function, *args)
        except DataValidationError as err:
            raise ApiError(422, str(err)) from None
        except ConflictError as err:
            raise ApiError(409, str(err)) from None
        except UnknownTransactionError as err:
            raise ApiError(404, str(err)) from None
        except StateStoreError as err:  # not the client's fault
            raise self._store_failed(method, err) from None
        except ShadowBusyError as err:
            raise ApiError(503, str(err), {"Retry-After": "1"}) from None
        except FraudseqError as err:
            raise ApiError(400, str(err)) from None
        if method in STORE_METHODS:
            self.store_failure = None
        return answer

    def _store_failed(self, method: str, err: StateStoreError) -> ApiError:
        """Log a store error (error level, with its id; the details only there), remember
        it for /readyz, and the 503 to answer: with Retry-After when transient, without
        (and saying so) when permanent. Nothing was stored either way."""
        permanent = bool(getattr(err, "permanent", False))
        error_id = uuid.uuid4().hex[:12]
        kind = "permanent" if permanent else "transient"
        log.error(
            "state store error %s (%s) in %s: %s",
            error_id,
            kind,
            method,
            redact(str(err)),
            exc_info=err if permanent else None,
        )
        failure = _StoreFailure(
            error_id, permanent, time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
        )
        self.store_failure = failure
        if permanent and self.store_fault is None:
            self.store_fault = failure
        if self.metrics is not None:
            self.metrics.store_errors.labels(kind).inc()
        if permanent:
            return ApiError(
                503,
                f"the state store has a permanent fault (error id {error_id}): nothing was "
                f"stored, and retrying will not help until an operator repairs the store; "
                f"the details are in the server log",
                error_id=error_id,
                permanent=True,
            )
        return ApiError(
            503,
            f"the state store is unavailable or refused the write (error id {error_id}): "
            f"nothing was stored; retry later",
            {"Retry-After": "1"},
            error_id=error_id,
            permanent=False,
        )

    async def probe(self) -> bool:
        """``detector.ready()`` (the model is loaded and the store answers a cheap probe:
        SELECT 1, PING) on its own thread, so it never queues behind scoring, and at most one
        at a time: concurrent /readyz calls share the probe under way. Raises TimeoutError
        after READY_TIMEOUT_SECONDS."""
        if self._probe is None or self._probe.done():
            loop = asyncio.get_running_loop()
            self._probe = loop.run_in_executor(self.probe_executor, self.detector.ready)
        return await asyncio.wait_for(asyncio.shield(self._probe), READY_TIMEOUT_SECONDS)


def _unavailable(message: str) -> ApiError:
    """A 503 for a server that is starting or stopping (transient)."""
    error_id = uuid.uuid4().hex[:12]
    log.warning("503 (error id %s): %s", error_id, message)
    return ApiError(
        503, f"{message} (error id {error_id})", {"Retry-After": "1"}, error_id=error_id
    )


def _with_counts(detector: Any, function: Callable, *args: Any) -> tuple[Any, Tally]:
    """`function(*args)` and how `detector.counts` moved meanwhile."""
    before = Tally(detector.counts)
    result = function(*args)
    moved = Tally(detector.counts)
    moved.subtract(before)
    return result, moved


def _load_detector(model_dir: str, state: str, options: dict, reasons: str | None) -> Any:
    from fraudseq.serving.detector import Detector

    detector = Detector.load(model_dir, state, **options)
    if reasons is not None:
        set_reasons(detector, reasons)
    return detector


def set_reasons(detector: Any, reasons: str) -> None:
    """Which replies carry `reasons`: "alerts" (the Detector's default), "all" or "none".

    Reasons cost several model evaluations each (occlusion), so "none" gives the lowest
    tail latency."""
    from fraudseq.serving.detector import EXPLAIN_MODES

    if reasons not in EXPLAIN_MODES:
        raise FraudseqError(f"reasons must be one of {', '.join(EXPLAIN_MODES)}, got {reasons!r}")
    detector.explain = reasons


def create_app(
    detector: Any = None,
    *,
    model_dir: str | Path | None = None,
    state: str = "memory",
    api_key: str | None = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_body_bytes: int | None = None,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    detector_options: dict | None = None,
    reasons: str | None = None,
    registry: CollectorRegistry | None = None,
    freeze_gc: bool = False,
    drift_window: int = DRIFT_WINDOW,
    drift_every: int = DRIFT_EVERY,
    shadow: Any = None,
    shadow_dir: str | Path | None = None,
    shadow_options: ShadowOptions | None = None,
) -> FastAPI:
    """The FastAPI app over `detector`, or over a Detector loaded in the lifespan.

    Args:
        detector: an object with the Detector interface (schema, model_version, counts,
            score, score_batch, feedback, ready, close). The app uses it but does not close
            it.
        model_dir: otherwise the app loads
            ``Detector.load(model_dir, state, **detector_options)`` when it starts (and
            applies :func:`set_reasons` with `reasons`) and closes it when it stops. The
            schema is read from model.json right away, so the request models (and OpenAPI)
            exist before the model is loaded.
        state: with `model_dir`, the state store URL of that Detector.
        detector_options: with `model_dir`, more keyword arguments of ``Detector.load``.
        reasons: with `model_dir`, which transactions get reasons (see :func:`set_reasons`).
        api_key: require it in the X-API-Key header on every route but /healthz, /readyz.
        max_batch: transactions per /v1/score/batch request.
        max_body_bytes: request body limit (default 4 KiB per batch transaction, >= 1 MiB).
        body_timeout: seconds to receive a request's body once its headers arrived, else
            408 and the connection is closed.
        registry: Prometheus registry for the metrics (default: a new one per app).
        freeze_gc: once the detector is ready, move every object alive (model, libraries,
            app) out of the cyclic garbage collector's reach and score with one torch thread
            (see :func:`_freeze_long_lived_objects`). Process-wide settings, so off by
            default; ``fraudseq serve`` (ServeSettings.app_kwargs) turns it on.
        drift_window: the score drift gauges look at the last `drift_window` new scores
            (see ScoreDriftGauges).
        drift_every: new scores between two recomputations of those gauges.
        shadow: with `detector`, a challenger scoring every call in the background (the
            app does not close it).
        shadow_dir: with `model_dir`, a challenger loaded from this directory, its state in
            its own namespace of `state` (see :mod:`~fraudseq.serving.http.shadow`).
        shadow_options: tune the challenger of `shadow` or `shadow_dir` (ShadowOptions).
    """
    if (detector is None) == (model_dir is None):
        raise ValueError("create_app needs exactly one of detector and model_dir")
    if (shadow is not None and detector is None) or (shadow_dir is not None and model_dir is None):
        raise ValueError("a shadow goes with the same kind of champion: detector or model_dir")
    missing = [name for name in DETECTOR_INTERFACE if not hasattr(detector, name)]
    if detector is not None and missing:
        raise TypeError(f"the detector lacks {', '.join(missing)} of the Detector interface")
    if max_batch < 1:
        raise FraudseqError(f"--max-batch must be at least 1, got {max_batch}")
    if not body_timeout > 0:
        raise FraudseqError(f"--body-timeout must be more than 0 seconds, got {body_timeout}")
    if api_key is not None and not api_key:
        raise FraudseqError("the API key is empty; give a non-empty key or none")
    schema = detector.schema if detector is not None else read_model_schema(model_dir)
    body_limit = default_max_body_bytes(max_batch) if max_body_bytes is None else max_body_bytes
    options = {k: v for k, v in (detector_options or {}).items() if v is not None}
    transaction_model, batch_model = request_models(schema, max_batch)
    allowed = list(request_columns(schema))
    key_parts = schema.entity_parts if len(schema.entity_parts) > 1 else ()
    ground_truth = {c for c in (schema.label, schema.scenario) if c is not None}
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    serving = _Serving(metrics=metrics)
    drift = ScoreDriftGauges(metrics.registry, window=drift_window, every=drift_every)
    shadowed = shadow is not None or shadow_dir is not None
    shadow_metrics = ShadowMetrics(metrics.registry) if shadowed else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="fraudseq-detector")
        probe_executor = ThreadPoolExecutor(1, thread_name_prefix="fraudseq-probe")
        owned = owned_shadow = pair = None
        try:
            if detector is None:
                started = time.perf_counter()
                owned = await loop.run_in_executor(
                    executor, _load_detector, str(model_dir), state, options, reasons
                )
                if owned.schema != schema:
                    raise ModelDirectoryError(
                        f"{model_dir}: the model's schema changed while the server started; "
                        f"restart it"
                    )
                log.info(
                    "model %s loaded from %s in %.2fs (state %s)",
                    owned.model_version,
                    model_dir,
                    time.perf_counter() - started,
                    redact_state_url(state),
                )
            champion = owned if owned is not None else detector
            challenger = shadow
            if shadow_dir is not None:
                owned_shadow = challenger = await loop.run_in_executor(
                    executor, load_challenger, champion, str(shadow_dir), state, options
                )
            if challenger is not None:
                pair = ShadowPair(
                    champion, challenger, shadow_metrics, shadow_options or ShadowOptions()
                )
            serving.detector = pair if pair is not None else champion
            serving.executor = executor
            serving.probe_executor = probe_executor
            serving._probe = None
            metrics.model_info.labels(str(serving.detector.model_version)).set(1)
            drift.set_model(getattr(champion, "model", None))
            if freeze_gc:
                _freeze_long_lived_objects()
            yield
        finally:
            serving.detector = None
            serving.executor = None
            probe_executor.shutdown(wait=False, cancel_futures=True)  # a probe may hang
            if pair is not None:
                await loop.run_in_executor(executor, pair.stop)
            for model in (owned, owned_shadow):
                if model is not None:
                    try:
                        await loop.run_in_executor(executor, model.close)
                    except Exception:
                        log.exception("closing the detector failed")
            executor.shutdown(wait=True)

    app = FastAPI(
        title="fraudseq",
        version=fraudseq.__version__,
        summary="Payment fraud scores from sequences of card transactions.",
        description=(
            "Scores each transaction against its account's own history. Columns are the "
            "model's schema; labels arrive later through /v1/feedback."
            + (
                f" Every route except /healthz, /readyz and this documentation needs the "
                f"{API_KEY_HEADER} header."
                if api_key
                else ""
            )
        ),
        lifespan=lifespan,
    )
    app.state.serving = serving
    app.state.metrics = metrics
    app.state.drift = drift
    app.state.settings = {"max_batch": max_batch, "max_body_bytes": body_limit}

    secured = []
    if api_key:
        # Documentation only (OpenAPI security scheme); the middleware does the check.
        header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

        async def _documented_key(key: str | None = Security(header)) -> None:
            return None

        secured = [Depends(_documented_key)]

    # -- exception handlers ---------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        media = content_type.split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return JSONResponse(
                error_body(
                    f"unsupported Content-Type {content_type or '(none)'!r}: send the body as "
                    f"JSON with Content-Type: application/json"
                ),
                status_code=415,
            )
        errors = describe_errors(list(exc.errors()), allowed, ground_truth, key_parts)
        shown = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return JSONResponse(
            error_body(f"invalid request: {shown}{more}", errors=errors), status_code=422
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(redact(exc.message), **exc.extra),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the body cannot be read as JSON (it must be UTF-8 encoded JSON)"
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request, exc)

    # -- routes ---------------------------------------------------------------------
    keyed = (401,) if api_key else ()
    body_errors = (400, *keyed, 408, 413, 415, 422, 500, 503)

    async def guarded(request: Request, method: str, *args: Any, counted: bool = False) -> Any:
        """The detector's answer, or the error response. `counted` (the scoring routes):
        the metrics count new, replayed and alerting transactions from the detector's own
        tallies, so a retry is never counted as scored twice."""
        try:
            if not counted:
                return await serving.call(method, *args)
            result, counts = await serving.call(method, *args, counted=True)
        except ApiError:
            raise
        except Exception as exc:  # the detector failed: log it, never return its trace
            return internal_error(request, exc)
        for counter, key in (
            (metrics.scored, "scored"),
            (metrics.replayed, "replayed"),
            (metrics.alerts, "alerts"),
            (metrics.late_inserted, "inserted"),
            (metrics.not_inserted, "not_inserted"),
        ):
            if counts[key]:
                counter.inc(counts[key])
        drift.observe_call(result, counts)
        return result

    # Replies are serialised with json.dumps (allow_nan=False) and returned as a Response,
    # so FastAPI does not validate them again; response_model documents them in OpenAPI.
    @app.post(
        "/v1/score",
        response_model=ScoreResult,
        responses=error_responses(*body_errors, 409),
        dependencies=secured,
        summary="Score one transaction",
    )
    async def score(request: Request, transaction: transaction_model) -> Any:  # type: ignore[valid-type]
        result = await guarded(
            request, "score", transaction.model_dump(by_alias=True), counted=True
        )
        return result if isinstance(result, Response) else _json_response(request, result)

    @app.post(
        "/v1/score/batch",
        response_model=BatchResult,
        responses=error_responses(*body_errors, 409),
        dependencies=secured,
        summary=f"Score up to {max_batch} transactions in order",
    )
    async def score_batch(request: Request, batch: batch_model) -> Any:  # type: ignore[valid-type]
        txs = batch.model_dump(by_alias=True)["transactions"]
        if not txs:
            return _json_response(request, {"results": []})
        results = await guarded(request, "score_batch", txs, counted=True)
        if isinstance(results, Response):
            return results
        return _json_response(request, {"results": results})

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResult,
        responses=error_responses(*body_errors, 404),
        dependencies=secured,
        summary="Report the true label of a scored transaction (idempotent)",
    )
    async def feedback(request: Request, body: Feedback) -> Any:
        result = await guarded(request, "feedback", body.transaction_id, body.label)
        if isinstance(result, Response):
            return result
        metrics.feedback.labels(str(body.label)).inc()
        return _json_response(request, result)

    @app.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": fraudseq.__version__}

    @app.get(
        "/readyz",
        summary="Readiness: model loaded and state store healthy (else 503)",
        response_model=Ready,
        responses={503: {"model": NotReady, "description": "Not ready; `store` says why."}},
    )
    async def readyz() -> Any:
        detector = serving.detector
        if detector is None:
            return _not_ready("the model is not loaded (the server is starting or stopping)")
        fault, failure = serving.store_fault, serving.store_failure
        if fault is not None:
            return _not_ready(
                f"the state store has a permanent fault (error id {fault.error_id}, since "
                f"{fault.since}): an operator must repair it, then restart the server",
                {"status": "permanent fault", **fault.describe()},
            )
        try:
            ok = await serving.probe()
        except TimeoutError:
            return _not_ready(
                f"the state store did not answer its probe within {READY_TIMEOUT_SECONDS}s",
                {"status": "unreachable"},
            )
        except Exception:
            log.warning("readiness check failed", exc_info=True)
            return _not_ready(
                "the readiness check failed (see the server log)", {"status": "unreachable"}
            )
        if not ok:
            return _not_ready(
                "the state store is unreachable or the model is not loaded",
                {"status": "unreachable"},
            )
        if failure is not None and time.monotonic() - failure.at < STORE_FAILURE_WINDOW_SECONDS:
            return _not_ready(
                f"the state store failed the last request (error id {failure.error_id}, at "
                f"{failure.since}) and none succeeded since",
                {"status": "failing", **failure.describe()},
            )
        ready = {
            "status": "ready",
            "model_version": detector.model_version,
            "reasons": getattr(detector, "explain", None),
            "store": {"status": "ok"},
        }
        return JSONResponse(ready)  # as it is, not filled in by the response model

    @app.get(
        "/metrics",
        dependencies=secured,
        summary="Prometheus metrics (text format)",
        response_class=PlainTextResponse,
        responses={
            200: {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **error_responses(*keyed, by_reference=True),
        },
    )
    async def metrics_route() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/admin/promote",
        dependencies=secured,
        summary="Swap the served model and its shadow (needs the API key)",
        response_model=Promoted,
        responses=promote_responses(keyed),
    )
    async def promote(request: Request) -> Any:
        if not api_key:
            raise ApiError(
                403,
                "promote needs an API key: start the server with --api-key-env NAME (the "
                "variable holding the key) and send it in the X-API-Key header",
            )
        if not isinstance(serving.detector, ShadowPair):
            raise ApiError(
                409, "no shadow model to promote: start the server with --shadow MODEL_DIR"
            )
        swapped = await guarded(request, "promote")
        if isinstance(swapped, Response):
            return swapped
        metrics.model_info.clear()
        metrics.model_info.labels(swapped["champion"]).set(1)
        drift.set_model(getattr(serving.detector.champion, "model", None))  # its reference
        return _json_response(request, {"status": "promoted", **swapped})

    routes = frozenset(r.path for r in app.routes if hasattr(r, "path"))
    # Added last = outermost: metrics see every response, including 401 and 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=body_limit, timeout=body_timeout)
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app


def _freeze_long_lived_objects() -> None:
    """Tail latency: `gc.freeze()` the objects alive at startup, and one torch thread.

    A loaded model, torch, pandas and FastAPI make about a million long-lived objects; every
    full (generation 2) collection walked them all, a 100-150 ms pause of the whole server
    every few thousand requests (measured with gc.callbacks: p99 fine, max 150 ms). Frozen,
    they are never scanned again; collections only see objects made while serving. One
    intra-op thread: a window is too small to split, and a second thread only adds
    synchronisation (and takes the core the event loop needs).
    """
    gc.collect()
    gc.freeze()
    torch.set_num_threads(1)


def _not_ready(message: str, store: dict | None = None) -> JSONResponse:
    body: dict[str, Any] = {"status": "not ready", "message": message}
    if store is not None:
        body["store"] = store
    return JSONResponse(body, status_code=503)


def _json_response(request: Request, payload: Any) -> Response:
    try:
        content = json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:  # NaN or a non-JSON type from the detector
        return internal_error(request, exc)
    return Response(content, media_type="application/json")


#: A state URL without its password, for logs and replies (the one redaction function).
redact_state_url = redact


def app_from_env() -> FastAPI:
    """uvicorn factory for ``fraudseq serve --workers N``: settings from FRAUDSEQ_SERVE_*."""
    if not logging.getLogger().handlers:  # a fresh worker process: log like the CLI does
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    return create_app(**ServeSettings.from_env().app_kwargs())
