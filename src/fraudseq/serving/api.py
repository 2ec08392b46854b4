"""The HTTP API over a :class:`~fraudseq.serving.detector.Detector` (FastAPI).

Build it with :func:`create_app` (in-process, e.g. tests and ``fraudseq serve --workers 1``)
or :func:`app_from_env` (uvicorn's factory mode, used by ``fraudseq serve --workers N``: each
worker process builds its own app from ``FRAUDSEQ_SERVE_*`` environment variables).

Routes
    ``POST /v1/score``        one transaction (a JSON object keyed by the schema's columns)
    ``POST /v1/score/batch``  ``{"transactions": [...]}``, at most ``max_batch`` per request
    ``POST /v1/feedback``     ``{"transaction_id": "...", "label": 0 or 1}``, idempotent
    ``GET /healthz``          liveness: the process answers
    ``GET /readyz``           readiness: model loaded and state store healthy, else 503
    ``GET /metrics``          Prometheus text format
    ``GET /docs``, ``GET /openapi.json``

Request validation (the models are built from the model's schema, so the OpenAPI document
names the model's own columns; the fields are those of ``live_features._request_columns``):

- the id: the schema's id column, or ``transaction_id`` when the model's data had none
  (its file's ids were row numbers). A JSON string or integer (an integer is its digits,
  ``123`` is ``"123"``, as a file's integer id column is read; within +-(2**53-1), which
  every JSON parser reads exactly); 1 to 128 characters, not blank, no control characters
  (C0, DEL, C1: tab, newline, NUL, ESC, ...). Booleans and floats are refused.
- the entity: nothing when the model's data is one stream; its one column, a string or an
  integer like the id; or each part of a composite key, a required field holding a string
  or an integer, or null for a missing part (which is a value of its own, ``"<NA>"``, as in
  a file); a transaction with every part null is refused (by the detector, 422).
- ``time``: an ISO 8601 string, ``TIME_FORMS`` (``2026-01-31T13:45:00``, ``...Z``,
  ``...+02:00``; a date alone means midnight; the CLI's dates, ``fraudseq.splits``).
  Offsets are converted to UTC; a time without offset is taken as UTC. Years 1678-2261 as
  written, read to the microsecond. A JSON number only when the model's schema has a
  ``[time]`` table: origin + number x unit, as in its files; without one a number is
  refused with a message naming that fix.
- ``amount``: a finite JSON number (negative = refund), smaller than 1e15 in absolute value.
  ``NaN``/``Infinity`` tokens, which Python's JSON parser accepts, are rejected, as are
  numbers written as strings.
- categorical and counterparty columns: strings of at most 256 characters without control
  characters, JSON integers (``5411`` is the category ``"5411"``, as in a file), or
  null/absent for "unknown" (like an empty cell in a file).

The OpenAPI document states each of these rules (the time and text rules as patterns, which
the service checks with the same regular expressions) and every status a route returns.
- ``/v1/feedback``'s ``transaction_id``: a string or an integer, like the id.

Every reply (single and batch) carries ``out_of_order``: whether the transaction was older
than its account's (or stream's) latest event, and ``history``: ``appended``, ``inserted``
(late, placed in time order) or ``not_inserted`` (too late; see the Detector). A time more
than a day ahead of the server's clock (``--clock``) or older than the state keeps is
refused with 422 naming the accepted window.
- numeric columns: finite numbers, or null/absent for "unknown".
- Unknown fields are rejected, and so are the label and scenario columns: labels arrive
  later through ``/v1/feedback``.

Every error body is JSON ``{"message": "..."}``; validation errors (422) add ``"errors"``:
a list of ``{"field": "transactions[3].amount", "loc": [...], "msg": "...", "type": "..."}``.
Input values are never echoed back. Other 4xx: 401 missing/wrong API key, 413 body above
the limit (checked on Content-Length before reading, or while reading a chunked body), 415
a body that is not ``application/json``, 408 a body not received within ``body_timeout``
seconds of the headers (then the connection is closed; the header deadline is
``fraudseq.http_limits``, uvicorn's protocol in ``fraudseq serve``). Every 5xx
body is ``{"message": ..., "error_id": ...}`` with a generic message; the details go to the
server log only, at error level with the id. URLs with credentials are redacted
(``fraudseq.redaction.redact``) in replies and, through a filter on the service's loggers,
in every log line.

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

API key: with ``api_key`` set, every route except /healthz, /readyz and the documentation
(/docs, /redoc, /openapi.json) needs it in ``X-API-Key``, compared with
``hmac.compare_digest``; /metrics too. The documentation is open because the docs page
loads /openapi.json with no way to send a key (it was a blank page), and the document
holds no secret: it is the request format every client must know. Every route that acts
on data or reveals state keeps the key.

The detector runs in one dedicated thread per process: calls are serialised in arrival
order (two transactions of one account are applied in the order they came) and the event
loop never waits on the model. Scale out with ``--workers`` (processes) and a shared state
store (SQLite or Redis; "memory" is refused with several workers).

Metrics (``fraudseq_`` prefix): ``http_requests_total{route,method,status}``,
``http_request_duration_seconds{route,method}`` (histogram), ``transactions_scored_total``
(new transactions), ``transactions_replayed_total`` (retries answered from the store),
``alerts_total`` (new alerts), ``transactions_late_inserted_total`` (late, inserted in time
order), ``transactions_not_inserted_total`` (too late to insert), ``feedback_total{label}``,
``model_info{model_version}``.
Routes outside the API are counted as ``route="other"``. Each app has its own
``CollectorRegistry``. With several workers the CLI turns on prometheus-client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, a private temporary directory unless already set), so
``/metrics`` on any worker reports the sum over all workers.
"""

