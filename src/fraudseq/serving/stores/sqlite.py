"""The embedded state store: one SQLite file in WAL mode.

Every score is one SQLite transaction, ``BEGIN IMMEDIATE`` (take the write lock before
reading, so concurrent processes on the same file serialise instead of deadlocking) ...
``COMMIT``: the transaction record, the account's state and the counterparty bucket change
together or not at all. A process killed mid-write (``kill -9``) leaves the file at its last
commit; SQLite's journal rolls back the partial transaction on the next open.

Durability: ``synchronous=NORMAL`` (the default) in WAL mode syncs the log at checkpoints,
not at every commit: a committed score survives the process crashing (the WAL is in the OS
page cache), but the last commits before a power loss or OS crash may be lost - never
corrupted. ``sqlite:///state.db?synchronous=FULL`` fsyncs every commit: durable against power
loss too, at the cost of one fsync (often 0.1-10 ms, depending on the disk) per score.

Counterparty history: a busy counterparty has hundreds of hour buckets in its 30-day
windows. `SQLiteStore._counterparty_rows`, the one place a store does feature arithmetic,
returns the fraud-free buckets that every transaction of a read sees alike already summed
(one row per counterparty and window slice for a single score); a property test holds it to
the Python kernels (`CounterpartyTotals.from_buckets`, `counterparty_statistics`).

Checkpoints: SQLite's automatic checkpoint would copy the WAL into the database file (and,
with ``synchronous=NORMAL``, fsync it) inside whichever commit crosses 1,000 WAL pages - a
10-20 ms stall every ~150 scores on an ordinary disk. Instead, the scoring connection has
automatic checkpoints off and a background thread with its own connection runs a PASSIVE
checkpoint every `checkpoint_seconds` (and sooner after `CHECKPOINT_PAGES` pages). A
PASSIVE checkpoint never blocks writers; the WAL is rewound by the next commit after a
complete checkpoint, so it stays bounded. Durability is unchanged: commits are in the WAL
either way, and a crash before a checkpoint loses nothing (the WAL is replayed on open).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

from fraudseq.errors import FraudseqError
from fraudseq.features.blocks.counterparty import CounterpartyTotals
from fraudseq.features.constants import BUCKETS_PER_DAY, COUNTERPARTY_WINDOWS_DAYS
from fraudseq.serving.stores.base import (
    PURGE_EVERY,
    BatchSnapshot,
    BatchUpdate,
    BucketTable,
    History,
    LabelChange,
    Snapshot,
    StateStoreError,
    Update,
    add_rows,
    dumps,
    history_limit,
    history_text,
    label_delta,
    purge_limit,
)

log = logging.getLogger("fraudseq")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- A rowid table: states up to ~4 KB stay in their row. WITHOUT ROWID (an index b-tree)
-- spills rows over ~1 KB to overflow pages, twice the page writes per score.
CREATE TABLE IF NOT EXISTS accounts (
    entity TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    touched REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    id TEXT PRIMARY KEY,
    entity TEXT NOT NULL,
    inserted INTEGER NOT NULL,
    record TEXT NOT NULL,
    touched REAL NOT NULL
) WITHOUT ROWID;
-- One row per (counterparty, hour bucket): `day` holds the bucket. The names predate hour
-- buckets and stay, so existing state files open unchanged.
CREATE TABLE IF NOT EXISTS counterparty_days (
    counterparty TEXT NOT NULL,
    day INTEGER NOT NULL,
    n INTEGER NOT NULL,
    fraud INTEGER NOT NULL,
    PRIMARY KEY (counterparty, day)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counterparty_days_by_day ON counterparty_days (day);
-- The few buckets with a known fraud, so a batch finds them without scanning the rest.
CREATE INDEX IF NOT EXISTS counterparty_fraud_days ON counterparty_days (counterparty, day)
WHERE fraud > 0;
CREATE TABLE IF NOT EXISTS labels (
    id TEXT PRIMARY KEY,
    label INTEGER NOT NULL,
    labelled_at REAL NOT NULL
) WITHOUT ROWID;
-- The history log (`base` module docstring): one entry per score or batch, in the order
-- written; `newest` is the hour bucket of its newest transaction, what retention prunes by.
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    newest INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_by_newest ON history (newest);
"""

