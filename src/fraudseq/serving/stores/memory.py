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

import numpy as np

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
        #: entity -> (touched, state bytes); the states a batch wrote are in `_pool` instead
        #: (decoded, with their times), never in both
        self._accounts: dict[str, tuple[float, bytes]] = {}
        self._pool: StatePool | None = None
        self._codec = None  # the shapes the pool's states are encoded with (`AccountStates`)
        #: tx id -> (touched, record JSON), or the number of the batch that wrote it: its
        #: record is the row of that id in `_batches[number]` = (touched, RecordRows), its
        #: text made when read. A batch adds one dict entry per record and no object (a
        #: shared int): no tuple per record to allocate and for the collector to track.
        self._records: dict[str, tuple[float, str] | int] = {}
        self._batches: dict[int, tuple[float, RecordRows]] = {}
        self._batch_number = 0
        self._buckets = BucketColumns()
        self._labels: dict[str, int] = {}
        self._label_times: dict[str, float] = {}
        self._history: list[tuple[int, str]] = []  # (newest hour bucket, entry)
        self._meta: dict[str, str] = {}
        self._writes = 0
        self._closed = False

    def _fresh_many(self, table: dict, keys, now: float) -> list[tuple[str, object]]:
        """(key, value) of the `keys` in `table` ((touched, value) entries) that are fresh
        (written within the TTL), looked up in one pass."""
        get = table.get
        found = [(key, entry) for key in keys if (entry := get(key)) is not None]
        if self.ttl is None:
            return [(key, value) for key, (_, value) in found]
        oldest = now - self.ttl
        return [(key, value) for key, (touched, value) in found if touched >= oldest]

    def _record_entry(self, tx_id: str, now: float) -> tuple[float, str] | None:
        """(touched, JSON text) of the fresh record of `tx_id`, None if none: as kept, or
        made from its batch's rows."""
        value = self._records.get(tx_id)
        if value is None:
            return None
        if isinstance(value, int):
            touched, rows = self._batches[value]
            value = (touched, rows.text_of(tx_id))
        if self.ttl is not None and value[0] < now - self.ttl:
            return None
        return value

    def _text(self, tx_id: str, now: float) -> str | None:
        entry = self._record_entry(tx_id, now)
        return None if entry is None else entry[1]

    def transact(self, tx_id, entity, counterparty, buckets, compute) -> Update:
        with self._lock:
            self._check_open()
            now = time.time()
            text = self._text(tx_id, now)
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
            found = self._records.keys() & tx_ids  # a set operation: most ids are new
            texts = ((key, self._text(key, now)) for key in found)
            records = {key: json.loads(text) for key, text in texts if text is not None}
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
            self._batches[number] = (now, records)
            self._records.update(zip(records.ids, repeat(number)))
        else:
            self._records.update((tx_id, (now, text)) for tx_id, _, _, text in records)

    def _read_accounts(self, entities, now: float) -> dict[str, bytes] | AccountStates:
        """The fresh states of `entities`: those the pool holds decoded (`AccountStates`),
        the others as bytes."""
        blobs = dict(self._fresh_many(self._accounts, entities, now)) if self._accounts else {}
        pool = self._pool
        if pool is None or not len(pool):
            return blobs
        slots = pool.slots(entities)
        held = slots >= 0
        if self.ttl is not None:
            held &= pool.touched[slots] >= now - self.ttl
        if not held.any():
            return blobs
        pooled = entities if held.all() else [entities[i] for i in np.flatnonzero(held).tolist()]
        return AccountStates(pooled, pool.read_slots(slots[held]), blobs, self._codec)

    def _write_accounts(self, accounts, now: float) -> None:
        """Keep a batch's states: decoded ones in the pool, bytes as they are."""
        blobs = accounts
        if isinstance(accounts, AccountStates) and accounts.entities:
            if self._pool is None:
                self._pool = StatePool(accounts.table)
            self._pool.write(accounts.entities, accounts.table, now)
            self._codec = accounts.codec
            if self._accounts:  # their bytes, if any, are replaced by the pool's states
                for entity in self._accounts.keys() & set(accounts.entities):
                    del self._accounts[entity]
            blobs = accounts.blobs
        for entity, blob in blobs.items():
            self._set_bytes(entity, now, blob)

    def _set_bytes(self, entity: str, now: float, blob: bytes) -> None:
        self._accounts[entity] = (now, blob)
        if self._pool is not None:
            self._pool.drop(entity)

    def _account_bytes(self, entity: str, now: float) -> bytes | None:
        """The entity's fresh state as bytes (the pool's encoded), None if none."""
        oldest = -np.inf if self.ttl is None else now - self.ttl
        entry = self._accounts.get(entity)
        if entry is not None:
            return entry[1] if entry[0] >= oldest else None
        pool = self._pool
        slot = pool.slot.get(entity) if pool is not None else None
        if slot is None or pool.touched[slot] < oldest:
            return None
        table = pool.read_slots(np.array([slot], dtype=np.int64))
        return AccountStates([entity], table, {}, self._codec)[entity]

    def label(self, tx_id: str, label: int) -> LabelChange | None:
        with self._lock:
            self._check_open()
            now = time.time()
            entry = self._record_entry(tx_id, now)
            if entry is None:
                return None
            touched, text = entry
            record = json.loads(text)
            previous = record.get("label")
            self._labels[tx_id] = label
            self._label_times[tx_id] = now
            if previous == label:
                return LabelChange(previous, False)
            record["label"] = label
            self._records[tx_id] = (touched, dumps(record))
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
            text = self._text(tx_id, time.time())
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
            for key in [k for k, (touched, _) in self._accounts.items() if touched < limit]:
                del self._accounts[key]
            if self._pool is not None:
                for entity in self._pool.written_before(limit):
                    self._pool.drop(entity)
            batches = self._batches
            for key in [
                k
                for k, v in self._records.items()
                if (batches[v][0] if isinstance(v, int) else v[0]) < limit
            ]:
                del self._records[key]
            held = {v for v in self._records.values() if isinstance(v, int)}
            self._batches = {k: rows for k, rows in batches.items() if k in held}

    def ping(self) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:  # the server is stopping: not the client's fault (503, not 400)
            raise StateStoreError("the state store is closed")
