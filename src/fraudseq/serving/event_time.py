"""Event time: the clock a Detector checks transaction times against and purges state by.

A transaction's time is a claim made by the client. Nothing a single claim says may move a
clock that decides what state is kept (the stream processors' rule: event time within an
allowed window, retention against a watermark). So every time is checked against a window
around a clock before anything is read or written:

- no more than ``max_future`` (default 1 day) ahead of the clock;
- no older than ``max_age`` (default the state's retention: the label delay + 37 days,
  what the counterparty history keeps) behind it.

A time outside the window is refused (`DataValidationError`, HTTP 422) with the window in
the message, and changes nothing. State retention (the counterparty hour buckets) is
measured against the same clock, never against the newest time a transaction claimed.

The clock (``Detector.load(clock=...)``, ``fraudseq serve --clock``):

``"wall"`` (default)
    the server's wall clock (UTC). Live traffic.
``"data"``
    a watermark: the newest time *accepted* so far (by this process). Replays of historical
    data (tests, benchmarks, a backfill): a transaction may be at most ``max_future`` ahead
    of the watermark, so each accepted transaction moves it by at most that much, and never
    beyond the wall clock + ``max_future``. The first transaction after start sets it (it
    is not persisted), so serve live traffic with the wall clock.
an ISO 8601 time, a datetime or a pandas Timestamp
    a fixed clock (a replay of one known period, tests).
a callable
    called for "now"; returns nanoseconds since the epoch, a datetime or a Timestamp.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.splits import parse_time

NS_PER_SECOND = 1_000_000_000
#: How far ahead of the clock a transaction may be: client clocks drift, time zones get
#: mixed up, a day covers both.
DEFAULT_MAX_FUTURE = timedelta(days=1)
CLOCK_WORDS = ("wall", "data")


def duration_ns(value, name: str) -> int:
    """Nanoseconds of a timedelta or a number of seconds (>= 0)."""
    if isinstance(value, timedelta | pd.Timedelta | np.timedelta64):
        ns = int(pd.Timedelta(value).value)
    elif isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        if not np.isfinite(value):
            raise FraudseqError(f"{name} must be finite, got {value!r}")
        ns = int(round(float(value) * NS_PER_SECOND))
    else:
        raise FraudseqError(
            f"{name} must be a timedelta or a number of seconds, got {type(value).__name__}"
        )
    if ns < 0:
        raise FraudseqError(f"{name} must not be negative, got {value!r}")
    return ns


def _moment_ns(value, what: str) -> int:
    """Naive-UTC nanoseconds of an ISO 8601 text, a datetime, a Timestamp or nanoseconds."""
    if isinstance(value, bool):
        raise FraudseqError(f"{what}: a boolean is not a time")
    if isinstance(value, int | np.integer):
        return int(value)
    try:  # the CLI's reading of times (ISO 8601 only, offsets to naive UTC)
        stamp = None if value is None else parse_time(value, what)
    except FraudseqError as err:
        raise FraudseqError(f"{err} (not a time: give 'wall', 'data' or such a time)") from None
    if stamp is None:
        raise FraudseqError(f"{what}: {value!r} is not a time")
    return int(stamp.as_unit("ns").value)


def iso(time_ns: int, *, seconds: bool = False) -> str:
    """ISO 8601 (UTC, no offset) of nanoseconds since the epoch; `seconds`: floored to whole
    seconds (a clock's reading)."""
    if seconds:
        time_ns = int(time_ns) // NS_PER_SECOND * NS_PER_SECOND
    return pd.Timestamp(int(time_ns)).isoformat()


def _span(ns: int) -> str:
    """A duration for people: '1 day', '44 days', '6 hours', '90 seconds'."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        whole = ns / (size * NS_PER_SECOND)
        if whole >= 1 and whole == int(whole):
            return f"{int(whole)} {unit}{'s' if whole != 1 else ''}"
    seconds = ns / NS_PER_SECOND
    return f"{seconds:g} seconds"


class EventClock:
    """The clock and the accepted window of transaction times (see the module docstring).

    `check(time_ns, tx_id)` / `check_many(times, ids)` refuse times outside the window;
    `accepted(newest)` tells a "data" clock what was stored; `now_ns()` is what state
    retention is measured against (None while a "data" clock has seen nothing). `field`
    names the time column in messages.
    """

    def __init__(
        self,
        clock="wall",
        *,
        max_future=DEFAULT_MAX_FUTURE,
        max_age=None,
        field: str = "time",
    ) -> None:
        self.max_future_ns = duration_ns(max_future, "max_future")
        self.max_age_ns = None if max_age is None else duration_ns(max_age, "max_age")
        self.field = field
        self._function: Callable | None = None
        self._fixed: int | None = None
        self._watermark: int | None = None
        self._lock = threading.Lock()
        if isinstance(clock, str) and clock.strip().lower() in CLOCK_WORDS:
            self.mode = clock.strip().lower()
        elif callable(clock):
            self.mode = "callable"
            self._function = clock
        elif isinstance(clock, str | datetime | date | pd.Timestamp | np.datetime64 | int):
            self.mode = "fixed"
            self._fixed = _moment_ns(clock, "clock")
        else:
            raise FraudseqError(
                f"clock must be 'wall', 'data', a time or a callable, got {type(clock).__name__}"
            )

    # -- what "now" is ------------------------------------------------------------------
    def now_ns(self) -> int | None:
        """The clock's time; for a "data" clock the watermark (None before any accepted
        transaction)."""
        if self.mode == "wall":
            return time.time_ns()
        if self.mode == "fixed":
            return self._fixed
        if self.mode == "callable":
            return _moment_ns(self._function(), "the clock callable's time")
        return self._watermark

    @property
    def watermark(self) -> int | None:
        """The newest accepted time ("data" clock), else None."""
        return self._watermark

    def describe(self) -> str:
        """The clock, for messages and logs."""
        return {
            "wall": "the server's clock",
            "data": "the data clock (the newest time accepted)",
            "fixed": "the server's fixed clock",
        }.get(self.mode, "the server's clock")

    # -- checks -------------------------------------------------------------------------
    def check(self, time_ns: int, tx_id: str) -> None:
        """Raise DataValidationError if `time_ns` is outside the accepted window."""
        # The common case in plain Python (a few hundred ns); a refusal's message, and the
        # data clock's bounds, through check_many.
        if self.mode in ("wall", "fixed"):
            now = time.time_ns() if self.mode == "wall" else self._fixed
            if time_ns <= now + self.max_future_ns and (
                self.max_age_ns is None or time_ns >= now - self.max_age_ns
            ):
                return
        elif self.mode == "data" and self._watermark is not None:
            mark = self._watermark
            if time_ns <= min(mark, time.time_ns()) + self.max_future_ns and (
                self.max_age_ns is None or time_ns >= mark - self.max_age_ns
            ):
                return
        self.check_many(np.array([time_ns], dtype=np.int64), [tx_id], single=True)

    def check_many(self, times, ids: list[str], *, single: bool = False) -> None:
        """`check` of a batch, in order. With a "data" clock a transaction may be ahead of
        the newest accepted one *or of earlier ones in the batch* by max_future (a batch is
        stored as one unit, so its transactions advance the watermark in order)."""
        times = np.asarray(times, dtype=np.int64)
        n = len(times)
        if not n:
            return
        lowest = np.iinfo(np.int64).min
        wall = time.time_ns()
        if self.mode == "data":
            base = np.empty(n, dtype=np.int64)  # the watermark each transaction meets
            base[0] = lowest
            if n > 1:
                base[1:] = np.maximum.accumulate(times)[:-1]
            if self._watermark is not None:
                base = np.maximum(base, self._watermark)
            known = base > lowest
            high = np.where(known, np.minimum(base, wall), wall) + self.max_future_ns
            now = np.where(known, base, lowest)
        else:
            clock = self.now_ns()
            known = np.ones(n, dtype=bool)
            now = np.full(n, clock, dtype=np.int64)
            high = now + self.max_future_ns
        if self.max_age_ns is None:
            low = np.full(n, lowest, dtype=np.int64)
        else:
            low = np.where(known, now - self.max_age_ns, lowest)
        bad = np.flatnonzero((times > high) | (times < low))
        if len(bad):
            i = int(bad[0])
            raise self._refusal(
                int(times[i]), ids[i], int(low[i]) if low[i] > lowest else None,
                int(high[i]), int(now[i]) if known[i] else None, wall,
                None if single else i,
            )  # fmt: skip

    def accepted(self, newest_ns: int) -> None:
        """A transaction (or a batch whose newest is this) was stored: a "data" clock's
        watermark moves up to it (checked first, so by at most max_future)."""
        if self.mode != "data":
            return
        with self._lock:
            if self._watermark is None or newest_ns > self._watermark:
                self._watermark = int(newest_ns)

    def _refusal(self, time_ns, tx_id, low, high, now, wall, position) -> DataValidationError:
        where = f"transaction at position {position}: " if position is not None else ""
        if time_ns > high:
            if now is None or (self.mode == "data" and now > wall):
                ahead_of = f"the server's wall clock {iso(wall, seconds=True)}"
            else:
                ahead_of = f"{self.describe()} {iso(now, seconds=True)}"
            problem = f"is more than {_span(self.max_future_ns)} ahead of {ahead_of}"
            fix = (
                "fix the client's clock or the time zone of its timestamps (a time without "
                "an offset is UTC)"
            )
        else:
            problem = (
                f"is more than {_span(self.max_age_ns)} before {self.describe()} "
                f"{iso(now, seconds=True)}: "
                f"older than the live state keeps (counterparty history is purged after that)"
            )
            fix = "score transactions that old in batch (fraudseq score)"
        if self.mode == "wall":
            fix += "; to replay historical data, start the server with --clock data"
        shown = iso(low, seconds=True) if low is not None else "any time"
        window = f"accepted: {shown} to {iso(high, seconds=True)}"
        return DataValidationError(
            f"{where}transaction {tx_id!r}: field {self.field!r}: time {iso(time_ns)} "
            f"{problem} ({window}). Fix: {fix}."
        )