_LONGEST = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY
# One read per score: the transaction's record (?1) and the account's state (?2) if fresh
# (touched >= ?3).
_READ_SQL = (
    "SELECT (SELECT record FROM transactions WHERE id = ?1 AND touched >= ?3), "
    "(SELECT state FROM accounts WHERE entity = ?2 AND touched >= ?3)"
)
# The same read as a row of `_counterparty_rows`'s statement (code -1; parameters: the
# record's id, the oldest fresh time, the account's entity, the oldest fresh time), so a
# score with a counterparty reads everything in one statement.
_READ_ROW = (
    "SELECT -1, (SELECT record FROM transactions WHERE id = ? AND touched >= ?), "
    "(SELECT state FROM accounts WHERE entity = ? AND touched >= ?), NULL"
)


def uniform_regions(lo: int, hi: int) -> list[tuple[int, int]]:
    """Bucket ranges within a read range [lo, hi) that each counterparty window holds
    wholly or not at all, for every transaction of the read (for a single score, the
    slices between consecutive window starts).

    The read's visible ends v (a transaction's bucket minus the label delay) span
    [lo + longest window, hi]. A window [v - L, v) holds bucket b for every v when
    hi - L <= b < lo + longest, and for no v when b < lo + longest - L; so from the
    shortest window up, [hi - L, lo + longest - (next shorter L, or 0)) is uniform. A
    range shorter than the longest window has no such ends: none then."""
    widths = sorted(w * BUCKETS_PER_DAY for w in COUNTERPARTY_WINDOWS_DAYS)
    earliest_end = lo + widths[-1]
    if earliest_end > hi:
        return []
    regions = []
    for i, width in enumerate(widths):
        start, stop = hi - width, earliest_end - (widths[i - 1] if i else 0)
        if start < stop:
            regions.append((start, stop))
    return regions


#: Counterparties per statement (two bound parameters each, far below SQLite's limit).
_CHUNK = 500


@functools.lru_cache(maxsize=32)
def _rows_sql(counterparties: int, gaps: int, regions: int, read: bool = False) -> str:
    """`_counterparty_rows`'s statement: the buckets with a fraud in the whole range one by
    one (by the fraud index), the fraud-free ones in each gap one by one (by primary key),
    and per region the sum of its fraud-free ones at its first bucket (0 for none: an entry
    that adds nothing, cheaper than filtering, which would make SQLite sum twice).
    Counterparties are numbered in SQL (a VALUES list) so rows hold integers only; with
    `read`, a first part (`_READ_ROW`) adds one score's record and state."""
    each = (
        "SELECT wanted.code, c.day, c.n, c.fraud FROM wanted JOIN counterparty_days AS c "
        "{} ON c.counterparty = wanted.counterparty AND c.day >= ? AND c.day < ? AND c.fraud {}"
    )
    summed = (
        "SELECT code, ?, (SELECT ifnull(sum(n), 0) FROM counterparty_days "
        "WHERE counterparty = wanted.counterparty AND day >= ? AND day < ? AND fraud = 0), 0 "
        "FROM wanted"
    )
    frauds = each.format("INDEXED BY counterparty_fraud_days", "> 0")
    parts = [_READ_ROW] * read + [frauds] + [each.format("", "= 0")] * gaps + [summed] * regions
    wanted = ",".join(["(?,?)"] * counterparties)
    return f"WITH wanted(code, counterparty) AS (VALUES {wanted}) " + " UNION ALL ".join(parts)


