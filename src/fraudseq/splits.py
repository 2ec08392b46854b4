"""Time-based selection: half-open [from, until) periods and the validation split."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError


def parse_time(value: str | pd.Timestamp | None, option: str = "date") -> pd.Timestamp | None:
    """Parse a date or ISO time given on the command line or in the API (naive UTC)."""
    if value is None or isinstance(value, pd.Timestamp):
        return value
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise FraudseqError(
            f"{option}: cannot parse {value!r} as a date; use YYYY-MM-DD or an ISO time "
            "such as 2026-02-01T12:00"
        ) from None
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
