"""The API's request and response models, built from the model's schema.

Request validation (the models are built from the model's schema, so the OpenAPI document
names the model's own columns; the fields are those of ``fraudseq.transaction.request_columns``):

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
  Offsets are converted to UTC; a time without offset is taken as UTC. Years 1678-2261
  both as written and in UTC (``schema.EARLIEST_TIME`` to ``schema.LATEST_TIME``, the range
  files are held to), read to the microsecond. A JSON number only when the model's schema
  has a ``[time]`` table: origin + number x unit, as in its files; without one a number is
  refused with a message naming that fix.
- ``amount``: a finite JSON number (negative = refund), smaller than 1e15 in absolute value.
  ``NaN``/``Infinity`` tokens, which Python's JSON parser accepts, are rejected, as are
  numbers written as strings.
- categorical and counterparty columns: strings of at most 256 characters without control
  characters, JSON integers (``5411`` is the category ``"5411"``, as in a file), or
  null/absent for "unknown" (like an empty cell in a file).
- numeric columns: finite numbers, or null/absent for "unknown".
- Unknown fields are rejected, and so are the label and scenario columns: labels arrive
  later through ``/v1/feedback``.
- ``/v1/feedback``'s ``transaction_id``: a string or an integer, like the id.

The OpenAPI document states each of these rules (the time and text rules as patterns, which
the service checks with the same regular expressions).
"""

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

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

from fraudseq.schema import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ABS_AMOUNT,
    TIME_UNITS,
    TIME_YEARS,
    Schema,
    parse_origin,
)
from fraudseq.transaction import (
    NUMERIC_TIME_FIX,
    NUMERIC_TIME_PROBLEM,
    numeric_time_ns,
)

__all__ = [
    "ID_PATTERN",
    "TEXT_PATTERN",
    "TIME_FORMS",
    "TIME_PATTERN",
    "BatchResult",
    "Feedback",
    "FeedbackResult",
    "Health",
    "NotReady",
    "Promoted",
    "Ready",
    "ScoreResult",
    "StoreHealth",
    "request_models",
]

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 256
MAX_TIME_LENGTH = 64


# Text fields (ids, entities, categories, counterparty) refuse control characters: C0, DEL
# and C1 (tab, newline, NUL, ESC, ...), which would corrupt logs, terminals and CSV files.
# The same patterns are the JSON Schema's (ECMA-262 and Python read them alike) and the
# service's checks, so the OpenAPI document says exactly what is accepted.
_CONTROL_CHARS = "\\u0000-\\u001f\\u007f-\\u009f"
# Whitespace as str.isspace() has it, beyond the control characters: a blank id is refused.
_SPACE_CHARS = "\\u0020\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
TEXT_PATTERN = f"^[^{_CONTROL_CHARS}]*$"
ID_PATTERN = f"^[^{_CONTROL_CHARS}]*[^{_CONTROL_CHARS}{_SPACE_CHARS}][^{_CONTROL_CHARS}]*$"


def _digit_range(low: str, high: str) -> str:
    """A regular expression for the digit strings from `low` to `high` (of one length)."""
    if low == high:
        return low
    rest = len(low) - 1
    if low[0] == high[0]:
        return low[0] + _group(_digit_range(low[1:], high[1:]))
    first, last, options = int(low[0]), int(high[0]), []
    if low[1:] != "0" * rest:  # low's first digit takes only the tails from low's up
        options.append(low[0] + _group(_digit_range(low[1:], "9" * rest)))
        first += 1
    partial_top = high[1:] != "9" * rest  # high's first digit takes the tails up to high's
    if first <= last - partial_top:
        options.append(f"[{first}-{last - partial_top}]" + "[0-9]" * rest)
    if partial_top:
        options.append(high[0] + _group(_digit_range("0" * rest, high[1:])))
    return "|".join(options)


def _group(pattern: str) -> str:
    return f"(?:{pattern})" if "|" in pattern else pattern


# ISO 8601 as the CLI reads dates (fraudseq.splits.ISO_TIME), in the years of the valid
# range as written (the pattern cannot convert offsets; `_iso_time` checks the UTC time).
_YEAR = f"(?:{_digit_range(f'{EARLIEST_TIME.year:04d}', f'{LATEST_TIME.year:04d}')})"
TIME_PATTERN = (
    f"^{_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    "(?:[T ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,9})?)?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)
TIME_FORMS = (
    "YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS[.fraction]] with an optional Z or +HH:MM/-HH:MM "
    f"offset (a space may replace the T), years {TIME_YEARS}"
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
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    if not EARLIEST_TIME <= stamp <= LATEST_TIME:  # an offset moved it out of the range
        raise ValueError(f"must fall within the years {TIME_YEARS} in UTC, after its offset")
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
    """The numbers of `unit` since `origin` that fall within the valid time range."""
    start, step = int(parse_origin(origin).value), TIME_UNITS[unit]
    return (EARLIEST_TIME.value - start) / step, (LATEST_TIME.value - start) / step


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
                    f"the years {TIME_YEARS}"
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
        f"({TIME_UNITS[unit]:,} ns), the model's [time] table, within the years {TIME_YEARS}."
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

    The fields are `fraudseq.transaction.request_columns(schema)`: the id (``transaction_id``
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


class Promoted(BaseModel):
    status: Literal["promoted"]
    champion: str = Field(description="The model version now answering.")
    challenger: str = Field(description="The model version now scoring in the shadow.")


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
