"""Live state stores: one protocol, three implementations chosen by URL.

=========================  ================================================================
URL                        store
=========================  ================================================================
``memory``                 `MemoryStore`: a dict in this process (tests, notebooks)
``sqlite:///path/to.db``   `SQLiteStore`: one file, WAL mode; the embedded default. As in
                           SQLAlchemy, three slashes start a relative path and four an
                           absolute one (``sqlite:////var/lib/fraudseq/state.db``);
                           ``?synchronous=FULL`` fsyncs every transaction
``redis://host:port/db``   `RedisStore`: several workers or hosts
                           (``?prefix=name:`` namespaces the keys; default ``fraudseq:``)
=========================  ================================================================

What a store holds:

- **accounts**: per entity, the `AccountState` bytes (compact binary, never pickle);
- **transactions**: per transaction id, a JSON record: content digest, entity, counterparty,
  day, whether it entered the account's history, its label and the result returned. It makes
  scoring idempotent and lets feedback find the transaction's counterparty and day;
- **counterparty days**: per (counterparty, UTC hour bucket), the number of transactions and
  of known frauds, for the delayed-label counterparty features. Buckets older than the
  store's `clock` minus the retention are pruned: the clock is the Detector's event clock
  (`fraudseq.serving.event_time`), never the newest time a transaction claimed; a store
  without a clock (None, or a clock that returns None) prunes nothing;
- **labels**: transaction id -> 0/1, every label received, for retraining (never expires);
- **meta**: the fingerprint of the encoder the state was built with.

Every score is one atomic unit: `transact` reads the transaction record, the account and the
counterparty's days, calls `compute(snapshot)` and writes what it returns, all or nothing.
SQLite holds its write lock around it (``BEGIN IMMEDIATE ... COMMIT``); Redis reads, computes
and commits with a compare-and-set Lua script that fails if the account changed meanwhile,
and then reads and computes again. So two workers scoring the same account never lose an
event.

With `ttl_seconds`, accounts and transaction records not written for that long are dropped
(Redis: key expiry; memory and SQLite: treated as absent when read and purged periodically).
Choose a TTL longer than the label delay, or late labels find no record.
"""

from __future__ import annotations

import functools
import json
import numbers
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlparse

import numpy as np

from fraudseq.errors import FraudseqError
from fraudseq.feature_blocks import COUNTERPARTY_BUCKET_NS
from fraudseq.serving.live_features import CounterpartyTotals


