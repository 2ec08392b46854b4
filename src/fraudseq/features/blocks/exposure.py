"""Compromise exposure: how many other entities turned fraudulent after visiting the
counterparties this entity visited recently (a common point of compromise, issue 23).

Definitions (time in the counterparty block's hour buckets b(t) = floor(t / 1 hour), UTC;
days d = floor(b / 24); D = the label delay in buckets, as in counterparty.py):

- A *visit* is a row's (entity e, counterparty c, day d(t)); repeated (e, c, day) are one
  visit (the first such row in the entity's order). Rows with a missing counterparty are
  no visits.
- An entity's *list* before a row: its visits from earlier rows (entity order: time, then
  file order), the latest VISIT_CAP of them, those with day >= d(t) - H.
- A visit (e, c, v) has a *later fraud* known at query bucket B when e has a row labelled
  1 at time f with v < d(f) <= v + H, b(f) < B - D (known exactly when the counterparty
  block would know that label), and the visit is among e's latest VISIT_CAP visits on days
  before d(f). The fraud bucket kept is that of the first such row (`known`).
- The *exposure* of counterparty c at a row of time t (B = b(t), X = B - D, day cut
  h = floor(X / 24)): over the visits to c, by any entity, with day in [h - W, h) (all
  strictly older than t - label delay), N = their number and F = the number with a later
  fraud known at B. p0 = F0 / N0 is the population's rate: the same counts over every
  counterparty's visits (0 without visits). exposure = (F + PRIOR p0) / (N + PRIOR): few
  visits read as the population's rate, not as certain (1 of 1 is (1 + 5 p0) / 6); its z
  = (F - N p0) / sqrt(N p0 (1 - p0) + 1) says how far F lies above what the population's
  rate explains (the +1 keeps it finite when p0 is 0 or 1).

Features of a row of entity e, over the visits in its list (its own counterparty's visit
from earlier rows included; the row itself is not a visit of its own list):
exposure_max / exposure_mean: the max / mean exposure of the visits' counterparties (0
without visits); exposure_days_since_max: d(t) minus the day of the riskiest visit (the
latest of the tied; 0 when the max is 0); exposure_visits: log1p(the visits in the list);
exposure_visitors_max: log1p(N) of the riskiest visit's counterparty (0 when the max is 0);
exposure_z_max: the largest z of the visits (0 without visits).
No counterparty column: no features.

Why two prefix counts suffice (H <= W): a later fraud of a visit on day v lies in buckets
[24 (v + 1), 24 (v + H + 1)). Visits with day >= h have their fraud bucket >= 24 (h + 1)
> X, never known; visits with day < h - W have it < 24 h <= X, always known. So
F = #{fraud entries of c with bucket < X} - #{fraud entries of c with day < h - W}, each a
searchsorted on sorted keys.

State (carried from chunk to chunk, `ExposureState`): per entity its list (counterparty
code, day, known fraud bucket or NO_FRAUD) as `kept_visits` cuts it (within H days of its
latest row: the latest VISIT_CAP visits of earlier days and of that day, so at most
2 VISIT_CAP); per counterparty its visits (day, count) and later-fraud visits (day, fraud
bucket, count) within W days of the latest cut. Chunked runs equal the whole file unless an
entity makes more than VISIT_CAP distinct visits in one day (then a repeat that day may
count as a new visit).

Live, one transaction at a time: the account's list is `AccountState.visits` (counterparty
hashes), kept by the same rule (`add_visit`); the counterparty tables are the caller's
(`ExposureBook`: visits, and `apply` the changes `add_fraud` returns when a fraud label
arrives; `totals` what `_scalar` reads). Exact when a label arrives before its entity makes
more than VISIT_CAP visits on later days (labels may arrive in any order: a visit keeps its
earliest fraud). A late transaction inserted into an account's history does not recompute
the exposure of its later rows. The state stores do not keep these tables yet, so a
Detector refuses a model with this block; sharded runs refuse it too (they cut the file by
entity or by counterparty, and the block reads both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.features.constants import BUCKETS_PER_DAY, COUNTERPARTY_BUCKET_NS
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.kernel import known_frauds
from fraudseq.features.segments import Combined, group_ids, ranges, starts_of

#: H: a fraud up to this many days after a visit is a later fraud of it.
HORIZON_DAYS = 30
#: W: the days of visits a counterparty's exposure counts.
WINDOW_DAYS = 30
#: Most visits an entity's list keeps (its latest).
VISIT_CAP = 64
#: Added to the visits in the exposure's denominator.
EXPOSURE_PRIOR = 5.0
#: `known` of a visit without a later fraud.
NO_FRAUD = np.iinfo(np.int64).max
assert HORIZON_DAYS <= WINDOW_DAYS  # the two prefix counts need it (module docstring)

NAMES = [
    "exposure_max",
    "exposure_mean",
    "exposure_days_since_max",
    "exposure_visits",
    "exposure_visitors_max",
    "exposure_z_max",
]


def _names(categorical, has_counterparty) -> list[str]:
    return list(NAMES) if has_counterparty else []


def _none() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class ExposureState:
    """The block's carried state (module docstring). Entity lists: `entity` (indices of the
    state table, ascending; each entity's visits in order), `cp`, `day`, `known`.
    Counterparty tables: visits (`visit_cp`, `visit_day`, `visit_count`) and later-fraud
    visits (`fraud_cp`, `fraud_day`, `fraud_bucket`, `fraud_count`); entries add up."""

    entity: np.ndarray
    cp: np.ndarray
    day: np.ndarray
    known: np.ndarray
    visit_cp: np.ndarray
    visit_day: np.ndarray
    visit_count: np.ndarray
    fraud_cp: np.ndarray
    fraud_day: np.ndarray
    fraud_bucket: np.ndarray
    fraud_count: np.ndarray

    @classmethod
    def empty(cls) -> ExposureState:
        return cls(*(_none() for _ in range(11)))


@dataclass
class _Analysis:
    """One chunk after the stored state: the entities' visits (stored, then the chunk's
    new ones; `known` after the chunk's frauds), per row the visits before it, and the
    counterparty tables after the chunk."""

    visits: Combined
    v_entity: np.ndarray
    v_cp: np.ndarray
    v_day: np.ndarray
    v_known: np.ndarray
    before: np.ndarray  # per row: index (in the entity's visits) after its earlier visits
    state: ExposureState  # the tables after the chunk (entity lists not yet cut)


def analyse(ctx) -> _Analysis:
    """`_Analysis` of the context's chunk, made once per context."""
    cached = ctx.__dict__.get("_exposure_analysis")
    if cached is None:
        cached = ctx.__dict__["_exposure_analysis"] = _analyse(ctx)
    return cached