import asyncio
import functools
import gc
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections import Counter as Tally
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    create_model,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

import fraudseq
from fraudseq.errors import DataValidationError, FraudseqError, ModelDirectoryError
from fraudseq.redaction import RedactingFilter, redact
from fraudseq.schema import (
    _NS_MAX,
    _NS_MIN,
    MAX_ABS_AMOUNT,
    TIME_UNITS,
    Schema,
    parse_origin,
)
from fraudseq.serving.detector import ConflictError, UnknownTransactionError
from fraudseq.serving.live_features import (
    NUMERIC_TIME_FIX,
    NUMERIC_TIME_PROBLEM,
    _request_columns,
    numeric_time_ns,
)
from fraudseq.serving.stores import StateStoreError

__all__ = [
    "API_KEY_HEADER",
    "ServeSettings",
    "app_from_env",
    "create_app",
    "read_model_schema",
    "redact_state_url",
    "request_models",
    "resolve_api_key",
    "set_reasons",
]

log = logging.getLogger("fraudseq.serving")
# Every record of the service's loggers is redacted, whatever handlers the host installs.
for _name in ("fraudseq", "fraudseq.serving"):
    if not any(isinstance(f, RedactingFilter) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(RedactingFilter())

API_KEY_HEADER = "X-API-Key"
#: Routes that never need the API key: the probes (load balancers and orchestrators call
#: them) and the documentation, which the docs page loads without a key.
OPEN_ROUTES = frozenset(
    {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 256
MAX_TIME_LENGTH = 64
#: Seconds a client has to send a request's body once its headers arrived (a stalled upload
#: is answered 408 and its connection closed; the header deadline is in `fraudseq.http_limits`).
BODY_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_BATCH = 1000
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


def default_max_body_bytes(max_batch: int) -> int:
    """Body limit: 4 KiB per transaction of a full batch, at least 1 MiB."""
    return max(1 << 20, 4096 * max_batch)


# ----------------------------------------------------------------------------- settings

ENV_PREFIX = "FRAUDSEQ_SERVE_"


@dataclass(frozen=True)
class ServeSettings:
    """What ``fraudseq serve`` passes to every worker (through the environment).

    ``api_key_env`` is the *name* of the variable holding the key, so the key itself is
    never copied into another variable or onto a command line.
    """

    model_dir: str
    state: str = "memory"
    api_key_env: str | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_body_bytes: int | None = None
    min_history: int = 3
    ttl_seconds: int | None = None
    body_timeout: int = int(BODY_TIMEOUT_SECONDS)
    reasons: str = "alerts"
    clock: str = "wall"

    _INT_FIELDS = ("max_batch", "max_body_bytes", "min_history", "ttl_seconds", "body_timeout")

    def to_env(self) -> dict[str, str]:
        out = {}
        for name in ("model_dir", "state", "api_key_env", "reasons", "clock", *self._INT_FIELDS):
            value = getattr(self, name)
            if value is not None:
                out[ENV_PREFIX + name.upper()] = str(value)
        return out

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "ServeSettings":
        environ = os.environ if environ is None else environ
        model_dir = environ.get(ENV_PREFIX + "MODEL_DIR")
        if not model_dir:
            raise FraudseqError(
                f"{ENV_PREFIX}MODEL_DIR is not set: app_from_env() needs the model directory. "
                "Fix: start the server with `fraudseq serve MODEL_DIR`, or set the variable."
            )
        kwargs: dict[str, Any] = {"model_dir": model_dir}
        for name in ("state", "api_key_env", "reasons", "clock"):
            value = environ.get(ENV_PREFIX + name.upper())
            if value:
                kwargs[name] = value
        for name in cls._INT_FIELDS:
            value = environ.get(ENV_PREFIX + name.upper())
            if value:
                try:
                    kwargs[name] = int(value)
                except ValueError:
                    raise FraudseqError(
                        f"{ENV_PREFIX}{name.upper()}={value!r} is not an integer."
                    ) from None
        return cls(**kwargs)

    def app_kwargs(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "state": self.state,
            "api_key": resolve_api_key(self.api_key_env),
            "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes,
            "body_timeout": self.body_timeout,
            "detector_options": {
                "min_history": self.min_history,
                "ttl_seconds": self.ttl_seconds,
                "clock": self.clock,
            },
            "reasons": self.reasons,
            "freeze_gc": True,  # a serving process (see create_app)
        }


def resolve_api_key(env_var: str | None) -> str | None:
    """The key held by the environment variable `env_var`; refuses an unset/empty one."""
    if env_var is None:
        return None
    value = os.environ.get(env_var)
    if not value:
        state = "empty" if value == "" else "not set"
        raise FraudseqError(
            f"--api-key-env {env_var}: the environment variable {env_var} is {state}, so "
            f"there is no API key to require. Fix: export {env_var}=<a long random key> "
            f"before starting the server, or leave out --api-key-env to serve without a key."
        )
    return value


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


# --------------------------------------------------------------------- request models


# Text fields (ids, entities, categories, counterparty) refuse control characters: C0, DEL
# and C1 (tab, newline, NUL, ESC, ...), which would corrupt logs, terminals and CSV files.
# The same patterns are the JSON Schema's (ECMA-262 and Python read them alike) and the
# service's checks, so the OpenAPI document says exactly what is accepted.
_CONTROL_CHARS = "\\u0000-\\u001f\\u007f-\\u009f"
# Whitespace as str.isspace() has it, beyond the control characters: a blank id is refused.
_SPACE_CHARS = "\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
TEXT_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
ID_PATTERN = f"^[^{_CONTROL_CHARS}]*[^{_CONTROL_CHARS}{_SPACE_CHARS}][^{_CONTROL_CHARS}]*$"
# ISO 8601 as the CLI reads dates (fraudseq.splits.ISO_TIME), years 1678-2261 as written.
_YEAR = "(?:1(?:6(?:7[89]|[89][0-9])|[7-9][0-9]{2})|2[01][0-9]{2}|22(?:[0-5][0-9]|6[01]))"
TIME_PATTERN = (
    f"^{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,9})?)?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
TIME_FORMS = (
    "YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS[.fraction]] with an optional Z or +HH:MM/-HH:MM "
    "offset (a space may replace the T), years 1678-2261"
)
#: Integers read as ids or categories: the range every JSON parser reads exactly
#: (JavaScript's Number.MAX_SAFE_INTEGER); a longer one is sent as a string.
MAX_INT = 2**53 - 1
MIN_INT = -MAX_INT
_TEXT_RE, _ID_RE, _TIME_RE = (re.compile(p) for p in (TEXT_PATTERN, ID_PATTERN, TIME_PATTERN))
_NO_CONTROL = "must not contain control characters (tab, newline, NUL, ESC, ...)"


def _printable(value: str) -> str:
    if not _TEXT_RE.fullmatch(value):
        raise ValueError(_NO_CONTROL)
    if not _ID_RE.fullmatch(value):
        raise ValueError("must not be blank")
    return value


def _no_control(value: str | None) -> str | None:
    if value is not None and not _TEXT_RE.fullmatch(value):
        raise ValueError(_NO_CONTROL)
    return value


def _iso_time(value: str) -> str:
    if not _TIME_RE.fullmatch(value):
        raise ValueError(f"must be an ISO 8601 time: {TIME_FORMS}; e.g. 2026-01-31T13:45:00Z")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError as err:  # the form is right, a part is not (2026-02-30)
        raise ValueError(f"is not a valid date or time ({err})") from None
    if stamp.tzinfo is not None:  # the year as written is checked; 1677-12-31T23:30 is fine
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return stamp.isoformat()


def _integer_text(value: int) -> str:
    if not MIN_INT <= value <= MAX_INT:
        raise ValueError(
            f"an integer must be within +-{MAX_INT} (2**53-1, what every JSON parser reads "
            f"exactly); send a longer one as a string"
        )
    return str(value)


# An id or entity may be a JSON integer, read as its digits the way a file's integer id
# column is ("123"); booleans and floats are not ids.
def _id_text(value: Any) -> Any:
    if type(value) is int:
        return _integer_text(value)
    if isinstance(value, str):
        return value
    raise ValueError("must be a string or an integer")


_INTEGER_SCHEMA = {"type": "integer", "minimum": MIN_INT, "maximum": MAX_INT}


def _id_type(description: str) -> Any:
    text = (
        f"{description} A string (1-{MAX_ID_LENGTH} characters, not blank, no control "
        f"characters) or an integer within +-(2**53-1) (read as its digits)."
    )
    return Annotated[
        str,
        BeforeValidator(_id_text),
        StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LENGTH),
        AfterValidator(_printable),
        WithJsonSchema(
            {
                "anyOf": [
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_ID_LENGTH,
                        "pattern": ID_PATTERN,
                    },
                    _INTEGER_SCHEMA,
                ],
                "description": text,
            }
        ),
        Field(description=text),
    ]


_ISO_TIME_SCHEMA = {
    "type": "string",
    "maxLength": MAX_TIME_LENGTH,
    "pattern": TIME_PATTERN,
    "example": "2026-01-31T13:45:00Z",
}
_ISO_TIME_TEXT = (
    f"ISO 8601 time: {TIME_FORMS}. Offsets are converted to UTC, no offset means UTC; read "
    f"to the microsecond."
)


def _numeric_time_range(unit: str, origin: str) -> tuple[float, float]:
    """The numbers of `unit` since `origin` that `numeric_times` accepts (years 1678-2261)."""
    start, step = int(parse_origin(origin).value), TIME_UNITS[unit]
    return (_NS_MIN - start) / step, (_NS_MAX - start) / step


def _time_type(schema: Schema) -> Any:
    """The time field: an ISO 8601 string; with the schema's [time] table also a JSON
    number of its unit since its origin (checked by `numeric_times`, as files are)."""
    unit, origin = schema.time_unit, schema.time_origin

    def check(value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_TIME_LENGTH:
                raise ValueError(f"must have at most {MAX_TIME_LENGTH} characters")
            return _iso_time(value)
        if type(value) is int or type(value) is float:
            if unit is None:
                raise ValueError(f"{NUMERIC_TIME_PROBLEM}; {NUMERIC_TIME_FIX}")
            if numeric_time_ns(value, unit, origin) is None:
                raise ValueError(
                    f"a number of {unit!r} since {origin} must be finite and fall within "
                    f"the years 1678-2261"
                )
            return value
        raise ValueError(
            "must be an ISO 8601 time string"
            + (f" or a number of {unit!r} since {origin}" if unit is not None else "")
        )

    if unit is None:
        return Annotated[
            Any,
            BeforeValidator(check),
            WithJsonSchema({**_ISO_TIME_SCHEMA, "description": _ISO_TIME_TEXT}),
            Field(description=_ISO_TIME_TEXT),
        ]
    text = (
        f"{_ISO_TIME_TEXT} Or a number: {origin} (UTC) + the number x {unit!r} "
        f"({TIME_UNITS[unit]:,} ns), the model's [time] table, within the years 1678-2261."
    )
    low, high = _numeric_time_range(unit, origin)
    number = {"type": "number", "minimum": low, "maximum": high, "example": 36}
    return Annotated[
        Any,
        BeforeValidator(check),
        WithJsonSchema({"anyOf": [_ISO_TIME_SCHEMA, number], "description": text}),
        Field(description=text),
    ]


_Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Text = Annotated[str, StringConstraints(strict=True, max_length=MAX_TEXT_LENGTH)]


# A category may be a JSON integer (an MCC, a terminal number), read as its digits the way a
# file's integer column is; floats and booleans are not categories.
def _category_text(value: Any) -> Any:
    if type(value) is int:
        return _integer_text(value)
    if value is None or isinstance(value, str):
        return value
    raise ValueError("a category is a string or an integer (or null when unknown)")


_Category = Annotated[
    _Text,
    BeforeValidator(_category_text),
    AfterValidator(_no_control),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": TEXT_PATTERN},
                _INTEGER_SCHEMA,
            ],
            "description": f"A string of at most {MAX_TEXT_LENGTH} characters without control "
            f"characters, or an integer within +-(2**53-1) (read as its digits); null or absent "
            f"when unknown.",
        }
    ),
]
_EntityPart = Annotated[
    _Category | None,
    Field(
        description="A part of the composite entity key: required, null when unknown (a "
        "value of its own); at least one part must be known."
    ),
]


