"""What every state store shares: the protocol, the values it passes, `open_store`.

Stores move bytes and rows; they compute no features. The one exception, for speed, is
SQLite's `SQLiteStore._counterparty_rows`, tested against the Python kernels.

Three implementations, chosen by URL:

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
  hour bucket (the record's "day" field, named before buckets were hours), whether it entered
  the account's history, its label and the result returned. It makes scoring idempotent and
  lets feedback find the transaction's counterparty and bucket;
- **counterparty buckets**: per (counterparty, UTC hour bucket), the number of transactions
  and of known frauds, for the delayed-label counterparty features. Buckets older than the
  store's `clock` minus `retention_buckets` are pruned: the clock is the Detector's event
  clock (`fraudseq.serving.event_time`), never the newest time a transaction claimed, and the
  retention is the model's (`LiveEncoder.counterparty_retention_buckets`), set by the
  Detector. A store has no retention of its own: without a clock (None, or a clock that
  returns None) or a retention it prunes nothing;
- **labels**: transaction id -> 0/1, every label received, for retraining (never expires),
  with the time it arrived (wall clock, Unix seconds);
- **history**: a log of the transactions scored, as received (`fraudseq.transaction.
  history_json`: id, entity, time, amount, the schema's other columns), one entry per score
  or batch, written in the same atomic unit as the state. Account states are bounded
  summaries and cannot give the transactions back; this log is what `fraudseq
  export-history` writes, with the labels, for retraining. Bounded by `history_buckets`
  (hour buckets, set by the Detector: by default the model's state retention, label delay
  + 37 days; 0 keeps no log): entries whose newest transaction is older than the clock's
  bucket minus that are pruned (with the counterparty buckets, by the same clock);
- **meta**: the fingerprint of the encoder the state was built with (and, for
  `export-history`, the model's schema and label delay under ``history``).

Every score is one atomic unit: `transact` reads the transaction record, the account and the
counterparty's buckets, calls `compute(snapshot)` and writes what it returns, all or nothing.
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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qs, urlparse

import numpy as np

from fraudseq.errors import FraudseqError
from fraudseq.features.blocks.counterparty import CounterpartyTotals
from fraudseq.features.constants import COUNTERPARTY_BUCKET_NS


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
    `counterparty_bucket` adds one transaction to the (counterparty, hour bucket) entry.
    """

    result: dict
    record: dict | None = None
    account: bytes | None = None
    counterparty_bucket: int | None = None
    record_json: str | None = None  # `dumps(record)`, when compute already wrote it
    #: The history log's entry for this transaction (`history_json`), None for no log;
    #: `history_bucket` is its hour bucket (what the log's retention compares).
    history: str | None = None
    history_bucket: int | None = None

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
        if code is None:
            return {}
        mine = np.flatnonzero(self.code == code)
        columns = (self.bucket[mine], self.count[mine], self.fraud[mine])
        return add_rows(zip(*(column.tolist() for column in columns), strict=True))


class BucketCounts(Mapping):
    """A batch's transactions per (counterparty, hour bucket) as columns, one entry per
    transaction: `names[i]` (a counterparty) and `buckets[i]`. As a mapping it is
    (counterparty, bucket) -> transactions, counted on first access (what SQLite and Redis
    read); the memory store adds the columns as they are (`BucketColumns.add`)."""

    def __init__(self, names: list[str], buckets: np.ndarray) -> None:
        self.names, self.buckets = names, buckets
        self._counts: dict[tuple[str, int], int] | None = None

    def counts(self) -> dict[tuple[str, int], int]:
        if self._counts is None:
            self._counts = Counter(zip(self.names, self.buckets.tolist(), strict=True))
        return self._counts

    def __getitem__(self, key: tuple[str, int]) -> int:
        return self.counts()[key]

    def __iter__(self):
        return iter(self.counts())

    def __len__(self) -> int:
        return len(self.counts())

    def items(self):
        return self.counts().items()


