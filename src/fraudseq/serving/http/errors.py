"""The API's error replies: :class:`ApiError`, the error bodies and their OpenAPI entries,
the description of invalid fields, and the reply to an unexpected failure.

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
"""

import logging
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from fraudseq.schema import TIME_YEARS

__all__ = [
    "ApiError",
    "ErrorBody",
    "ValidationErrorBody",
    "describe_errors",
    "error_body",
    "error_responses",
    "internal_error",
    "promote_responses",
]

log = logging.getLogger("fraudseq.serving")


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
        f"characters; times: ISO 8601, years {TIME_YEARS}; amounts: finite, below 1e15).",
    ),
    500: (ErrorBody, "Unexpected failure; error_id names the details in the server log."),
    503: (
        ErrorBody,
        "The model is not loaded (starting or stopping) or the state store failed; nothing "
        "was stored. Transient: Retry-After. Permanent (permanent: true): no Retry-After.",
    ),
}


def promote_responses(keyed: tuple[int, ...]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of POST /v1/admin/promote."""
    own = {
        403: "The server runs without an API key, so promote is refused.",
        409: "No shadow model is configured (--shadow): nothing to promote.",
        503: "The model is not loaded, or the shadow model's queued calls did not finish "
        "in time: nothing was swapped (Retry-After).",
    }
    out = error_responses(*keyed, 500, 503)
    for code, description in own.items():
        out[code] = {**out.get(code, {"model": ErrorBody}), "description": description}
    return out


def _json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying; absent when retrying cannot help.",
        "schema": {"type": "integer"},
    }
}


def error_responses(*codes: int, by_reference: bool = False) -> dict[int | str, dict[str, Any]]:
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


def describe_errors(
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


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, **extra}


def internal_error(request: Request, exc: BaseException) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s on %s %s",
        error_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        error_body(
            f"internal server error (error id {error_id}); the details are in the server log",
            error_id=error_id,
        ),
        status_code=500,
    )