def request_models(schema: Schema, max_batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """(transaction model, batch model) for `schema`.

    The fields are `live_features._request_columns(schema)`: the id (``transaction_id``
    without an id column), the entity's column(s) (none for one stream; a composite key's
    parts are required and nullable), time, amount, categorical, numeric, counterparty.
    Fields use internal names (``c0``, ``c1``, ...) with the column name as alias, so any
    column name works, even one that is not a Python identifier or shadows a pydantic
    attribute. Dump with ``model_dump(by_alias=True)``.
    """
    fields: dict[str, Any] = {}
    parts = schema.entity_parts
    roles: list[tuple[str, Any, Any]] = [
        (schema.id_column, _id_type("Unique transaction id."), ...)
    ]
    if len(parts) == 1:
        roles.append((parts[0], _id_type("Card/account whose history forms the sequence."), ...))
    for part in parts if len(parts) > 1 else ():  # required, null when unknown
        roles.append((part, _EntityPart, ...))
    roles += [
        (schema.time, _time_type(schema), ...),
        (
            schema.amount,
            Annotated[
                _Number,
                Field(gt=-MAX_ABS_AMOUNT, lt=MAX_ABS_AMOUNT, description="Amount (refunds < 0)."),
            ],
            ...,
        ),
    ]
    texts = [*schema.categorical, schema.counterparty]
    for name in dict.fromkeys(c for c in texts if c is not None):
        roles.append((name, _Category | None, None))
    for name in schema.numeric:
        roles.append((name, _Number | None, None))
    for i, (name, annotation, default) in enumerate(roles):
        fields[f"c{i}"] = (annotation, Field(default, alias=name))
    config = ConfigDict(extra="forbid", populate_by_name=False, title="Transaction")
    transaction = create_model("Transaction", __config__=config, **fields)
    batch = create_model(
        "TransactionBatch",
        __config__=ConfigDict(extra="forbid"),
        transactions=(
            Annotated[
                list[transaction],
                Field(max_length=max_batch, description=f"At most {max_batch} transactions."),
            ],
            ...,
        ),
    )
    return transaction, batch


class Feedback(BaseModel):
    """The true label of a scored transaction, once known (chargeback, confirmation)."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: _id_type("Id of a transaction sent to /v1/score.")  # type: ignore[valid-type]
    label: Annotated[int, Field(strict=True, ge=0, le=1, description="1 fraud, 0 legitimate.")]


class ScoreResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    transaction_id: str
    fraud_probability: float
    score: float = Field(description="0-100.")
    alert: bool
    threshold: float
    insufficient_history: bool
    out_of_order: bool = Field(
        description="Older than its account's (or stream's) latest event already scored."
    )
    history: Literal["appended", "inserted", "not_inserted"] = Field(
        description="Where it went in its account's history: appended as the latest event; "
        "inserted in time order (out of order, within the allowed lateness of 1 day); or "
        "not_inserted (too late: scored against the history before it that is kept, "
        "recorded, not added to the history)."
    )
    model_version: str
    reasons: list[Any]


class BatchResult(BaseModel):
    results: list[ScoreResult]


class FeedbackResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    transaction_id: str
    label: int = Field(description="1 fraud, 0 legitimate.")
    previous_label: int | None = Field(description="The label held before, null if none.")
    changed: bool


class ErrorBody(BaseModel):
    """Every error reply. 5xx replies hold a generic message and an error id; the details
    are in the server log under that id."""

    model_config = ConfigDict(extra="allow", title="Error")

    message: str
    error_id: str | None = Field(
        None, description="5xx: the id under which the server logged the details."
    )
    permanent: bool | None = Field(
        None,
        description="503 from the state store: true when retrying cannot help (a damaged or "
        "read-only store: an operator must act, no Retry-After); false when a retry may "
        "succeed (Retry-After says when).",
    )


class FieldError(BaseModel):
    field: str = Field(description="The field's path, e.g. transactions[3].amount.")
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorBody(ErrorBody):
    model_config = ConfigDict(extra="allow", title="ValidationError")

    errors: list[FieldError] | None = Field(
        None,
        description="Each invalid field and why (absent when the detector refused the "
        "request as a whole; the message says why).",
    )


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class StoreHealth(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok", "unreachable", "failing", "permanent fault"]
    error_id: str | None = None
    permanent: bool | None = None
    since: str | None = Field(None, description="UTC, ISO 8601.")


class Ready(BaseModel):
    status: Literal["ready"]
    model_version: str
    reasons: str | None = Field(description="Which replies carry reasons: alerts, all, none.")
    store: StoreHealth


class NotReady(BaseModel):
    status: Literal["not ready"]
    message: str
    store: StoreHealth | None = None


_ERRORS: dict[int, tuple[type[BaseModel], str]] = {
    400: (
        ErrorBody,
        "A body that cannot be read (not UTF-8), an invalid Content-Length header, or a "
        "request the detector refused for another reason.",
    ),
    401: (ErrorBody, "Missing or invalid API key (X-API-Key header)."),
    404: (ErrorBody, "Feedback for a transaction id never scored (or expired)."),
    408: (ErrorBody, "The body was not received within the body timeout; connection closed."),
    409: (ErrorBody, "A transaction id already scored with other content (nothing stored)."),
    413: (ErrorBody, "The request body is larger than the limit."),
    415: (ErrorBody, "The body is not sent as JSON (Content-Type: application/json)."),
    422: (
        ValidationErrorBody,
        "Invalid request: each bad field and why (ids, entities, categories: no control "
        "characters; times: ISO 8601, years 1678-2261; amounts: finite, below 1e15).",
    ),
    500: (ErrorBody, "Unexpected failure; error_id names the details in the server log."),
    503: (
        ErrorBody,
        "The model is not loaded (starting or stopping) or the state store failed; nothing "
        "was stored. Transient: Retry-After. Permanent (permanent: true): no Retry-After.",
    ),
}


def _json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying; absent when retrying cannot help.",
        "schema": {"type": "integer"},
    }
}


def _responses(*codes: int, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these error codes (FastAPI's own 422 is replaced by ours).
    `by_reference`: as JSON content referring to the models' schemas, for a route whose own
    replies are not JSON (FastAPI would give the models that route's media type)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model, description = _ERRORS[code]
        out[code] = {"model": model, "description": description}
        if by_reference:
            reference = {"$ref": f"#/components/schemas/{model.__name__}"}
            out[code] = {"description": description, "content": _json_content(reference)}
        if code == 503:
            out[code]["headers"] = _RETRY_AFTER
    return out


# ------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, headers: dict | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers, extra


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _describe_errors(
    errors: list[dict[str, Any]],
    allowed: list[str],
    ground_truth: set[str],
    key_parts: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    import difflib

    out = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        kind = error.get("type", "")
        msg = str(error.get("msg", ""))
        ctx = error.get("ctx") or {}
        name = loc[-1] if loc else None
        if kind == "json_invalid":
            msg = f"malformed JSON: {ctx.get('error', msg)}"
            loc = ("body",)
        elif kind == "missing" and loc in (("body",), ()):
            msg = "a JSON request body is required"
        elif kind in ("model_attributes_type", "dict_type", "model_type") and loc == ("body",):
            msg = "the request body must be a JSON object"
        elif kind == "missing" and name in key_parts:
            msg = (
                f"required field is missing: a part of the entity key {' + '.join(key_parts)}; "
                f"send null when it is unknown"
            )
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "extra_forbidden" and name in ground_truth:
            msg = (
                "ground truth is not accepted when scoring; send the label later to "
                "POST /v1/feedback"
            )
        elif kind == "extra_forbidden":
            near = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            msg = f"unknown field{hint}; allowed fields: {', '.join(allowed)}"
        elif kind == "too_long" and name == "transactions":
            msg = (
                f"too many transactions: {ctx.get('actual_length')} in one request, the "
                f"limit is {ctx.get('max_length')} per request; split the batch"
            )
        elif kind == "finite_number":
            msg = "must be a finite number (NaN and Infinity are not allowed)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append({"field": _field_path(loc), "loc": list(loc), "msg": msg, "type": kind})
    return out


def _error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra}


# ------------------------------------------------------------------------- metrics


class _Metrics:
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


# --------------------------------------------------------------------- middleware


async def _send_json(send: Callable, status: int, body: dict, headers=()) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _MetricsMiddleware:
    """Counts requests by route template and status, and times them (outermost)."""

    def __init__(self, app, metrics: _Metrics, routes: frozenset[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            path = scope["path"]
            route = path if path in self.routes else "other"
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


class _ApiKeyMiddleware:
    """Requires the key in X-API-Key on every route but the health probes (constant time)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        provided = None
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                provided = value
                break
        if provided is None:
            message = f"missing {API_KEY_HEADER} header: this server requires an API key"
        elif not hmac.compare_digest(provided, self.key):
            message = f"invalid API key in the {API_KEY_HEADER} header"
        else:
            await self.app(scope, receive, send)
            return
        await _send_json(
            send, 401, _error_body(message), [(b"www-authenticate", API_KEY_HEADER.encode())]
        )


class _BodyLimitMiddleware:
    """413 for a body above `max_bytes`, decided before the body is parsed; 408 for a body
    not received whole within `timeout` seconds of the request's headers (uvicorn has no
    read timeout: a stalled upload would hold its connection forever). The body is read
    here, under both limits, and replayed to the app."""

    def __init__(self, app, max_bytes: int, timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _too_large(self, size: int | None) -> dict:
        got = f"of {size} bytes " if size is not None else ""
        return _error_body(
            f"request body {got}is larger than the limit of {self.max_bytes} bytes; "
            f"send fewer transactions per request"
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = chunked = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = value
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                await _send_json(send, 400, _error_body("invalid Content-Length header"))
                return
            if size > self.max_bytes:
                await _send_json(send, 413, self._too_large(size))
                return
        elif chunked is None and scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)  # no body
            return
        # Read the body up to the limit and within the deadline, then replay it to the app.
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_bytes:
                        await _send_json(send, 413, self._too_large(None))
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            log.debug("request body incomplete after %ss (%d bytes)", self.timeout, size)
            message = (
                f"the request body was not received within {self.timeout:g} s "
                f"({size} bytes arrived)"
            )
            await _send_json(send, 408, _error_body(message), [(b"connection", b"close")])
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------------- app


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
) -> FastAPI:
    """The FastAPI app over `detector`, or over a Detector loaded in the lifespan.

    Args:
        detector: an object with the Detector interface (schema, model_version, counts,
            score, score_batch, feedback, ready, close). The app uses it but does not close
            it.
        model_dir, state, detector_options, reasons: otherwise the app loads
            ``Detector.load(model_dir, state, **detector_options)`` when it starts (and
            applies :func:`set_reasons`) and closes it when it stops. The schema is read
            from model.json right away, so the request models (and OpenAPI) exist before
            the model is loaded.
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
    """
    if (detector is None) == (model_dir is None):
        raise ValueError("create_app needs exactly one of detector and model_dir")
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
    allowed = list(_request_columns(schema))
    key_parts = schema.entity_parts if len(schema.entity_parts) > 1 else ()
    ground_truth = {c for c in (schema.label, schema.scenario) if c is not None}
    metrics = _Metrics(registry if registry is not None else CollectorRegistry())
    serving = _Serving(metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor(1, thread_name_prefix="fraudseq-detector")
        probe_executor = ThreadPoolExecutor(1, thread_name_prefix="fraudseq-probe")
        owned = None
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
            serving.detector = owned if owned is not None else detector
            serving.executor = executor
            serving.probe_executor = probe_executor
            serving._probe = None
            metrics.model_info.labels(str(serving.detector.model_version)).set(1)
            if freeze_gc:
                _freeze_long_lived_objects()
            yield
        finally:
            serving.detector = None
            serving.executor = None
            probe_executor.shutdown(wait=False, cancel_futures=True)  # a probe may hang
            if owned is not None:
                try:
                    await loop.run_in_executor(executor, owned.close)
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
                _error_body(
                    f"unsupported Content-Type {content_type or '(none)'!r}: send the body as "
                    f"JSON with Content-Type: application/json"
                ),
                status_code=415,
            )
        errors = _describe_errors(list(exc.errors()), allowed, ground_truth, key_parts)
        shown = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return JSONResponse(
            _error_body(f"invalid request: {shown}{more}", errors=errors), status_code=422
        )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            _error_body(redact(exc.message), **exc.extra),
            status_code=exc.status,
            headers=exc.headers,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "the body cannot be read as JSON (it must be UTF-8 encoded JSON)"
        return JSONResponse(_error_body(message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)

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
            return _internal_error(request, exc)
        for counter, key in (
            (metrics.scored, "scored"),
            (metrics.replayed, "replayed"),
            (metrics.alerts, "alerts"),
            (metrics.late_inserted, "inserted"),
            (metrics.not_inserted, "not_inserted"),
        ):
            if counts[key]:
                counter.inc(counts[key])
        return result

    # Replies are serialised with json.dumps (allow_nan=False) and returned as a Response,
    # so FastAPI does not validate them again; response_model documents them in OpenAPI.
    @app.post(
        "/v1/score",
        response_model=ScoreResult,
        responses=_responses(*body_errors, 409),
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
        responses=_responses(*body_errors, 409),
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
        responses=_responses(*body_errors, 404),
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
            **_responses(*keyed, by_reference=True),
        },
    )
    async def metrics_route() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    routes = frozenset(r.path for r in app.routes if hasattr(r, "path"))
    # Added last = outermost: metrics see every response, including 401 and 413.
    app.add_middleware(_BodyLimitMiddleware, max_bytes=body_limit, timeout=body_timeout)
    if api_key:
        app.add_middleware(_ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(_MetricsMiddleware, metrics=metrics, routes=routes)
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
        return _internal_error(request, exc)
    return Response(content, media_type="application/json")


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s on %s %s",
        error_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        _error_body(
            f"internal server error (error id {error_id}); the details are in the server log",
            error_id=error_id,
        ),
        status_code=500,
    )


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