def _between(span: tuple[int, int], regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The non-empty ranges of [span[0], span[1]) outside the (disjoint) `regions`."""
    gaps, cursor = [], span[0]
    for start, stop in sorted(regions):
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, stop)
    if span[1] > cursor:
        gaps.append((cursor, span[1]))
    return gaps


SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Keys of each table the TTL sweep looks at per purge (every PURGE_EVERY writes).
PURGE_SCAN = 20_000
#: Page cache of the scoring connection, in KiB: above SQLite's default 2 MB, but not much.
#: When an insert rebalances b-tree pages out of page order, SQLite swaps them through a
#: temporary page number (the 1 GiB lock page), and the commit then sweeps the whole page
#: cache, so its cost grows with the cache: 8 MB has an eighth of the pages of 64 MB to
#: sweep. The single-score p99 with both sizes, and the median that did not move, are in
#: docs/serving.md (benchmarks/results/serving-cache-ab/).
CACHE_KIB = 8 * 1024
#: Wake the checkpoint thread early after about this many WAL pages (4 KiB each).
CHECKPOINT_PAGES = 256


class SQLiteStore:
    """State in one SQLite file (WAL); safe for threads of one process and for several
    processes on one host (they serialise on the write lock, waiting up to `busy_timeout`)."""

    def __init__(
        self,
        path: str | Path,
        *,
        ttl_seconds: int | None = None,
        retention_buckets: int | None = None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        url: str | None = None,
        checkpoint_seconds: float = 0.25,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS:
            raise FraudseqError(
                f"synchronous={synchronous!r} is not one of {', '.join(SYNCHRONOUS)}"
            )
        self.path = str(path)
        self.url = url or f"sqlite:///{self.path}"
        self.ttl = ttl_seconds
        self.retention_buckets = retention_buckets
        #: The history log's retention in hour buckets (set by the Detector; None or 0: no log).
        self.history_buckets: int | None = None
        self.synchronous = synchronous
        if self.path != ":memory:" and Path(self.path).is_dir():
            raise FraudseqError(
                f"{self.path}: is a directory, not a SQLite file. Fix: name a file in it, "
                f"e.g. sqlite:///{Path(self.path) / 'state.db'}"
            )
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as err:
            raise sqlite_failure(self.path, err, "cannot open the SQLite state store") from None
        except OSError as err:  # making the directories
            what = (
                f"{err.filename} is a file, not a directory"
                if isinstance(err, FileExistsError | NotADirectoryError)
                else f"{err.filename or 'its directory'}: {err.strerror or err}"
            )
            raise FraudseqError(
                f"{self.path}: cannot open the SQLite state store: {what}. Fix: give a path "
                f"whose directories exist or can be created by the server."
            ) from None
        self._lock = threading.RLock()
        self._writes = 0
        #: Counterparty buckets are pruned by this clock (`base.purge_limit`).
        self.clock: Callable[[], int | None] | None = None
        self._pruned_before: int | None = None  # counterparty buckets < this are gone
        self._history_pruned_before: int | None = None  # history entries < this are gone
        self._swept: dict[str, str] = {}  # per table, the last key the TTL sweep looked at
        self._closed = False
        self._checkpointer: _Checkpointer | None = None
        if self.path != ":memory:" and checkpoint_seconds > 0:
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer = _Checkpointer(self.path, checkpoint_seconds, busy_timeout)

    # -- scoring -------------------------------------------------------------------------
    def transact(self, tx_id, entity, counterparty, buckets, compute) -> Update:
        with self._lock:
            now = time.time()
            with self._immediate() as db:
                record, account, totals = self._read(
                    db, tx_id, entity, counterparty, buckets, self._oldest(now)
                )
                update = compute(
                    Snapshot(
                        record=json.loads(record) if record is not None else None,
                        account=bytes(account) if account is not None else None,
                        counterparty=totals,
                    )
                )
                if update.record is None:
                    db.execute("ROLLBACK")
                    return update
                db.execute(
                    "INSERT OR REPLACE INTO transactions (id, entity, inserted, record, touched) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        tx_id,
                        entity,
                        int(bool(update.record.get("inserted"))),
                        update.record_text(),
                        now,
                    ),
                )
                if update.account is not None:
                    db.execute(
                        "INSERT INTO accounts (entity, state, touched) VALUES (?, ?, ?) "
                        "ON CONFLICT (entity) DO UPDATE SET state = excluded.state, "
                        "touched = excluded.touched",
                        (entity, update.account, now),
                    )
                bucket = update.counterparty_bucket
                if counterparty is not None and bucket is not None:
                    db.execute(
                        "INSERT INTO counterparty_days (counterparty, day, n, fraud) "
                        "VALUES (?, ?, 1, 0) ON CONFLICT (counterparty, day) "
                        "DO UPDATE SET n = n + 1",
                        (counterparty, bucket),
                    )
                _log(db, update)
            self._wrote(1)
            return update

    def transact_batch(self, tx_ids, entities, counterparties, buckets, compute) -> BatchUpdate:
        with self._lock:
            now = time.time()
            with self._immediate() as db:
                records = {
                    key: json.loads(value)
                    for key, value in self._fresh_many(
                        "SELECT id, record FROM transactions WHERE id IN ", tx_ids, now
                    ).items()
                }
                accounts = self._fresh_many(
                    "SELECT entity, state FROM accounts WHERE entity IN ", entities, now
                )
                rows = self._counterparty_rows(db, counterparties, buckets)
                flat = np.fromiter(chain.from_iterable(rows), np.int64, 4 * len(rows))
                read = BucketTable.from_rows(counterparties if buckets else [], flat)
                update = compute(BatchSnapshot(records, accounts, read))
                if not update.records:
                    db.execute("ROLLBACK")
                    return update
                db.executemany(
                    "INSERT OR REPLACE INTO transactions (id, entity, inserted, record, touched) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [
                        (tx_id, entity, int(inserted), text, now)
                        for tx_id, entity, inserted, text in update.records
                    ],
                )
                db.executemany(
                    "INSERT INTO accounts (entity, state, touched) VALUES (?, ?, ?) "
                    "ON CONFLICT (entity) DO UPDATE SET state = excluded.state, "
                    "touched = excluded.touched",
                    [(entity, blob, now) for entity, blob in update.accounts.items()],
                )
                db.executemany(
                    "INSERT INTO counterparty_days (counterparty, day, n, fraud) "
                    "VALUES (?, ?, ?, 0) ON CONFLICT (counterparty, day) "
                    "DO UPDATE SET n = n + excluded.n",
                    [(cp, b, count) for (cp, b), count in update.counterparty_buckets.items()],
                )
                _log(db, update)
            self._wrote(len(update.records))
            return update

    def _read(self, db, tx_id, entity, counterparty: str | None, span, oldest: float):
        """One score's stored record, account state (fresh since `oldest`) and
        `CounterpartyTotals`, in one statement: its windows end at span[1] (as in
        `base.counterparty_totals`), so it reads the longest one."""
        if counterparty is None or span is None:
            record, account = db.execute(_READ_SQL, (tx_id, entity, oldest)).fetchone()
            return record, account, CounterpartyTotals.from_buckets({}, 0)
        hi = span[1]
        rows = self._counterparty_rows(
            db, [counterparty], (hi - _LONGEST, hi), (tx_id, oldest, entity, oldest)
        )
        (_, record, account, _) = next(row for row in rows if row[0] < 0)
        buckets = add_rows(row[1:] for row in rows if row[0] >= 0)
        return record, account, CounterpartyTotals.from_buckets(buckets, hi)

    def _totals(self, db, counterparty: str | None, span) -> CounterpartyTotals:
        """One score's `CounterpartyTotals` (`_read` without a record or account)."""
        return self._read(db, None, None, counterparty, span, math.inf)[2]

    @staticmethod
    def _counterparty_rows(
        db, counterparties: list[str], span, read: tuple = ()
    ) -> list[tuple[int, ...]]:
        """The counterparties' buckets in [span[0], span[1]) as (code, bucket, count, frauds)
        rows, code the index in `counterparties`: the one store method that does feature
        arithmetic, in SQL for speed (`check_counterparty_reads` in tests/test_state.py
        holds it to the Python kernels).

        Fraud-free buckets in one of `uniform_regions` come back summed, one row per
        counterparty and region (placed at the region's first bucket): every transaction
        of the read sees all of such a region in a window or none of it, so its window
        sums are unchanged, and a busy counterparty's hundreds of hour buckets come back
        as a few rows (Python pays about 1 us per row fetched, SQLite 0.1 us per row summed).
        Buckets between the regions come back one by one, and so do those with a fraud
        (through their partial index): each bucket is read once. With `read` (`_READ_ROW`'s
        parameters), one more row: (-1, record, state, None)."""
        if not span:
            return []
        regions = uniform_regions(*span)
        gaps = _between(span, regions)
        bounds = [
            *span,
            *(bound for gap in gaps for bound in gap),
            *(bound for start, stop in regions for bound in (start, start, stop)),
        ]
        rows = []
        for first in range(0, len(counterparties), _CHUNK):
            chunk = counterparties[first : first + _CHUNK]
            codes = [x for code, cp in enumerate(chunk, first) for x in (code, cp)]
            first_read = read if not first else ()
            sql = _rows_sql(len(chunk), len(gaps), len(regions), bool(first_read))
            rows += db.execute(sql, (*codes, *first_read, *bounds)).fetchall()
        return rows

    def _oldest(self, now: float) -> float:
        """The oldest `touched` time still fresh under the TTL."""
        return now - self.ttl if self.ttl is not None else -math.inf

    def _fresh_many(self, sql: str, keys: list[str], now: float) -> dict:
        """{key: value} of the rows of `keys` that exist and are fresh (TTL)."""
        oldest = self._oldest(now)
        out = {}
        for chunk in _chunks(keys):
            rows = self._db.execute(
                f"{sql}({','.join('?' * len(chunk))}) AND touched >= ?", (*chunk, oldest)
            )
            out.update(rows)
        return out

    def _wrote(self, n: int) -> None:
        """Count writes: purge every PURGE_EVERY, nudge the checkpoint thread (about 3 WAL
        pages per score)."""
        before = self._writes
        self._writes += n
        if self._writes // PURGE_EVERY != before // PURGE_EVERY:
            try:
                self.purge()
            except sqlite3.Error as err:  # the score is committed: never fail it for a purge
                log.error("%s: purging expired state failed, retried later: %s", self.path, err)
        if self._checkpointer is not None:
            self._checkpointer.wrote(3 * n)

    @contextmanager
    def _immediate(self):
        """One write transaction: BEGIN IMMEDIATE, then COMMIT when the block ends (unless it
        rolled back itself), ROLLBACK on any error; SQLite errors become StateStoreError."""
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            if db.in_transaction:
                db.execute("COMMIT")
        except BaseException as err:
            if db.in_transaction:
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error as rollback:  # report the first error, not this one
                    log.debug("%s: ROLLBACK failed: %s", self.path, rollback)
            if isinstance(err, sqlite3.Error):
                raise sqlite_failure(self.path, err) from err
            raise

    def _fresh_one(self, sql: str, key: str, now: float):
        row = self._db.execute(sql, (key,)).fetchone()
        if row is None or row[1] < self._oldest(now):
            return None
        return row[0]

    # -- feedback ------------------------------------------------------------------------
    def label(self, tx_id: str, label: int) -> LabelChange | None:
        with self._lock:
            now = time.time()
            with self._immediate() as db:
                text = self._fresh_one(
                    "SELECT record, touched FROM transactions WHERE id = ?", tx_id, now
                )
                if text is None:
                    db.execute("ROLLBACK")
                    return None
                record = json.loads(text)
                previous = record.get("label")
                db.execute(
                    "INSERT INTO labels (id, label, labelled_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET label = excluded.label, "
                    "labelled_at = excluded.labelled_at",
                    (tx_id, label, now),
                )
                changed = previous != label
                if changed:
                    record["label"] = label
                    db.execute(
                        "UPDATE transactions SET record = ? WHERE id = ?", (dumps(record), tx_id)
                    )
                    delta = label_delta(previous, label)
                    if delta and record.get("counted") and record.get("counterparty") is not None:
                        db.execute(
                            "UPDATE counterparty_days SET fraud = fraud + ? "
                            "WHERE counterparty = ? AND day = ?",
                            (delta, record["counterparty"], record["day"]),
                        )
            return LabelChange(previous, changed)

    # -- the rest ------------------------------------------------------------------------
    def meta(self, key: str, value: str) -> str:
        with self._lock:
            db = self._connection()
            try:
                db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, value))
                return db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
            except sqlite3.Error as err:
                raise sqlite_failure(self.path, err) from err

    def account(self, entity: str) -> bytes | None:
        with self._lock:
            self._connection()
            value = self._fresh_one(
                "SELECT state, touched FROM accounts WHERE entity = ?", entity, time.time()
            )
            return bytes(value) if value is not None else None

    def record(self, tx_id: str) -> dict | None:
        with self._lock:
            self._connection()
            text = self._fresh_one(
                "SELECT record, touched FROM transactions WHERE id = ?", tx_id, time.time()
            )
            return json.loads(text) if text is not None else None

    def labels(self) -> dict[str, int]:
        with self._lock:
            return dict(self._connection().execute("SELECT id, label FROM labels"))

    def history(self) -> History:
        with self._lock:
            db = self._connection()
            try:
                with db:  # one read transaction: entries and labels of the same moment
                    db.execute("BEGIN")
                    logged = db.execute("SELECT entry FROM history ORDER BY seq").fetchall()
                    rows = db.execute("SELECT id, label, labelled_at FROM labels").fetchall()
                    meta = dict(db.execute("SELECT key, value FROM meta"))
            except sqlite3.Error as err:
                raise sqlite_failure(self.path, err, "cannot read the history") from err
            ids, labels, times = zip(*rows, strict=True) if rows else ((), (), ())
            entries = [entry for (entry,) in logged]
            return History(
                entries,
                dict(zip(ids, labels, strict=True)),
                dict(zip(ids, times, strict=True)),
                meta,
            )

    def counterparty_buckets(self, counterparty: str) -> dict[int, tuple[int, int]]:
        """The counterparty's stored {hour bucket: (count, frauds)}."""
        with self._lock:
            rows = self._connection().execute(
                "SELECT day, n, fraud FROM counterparty_days WHERE counterparty = ?",
                (counterparty,),
            )
            return {bucket: (n, fraud) for bucket, n, fraud in rows}

    def purge(self) -> None:
        """Drop expired accounts and records (TTL) and counterparty buckets past retention."""
        with self._lock:
            db = self._connection()
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                if self.ttl is not None:
                    expired = time.time() - self.ttl
                    for table, key in (("accounts", "entity"), ("transactions", "id")):
                        self._sweep(db, table, key, expired)
                # By the clock, never by the newest time a transaction claimed; only when the
                # limit moved (once an hour); the index on day makes it cost the rows
                # deleted, not a scan of the table.
                limit = purge_limit(self.clock, self.retention_buckets)
                if limit is not None and (
                    self._pruned_before is None or limit > self._pruned_before
                ):
                    db.execute("DELETE FROM counterparty_days WHERE day < ?", (limit,))
                    self._pruned_before = limit
                limit = history_limit(self)  # the history log, by the same clock
                if limit is not None and (
                    self._history_pruned_before is None or limit > self._history_pruned_before
                ):
                    db.execute("DELETE FROM history WHERE newest < ?", (limit,))
                    self._history_pruned_before = limit

    def _sweep(self, db, table: str, key: str, expired: float) -> None:
        """Delete the expired rows among the next PURGE_SCAN keys of `table` after where
        the last sweep stopped (wrapping around): each purge costs a bounded index range,
        not a scan of a table that may hold millions of accounts, and every row is looked
        at once per table / PURGE_SCAN purges. Reads check the TTL themselves, so a row
        awaiting its sweep is already invisible."""
        after = self._swept.get(table, "")
        last = db.execute(
            f"SELECT max({key}) FROM (SELECT {key} FROM {table} WHERE {key} > ? "
            f"ORDER BY {key} LIMIT ?)",
            (after, PURGE_SCAN),
        ).fetchone()[0]
        if last is None:  # past the last key: start again from the first
            self._swept[table] = ""
            return
        db.execute(
            f"DELETE FROM {table} WHERE {key} > ? AND {key} <= ? AND touched < ?",
            (after, last, expired),
        )
        self._swept[table] = last

    def ping(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            try:
                self._db.execute("SELECT 1").fetchone()
                return True
            except sqlite3.Error:
                return False

    def checkpoint(self) -> None:
        """Copy the WAL into the database file now (PASSIVE: never blocks writers)."""
        with self._lock:
            self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._checkpointer is not None:
                    self._checkpointer.stop()
                self._db.close()

    def _connection(self) -> sqlite3.Connection:
        if self._closed:  # the server is stopping: not the client's fault
            raise StateStoreError(f"{self.path}: the state store is closed")
        return self._db


#: SQLite primary result codes that retrying cannot fix: (what is wrong, what to do).
PERMANENT_ERRORS = {
    sqlite3.SQLITE_CORRUPT: (
        "the file is damaged",
        "restore it from a backup, or move it away to start with empty state",
    ),
    sqlite3.SQLITE_FORMAT: ("the file is damaged", "restore it from a backup"),
    sqlite3.SQLITE_NOTADB: (
        "the file is not a SQLite database",
        "give the state file's path, or the path of a new file",
    ),
    sqlite3.SQLITE_READONLY: (
        "the file is read-only",
        "make the file and its directory (SQLite writes -wal and -shm files beside it) "
        "writable by the server",
    ),
    sqlite3.SQLITE_CANTOPEN: (
        "the file cannot be opened",
        "give the path of a file the server can create and write",
    ),
    sqlite3.SQLITE_IOERR: ("the disk reported an I/O error", "check the disk and its file system"),
    sqlite3.SQLITE_PERM: ("access was denied", "give the server access to the file"),
    sqlite3.SQLITE_AUTH: ("access was denied", "give the server access to the file"),
}
#: Transient faults (a retry may succeed), with what they mean.
TRANSIENT_HINTS = {
    sqlite3.SQLITE_FULL: "the disk is full (free space on it)",
    sqlite3.SQLITE_BUSY: "another process held the write lock past the busy timeout",
    sqlite3.SQLITE_LOCKED: "the database was locked",
}


def sqlite_failure(path: str, err: sqlite3.Error, doing: str = "SQLite error") -> StateStoreError:
    """A StateStoreError for `err`: permanent for the result codes of PERMANENT_ERRORS (a
    damaged, non-SQLite, read-only or unopenable file, a failing disk), otherwise transient.
    The message names the file, the fault, SQLite's own words and, when permanent, the fix."""
    code = getattr(err, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    words = f"SQLite: {err}" + (f", {err.sqlite_errorname}" if code is not None else "")
    if primary in PERMANENT_ERRORS:
        problem, fix = PERMANENT_ERRORS[primary]
        return StateStoreError(
            f"{path}: {doing}: {problem} ({words}). A permanent fault: retrying will not help. "
            f"Fix: {fix}.",
            permanent=True,
        )
    if primary in TRANSIENT_HINTS:
        return StateStoreError(f"{path}: {doing}: {TRANSIENT_HINTS[primary]} ({words})")
    return StateStoreError(f"{path}: {doing}: {err}")


def _log(db, update) -> None:
    """Append the update's history entry, if any, in the write's transaction."""
    if update.history is not None:
        db.execute(
            "INSERT INTO history (newest, entry) VALUES (?, ?)",
            (update.history_bucket, history_text(update)),
        )


def _chunks(keys: list[str], size: int = 500):
    """`keys` in pieces small enough for one statement's bound parameters."""
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


class _Checkpointer:
    """A daemon thread that checkpoints the WAL from its own connection, off the scoring
    path: every `interval` seconds, or sooner once about CHECKPOINT_PAGES pages were written.
    sqlite3 releases the GIL while SQLite works, so scoring threads keep running."""

    def __init__(self, path: str, interval: float, busy_timeout: float) -> None:
        self.interval = interval
        self._pages = 0
        self._wake = threading.Event()
        self._stopping = False
        self._db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._thread = threading.Thread(
            target=self._run, name="fraudseq-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def wrote(self, pages: int) -> None:
        self._pages += pages
        if self._pages >= CHECKPOINT_PAGES:
            self._pages = 0
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                break
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as err:  # busy or closing: the next round retries
                log.debug("WAL checkpoint skipped: %s", err)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=30)
        self._db.close()
