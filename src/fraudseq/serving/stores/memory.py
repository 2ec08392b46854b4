"""`MemoryStore`: every piece of state in this process (tests, notebooks): dicts, the
counterparty buckets as sorted columns (`BucketColumns`), and the account states a batch
wrote as decoded columns (`StatePool`: a batch reads and writes them without the bytes
codec; a single score, or `account`, gets the bytes)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from itertools import repeat

from fraudseq.serving.stores.base import (
    PURGE_EVERY,
    AccountStates,
    BatchSnapshot,
    BatchUpdate,
    History,
    LabelChange,
    RecordRows,
    Snapshot,
    StateStoreError,
    Update,
    counterparty_totals,
    dumps,
    history_limit,
    label_delta,
    purge_limit,
)
from fraudseq.serving.stores.bucket_columns import BucketColumns
from fraudseq.serving.stores.state_pool import StatePool


class MemoryStore:
    """Everything in this process, behind one lock. For tests and notebooks."""

    def __init__(
        self, *, ttl_seconds: int | None = None, retention_buckets: int | None = None
    ) -> None:
        self.url = "memory"
        self.ttl = ttl_seconds
        self.retention_buckets = retention_buckets
        #: The history log's retention in hour buckets (set by the Detector; None or 0: no log).
        self.history_buckets: int | None = None
        #: Counterparty buckets are pruned by this clock (see `purge_limit`).
        self.clock: Callable[[], int | None] | None = None
        self._lock = threading.RLock()
        #: entity -> (touched, state bytes), or (touched, None) when `_pool` holds it
        self._accounts: dict[str, tuple[float, bytes | None]] = {}
        self._pool: StatePool | None = None
        self._codec = None  # the shapes the pool's states are encoded with (`AccountStates`)
        #: tx id -> (touched, record JSON), or (touched, batch << 32 | i): the text of row i
        #: of `_batches[batch]` (a RecordRows), made when read. Tuples of atoms only, which
        #: the garbage collector stops tracking (a (rows, i) tuple per record cost ~4 us per
        #: transaction in collections over a replay).
        self._records: dict[str, tuple[float, str | int]] = {}
        self._batches: dict[int, RecordRows] = {}
        self._batch_number = 0
        self._buckets = BucketColumns()
        self._labels: dict[str, int] = {}
        self._label_times: dict[str, float] = {}
        self._history: list[tuple[int, str]] = []  # (newest hour bucket, entry)
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

    def _fresh_many(self, table: dict, keys, now: float) -> list[tuple[str, object]]:
        """(key, value) of the `keys` in `table` that are fresh (`_fresh`), looked up in one
        pass (most keys of a batch are new transactions, absent)."""
        get = table.get
        found = [(key, entry) for key in keys if (entry := get(key)) is not None]
        if self.ttl is None:
            return [(key, value) for key, (_, value) in found]
        oldest = now - self.ttl
        return [(key, value) for key, (touched, value) in found if touched >= oldest]

    def transact(self, tx_id, entity, counterparty, buckets, compute) -> Update:
        with self._lock:
            self._check_open()
            now = time.time()
            text = self._text(self._fresh(self._records.get(tx_id), now))
            stored = (
                self._buckets.of(counterparty, buckets)
                if counterparty is not None and buckets is not None
                else {}
            )
            snapshot = Snapshot(
                record=json.loads(text) if text is not None else None,
                account=self._account_bytes(entity, now),
                counterparty=counterparty_totals(stored, buckets),
            )
            update = compute(snapshot)
            if update.record is None:
                return update
            self._records[tx_id] = (now, update.record_text())
            if update.account is not None:
                self._set_bytes(entity, now, update.account)
            if counterparty is not None and update.counterparty_bucket is not None:
                self._buckets.add({(counterparty, update.counterparty_bucket): 1})
            self._log(update)
            self._writes += 1
            if self._writes % PURGE_EVERY == 0:
                self.purge()
            return update

    def transact_batch(self, tx_ids, entities, counterparties, buckets, compute) -> BatchUpdate:
        with self._lock:
            self._check_open()
            now = time.time()
            records = {
                key: json.loads(self._text(text))
                for key, text in self._fresh_many(self._records, tx_ids, now)
            }
            read = self._buckets.read(counterparties if buckets else [], buckets or (0, 0))
            update = compute(BatchSnapshot(records, self._read_accounts(entities, now), read))
            self._write_records(update.records, now)
            self._write_accounts(update.accounts, now)
            self._buckets.add(update.counterparty_buckets)
            self._log(update)
            before = self._writes
            self._writes += len(update.records)
            if self._writes // PURGE_EVERY != before // PURGE_EVERY:
                self.purge()
            return update

    def _write_records(self, records, now: float) -> None:
        """Keep a batch's records: rows whose text is made when read (`RecordRows`) by
        their batch and row number, texts as they are."""
        if isinstance(records, RecordRows):
            number = self._batch_number
            self._batch_number += 1
            self._batches[number] = records
            codes = range(number << 32, (number << 32) + len(records))
            self._records.update(zip(records.ids, zip(repeat(now), codes), strict=False))
        else:
            self._records.update((tx_id, (now, text)) for tx_id, _, _, text in records)

    def _text(self, value) -> str | None:
        """A stored record's JSON text: as kept, or made from its batch's rows."""
        if value is None or isinstance(value, str):
            return value
        return self._batches[value >> 32].text(value & 0xFFFFFFFF)

    def _read_accounts(self, entities, now: float) -> dict[str, bytes] | AccountStates:
        """The fresh states of `entities`: those the pool holds decoded (`AccountStates`),
        the others as bytes."""
        found = self._fresh_many(self._accounts, entities, now)
        blobs = {entity: blob for entity, blob in found if blob is not None}
        if len(blobs) == len(found):
            return blobs
        pooled = [entity for entity, blob in found if blob is None]
        return AccountStates(pooled, self._pool.read(pooled), blobs, self._codec)

    def _write_accounts(self, accounts, now: float) -> None:
        """Keep a batch's states: decoded ones in the pool, bytes as they are."""
        blobs = accounts
        if isinstance(accounts, AccountStates) and accounts.entities:
            if self._pool is None:
                self._pool = StatePool(accounts.table)
            self._pool.write(accounts.entities, accounts.table)
            self._codec = accounts.codec
            self._accounts.update((entity, (now, None)) for entity in accounts.entities)
            blobs = accounts.blobs
        for entity, blob in blobs.items():
            self._set_bytes(entity, now, blob)

    def _set_bytes(self, entity: str, now: float, blob: bytes) -> None:
        self._accounts[entity] = (now, blob)
        if self._pool is not None:
            self._pool.drop(entity)

    def _account_bytes(self, entity: str, now: float) -> bytes | None:
        """The entity's fresh state as bytes (the pool's encoded), None if none."""
        entry = self._accounts.get(entity)
        if entry is None or (self.ttl is not None and entry[0] < now - self.ttl):
            return None
        if entry[1] is not None:
            return entry[1]
        return AccountStates([entity], self._pool.read([entity]), {}, self._codec)[entity]

    def label(self, tx_id: str, label: int) -> LabelChange | None:
        with self._lock:
            self._check_open()
            now = time.time()
            text = self._text(self._fresh(self._records.get(tx_id), now))
            if text is None:
                return None
            record = json.loads(text)
            previous = record.get("label")
            self._labels[tx_id] = label
            self._label_times[tx_id] = now
            if previous == label:
                return LabelChange(previous, False)
            record["label"] = label
            self._records[tx_id] = (self._records[tx_id][0], dumps(record))
            delta = label_delta(previous, label)
            cp = record.get("counterparty")
            if delta and cp is not None and record.get("counted"):
                self._buckets.add_fraud(cp, record["day"], delta)
            return LabelChange(previous, True)

    def meta(self, key: str, value: str) -> str:
        with self._lock:
            return self._meta.setdefault(key, value)

    def account(self, entity: str) -> bytes | None:
        with self._lock:
            return self._account_bytes(entity, time.time())

    def record(self, tx_id: str) -> dict | None:
        with self._lock:
            text = self._text(self._fresh(self._records.get(tx_id), time.time()))
            return json.loads(text) if text is not None else None

    def labels(self) -> dict[str, int]:
        with self._lock:
            return dict(self._labels)

    def counterparty_buckets(self, counterparty: str) -> dict[int, tuple[int, int]]:
        """The counterparty's stored {hour bucket: (count, frauds)}."""
        with self._lock:
            return self._buckets.of(counterparty)

    def _log(self, update) -> None:
        """Append the update's history entry, if any (inside the write's lock)."""
        if update.history is not None:  # a batch's may be a callable, called when read
            self._history.append((update.history_bucket, update.history))

    def history(self) -> History:
        with self._lock:
            self._history = [  # entries made when first read
                (bucket, entry() if callable(entry) else entry) for bucket, entry in self._history
            ]
            return History(
                [entry for _, entry in self._history],
                dict(self._labels),
                dict(self._label_times),
                dict(self._meta),
            )

    def purge(self) -> None:
        """Drop counterparty buckets older than the clock's retention limit (see
        `purge_limit`) and accounts and records older than the TTL."""
        with self._lock:
            limit = purge_limit(self.clock, self.retention_buckets)
            if limit is not None:
                self._buckets.prune(limit)
            limit = history_limit(self)
            if limit is not None:
                self._history = [item for item in self._history if item[0] >= limit]
            if self.ttl is None:
                return
            limit = time.time() - self.ttl
            for table in (self._accounts, self._records):
                for key in [k for k, (touched, _) in table.items() if touched < limit]:
                    del table[key]
                    if table is self._accounts and self._pool is not None:
                        self._pool.drop(key)
            held = {v >> 32 for _, v in self._records.values() if isinstance(v, int)}
            self._batches = {k: rows for k, rows in self._batches.items() if k in held}

    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:  # the server is stopping: not the client's fault (503, not 400)
            raise StateStoreError("the state store is closed")