def _analyse(ctx) -> _Analysis:
    chunk, n, a = ctx.chunk, len(ctx), len(ctx.state.n)
    stored = ctx.exposure if ctx.exposure is not None else ExposureState.empty()
    entity = ctx.entity
    code = np.asarray(chunk.counterparty, dtype=np.int64)
    bucket = ctx.t // COUNTERPARTY_BUCKET_NS
    day = bucket // BUCKETS_PER_DAY
    # Visits: rows whose (entity, counterparty, day) is neither stored nor earlier.
    has = code >= 0
    keys = pd.MultiIndex.from_arrays(
        [np.r_[stored.entity, entity], np.r_[stored.cp, code], np.r_[stored.day, day]]
    )
    is_visit = has & ~keys.duplicated(keep="first")[len(stored.entity) :]
    stored_len = np.bincount(stored.entity, minlength=a)
    added = np.bincount(entity[is_visit], minlength=a)
    # Per row, the chunk's visits of its entity before it.
    cum = np.cumsum(is_visit) - is_visit
    first_row = starts_of(ctx.m)
    local = cum - cum[first_row[entity]] if n else cum
    before = stored_len[entity] + local
    visits = Combined(stored_len, added, entity[is_visit], local[is_visit])
    v_entity = group_ids(visits.lengths)
    v_cp = visits.fill(stored.cp, code[is_visit])
    v_day = visits.fill(stored.day, day[is_visit])
    v_known = visits.fill(stored.known, np.full(int(is_visit.sum()), NO_FRAUD))
    v_index = np.arange(visits.size) - visits.starts[v_entity]

    # Later frauds of visits without one: the entity's first fraud row on a later day, if
    # the visit is among the entity's latest VISIT_CAP visits before that day.
    fraud = known_frauds(chunk.label, n).astype(bool)
    f_rows = np.flatnonzero(fraud)
    open_ = np.flatnonzero(v_known == NO_FRAUD)
    flagged = np.zeros(0, dtype=np.int64)
    if len(f_rows) and len(open_):
        d0 = int(min(day.min(), v_day.min())) - 1
        span = int(max(day.max(), v_day.max())) - d0 + 2
        f_key = entity[f_rows] * span + (day[f_rows] - d0)
        at = np.searchsorted(f_key, v_entity[open_] * span + (v_day[open_] - d0), side="right")
        ok = at < len(f_rows)
        at_row = f_rows[np.minimum(at, len(f_rows) - 1)]
        ok &= entity[at_row] == v_entity[open_]
        ok &= day[at_row] <= v_day[open_] + HORIZON_DAYS
        v_key = v_entity * span + (v_day - d0)
        earlier = np.searchsorted(v_key, entity[at_row] * span + (day[at_row] - d0), side="left")
        ok &= v_index[open_] >= earlier - visits.starts[v_entity[open_]] - VISIT_CAP
        flagged = open_[ok]
        v_known[flagged] = bucket[at_row[ok]]

    state = ExposureState(
        entity=stored.entity, cp=stored.cp, day=stored.day, known=stored.known,
        visit_cp=np.r_[stored.visit_cp, code[is_visit]],
        visit_day=np.r_[stored.visit_day, day[is_visit]],
        visit_count=np.r_[stored.visit_count, np.ones(int(is_visit.sum()), dtype=np.int64)],
        fraud_cp=np.r_[stored.fraud_cp, v_cp[flagged]],
        fraud_day=np.r_[stored.fraud_day, v_day[flagged]],
        fraud_bucket=np.r_[stored.fraud_bucket, v_known[flagged]],
        fraud_count=np.r_[stored.fraud_count, np.ones(len(flagged), dtype=np.int64)],
    )  # fmt: skip
    return _Analysis(visits, v_entity, v_cp, v_day, v_known, before, state)


