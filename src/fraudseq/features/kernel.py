"""One vectorised kernel over an entity-sorted chunk of rows and the entities' states.

`compute(blocks, context)` gives every block's raw features of a `Chunk`, from the state
of its entities before it (`StateTable`, empty for training) and the counterparty buckets;
`advance(context, retention)` the entities' states after it. The same two calls serve
training (one chunk, empty state), chunked runs (state carried from chunk to chunk) and
live batches (the stored states). `Point` is the view the blocks' scalar forms read for one
live transaction.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from fraudseq.features.constants import COUNTERPARTY_BUCKET_NS, NOVELTY_WINDOW, VELOCITY_CAP
from fraudseq.features.segments import (
    Combined,
    group_ids,
    grouped_searchsorted,
    ranges,
    signed_log1p,
    starts_of,
)
from fraudseq.features.state import StateTable


@dataclass
class Chunk:
    """Rows grouped by entity, in time order within each (equal times in file order).

    `entity[i]` indexes the state table; the rows of an entity come after its stored
    events in time. `categorical` per column holds values comparable across chunks and
    states (64-bit value hashes; within one run, any integer codes). `counterparty` holds
    codes into the counterparty table's names (-1: missing, counted nowhere); `label` 0/1,
    NaN unknown (None: no labels, as live)."""

    entity: np.ndarray
    time_ns: np.ndarray
    amount: np.ndarray
    categorical: list[np.ndarray]
    counterparty: np.ndarray | None = None
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time_ns)


@dataclass
class Buckets:
    """Counterparty hour buckets as columns: `count` transactions, `fraud` of them known
    frauds, of counterparty code `code` in bucket `bucket` (entries of one key add up)."""

    code: np.ndarray
    bucket: np.ndarray
    count: np.ndarray
    fraud: np.ndarray

    @classmethod
    def empty(cls) -> Buckets:
        return cls(*(np.zeros(0, dtype=np.int64) for _ in range(4)))


def known_frauds(label, n: int) -> np.ndarray:
    """1 for rows labelled fraud, else 0 (NaN: not known yet)."""
    if label is None:
        return np.zeros(n, dtype=np.int64)
    return (np.nan_to_num(np.asarray(label, dtype=np.float64)) > 0.5).astype(np.int64)


class Context:
    """A chunk after its entities' states: the arrays the block kernels share, each made
    once and only when a block asks for it."""

    def __init__(
        self,
        state: StateTable,
        chunk: Chunk,
        columns: tuple[str, ...] = (),
        delay_buckets: int = 0,
        buckets: Buckets | None = None,
        exposure=None,
    ) -> None:
        self.state, self.chunk, self.columns = state, chunk, tuple(columns)
        self.exposure = exposure  # the exposure block's carried state (blocks/exposure.py)
        self.delay_buckets = delay_buckets
        self.buckets = buckets if buckets is not None else Buckets.empty()
        self.entity = np.asarray(chunk.entity, dtype=np.int64)
        self.t = np.asarray(chunk.time_ns, dtype=np.int64)
        self.amount = np.asarray(chunk.amount, dtype=np.float64)
        self.m = np.bincount(self.entity, minlength=len(state.n))
        self.rank = np.arange(len(self.t)) - starts_of(self.m)[self.entity]
        self.n_prev = state.n[self.entity] + self.rank

    def __len__(self) -> int:
        return len(self.t)

    @functools.cached_property
    def log_amount(self) -> np.ndarray:
        return signed_log1p(self.amount)

    @functools.cached_property
    def events(self) -> Combined:
        """Each entity's stored events, then the chunk's (`pos`: where each row went)."""
        return Combined(self.state.m, self.m, self.entity, self.rank)

    @functools.cached_property
    def event_time(self) -> np.ndarray:
        return self.events.fill(self.state.times, self.t)

    @functools.cached_property
    def event_amount(self) -> np.ndarray:
        return self.events.fill(self.state.amounts, self.amount)

    @functools.cached_property
    def event_log_amount(self) -> np.ndarray:
        return self.events.fill(signed_log1p(self.state.amounts), self.log_amount)

    @functools.cached_property
    def event_entity(self) -> np.ndarray:
        return group_ids(self.events.lengths)

    @property
    def pos(self) -> np.ndarray:
        return self.events.new

    @functools.cached_property
    def fresh(self) -> list[np.ndarray]:
        """Per categorical column, whether each row's value is new to its entity: not in
        its stored seen values nor earlier in the chunk."""
        out = []
        for j, values in enumerate(self.chunk.categorical):
            stored, counts = self.state.seen[j], self.state.seen_counts[j]
            chunk_code, uniques = pd.factorize(_as_hash(values))
            width = max(len(uniques), 1)
            # Only stored values that occur in the chunk can match: probing the chunk's few
            # values' table with every stored one (not factorizing them all) keeps the
            # membership test to those.
            stored_code = pd.Index(uniques).get_indexer(stored)  # -1: not in the chunk
            relevant = stored_code >= 0
            stored_keys = group_ids(counts)[relevant] * width + stored_code[relevant]
            keys = pd.Index(self.entity * width + chunk_code)
            # Hash tables, not sorts: np.isin's table or sort costs ~20x more here.
            earlier = keys.duplicated(keep="first")  # rows are grouped: the earliest is new
            out.append(~(earlier | keys.isin(stored_keys)))
        return out

    @functools.cached_property
    def new_total(self) -> np.ndarray:
        total = np.zeros(len(self), dtype=np.int64)
        for new in self.fresh:
            total += new
        return total

    @functools.cached_property
    def totals(self) -> Combined:
        """Each entity's stored new-value totals, then the chunk's."""
        return Combined(self.state.n_new, self.m, self.entity, self.rank)


def _as_hash(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    return values if values.dtype == np.uint64 else values.astype(np.int64).view(np.uint64)


def compute(blocks, context: Context) -> dict[str, np.ndarray]:
    """Every block's raw features of the context's chunk, by name."""
    raw: dict[str, np.ndarray] = {}
    for block in blocks:
        raw.update(block.kernel(context))
    return raw


@dataclass(frozen=True)
class Retention:
    """What an entity's state keeps (`Retention.of` the blocks' declared needs): the latest
    `keep_last` events, every event within `retain_span` ns of the latest (at most `cap`),
    the new-value totals of the latest `zone` events."""

    keep_last: int
    retain_span: int
    cap: int
    zone: int
    novelty: bool  # the seen values and new-value totals are kept
    counterparty: bool  # the counterparty buckets are read

    @classmethod
    def of(cls, blocks, categorical, has_counterparty: bool, rows: int = 0, lateness_ns: int = 0):
        """What the state of `blocks` keeps for data of this shape, from their declared
        needs: besides the `rows` latest events whose encoded rows a window keeps, the
        events each block reads back, and every event within its span plus `lateness_ns`
        (so a late event can be inserted before them)."""
        needs = [
            n for b in blocks if b.applies(tuple(categorical), has_counterparty) for n in b.needs
        ]
        kinds = {need.kind for need in needs}
        novelty = "novelty" in kinds
        # Each row's new-value window reaches NOVELTY_WINDOW - 1 events back.
        zone = rows + NOVELTY_WINDOW - 1 if novelty else 0
        last = max([need.last for need in needs if need.kind == "events"], default=1)
        span = max([need.span_ns for need in needs if need.kind == "events"], default=0)
        return cls(
            keep_last=max(rows + last, zone, 1),
            retain_span=span + lateness_ns if span else 0,
            cap=VELOCITY_CAP,
            zone=zone,
            novelty=novelty,
            counterparty="counterparty" in kinds,
        )


def advance(context: Context, retention: Retention) -> StateTable:
    """The entities' feature state after the chunk (window rows untouched): aggregates,
    retained events (`old_max` keeps the largest dropped log-amount), novelty totals, marks
    and seen values. Entities without rows in the chunk stay as they were."""
    state, ctx = context.state, context
    a = len(state.n)
    has = ctx.m > 0
    last = np.where(has, starts_of(ctx.m) + ctx.m - 1, 0)
    la = ctx.log_amount
    events, times, amounts = ctx.events, ctx.event_time, ctx.event_amount
    end_t = np.where(has, ctx.t[last] if len(ctx) else 0, state.last_time)
    horizon = end_t - retention.retain_span
    le_horizon = grouped_searchsorted(times, ctx.event_entity, horizon, np.arange(a))
    surplus = np.maximum(events.lengths - retention.keep_last, 0)
    drop = np.minimum(le_horizon - events.starts, surplus)
    drop = np.maximum(drop, events.lengths - max(retention.cap, retention.keep_last))
    kept = ranges(events.starts + drop, events.lengths - drop)
    dropped = ranges(events.starts, drop)
    old_max = state.old_max.copy()
    if len(dropped):
        np.maximum.at(old_max, ctx.event_entity[dropped], signed_log1p(amounts[dropped]))
    sums = np.bincount(ctx.entity, weights=la, minlength=a) if len(ctx) else np.zeros(a)
    maxima = state.max_log.copy()
    if len(ctx):
        np.maximum.at(maxima, ctx.entity, la)
    out = replace(
        state,
        n=state.n + ctx.m,
        last_time=end_t,
        sum_log=np.where(has, state.sum_log + sums, state.sum_log),
        max_log=maxima,
        old_max=old_max,
        m=events.lengths - drop,
        times=times[kept],
        amounts=amounts[kept],
    )
    if retention.zone and ctx.chunk.categorical:
        _advance_novelty(ctx, out, retention.zone)
    return out


def _advance_novelty(ctx: Context, out: StateTable, zone: int) -> None:
    """Totals, first-value marks and seen values after the chunk, into `out`."""
    state, a = ctx.state, len(ctx.state.n)
    keep, counts = ctx.totals.tail(zone)
    out.n_new = counts
    out.new_totals = ctx.totals.fill(state.new_totals, ctx.new_total)[keep]
    hashes = [_as_hash(v) for v in ctx.chunk.categorical]
    marks = np.zeros((len(ctx), len(hashes)), dtype=np.uint8)
    for j, (h, new) in enumerate(zip(hashes, ctx.fresh, strict=True)):
        marks[:, j] = np.where(new, (h >> np.uint64(56)) | np.uint64(1), 0)
    out.firsts = ctx.totals.fill(state.firsts, marks)[keep]
    out.seen_counts, out.seen, out.seen_times = [], [], []
    for j, (h, new) in enumerate(zip(hashes, ctx.fresh, strict=True)):
        added = np.bincount(ctx.entity[new], minlength=a)
        none = np.zeros(0, dtype=np.int64)
        seen = Combined(state.seen_counts[j], added, none, none)
        slots = ranges(seen.starts + seen.stored_len, added)
        merged = np.empty(seen.size, dtype=np.uint64)
        merged[seen.stored] = state.seen[j]
        merged[slots] = h[new]
        first_seen = np.empty(seen.size, dtype=np.int64)
        first_seen[seen.stored] = state.seen_times[j]
        first_seen[slots] = ctx.t[new]
        out.seen_counts.append(seen.lengths)
        out.seen.append(merged)
        out.seen_times.append(first_seen)


def novelty_window_totals(ctx: Context) -> np.ndarray:
    """Per row, the new-value totals of its entity's last NOVELTY_WINDOW events, itself
    included (stored totals first)."""
    tot = ctx.totals
    totals = tot.fill(ctx.state.new_totals, ctx.new_total)
    prefix = np.concatenate([[0], np.cumsum(totals)])
    lo = np.maximum(tot.starts[ctx.entity], tot.new - (NOVELTY_WINDOW - 1))
    return prefix[tot.new] - prefix[lo] + ctx.new_total


@dataclass
class Point:
    """One live transaction after its entity's state (an `AccountState` or a view of the
    history before a late event): what the blocks' scalar forms read. `hashes`: per
    categorical column, the value's hash and whether it is new (`Context.fresh`);
    `counterparty`: its `CounterpartyTotals` or (count, frauds) buckets, None without."""

    time_ns: int
    amount: float
    log_amount: float
    columns: tuple[str, ...]
    hashes: list[int]
    new: list[int]  # per categorical column, 1 if the value is new to the entity
    account: object
    counterparty: object
    delay_buckets: int
    #: The exposure block's `ExposureTotals` of the account's visits (None without it).
    exposure: object = None

    @property
    def bucket(self) -> int:
        return self.time_ns // COUNTERPARTY_BUCKET_NS