class AccountStates(Mapping):
    """Account states of a batch, decoded: `table` holds those of `entities` (entity i is
    row i), `blobs` the bytes of others (which win over a table row of the same entity).
    As a mapping it is entity -> state bytes, the table's rows encoded by the one codec
    (`encode_states`, with `codec`'s shapes: the Detector's `LiveEncoder`) on first access:
    a store that keeps bytes (SQLite, Redis) reads it as it reads a dict, the memory store
    keeps `table` as it is and never encodes it."""

    def __init__(self, entities: list[str], table, blobs: dict[str, bytes], codec) -> None:
        self.entities, self.table, self.blobs, self.codec = entities, table, blobs, codec
        self._encoded: dict[str, bytes] | None = None

    def encoded(self) -> dict[str, bytes]:
        if self._encoded is None:
            from fraudseq.features.state import encode_states

            rows = encode_states(self.table, self.codec) if self.entities else []
            self._encoded = {**dict(zip(self.entities, rows, strict=True)), **self.blobs}
        return self._encoded

    def __getitem__(self, entity: str) -> bytes:
        return self.encoded()[entity]

    def __iter__(self):
        return iter(self.encoded())

    def __len__(self) -> int:
        return len(self.encoded())


class RecordRows(Sequence):
    """A batch's new records as rows (tx id, entity, inserted, the record's JSON text).
    Each text is made by `make_text(i)`: all of them the first time a row is read (what a
    store that keeps text does: SQLite, Redis), or one at a time by `text(i)` (the memory
    store keeps (rows, i) and makes a text only when the record is read back). `prepare`,
    if given, is called once before all the texts are made (what they share, made in one
    pass)."""

    def __init__(
        self, ids: list[str], entities: list[str], inserted: list[bool], make_text, prepare=None
    ):
        self.ids, self.entities, self.inserted = ids, entities, inserted
        self._make_text, self._prepare = make_text, prepare
        self._texts: list[str] | None = None
        self._position: dict[str, int] | None = None  # id -> row, made when first asked

    def text(self, i: int) -> str:
        return self._texts[i] if self._texts is not None else self._make_text(i)

    def text_of(self, tx_id: str) -> str:
        """The record text of transaction `tx_id` (one of `ids`)."""
        if self._position is None:
            self._position = dict(zip(self.ids, range(len(self.ids)), strict=True))
        return self.text(self._position[tx_id])

    def __getitem__(self, i):
        if self._texts is None:
            if self._prepare is not None:
                self._prepare()
            self._texts = [self._make_text(i) for i in range(len(self.ids))]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.ids[i], self.entities[i], self.inserted[i], self._texts[i]

    def __len__(self) -> int:
        return len(self.ids)


def history_text(update) -> str | None:
    """An update's history log entry as text (`BatchUpdate.history` may be a callable that
    makes it: the memory store keeps that and calls it when the log is read)."""
    history = update.history
    return history() if callable(history) else history


@dataclass
class BatchSnapshot:
    """What a batch `compute` sees: the stored records of the batch's ids (only those that
    exist), the stored state of its accounts (only those that exist) and the counterparties'
    buckets within the requested range."""

    records: dict[str, dict]
    accounts: Mapping[str, bytes]  # a dict, or `AccountStates` (decoded) from the memory store
    counterparty: BucketTable


@dataclass
class BatchUpdate:
    """What a batch `compute` returns: `results` for the caller, and what to write, all or
    nothing: new `records` (tx id, entity, inserted, the record as JSON text), `accounts`
    (entity -> state bytes) and `counterparty_buckets` ((counterparty, hour bucket) ->
    transactions to add)."""

    results: list
    #: A list, or `RecordRows` (texts made when read)
    records: Sequence[tuple[str, str, bool, str]] = field(default_factory=list)
    #: entity -> state bytes: a dict, or `AccountStates` (decoded, bytes on demand)
    accounts: Mapping[str, bytes] = field(default_factory=dict)
    #: A dict, or `BucketCounts` (columns, counted on first access)
    counterparty_buckets: Mapping[tuple[str, int], int] = field(default_factory=dict)
    #: The history log's entry for the new transactions (`history_json`; or a callable
    #: making it, read by `history_text`), None for no log; `history_bucket` is the hour
    #: bucket of the newest of them.
    history: str | Callable[[], str] | None = None
    history_bucket: int | None = None