class _Counts:
    """Prefix counts of (counterparty, value) entries: `below(cp, x)` = the entries' counts
    of counterparty cp with value < x, by one searchsorted on sorted integer keys."""

    def __init__(self, cp: np.ndarray, value: np.ndarray, count: np.ndarray) -> None:
        self.base = int(value.min()) if len(value) else 0
        self.span = (int(value.max()) - self.base + 2) if len(value) else 1
        key = cp * self.span + (value - self.base)
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.prefix = np.r_[0, np.cumsum(count[order])]

    def below(self, cp: np.ndarray, x: np.ndarray) -> np.ndarray:
        rel = np.clip(x - self.base, 0, self.span)
        return self.prefix[np.searchsorted(self.key, cp * self.span + rel, side="left")]


class _Tables:
    """The counterparty tables of a state as prefix counts (`counts`)."""

    def __init__(self, cp, state: ExposureState) -> None:
        self.visits = _Counts(cp(state.visit_cp), state.visit_day, state.visit_count)
        self.by_bucket = _Counts(cp(state.fraud_cp), state.fraud_bucket, state.fraud_count)
        self.by_day = _Counts(cp(state.fraud_cp), state.fraud_day, state.fraud_count)

    def counts(self, cp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) of counterparties `cp` at cuts `x` (module docstring)."""
        h = x // BUCKETS_PER_DAY
        # The day counts depend on (counterparty, day cut) only, which many queries share:
        # each distinct one is searched once (the fraud table, searched per query, is small).
        h0 = int(h.min()) if len(h) else 0
        index, distinct = pd.factorize(cp * (int(h.max(initial=0)) - h0 + 1) + (h - h0))
        first = np.zeros(len(distinct), dtype=np.int64)
        first[index[::-1]] = np.arange(len(index))[::-1]
        cp_d, h_d = cp[first], h[first]
        n = self.visits.below(cp_d, h_d) - self.visits.below(cp_d, h_d - WINDOW_DAYS)
        old = self.by_day.below(cp_d, h_d - WINDOW_DAYS)
        return n[index], self.by_bucket.below(cp, x) - old[index]


class _Dense:
    """`_Tables.counts` from dense (counterparty, day) prefix counts over the queries' days
    [first - W, last]: two gathers per query instead of hashing it, and a search of the
    (small) fraud table only for queries whose day cut has a fraud entry of its own day."""

    def __init__(self, state: ExposureState, first: int, last: int, width: int) -> None:
        self.base, self.days, self.width = (
            first - WINDOW_DAYS,
            last - first + WINDOW_DAYS + 1,
            width,
        )
        self.visits = self._prefix(state.visit_cp, state.visit_day, state.visit_count)
        fraud_day_of_bucket = state.fraud_bucket // BUCKETS_PER_DAY
        self.known = self._prefix(state.fraud_cp, fraud_day_of_bucket, state.fraud_count)
        self.old = self._prefix(state.fraud_cp, state.fraud_day, state.fraud_count)
        self.same_day = self._grid(state.fraud_cp, fraud_day_of_bucket, state.fraud_count)
        self.by_bucket = _Counts(state.fraud_cp, state.fraud_bucket, state.fraud_count)

    def _grid(self, cp, day, count) -> np.ndarray:
        """Counts per (counterparty, j): j = day - base + 1, clipped to [0, days]."""
        j = np.clip(day - self.base + 1, 0, self.days)
        flat = np.bincount(cp * (self.days + 1) + j, weights=count,
                           minlength=self.width * (self.days + 1))  # fmt: skip
        return flat.astype(np.int64).reshape(self.width, self.days + 1)

    def _prefix(self, cp, day, count) -> np.ndarray:
        """Flat (counterparty, k): the entries with day < base + k, k in [0, days)."""
        return np.cumsum(self._grid(cp, day, count), axis=1)[:, : self.days].reshape(-1)

    def counts(self, cp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = x // BUCKETS_PER_DAY
        at = cp * self.days + (h - self.base)
        back = at - WINDOW_DAYS
        n = self.visits[at] - self.visits[back]
        f = self.known[at] - self.old[back]
        # Entries of the cut's own day known by x (bucket in [24 h, x)).
        partial = np.flatnonzero(self.same_day[cp, h - self.base + 1] > 0)
        if len(partial):
            c, hx = cp[partial], x[partial]
            whole = (hx // BUCKETS_PER_DAY) * BUCKETS_PER_DAY
            f[partial] += self.by_bucket.below(c, hx) - self.by_bucket.below(c, whole)
        return n, f


#: Dense prefix counts (`_Dense`) when counterparties x days is at most this.
DENSE_CELLS = 1 << 22


class Exposures:
    """Per (counterparty, query bucket): the exposure, the visits N and the z-score of the
    later-fraud visits F against the population's rate p0 at the same cut (module
    docstring), from the counterparty tables of a state, for query buckets in [lo, hi]."""

    def __init__(self, state: ExposureState, delay: int, lo: int, hi: int, codes: int = 0) -> None:
        self.delay = delay
        self.each = _Tables(lambda cp: cp, state)
        self.all = _Tables(np.zeros_like, state)
        # The population's counts at every cut of the range (few: hours).
        self.x0 = lo - delay
        cuts = np.arange(lo - delay, hi - delay + 1)
        n0, f0 = self.all.counts(np.zeros(len(cuts), dtype=np.int64), cuts)
        self.p0 = f0 / np.maximum(n0, 1)
        width = max(int(state.visit_cp.max(initial=0)) + 1, codes)  # codes: of the queries
        first, last = (lo - delay) // BUCKETS_PER_DAY, (hi - delay) // BUCKETS_PER_DAY
        self.dense = None
        if width * (last - first + WINDOW_DAYS + 2) <= DENSE_CELLS:
            self.dense = _Dense(state, first, last, width)

    def __call__(self, cp: np.ndarray, query_bucket: np.ndarray):
        if self.dense is not None:
            return self._distinct(cp, query_bucket)
        # Many pairs share a (counterparty, hour): each distinct one is computed once.
        b0 = int(query_bucket.min()) if len(cp) else 0
        width = int(query_bucket.max(initial=0)) - b0 + 1
        index, distinct = pd.factorize(cp * width + (query_bucket - b0))
        first = np.zeros(len(distinct), dtype=np.int64)
        first[index[::-1]] = np.arange(len(index))[::-1]
        return tuple(v[index] for v in self._distinct(cp[first], query_bucket[first]))

    def _distinct(self, cp: np.ndarray, query_bucket: np.ndarray):
        x = query_bucket - self.delay
        tables = self.dense if self.dense is not None else self.each
        n, f = tables.counts(cp, x)
        p0 = self.p0[x - self.x0]
        exposure = (f + EXPOSURE_PRIOR * p0) / (n + EXPOSURE_PRIOR)
        z = (f - n * p0) / np.sqrt(n * p0 * (1 - p0) + 1)
        return exposure, n, z


#: Most (row, visit) pairs evaluated at once (memory: ~100 bytes each).
PAIRS_PER_SLICE = 1 << 22


def _kernel(ctx) -> dict:
    chunk = ctx.chunk
    if chunk.counterparty is None:
        return {}
    n = len(ctx)
    out = {name: np.zeros(n) for name in NAMES}
    if n == 0:
        return out
    an = analyse(ctx)
    entity = ctx.entity
    bucket = ctx.t // COUNTERPARTY_BUCKET_NS
    day = bucket // BUCKETS_PER_DAY
    # Per row, its list: visits [lo, hi) of its entity, within H days.
    starts = an.visits.starts[entity]
    hi = starts + an.before
    d0 = int(min(day.min(), an.v_day.min(initial=day.min()))) - HORIZON_DAYS - 1
    span = int(max(day.max(), an.v_day.max(initial=day.max()))) - d0 + 2
    v_key = an.v_entity * span + (an.v_day - d0)
    recent = np.searchsorted(v_key, entity * span + (day - HORIZON_DAYS - d0), side="left")
    lo = np.minimum(np.maximum(np.maximum(hi - VISIT_CAP, recent), starts), hi)
    length = hi - lo
    out["exposure_visits"] = np.log1p(length.astype(np.float64))
    exposures = Exposures(
        an.state, ctx.delay_buckets, int(bucket.min()), int(bucket.max()),
        int(an.v_cp.max(initial=0)) + 1,
    )  # fmt: skip
    # Rows in slices of about PAIRS_PER_SLICE pairs (a row has at most VISIT_CAP).
    total = np.cumsum(length)
    marks = np.arange(PAIRS_PER_SLICE, int(total[-1]), PAIRS_PER_SLICE)
    bounds = np.unique(np.r_[0, np.searchsorted(total, marks, side="right"), n])
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        _pairs(out, an, exposures, slice(a, b), lo[a:b], length[a:b], bucket[a:b], day[a:b])
    return out


def _pairs(out, an, exposures, rows, lo, length, bucket, day) -> None:
    """The features of rows `rows` (slice) from their (row, visit) pairs, into `out`."""
    n = len(lo)
    pair = ranges(lo, length)
    if not len(pair):
        return
    pair_row = group_ids(length)
    value, visitors, z = exposures(an.v_cp[pair], bucket[pair_row])
    best = np.full(n, -1.0)
    np.maximum.at(best, pair_row, value)
    out["exposure_max"][rows] = np.maximum(best, 0.0)
    total = np.bincount(pair_row, weights=value, minlength=n)
    out["exposure_mean"][rows] = total / np.maximum(length, 1)
    # The riskiest visit: the latest of those at the max (pairs are in visit order).
    top = np.flatnonzero((value == best[pair_row]) & (value > 0))
    last = np.full(n, -1)
    np.maximum.at(last, pair_row[top], top)
    where = np.flatnonzero(last >= 0)
    risky = last[where]
    since = np.zeros(n)
    since[where] = day[where] - an.v_day[pair[risky]]
    out["exposure_days_since_max"][rows] = since
    most = np.zeros(n)
    most[where] = np.log1p(visitors[risky].astype(np.float64))
    out["exposure_visitors_max"][rows] = most
    top_z = np.full(n, -np.inf)
    np.maximum.at(top_z, pair_row, z)
    out["exposure_z_max"][rows] = np.where(length > 0, top_z, 0.0)


def advance(ctx) -> ExposureState:
    """The block's state after the context's chunk: each entity's list cut by
    `kept_visits` (as carried when the entity has no row in the chunk),
    the counterparty tables cut to what a later cut can read (days >= h - W of the chunk's
    latest row; chunks come in time order) and summed by key."""
    if ctx.chunk.counterparty is None or not len(ctx):
        return ctx.exposure if ctx.exposure is not None else ExposureState.empty()
    an = analyse(ctx)
    bucket = ctx.t // COUNTERPARTY_BUCKET_NS
    has = ctx.m > 0
    last_row = np.where(has, starts_of(ctx.m) + ctx.m - 1, 0)
    latest_day = np.where(has, (bucket // BUCKETS_PER_DAY)[last_row], -(2**62))
    keep = kept_visits(an.v_entity, an.v_day, an.visits.lengths, latest_day)
    keep |= ~has[an.v_entity]  # no row in the chunk: as it was
    cut = (int(bucket.max()) - ctx.delay_buckets) // BUCKETS_PER_DAY - WINDOW_DAYS
    t = an.state
    vis = _summed([t.visit_cp, t.visit_day], t.visit_count, t.visit_day >= cut)
    fra = _summed([t.fraud_cp, t.fraud_day, t.fraud_bucket], t.fraud_count, t.fraud_day >= cut)
    return ExposureState(
        an.v_entity[keep], an.v_cp[keep], an.v_day[keep], an.v_known[keep], *vis, *fra
    )


def kept_visits(entity, day, lengths, latest_day) -> np.ndarray:
    """Which visits (grouped by `entity`, in order; `lengths` per entity) an entity's list
    keeps after its latest row's day `latest_day`: within H days of it, the latest VISIT_CAP
    visits of earlier days (what a later fraud, on that day or later, can flag, and what
    a later row's list reads) and the latest VISIT_CAP of that day (to tell a repeated
    visit that day from a new one)."""
    starts = starts_of(lengths)
    index = np.arange(len(entity)) - starts[entity]
    d0 = int(day.min(initial=0)) - 1
    span = int(max(day.max(initial=0), latest_day.max(initial=0))) - d0 + 2
    key = entity * span + (day - d0)
    today = np.clip(latest_day - d0, 0, span - 1)
    earlier = (np.searchsorted(key, np.arange(len(lengths)) * span + today) - starts)[entity]
    last = lengths[entity]
    keep = ((index >= earlier - VISIT_CAP) & (index < earlier)) | (
        index >= np.maximum(earlier, last - VISIT_CAP)
    )
    return keep & (day >= latest_day[entity] - HORIZON_DAYS)


def _summed(columns: list[np.ndarray], count: np.ndarray, keep: np.ndarray) -> list:
    """The kept entries, one per distinct key (columns), their counts summed."""
    columns = [c[keep] for c in columns]
    if not len(count[keep]):
        return [*columns, count[keep]]
    keys, index = np.unique(np.stack(columns), axis=1, return_inverse=True)
    summed = np.bincount(index.reshape(-1), weights=count[keep], minlength=keys.shape[1])
    return [*(k.copy() for k in keys), summed.astype(np.int64)]


# -- one live transaction at a time ---------------------------------------------------------


@dataclass(frozen=True)
class ExposureTotals:
    """What one live transaction's exposure features read: per counterparty hash of the
    account's visits, (N, F) at the transaction's cut, and the population's (N0, F0)."""

    counts: dict[int, tuple[int, int]]
    population: tuple[int, int] = (0, 0)