class StateStoreError(FraudseqError):
    """The state store cannot be reached or refused the update; nothing was stored.

    `permanent`: a fault that retrying cannot fix (a damaged, read-only or non-SQLite file,
    a failing disk, refused credentials): an operator must act. Otherwise transient (down,
    locked, busy, full): a retry may succeed."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


#: Purge expired rows (memory, SQLite) once every this many writes.
PURGE_EVERY = 2_000


@dataclass
class Snapshot:
    """What `compute` sees: the stored record of this transaction id (None if new), the
    account's state bytes (None if new) and the `CounterpartyTotals` of the counterparty's
    hour buckets in the requested range (windows ending at its end)."""

    record: dict | None
    account: bytes | None
    counterparty: CounterpartyTotals | None = None


@dataclass
class Update:
    """What `compute` returns. With `record` None nothing is written (a retried transaction).

    `account` None leaves the account unchanged (a transaction too late to insert);
    `counterparty_day` adds one transaction to the (counterparty, day) bucket.
    """

    result: dict
    record: dict | None = None
    account: bytes | None = None
    counterparty_day: int | None = None
    record_json: str | None = None  # `dumps(record)`, when compute already wrote it

    def record_text(self) -> str:
        """The record as the JSON text the stores keep."""
        return self.record_json if self.record_json is not None else dumps(self.record)


@dataclass
class BucketTable:
    """Counterparty hour buckets as columns: entry i holds `count[i]` transactions, of which
    `fraud[i]` are known frauds, of counterparty `names[code[i]]` in hour bucket `bucket[i]`.
    Entries of the same (counterparty, bucket) add up. A batch reads tens of thousands of
    buckets; as columns they go from the store to the vectorised features without a Python
    object per bucket."""

    names: list[str]
    code: np.ndarray  # int64
    bucket: np.ndarray  # int64
    count: np.ndarray  # int64
    fraud: np.ndarray  # int64

    @classmethod
    def from_rows(cls, names: list[str], rows: np.ndarray) -> BucketTable:
        """From an (entries, 4) int64 array of (code, bucket, count, fraud) rows."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        return cls(list(names), *(np.ascontiguousarray(rows[:, j]) for j in range(4)))

    @classmethod
    def from_dicts(cls, buckets: dict[str, dict[int, tuple[int, int]]]) -> BucketTable:
        """From {counterparty: {bucket: (count, frauds)}}."""
        rows = [
            (code, bucket, n, fraud)
            for code, by_bucket in enumerate(buckets.values())
            for bucket, (n, fraud) in by_bucket.items()
        ]
        return cls.from_rows(list(buckets), np.array(rows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.code)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Counterparty name -> code."""
        return {name: code for code, name in enumerate(self.names)}

    def adding(self, counts: dict[tuple[str, int], int]) -> BucketTable:
        """This table plus `counts` transactions (no frauds) per (counterparty, bucket)."""
        index = dict(self.index)
        for cp, _ in counts:
            index.setdefault(cp, len(index))
        extra = [(index[cp], bucket, n, 0) for (cp, bucket), n in counts.items()]
        mine = np.stack([self.code, self.bucket, self.count, self.fraud], axis=1)
        return BucketTable.from_rows(
            list(index), np.concatenate([mine, np.array(extra, dtype=np.int64).reshape(-1, 4)])
        )

    def of(self, counterparty: str) -> dict[int, tuple[int, int]]:
        """One counterparty's {bucket: (count, frauds)}."""
        code = self.index.get(counterparty)
        out: dict[int, tuple[int, int]] = {}
        if code is None:
            return out
        mine = np.flatnonzero(self.code == code)
        for bucket, n, fraud in zip(
            self.bucket[mine].tolist(), self.count[mine].tolist(), self.fraud[mine].tolist(),
            strict=True,
        ):  # fmt: skip
            before = out.get(bucket, (0, 0))
            out[bucket] = (before[0] + n, before[1] + fraud)
        return out


@dataclass
class BatchSnapshot:
    """What a batch `compute` sees: the stored records of the batch's ids (only those that
    exist), the stored state of its accounts (only those that exist) and the counterparties'
    buckets within the requested range."""

    records: dict[str, dict]
    accounts: dict[str, bytes]
    counterparty: BucketTable


@dataclass
class BatchUpdate:
    """What a batch `compute` returns: `results` for the caller, and what to write, all or
    nothing: new `records` (tx id, entity, inserted, the record as JSON text), `accounts`
    (entity -> state bytes) and `counterparty_days` ((counterparty, day) -> transactions
    to add)."""

    results: list
    records: list[tuple[str, str, bool, str]] = field(default_factory=list)
    accounts: dict[str, bytes] = field(default_factory=dict)
    counterparty_days: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass
class LabelChange:
    """Outcome of `StateStore.label`: the previous label (None if none) and whether the
    stored label changed."""

    previous: int | None
    changed: bool


@runtime_checkable
class StateStore(Protocol):
    """The live state behind a Detector (see the module docstring).

    A store may also implement the optional batch form, used by `Detector.score_batch`
    (which otherwise scores a batch one transaction at a time):

    ``transact_batch(tx_ids, entities, counterparties, days, compute) -> BatchUpdate``:
    read the records of `tx_ids`, the accounts of `entities` and the counterparties'
    buckets of days in [days[0], days[1]) at once, call `compute(BatchSnapshot)` and write
    everything it returns in one atomic unit; read and compute again if any of the
    accounts changed concurrently. The three stores here implement it.
    """

    url: str

    def transact(
        self,
        tx_id: str,
        entity: str,
        counterparty: str | None,
        days: tuple[int, int] | None,
        compute: Callable[[Snapshot], Update],
    ) -> Update:
        """Read the snapshot, `compute` the update and write it atomically; retry on a
        concurrent change. `days` is the half-open day range of counterparty buckets to read."""
        ...

    def label(self, tx_id: str, label: int) -> LabelChange | None:
        """Record a 0/1 label for a scored transaction atomically (record, counterparty fraud
        count, labels table); None if no record of `tx_id` exists."""
        ...

    def meta(self, key: str, value: str) -> str:
        """Store `value` under `key` unless one is there; return the stored value."""
        ...

    def account(self, entity: str) -> bytes | None: ...

    def record(self, tx_id: str) -> dict | None: ...

    def labels(self) -> dict[str, int]: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def open_store(
    state: str | StateStore,
    *,
    ttl_seconds: int | None = None,
    retention_buckets: int | None = None,
    clock: Callable[[], int | None] | None = None,
) -> StateStore:
    """A store from a URL ("memory", "sqlite:///path.db", "redis://host:port/db") or as given.

    `retention_buckets`: counterparty hour buckets older than the clock's bucket minus this
    many are pruned (None: none until a Detector sets its model's retention); `clock`: the
    time in nanoseconds since the epoch (None: nothing is pruned).
    """
    if not isinstance(state, str):
        if not isinstance(state, StateStore):
            raise FraudseqError(f"state must be a URL or a StateStore, got {type(state).__name__}")
        return state
    if ttl_seconds is not None and not (
        isinstance(ttl_seconds, numbers.Integral)
        and not isinstance(ttl_seconds, bool)
        and ttl_seconds > 0
    ):  # whole seconds: Redis expiries take integers
        raise FraudseqError(
            f"ttl_seconds must be a positive whole number of seconds or None, got {ttl_seconds!r}"
        )
    url = state.strip()
    if url == "memory" or url == "memory://":
        store = MemoryStore(ttl_seconds=ttl_seconds, retention_buckets=retention_buckets)
        store.clock = clock
        return store
    parsed = urlparse(url)
    options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    if parsed.scheme == "sqlite":
        from fraudseq.serving.state_sqlite import SQLiteStore

        # SQLAlchemy's convention: sqlite:///relative/path.db, sqlite:////absolute/path.db.
        path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""
        if not path:
            raise FraudseqError(
                f"{url}: no database path; write sqlite:///relative/state.db or "
                f"sqlite:////absolute/state.db"
            )
        store = SQLiteStore(
            path,
            ttl_seconds=ttl_seconds,
            retention_buckets=retention_buckets,
            synchronous=options.get("synchronous", "NORMAL"),
            url=url,
        )
        store.clock = clock
        return store
    if parsed.scheme in ("redis", "rediss", "unix"):
        from fraudseq.serving.state_redis import RedisStore

        store = RedisStore(
            url,
            ttl_seconds=ttl_seconds,
            retention_buckets=retention_buckets,
            prefix=options.get("prefix", "fraudseq:"),
        )
        store.clock = clock
        return store
    raise FraudseqError(
        f"unknown state store {state!r}; use 'memory', 'sqlite:///path/to/state.db' or "
        f"'redis://host:port/db'"
    )


def purge_limit(clock: Callable[[], int | None] | None, retention: int | None) -> int | None:
    """The oldest counterparty bucket kept: the clock's bucket minus `retention` buckets;
    None (prune nothing) without a clock, before it has a time, or without a retention
    (a store made by hand gets the model's from the Detector that uses it)."""
    now = clock() if clock is not None else None
    if now is None or retention is None:
        return None
    return now // COUNTERPARTY_BUCKET_NS - retention


def label_delta(previous: int | None, label: int) -> int:
    """Change of the counterparty's fraud count when the label goes from `previous` to `label`."""
    return int(label == 1) - int(previous == 1)


def counterparty_totals(buckets: dict, days: tuple[int, int] | None) -> CounterpartyTotals:
    """`CounterpartyTotals` of the (count, frauds) buckets for the range `days` that
    `LiveEncoder.counterparty_days` gives (its windows end at days[1]; the longest starts at
    days[0], and `from_buckets` leaves out what lies outside); all zero without a range."""
    return CounterpartyTotals.from_buckets(buckets if days else {}, days[1] if days else 0)


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))