@dataclass
class History:
    """What `StateStore.history` returns for `export-history`: the log's entries (JSON
    texts of `fraudseq.transaction.history_json`, in the order written), every label
    received, the time each arrived (Unix seconds; absent when not recorded) and the
    store's meta entries."""

    entries: list[str]
    labels: dict[str, int]
    label_times: dict[str, float]
    meta: dict[str, str]


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

    ``transact_batch(tx_ids, entities, counterparties, buckets, compute) -> BatchUpdate``:
    read the records of `tx_ids`, the accounts of `entities` and the counterparties' hour
    buckets in [buckets[0], buckets[1]) at once, call `compute(BatchSnapshot)` and write
    everything it returns in one atomic unit; read and compute again if any of the
    accounts changed concurrently. The three stores here implement it.

    And the optional history log (the three stores here keep it): a ``history_buckets``
    attribute (the log's retention, set by the Detector; None or 0 keeps no log), writing
    `Update.history` / `BatchUpdate.history` with the rest, and ``history() -> History``
    for `export-history`.
    """

    url: str

    def transact(
        self,
        tx_id: str,
        entity: str,
        counterparty: str | None,
        buckets: tuple[int, int] | None,
        compute: Callable[[Snapshot], Update],
    ) -> Update:
        """Read the snapshot, `compute` the update and write it atomically; retry on a
        concurrent change. `buckets` is the half-open range of counterparty hour buckets
        to read (`LiveEncoder.counterparty_buckets`)."""
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
    store = _store_at(state.strip(), ttl_seconds=ttl_seconds, retention_buckets=retention_buckets)
    store.clock = clock
    return store


def _store_at(url: str, **options) -> StateStore:
    """The store a URL names, with `options` (ttl_seconds, retention_buckets); no clock."""
    if url == "memory" or url == "memory://":
        from fraudseq.serving.stores.memory import MemoryStore

        return MemoryStore(**options)
    parsed = urlparse(url)
    query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    if parsed.scheme == "sqlite":
        from fraudseq.serving.stores.sqlite import SQLiteStore

        path = sqlite_path(url)
        if not path:
            raise FraudseqError(
                f"{url}: no database path; write sqlite:///relative/state.db or "
                f"sqlite:////absolute/state.db"
            )
        return SQLiteStore(path, synchronous=query.get("synchronous", "NORMAL"), url=url, **options)
    if parsed.scheme in ("redis", "rediss", "unix"):
        from fraudseq.serving.stores.redis import RedisStore

        return RedisStore(url, prefix=query.get("prefix", "fraudseq:"), **options)
    raise FraudseqError(
        f"unknown state store {url!r}; use 'memory', 'sqlite:///path/to/state.db' or "
        f"'redis://host:port/db'"
    )


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///`` URL ("" when it names none). SQLAlchemy's convention:
    sqlite:///relative/path.db, sqlite:////absolute/path.db."""
    return url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""


#: The meta key under which a Detector keeps what `export-history` needs (its
#: `Detector.history_meta`: the model's schema and label delay).
HISTORY_META = "history"


def purge_limit(clock: Callable[[], int | None] | None, retention: int | None) -> int | None:
    """The oldest counterparty bucket kept: the clock's bucket minus `retention` buckets;
    None (prune nothing) without a clock, before it has a time, or without a retention
    (a store made by hand gets the model's from the Detector that uses it)."""
    now = clock() if clock is not None else None
    if now is None or retention is None:
        return None
    return now // COUNTERPARTY_BUCKET_NS - retention


def history_limit(store) -> int | None:
    """The oldest hour bucket the store's history log keeps (`purge_limit` with its
    `history_buckets`); None: prune nothing."""
    return purge_limit(store.clock, getattr(store, "history_buckets", None))


def label_delta(previous: int | None, label: int) -> int:
    """Change of the counterparty's fraud count when the label goes from `previous` to `label`."""
    return int(label == 1) - int(previous == 1)


def add_rows(rows) -> dict[int, tuple[int, int]]:
    """{bucket: (count, frauds)} of (bucket, count, frauds) rows, adding up repeated buckets."""
    out: dict[int, tuple[int, int]] = {}
    for bucket, n, fraud in rows:
        before = out.get(bucket, (0, 0))
        out[bucket] = (before[0] + n, before[1] + fraud)
    return out


def in_range(buckets: dict, span: tuple[int, int]) -> dict[int, tuple[int, int]]:
    """The (count, frauds) buckets in the half-open range `span`, as tuples."""
    lo, hi = span
    return {b: (v[0], v[1]) for b, v in buckets.items() if lo <= b < hi}


def counterparty_totals(buckets: dict, span: tuple[int, int] | None) -> CounterpartyTotals:
    """`CounterpartyTotals` of the (count, frauds) buckets for the range `span` that
    `LiveEncoder.counterparty_buckets` gives (its windows end at span[1]; the longest starts
    at span[0], and `from_buckets` leaves out what lies outside); all zero without a range."""
    return CounterpartyTotals.from_buckets(buckets if span else {}, span[1] if span else 0)


def dumps(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"))