NO_TOTALS = ExposureTotals({})


def listed(visits: list, bucket: int) -> list:
    """The visits of a live list that a transaction in `bucket` reads (its list)."""
    day = bucket // BUCKETS_PER_DAY
    return [v for v in visits[-VISIT_CAP:] if v[1] >= day - HORIZON_DAYS]


def _scalar(p) -> dict:
    if p.exposure is None:
        return {}
    mine = listed(p.account.visits or [], p.bucket)
    out = dict.fromkeys(NAMES, 0.0)
    out["exposure_visits"] = math.log1p(len(mine))
    if not mine:
        return out
    n0, f0 = p.exposure.population
    p0 = f0 / max(n0, 1)
    values, zs = [], []
    for cp, _, _ in mine:
        n, f = p.exposure.counts.get(cp, (0, 0))
        values.append(((f + EXPOSURE_PRIOR * p0) / (n + EXPOSURE_PRIOR), n))
        zs.append((f - n * p0) / math.sqrt(n * p0 * (1 - p0) + 1))
    best = max(value for value, _ in values)
    total = 0.0
    for value, _ in values:
        total += value
    out["exposure_max"] = best
    out["exposure_mean"] = total / len(values)
    out["exposure_z_max"] = max(zs)
    if best > 0:
        i = max(i for i, (value, _) in enumerate(values) if value == best)
        out["exposure_days_since_max"] = float(p.bucket // BUCKETS_PER_DAY - mine[i][1])
        out["exposure_visitors_max"] = math.log1p(values[i][1])
    return out


def new_visit(visits: list, cp: int, bucket: int) -> tuple[int, int] | None:
    """(counterparty hash, day) of a transaction if it is a new visit of the list."""
    day = bucket // BUCKETS_PER_DAY
    for other, other_day, _ in reversed(visits):
        if other_day < day:
            break
        if other == cp and other_day == day:
            return None
    return cp, day


def add_visit(visits: list, cp: int, bucket: int) -> tuple[int, int] | None:
    """Add a transaction's visit to a live list (in place; a late one in its day's place)
    and cut the list as `kept_visits` does; the visit if it is new."""
    visit = new_visit(visits, cp, bucket)
    if visit is None:
        return None
    at = len(visits)
    while at and visits[at - 1][1] > visit[1]:
        at -= 1
    visits.insert(at, (*visit, int(NO_FRAUD)))
    latest = visits[-1][1]
    today = [v for v in visits if v[1] == latest][-VISIT_CAP:]
    earlier = [v for v in visits if latest - HORIZON_DAYS <= v[1] < latest][-VISIT_CAP:]
    visits[:] = earlier + today
    return visit


def add_fraud(visits: list, fraud_bucket: int) -> list[tuple[int, int, int, int]]:
    """A fraud of the list's entity in `fraud_bucket`: the visits it is a later fraud of get
    it as their known bucket unless they have an earlier one (in place). Returns the
    changes (counterparty hash, day, old known bucket, new) for the counterparty tables."""
    day = fraud_bucket // BUCKETS_PER_DAY
    changes = []
    earlier = [i for i, v in enumerate(visits) if v[1] < day][-VISIT_CAP:]
    for i in earlier:
        cp, visit_day, known = visits[i]
        if visit_day >= day - HORIZON_DAYS and fraud_bucket < known:
            visits[i] = (cp, visit_day, fraud_bucket)
            changes.append((cp, visit_day, known, fraud_bucket))
    return changes


class ExposureBook:
    """The counterparty tables as dicts, for live scoring one transaction at a time: per
    counterparty hash, visits by day and later-fraud visits by (day, fraud bucket), and the
    same over every counterparty (`totals` gives `ExposureTotals`)."""

    def __init__(self) -> None:
        self.visits: dict[int, dict[int, int]] = {}
        self.frauds: dict[int, dict[tuple[int, int], int]] = {}

    def add_visit(self, visit: tuple[int, int] | None) -> None:
        if visit is not None:
            for key in (visit[0], None):
                days = self.visits.setdefault(key, {})
                days[visit[1]] = days.get(visit[1], 0) + 1

    def apply(self, changes) -> None:
        for cp, day, old, new in changes:
            for key in (cp, None):
                entries = self.frauds.setdefault(key, {})
                if old != NO_FRAUD:
                    entries[(day, old)] -= 1
                entries[(day, new)] = entries.get((day, new), 0) + 1

    def _counts(self, key, x: int) -> tuple[int, int]:
        h = x // BUCKETS_PER_DAY
        n = sum(c for d, c in self.visits.get(key, {}).items() if h - WINDOW_DAYS <= d < h)
        f = sum(
            c
            for (d, bucket), c in self.frauds.get(key, {}).items()
            if h - WINDOW_DAYS <= d < h and bucket < x
        )
        return n, f

    def totals(self, visits: list, bucket: int, delay: int) -> ExposureTotals:
        """The totals a transaction in `bucket` reads, of the account's `visits`."""
        x = bucket - delay
        counts = {cp: self._counts(cp, x) for cp, _, _ in listed(visits, bucket)}
        return ExposureTotals(counts, self._counts(None, x))


BLOCK = Block(
    name="exposure",
    names=_names,
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("exposure"),),
    # A late live insertion does not recompute the exposure of the account's later rows
    # (they keep the values they were scored with).
    history=False,
)
