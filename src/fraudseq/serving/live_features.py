"""Live features: one transaction at a time, from per-account state, equal to the kernel.

Every feature block (`fraudseq.features.blocks`) has a vectorised kernel (training, chunks,
live batches) and a scalar form for one transaction, held to the kernel by the tests. The
`LiveEncoder` keeps the per-account state the blocks declare they need
(`fraudseq.features.state.AccountState`; how much of it is derived from the declarations
and the window) and runs the model's blocks' scalar forms on it.

The raw values are then scaled with the encoder's fitted means and scales, NaN/inf become 0,
each feature is clipped to the encoder's fitted range and the result is cast to float32,
exactly as `FeatureEncoder.transform` (both call `clean_features`); categorical values
get the vocabulary codes of `FeatureEncoder._codes` (2 + index, `OOV_CODE` otherwise). The
model's window is the stored encoded rows of the account's last K - 1 events plus this one.

Transactions arrive parsed into the canonical form of `load_transactions`
(`fraudseq.transaction.parse_transaction`), so the same transaction gives the same features
whether it comes from a file or from a JSON request.

Order: an account's state holds its events in time order, whatever order they arrived in.
A late transaction (older than the account's latest event, by at most LATENESS_NS) is
inserted in its place (`LiveEncoder.insert`); to make that exact the state keeps a little
more than in-order scoring needs: events 7 days + LATENESS_NS back, the novelty totals and
first-value marks of the 15 events before each stored row, the rows of LATE_ROWS more
events, and the largest log-amount of the events it no longer holds. Every aggregate is
commutative (count, sum, max, first-seen times) and everything else is recomputed from
that bounded history, so the state after any arrival order within the lateness equals the
state after time order (floats to rounding; equal times are ordered by arrival).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from fraudseq.errors import FraudseqError
from fraudseq.features.blocks import BLOCKS
from fraudseq.features.blocks import exposure as exposure_block
from fraudseq.features.blocks.counterparty import CounterpartyTotals
from fraudseq.features.blocks.exposure import NO_TOTALS, ExposureTotals
from fraudseq.features.constants import (
    BUCKETS_PER_DAY,
    COUNTERPARTY_BUCKET_NS,
    COUNTERPARTY_WINDOWS_DAYS,
    NS_PER_SECOND,
    SECONDS_PER_DAY,
    SEEN_CAP,
    VELOCITY_CAP,
)
from fraudseq.features.encoder import OOV_CODE, FeatureEncoder, clean_features
from fraudseq.features.kernel import Point, Retention
from fraudseq.features.segments import signed_log1p_of
from fraudseq.features.state import AccountState, first_mark, value_hash
from fraudseq.transaction import LiveTransaction

#: Counterparty buckets older than the clock minus (D hours + 30 days + this) are pruned.
COUNTERPARTY_SLACK_DAYS = 7
#: Allowed lateness: a transaction at most this much older than its account's latest event
#: is inserted into the account's history in time order, exactly (the state keeps what that
#: needs: velocity events 7 days + LATENESS_NS back). A later one is scored against the
#: history before it that the state holds and not inserted ("history": "not_inserted").
LATENESS_NS = SECONDS_PER_DAY * NS_PER_SECOND
#: Encoded rows kept beyond the model's K - 1: a late transaction's own window is exact
#: when at most this many of its account's stored events are later than it (else shorter).
LATE_ROWS = 4


class _SeenBefore:
    """A column's seen values as they were just before a late event at `time`: a value
    counts as seen if it was first seen at or before that time (equal times: the earlier
    arrival is the earlier event)."""

    __slots__ = ("_seen", "_time")

    def __init__(self, seen: dict[int, int], time: int) -> None:
        self._seen, self._time = seen, time

    def __contains__(self, value_hash: int) -> bool:
        first = self._seen.get(value_hash)
        return first is not None and first <= self._time

    def values(self):
        """First-seen times, oldest first (later ones included: readers compare)."""
        return self._seen.values()


class _Before:
    """A view of an account's history up to a position of `times` (the events before a late
    transaction, or before a stored event whose row is recomputed): what `LiveEncoder._raw`,
    `window_rows` and the reasons read, as `AccountState` has them."""

    __slots__ = ("n", "last_time", "sum_log", "max_log", "times", "amounts", "new_totals",
                 "seen", "flags", "numeric", "codes", "ids", "visits")  # fmt: skip


@dataclass
class LiveFeatures:
    """The encoded features of one transaction and what appending it to the state needs."""

    numeric: np.ndarray  # (F,) float32, scaled like FeatureEncoder.transform
    codes: np.ndarray  # (C,) int32 vocabulary codes
    raw: dict[str, float]  # unscaled feature values by name
    hashes: list[int]  # per categorical column, the hash of the value
    new: list[int]  # per categorical column, 1 if the value is first seen
    log_amount: float

    @property
    def new_total(self) -> int:
        return sum(self.new)


class LiveEncoder:
    """A fitted FeatureEncoder's features for one transaction at a time.

    `encode(tx, account, counterparty)` returns the features of `tx` given the
    account's state (its earlier transactions) and the counterparty's hour buckets;
    `append(account, tx, features)` returns the state with `tx` added.
    """

    def __init__(self, encoder: FeatureEncoder, window: int) -> None:
        encoder._check_fitted()
        self.encoder = encoder
        self.schema = encoder.schema
        self.window = window
        self.blocks = [BLOCKS[name] for name in encoder.blocks]
        categorical, has_cp = tuple(self.schema.categorical), self.schema.counterparty is not None
        # The exposure block: the account's visits in its state, the counterparty tables
        # (`features.blocks.exposure.ExposureBook`) with the caller.
        self.exposure = any(
            b.applies(categorical, has_cp) and any(n.kind == "exposure" for n in b.needs)
            for b in self.blocks
        )
        # What the state keeps, from the blocks' declared needs: rows of the latest events
        # (windows) and enough events to recompute every stored row when a late event is
        # inserted before it (LiveEncoder.insert): LATE_ROWS more rows, LATENESS_NS more span.
        self.rows_kept = window - 1 + LATE_ROWS if window > 1 else 0
        retention = Retention.of(self.blocks, categorical, has_cp, self.rows_kept, LATENESS_NS)
        self.retention = retention
        self.novelty, self.counterparty = retention.novelty, retention.counterparty
        self.zone, self.keep_last = retention.zone, retention.keep_last
        self.retain_span = retention.retain_span  # 0: only the latest keep_last events
        self.names = list(encoder.numeric_names_)
        self.means = np.asarray(encoder.means_, dtype=np.float64)
        self.scales = np.asarray(encoder.scales_, dtype=np.float64)
        self.low, self.high = (np.asarray(v, dtype=np.float64) for v in encoder.feature_range)
        self.vocabularies = [
            {value: i + 2 for i, value in enumerate(encoder.vocabularies_[c])}
            for c in self.schema.categorical
        ]
        self.delay_buckets = encoder.delay_buckets
        self.n_numeric = len(self.names)
        self.n_categorical = len(self.schema.categorical)
        self.columns = tuple(self.schema.categorical) if self.novelty else ()
        self._numeric_names = [f"numeric:{column}" for column in self.schema.numeric]
        # The features that depend on the account's earlier events: a late insertion
        # recomputes these in each later stored row; the others (event, counterparty, extra
        # numeric) are the transaction's own.
        wanted = {name for b in self.blocks if b.history for name in b.names(categorical, has_cp)}
        self.history_columns = np.array(
            [j for j, name in enumerate(self.names) if name in wanted], dtype=np.int64
        )
        self._check_names()

    def _check_names(self) -> None:
        """Fail at load, not with wrong scores, if a block's names changed since training."""
        probe = LiveTransaction(
            "probe", "probe", 0, 1.0, ("x",) * self.n_categorical,
            (0.0,) * len(self.schema.numeric), "x" if self.schema.counterparty else None, "",
        )  # fmt: skip
        produced = set(self._raw(probe, self.empty_state(), {})[0])
        if produced != set(self.names):
            raise FraudseqError(
                "live features do not match the model's encoder: the encoder has "
                f"{sorted(set(self.names) - produced)} that live scoring lacks and live scoring "
                f"computes {sorted(produced - set(self.names))} that the encoder lacks; the "
                "model was trained by another fraudseq version or a feature block changed"
            )

    def empty_state(self) -> AccountState:
        return AccountState(
            numeric=np.zeros((0, self.n_numeric), np.float32),
            codes=np.zeros((0, self.n_categorical), np.int32),
            seen=[{} for _ in self.schema.categorical] if self.novelty else [],
            visits=[] if self.exposure else None,
        )

    def counterparty_buckets(self, tx: LiveTransaction) -> tuple[int, int] | None:
        """The half-open range [lo, hi) of counterparty buckets the features read."""
        if not self.counterparty:
            return None
        hi = tx.bucket - self.delay_buckets
        return hi - max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY, hi

    @property
    def counterparty_retention_buckets(self) -> int:
        """Hour buckets older than the clock's bucket minus this many are purged: no
        transaction the clock accepts reads them."""
        longest = max(COUNTERPARTY_WINDOWS_DAYS) + COUNTERPARTY_SLACK_DAYS
        return self.delay_buckets + longest * BUCKETS_PER_DAY

    # -- the features --------------------------------------------------------------------
    def encode(
        self,
        tx: LiveTransaction,
        account: AccountState,
        counterparty: CounterpartyTotals | dict[int, tuple[int, int]] | None = None,
        exposure: ExposureTotals | None = None,
    ) -> LiveFeatures:
        """Raw and encoded features of `tx` after the account's stored events, given its
        counterparty's totals or (count, frauds) buckets and, for the exposure block, the
        `ExposureTotals` of the account's visits (`ExposureBook.totals`)."""
        raw, hashes, new, log_amount = self._raw(tx, account, counterparty or {}, exposure)
        scaled = np.fromiter(map(raw.__getitem__, self.names), np.float64, self.n_numeric)
        np.subtract(scaled, self.means, out=scaled)  # FeatureEncoder.transform, row of one
        np.divide(scaled, self.scales, out=scaled)
        if (scaled >= self.low).all() and (scaled <= self.high).all():  # the common case,
            numeric = scaled.astype(np.float32)  # as clean_features gives it
        else:  # a NaN, an infinity or a value beyond the fitted range somewhere
            numeric = clean_features(scaled, (self.low, self.high))
        codes = [
            vocabulary.get(value, OOV_CODE)
            for vocabulary, value in zip(self.vocabularies, tx.categorical, strict=True)
        ]
        return LiveFeatures(
            numeric=numeric,
            codes=np.array(codes, dtype=np.int32),
            raw=raw,
            hashes=hashes,
            new=new,
            log_amount=log_amount,
        )

    def _raw(
        self, tx: LiveTransaction, account: AccountState, counterparty, exposure=None
    ) -> tuple[dict[str, float], list[int], list[int], float]:
        """Unscaled features by name (every block's scalar form), the categorical hashes,
        whether each value is new, the log-amount."""
        hashes: list[int] = []
        new: list[int] = []
        if self.novelty:
            hashes = [value_hash(value) for value in tx.categorical]
            flags = account.flags  # set when a stored event's row is recomputed
            new = [0 if h in seen else 1 for h, seen in zip(hashes, account.seen, strict=True)]
            new = new if flags is None else list(flags)
        amount = tx.amount
        log_amount = signed_log1p_of(amount)
        point = Point(
            tx.time_ns, amount, log_amount, self.columns, hashes, new, account,
            counterparty if self.counterparty else None, self.delay_buckets,
            (exposure or NO_TOTALS) if self.exposure else None,
        )  # fmt: skip
        raw: dict[str, float] = {}
        for block in self.blocks:
            raw.update(block.scalar(point))
        for name, value in zip(self._numeric_names, tx.numeric, strict=True):
            raw[name] = value
        return raw, hashes, new, log_amount

    # -- the window and the state update -------------------------------------------------
    def window_rows(
        self, account: AccountState, features: LiveFeatures
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encoded rows (L, F) float32 and codes (L, C) int64 of the window, oldest first."""
        numeric = np.concatenate([account.numeric, features.numeric[None, :]])
        codes = np.concatenate([account.codes, features.codes[None, :]]).astype(np.int64)
        return numeric[-self.window :], codes[-self.window :]

    def append(
        self, account: AccountState, tx: LiveTransaction, features: LiveFeatures
    ) -> AccountState:
        """The account's state with `tx` added as its latest event (in place; returned).
        `tx` is not older than the account's latest event (else see `insert`)."""
        t = tx.time_ns
        account.n += 1
        account.last_time = max(account.last_time, t) if account.n > 1 else t
        account.sum_log += features.log_amount
        account.max_log = max(account.max_log, features.log_amount)
        account.times.append(t)
        account.amounts.append(tx.amount)
        self._retain(account)
        self.add_visit(account, tx)
        if self.novelty:
            account.new_totals.append(features.new_total)
            marks = self._marks(features)
            account.firsts += marks
            if len(account.new_totals) > self.zone:
                del account.new_totals[: -self.zone]
                del account.firsts[: -self.zone * self.n_categorical]
            for seen, h, mark in zip(account.seen, features.hashes, marks, strict=True):
                if mark:  # first seen now
                    seen[h] = t
                    if len(seen) > SEEN_CAP:
                        del seen[next(iter(seen))]
        keep = self.rows_kept
        if keep > 0:
            account.numeric = np.concatenate([account.numeric, features.numeric[None, :]])[-keep:]
            account.codes = np.concatenate([account.codes, features.codes[None, :]])[-keep:]
            account.ids = [*account.ids, tx.id][-keep:]
        return account

    # -- the exposure block's visits -------------------------------------------------------
    def new_visit(self, account: AccountState, tx: LiveTransaction) -> tuple[int, int] | None:
        """(counterparty hash, day) of `tx` if appending it adds a visit to the account's
        list (the counterparty tables count it: `ExposureBook.add_visit`), else None."""
        if not self.exposure:
            return None
        return exposure_block.new_visit(
            account.visits or [], value_hash(tx.counterparty), tx.bucket
        )

    def add_visit(self, account: AccountState, tx: LiveTransaction) -> None:
        if self.exposure:
            if account.visits is None:
                account.visits = []
            exposure_block.add_visit(account.visits, value_hash(tx.counterparty), tx.bucket)

    def fraud(self, account: AccountState, time_ns: int) -> list[tuple[int, int, int, int]]:
        """A fraud label of the account's transaction at `time_ns`: its visits that it is a
        later fraud of (in place), as changes for `ExposureBook.apply`. Exact when it comes
        before the account makes more than VISIT_CAP visits on later days."""
        if not self.exposure or not account.visits:
            return []
        return exposure_block.add_fraud(account.visits, time_ns // COUNTERPARTY_BUCKET_NS)

    def _marks(self, features: LiveFeatures) -> bytes:
        """`firsts` of an event: per column, `first_mark` of its value if new, else 0."""
        return bytes(
            first_mark(h) if new else 0
            for h, new in zip(features.hashes, features.new, strict=True)
        )

    def _retain(self, account: AccountState) -> None:
        """Drop the events `times` no longer needs (older than the latest minus retain_span
        beyond the latest keep_last, or beyond max(VELOCITY_CAP, keep_last)); `old_max`
        keeps the largest log-amount of what was dropped."""
        times = account.times
        drop = 0
        limit = len(times) - self.keep_last
        horizon = account.last_time - self.retain_span
        while drop < limit and times[drop] <= horizon:
            drop += 1
        drop = max(drop, len(times) - max(VELOCITY_CAP, self.keep_last))
        if drop > 0:
            old_max = account.old_max
            for amount in account.amounts[:drop]:
                old_max = max(old_max, signed_log1p_of(amount))
            account.old_max = old_max
            del times[:drop]
            del account.amounts[:drop]

    # -- late transactions ---------------------------------------------------------------
    def before(self, account: AccountState, time_ns: int) -> _Before:
        """The account's history before a late transaction at `time_ns` (after stored events
        of the same time), as the state holds it: what its features and window are computed
        from. All of it when the transaction can be inserted (`can_insert`), except the rows
        of more than LATE_ROWS later events."""
        return self._view(account, bisect.bisect_right(account.times, time_ns), time_ns)

    def _view(
        self,
        account: AccountState,
        pos: int,
        time_ns: int,
        flags: list[int] | None = None,
        logs: list[float] | None = None,
    ) -> _Before:
        """The history before position `pos` of `times`; `flags`: the novelty flags of the
        event at `pos` (a stored event whose row is recomputed) instead of the seen sets;
        `logs`: the signed log-amounts of `amounts`, when already computed."""
        times, amounts = account.times, account.amounts
        if logs is None:
            logs = [signed_log1p_of(amount) for amount in amounts]
        later = len(times) - pos
        view = _Before()
        view.n = account.n - later
        view.last_time = times[pos - 1] if pos else time_ns
        view.sum_log = account.sum_log - sum(logs[pos:])
        view.max_log = max(account.old_max, *logs[:pos]) if pos else account.old_max
        view.times, view.amounts = times[:pos], amounts[:pos]
        zone_start = len(times) - len(account.new_totals)
        view.new_totals = account.new_totals[: max(pos - zone_start, 0)]
        view.seen = [_SeenBefore(seen, time_ns) for seen in account.seen]
        view.visits = account.visits  # all of them: a late event's exposure is approximate
        view.flags = flags
        rows = max(pos - (len(times) - len(account.ids)), 0)
        view.numeric, view.codes, view.ids = (
            account.numeric[:rows], account.codes[:rows], account.ids[:rows]
        )  # fmt: skip
        return view

    def can_insert(self, account: AccountState, time_ns: int) -> bool:
        """Whether a transaction at `time_ns` enters the account's history: always when it
        is not older than the latest event; a late one when it is at most LATENESS_NS older
        and the state still holds the events around its place."""
        if account.n == 0 or time_ns >= account.last_time:
            return True
        if time_ns < account.last_time - LATENESS_NS:
            return False
        return account.n == len(account.times) or time_ns >= account.times[0]

    def insert(
        self, account: AccountState, tx: LiveTransaction, features: LiveFeatures
    ) -> AccountState:
        """The account's state with the late `tx` inserted in time order (after stored
        events of its time), in place; `features` are those computed on `before(account,
        tx.time_ns)` and `can_insert` holds. The result equals the state had the events
        arrived in time order: the aggregates take `tx` in, every stored event later than it
        gets the novelty flags, totals and history features it has with `tx` before it
        (its row's history columns are recomputed), and the retention rules are applied."""
        if account.n == 0 or tx.time_ns >= account.last_time:
            return self.append(account, tx, features)
        self.add_visit(account, tx)
        t = tx.time_ns
        times = account.times
        pos = bisect.bisect_right(times, t)
        zone_start = len(times) - len(account.new_totals)
        rows_start = len(times) - len(account.ids)
        account.n += 1
        account.sum_log += features.log_amount
        account.max_log = max(account.max_log, features.log_amount)
        width = self.n_categorical
        if self.novelty:
            marks = self._marks(features)
            for c, (seen, h, mark) in enumerate(
                zip(account.seen, features.hashes, marks, strict=True)
            ):
                if not mark:
                    continue
                first = seen.get(h)
                if first is not None:  # a later event introduced it: no longer new there
                    for i in range(len(account.new_totals)):
                        if times[zone_start + i] == first and account.firsts[i * width + c] == mark:
                            account.firsts[i * width + c] = 0
                            account.new_totals[i] -= 1
                            break
                seen[h] = t
                if first is not None or next(reversed(seen.values())) > t or len(seen) > 1:
                    ordered = sorted(seen.items(), key=_first_seen)  # stable: arrival order
                    seen.clear()
                    seen.update(ordered)
                if len(seen) > SEEN_CAP:
                    del seen[next(iter(seen))]
            if pos >= zone_start:
                i = pos - zone_start
                account.new_totals.insert(i, features.new_total)
                account.firsts[i * width : i * width] = marks
                if len(account.new_totals) > self.zone:
                    del account.new_totals[: -self.zone]
                    del account.firsts[: -self.zone * width]
        times.insert(pos, t)
        account.amounts.insert(pos, tx.amount)
        keep = self.rows_kept
        if keep > 0:
            numeric, codes, ids = np.array(account.numeric), account.codes, account.ids
            if pos >= rows_start:
                i = pos - rows_start
                numeric = np.insert(numeric, i, features.numeric, axis=0)
                codes = np.insert(codes, i, features.codes, axis=0)
                ids = [*ids[:i], tx.id, *ids[i:]]
            account.numeric, account.codes, account.ids = (
                numeric[-keep:],
                codes[-keep:],
                ids[-keep:],
            )
            self._refresh_rows(account, t)
        self._retain(account)
        return account

    def _refresh_rows(self, account: AccountState, after: int) -> None:
        """Recompute the history columns of the stored rows of events later than `after`
        (a time), from the history before each: what they would hold had the events come in
        time order."""
        times, amounts = account.times, account.amounts
        rows_start = len(times) - len(account.ids)
        zone_start = len(times) - len(account.new_totals)
        width = self.n_categorical
        columns = self.history_columns
        no_values = ("",) * width
        no_numbers = (0.0,) * len(self.schema.numeric)
        logs = [signed_log1p_of(amount) for amount in amounts]
        for r in range(len(account.ids)):
            pos = rows_start + r
            if times[pos] <= after:
                continue
            flags = None
            if self.novelty:
                i = pos - zone_start
                flags = [int(account.firsts[i * width + c] != 0) for c in range(width)]
            view = self._view(account, pos, times[pos], flags, logs)
            event = LiveTransaction(
                account.ids[r], "", times[pos], amounts[pos], no_values, no_numbers,
                "" if self.counterparty else None, "",
            )  # fmt: skip
            account.numeric[r, columns] = self.encode(event, view, None).numeric[columns]


def _first_seen(item: tuple[int, int]) -> int:
    return item[1]