class MemoryStore:
    """Everything in dicts of this process, behind one lock. For tests and notebooks."""

    def __init__(
        self, *, ttl_seconds: int | None = None, retention_buckets: int | None = None
    ) -> None:
        self.url = "memory"
        self.ttl = ttl_seconds
        self.retention_buckets = retention_buckets
        #: Counterparty buckets are pruned by this clock (see `purge_limit`).
        self.clock: Callable[[], int | None] | None = None
        self._lock = threading.RLock()
        self._accounts: dict[str, tuple[float, bytes]] = {}
        self._records: dict[str, tuple[float, str]] = {}
        self._days: dict[str, dict[int, list[int]]] = {}
        self._labels: dict[str, int] = {}
        self._meta: dict[str, str] = {}
        self._writes = 0
        self._closed = False

    def _fresh(self, entry, now: float):
        if entry is None:
            return None
        touched, value = entry
        if self.ttl is not None and touched < now - self.ttl:
            return None
        return value

    def transact(self, tx_id, entity, counterparty, days, compute) -> Update:
        with self._lock:
            self._check_open()
            now = time.time()
            text = self._fresh(self._records.get(tx_id), now)
            buckets = self._days.get(counterparty, {}) if counterparty is not None else {}
            snapshot = Snapshot(
                record=json.loads(text) if text is not None else None,
                account=self._fresh(self._accounts.get(entity), now),
                counterparty=counterparty_totals(buckets, days),
            )
            update = compute(snapshot)
            if update.record is None:
                return update
            self._records[tx_id] = (now, update.record_text())
            if update.account is not None:
                self._accounts[entity] = (now, update.account)
            if counterparty is not None and update.counterparty_day is not None:
                self._add_day(counterparty, update.counterparty_day, 1)
            self._writes += 1
            if self._writes % PURGE_EVERY == 0:
                self.purge()
            return update

    def transact_batch(self, tx_ids, entities, counterparties, days, compute) -> BatchUpdate:
        with self._lock:
            self._check_open()
            now = time.time()
            records = {}
            for tx_id in tx_ids:
                text = self._fresh(self._records.get(tx_id), now)
                if text is not None:
                    records[tx_id] = json.loads(text)
            accounts = {}
            for entity in entities:
                blob = self._fresh(self._accounts.get(entity), now)
                if blob is not None:
                    accounts[entity] = blob
            buckets = {}
            if days is not None:
                for cp in counterparties:
                    stored = self._days.get(cp, {})
                    buckets[cp] = {
                        d: (v[0], v[1]) for d, v in stored.items() if days[0] <= d < days[1]
                    }
            update = compute(BatchSnapshot(records, accounts, BucketTable.from_dicts(buckets)))
            for tx_id, _, _, text in update.records:
                self._records[tx_id] = (now, text)
            for entity, blob in update.accounts.items():
                self._accounts[entity] = (now, blob)
            for (cp, day), count in update.counterparty_days.items():
                self._add_day(cp, day, count)
            before = self._writes
            self._writes += len(update.records)
            if self._writes // PURGE_EVERY != before // PURGE_EVERY:
                self.purge()
            return update

    def _add_day(self, counterparty: str, day: int, count: int) -> None:
        """Count transactions in a bucket; a new bucket prunes the counterparty's buckets
        older than the clock's retention limit."""
        cp_days = self._days.setdefault(counterparty, {})
        if day not in cp_days:
            cp_days[day] = [0, 0]
            limit = purge_limit(self.clock, self.retention_buckets)
            if limit is not None:
                for old in [d for d in cp_days if d < limit and d != day]:
                    del cp_days[old]
        cp_days[day][0] += count

    def label(self, tx_id: str, label: int) -> LabelChange | None:
        with self._lock:
            self._check_open()
            now = time.time()
            text = self._fresh(self._records.get(tx_id), now)
            if text is None:
                return None
            record = json.loads(text)
            previous = record.get("label")
            self._labels[tx_id] = label
            if previous == label:
                return LabelChange(previous, False)
            record["label"] = label
            self._records[tx_id] = (self._records[tx_id][0], dumps(record))
            delta = label_delta(previous, label)
            cp = record.get("counterparty")
            if delta and cp is not None and record.get("counted"):
                bucket = self._days.get(cp, {}).get(record["day"])
                if bucket is not None:
                    bucket[1] += delta
            return LabelChange(previous, True)

    def meta(self, key: str, value: str) -> str:
        with self._lock:
            return self._meta.setdefault(key, value)

    def account(self, entity: str) -> bytes | None:
        with self._lock:
            return self._fresh(self._accounts.get(entity), time.time())

    def record(self, tx_id: str) -> dict | None:
        with self._lock:
            text = self._fresh(self._records.get(tx_id), time.time())
            return json.loads(text) if text is not None else None

    def labels(self) -> dict[str, int]:
        with self._lock:
            return dict(self._labels)

    def counterparty_days(self, counterparty: str) -> dict[int, tuple[int, int]]:
        with self._lock:
            return {d: (v[0], v[1]) for d, v in self._days.get(counterparty, {}).items()}

    def purge(self) -> None:
        """Drop accounts and records older than the TTL."""
        if self.ttl is None:
            return
        with self._lock:
            limit = time.time() - self.ttl
            for table in (self._accounts, self._records):
                for key in [k for k, (touched, _) in table.items() if touched < limit]:
                    del table[key]

    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:  # the server is stopping: not the client's fault (503, not 400)
            raise StateStoreError("the state store is closed")
