"""Time-based selection: half-open [from, until) periods and the validation split."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError

# ISO 8601 only: a date, or a date and time to the minute, second or fraction of a second,
# with an optional UTC offset. Anything else (01/02/2026, 20260102, Jan 2 2026, 2026/01/02)
# is refused rather than guessed: pandas reads 01/02/2026 as 2 January.
ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?"
)
ISO_FORMATS = (
    "YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS[.fraction]] with an optional Z or ±HH:MM offset "
    "(a space may replace the T), e.g. 2026-02-01 or 2026-02-01T12:00:00Z"
)


def parse_time(
    value: str | dt.date | pd.Timestamp | None, option: str = "date"
) -> pd.Timestamp | None:
    """Parse a date or ISO 8601 time given on the command line or in the API (naive UTC).
    Text must be one of `ISO_FORMATS`; dates and datetimes are taken as they are."""
    if value is None or isinstance(value, pd.Timestamp):
        return value
    if isinstance(value, str):
        value = value.strip()
        ok = ISO_TIME.fullmatch(value) is not None
    else:  # not a number, which pandas would read as nanoseconds since 1970
        ok = isinstance(value, dt.date | np.datetime64) and not pd.isna(value)
    if not ok:
        raise FraudseqError(f"{option}: cannot parse {value!r} as a date; use {ISO_FORMATS}")
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:  # the form is right but a part is out of range
        reason = str(exc).removesuffix(f": {value}")
        raise FraudseqError(f"{option}: {value!r} is not a valid date or time: {reason}") from None
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp


def in_period(times: pd.Series, start=None, end=None) -> np.ndarray:
    """Boolean mask of `start <= time < end`; a missing bound is open."""
    mask = np.ones(len(times), dtype=bool)
    if start is not None:
        mask &= (times >= parse_time(start)).to_numpy()
    if end is not None:
        mask &= (times < parse_time(end)).to_numpy()
    return mask


def validation_start(train_until: pd.Timestamp, valid_days: float) -> pd.Timestamp:
    """Validation is the last `valid_days` before `train_until`."""
    return train_until - pd.Timedelta(days=valid_days)
