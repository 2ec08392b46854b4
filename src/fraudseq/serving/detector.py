"""Detector: a trained FraudModel + per-account live state, scoring one transaction at a time.

>>> detector = Detector.load("model", state="sqlite:///state.db")          # doctest: +SKIP
>>> detector.score({"tx_id": "T1", "card_id": "C1", "ts": "2026-02-01T10:00:00Z",
...                 "amount": 12.5, "mcc": "5411", ...})                     # doctest: +SKIP
{'transaction_id': 'T1', 'fraud_probability': 0.0123, 'score': 1.23, 'alert': False, ...}

The request is keyed by the schema's columns: the id under `schema.id_column`
("transaction_id" when the data has no id column), each of `schema.entity_parts` (none when
the data is one stream), time, amount, categorical, numeric and counterparty columns.
>>> detector.feedback("T1", 0)                                              # doctest: +SKIP

Parity: replaying a file through `score` in time order gives the probabilities of batch
`FraudModel.score` on that file (to float rounding, tested at 1e-6 for every model family),
when labels are fed back with `feedback` as they become known (batch features use labels
older than the label delay; so do the live counterparty features).

Semantics:

- **Idempotency.** The transaction id is the key. Scoring an id again with the same content
  returns the stored result and changes nothing; the same id with different content raises
  `ConflictError`.
- **Event time.** Every transaction's time is checked against a window around the
  detector's clock before anything is read or written: at most `max_future` (1 day) ahead
  of it and at most `max_age` (the state's retention, label delay + 37 days) behind it.
  Outside, `DataValidationError` (HTTP 422) names the window and nothing changes. State is
  purged by the same clock, never by a time a transaction claimed. The clock is the wall
  clock by default; ``clock="data"`` (replays of historical data) is the newest time
  accepted so far, which each transaction may pass by at most `max_future`; a time or a
  callable gives a fixed or custom clock (`fraudseq.serving.event_time`).
- **Ties and order.** An account's history is kept in time order; equal timestamps are
  fine (batch breaks ties by file order, live by arrival).
- **Late transactions.** A transaction older than its account's latest event is
  ``out_of_order``. Within the allowed lateness (`live_features.LATENESS_NS`, 1 day) it is
  scored against the events before it and inserted into the history in time order
  (``"history": "inserted"``): the account's state, and so every later score, is then what
  it would have been had the events arrived in time order (tested on random permutations).
  Its own window holds the stored rows of the events before it (exact when at most
  `LATE_ROWS` later events are stored). A transaction later than that is scored against the
  events before it that the state holds and not inserted (``"history": "not_inserted"``),
  logged at info and counted (`counts["not_inserted"]`, the service's
  ``fraudseq_transactions_not_inserted_total``). Either way it is recorded (a retry returns
  the same result, feedback works) and counts in its counterparty's hour bucket. In a batch,
  earlier transactions of the batch count. A stored result written before these fields
  existed gets them from its record (out-of-order ones were then not inserted), so a retry
  still reports them.
- **Concurrency.** Each score is one atomic store transaction on its account (SQLite's
  write lock, Redis's compare-and-set), and the state does not depend on arrival order, so
  concurrent clients, workers and retries racing a batch lose no event.
- **History.** Every new transaction (not a retry) is also appended, as received and
  canonicalised, to the store's history log in the same atomic write, kept `history_days`
  behind the clock (default the state's retention; 0 keeps none), with the model's schema
  and label delay in the store's meta: `fraudseq export-history` writes it, with the
  feedback labels, as a training file (`fraudseq.serving.export_history`).
- **Reasons.** For alerts, `reasons` lists the strongest reasons towards fraud from
  `fraudseq.explain` (occlusion of window events and current features, ~ms per alert);
  other transactions get ``[]``. Set `Detector.explain` to "all" or "none" to change that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from datetime import timedelta
from itertools import repeat
from operator import itemgetter
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.artifacts import MODEL_JSON, model_manifest, verify_model_dir
from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.explain import described_features, occlude, rank_reasons
from fraudseq.features.constants import BUCKETS_PER_DAY, COUNTERPARTY_BUCKET_NS
from fraudseq.features.state import decode_states
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import Schema
from fraudseq.serving.batch import (
    day_chunks,
    encode_batch,
    vectorisable,
)
from fraudseq.serving.event_time import DEFAULT_MAX_FUTURE, EventClock
from fraudseq.serving.live_features import (
    LATENESS_NS,
    AccountState,
    LiveEncoder,
)
from fraudseq.serving.stores import (
    AccountStates,
    BatchSnapshot,
    BatchUpdate,
    BucketCounts,
    RecordRows,
    Snapshot,
    StateStore,
    Update,
    open_store,
)
from fraudseq.serving.stores.base import HISTORY_META, dumps
from fraudseq.serving.window_scorer import WindowScorer, single_thread
from fraudseq.transaction import LiveTransaction, TransactionColumns, parse_batch, parse_transaction

log = logging.getLogger("fraudseq")

STATE_FORMAT = 1
EXPLAIN_MODES = ("alerts", "all", "none")
#: Where a scored transaction went in its account's history (the reply's "history").
APPENDED, INSERTED, NOT_INSERTED = "appended", "inserted", "not_inserted"
#: At most one info line of each kind per this many seconds about transactions refused for
#: their time or too late to insert.
LATE_LOG_SECONDS = 10.0
_HISTORY, _ALERT = itemgetter("history"), itemgetter("alert")


class ConflictError(FraudseqError):
    """A transaction id was scored before with different content."""


class UnknownTransactionError(FraudseqError):
    """Feedback for a transaction id this detector never scored (or whose record expired)."""


class Detector:
    """Score live transactions with a FraudModel and per-account state in a StateStore."""

    #: Which transactions get `reasons`: "alerts" (default), "all" or "none".
    explain: str = "alerts"

    def __init__(
        self,
        model: FraudModel,
        store: StateStore,
        *,
        model_version: str,
        min_history: int = 3,
        clock: EventClock | None = None,
        history_days: float | None = None,
    ) -> None:
        model._check_fitted()
        if min_history < 0:
            raise FraudseqError(f"min_history must be >= 0, got {min_history}")
        self.model = model
        self.schema: Schema = model.schema_
        self.model_version = model_version
        self.threshold = float(model.threshold_)
        self.min_history = min_history
        self.live = LiveEncoder(model.encoder_, model.window)
        if self.live.exposure:  # the stores keep no exposure tables yet
            raise FraudseqError(
                "feature block 'exposure' is not served yet: the state stores do not keep "
                "its counterparty tables. Fix: serve a model trained without it."
            )
        #: The event-time clock and window (see the module docstring); the store purges
        #: counterparty history by it too.
        self.clock = clock if clock is not None else default_clock(self.live)
        self.clock.field = self.schema.time
        self.store = store
        if hasattr(store, "clock"):
            store.clock = self.clock.now_ns
        if hasattr(store, "retention_buckets"):
            # The model decides how far back its counterparty features read, also for a
            # store made by hand: a store has no retention of its own.
            store.retention_buckets = self.live.counterparty_retention_buckets
        #: The history log's retention in hour buckets: `history_days` (0: no log), by
        #: default the state's (label delay + 37 days). The log is kept when the store can.
        self.history_buckets = history_retention_buckets(self.live, history_days)
        self._history = self.history_buckets > 0 and hasattr(store, "history_buckets")
        if hasattr(store, "history_buckets"):
            store.history_buckets = self.history_buckets
        # Throttled info lines: (when the last was logged, how many since) per kind.
        self._reports = {"late": [-math.inf, 0], "time": [-math.inf, 0]}
        self._late_lock = threading.Lock()
        self._window = WindowScorer(model)
        self._empty_state = self.live.empty_state().to_bytes()
        self._version_json = json.dumps(model_version)
        self._explain_failed = False
        #: Since load: transactions "scored" (new), "replayed" (retries answered from their
        #: stored result, in-batch repeats included), new "alerts", and of the new ones those
        #: "inserted" late into their account's history and those "not_inserted" (too late).
        #: The service's Prometheus counters come from these, so a retry is never counted
        #: as scored.
        self.counts: Counter = Counter(scored=0, replayed=0, alerts=0, inserted=0, not_inserted=0)
        fingerprint = self.fingerprint()
        stored = store.meta("state_fingerprint", fingerprint)
        if stored != fingerprint:
            raise FraudseqError(
                f"state store {store.url} holds state built for another model's features "
                f"(fingerprint {stored}, this model {fingerprint}). Account state is encoded "
                f"with the model's encoder, so each model needs its own store: use a new SQLite "
                f"file or Redis prefix, and warm it by replaying recent transactions."
            )
        if self._history:  # what `export-history` needs to write the log for `train`
            store.meta(HISTORY_META, self.history_meta())

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        state: str | StateStore = "memory",
        *,
        min_history: int = 3,
        ttl_seconds: int | None = None,
        clock="wall",
        max_future=DEFAULT_MAX_FUTURE,
        max_age=None,
        history_days: float | None = None,
    ) -> Detector:
        """Load a model directory (verified against its manifest) and open the state store:
        "memory", "sqlite:///relative.db" / "sqlite:////absolute.db", "redis://host:port/db",
        or a StateStore.

        `clock`: what transaction times are checked against and state is purged by: "wall"
        (the server's clock, the default), "data" (the newest time accepted: replays of
        historical data), a fixed time (ISO 8601 text, datetime) or a callable returning
        the time. `max_future` (timedelta or seconds, default 1 day): how far ahead of the
        clock a time may be; `max_age` (default the state's retention, label delay + 37
        days): how far behind it. `history_days`: how long the store's history log keeps
        the transactions scored, for `export-history` (default the state's retention; 0
        keeps no log)."""
        model = FraudModel.load(model_dir)
        version = model_version(model_dir)
        if not isinstance(state, str) and ttl_seconds is not None:
            raise FraudseqError("ttl_seconds applies to a store URL; configure the store itself")
        live = LiveEncoder(model.encoder_, model.window)
        event_clock = default_clock(live, clock, max_future=max_future, max_age=max_age)
        # The constructor gives the store its clock and the model's retention.
        store = open_store(state, ttl_seconds=ttl_seconds)
        try:
            return cls(
                model,
                store,
                model_version=version,
                min_history=min_history,
                clock=event_clock,
                history_days=history_days,
            )
        except BaseException:
            if isinstance(state, str):
                store.close()
            raise

    def fingerprint(self) -> str:
        """What the stored state depends on: the encoder, the window and the state format."""
        content = json.dumps(
            {
                "state_format": STATE_FORMAT,
                "window": self.model.window,
                # The [time] table only when there is one: stores built before it existed
                # keep their fingerprint.
                "schema": self.schema.to_dict(),
                **({"time": self.schema.to_document()["time"]} if self.schema.time_unit else {}),
                "encoder": self.model.encoder_.to_json(),
            },
            sort_keys=True,
        )
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def history_meta(self) -> str:
        """What the store keeps for `export-history` (meta ``history``): the model's schema,
        its label delay and the log's retention, as JSON."""
        return json.dumps(
            {
                "schema": self.schema.to_document(),
                "label_delay_days": self.model.label_delay_days,
                "history_buckets": self.history_buckets,
                "model_version": self.model_version,
            },
            sort_keys=True,
        )

    # -- scoring -------------------------------------------------------------------------
    def score(self, tx: dict) -> dict:
        """Score one transaction (a dict keyed by the schema's column names, label omitted)
        and add it to its account's state. See the module docstring for the result."""
        parsed = parse_transaction(tx, self.schema)
        try:
            self.clock.check(parsed.time_ns, parsed.id)
        except DataValidationError as err:
            # A retry of a transaction already scored gets its stored result (or a conflict),
            # even once the clock has moved past its time: retries stay idempotent.
            record = self.store.record(parsed.id)
            if record is not None:
                self._count(replayed=1)
                return {"transaction_id": parsed.id, **self._stored_result(parsed, record)}
            self._report("time", 1, "refused: %s", err)
            raise
        result = self._score(parsed)
        self.clock.accepted(parsed.time_ns)
        return result

    def score_batch(self, txs: list[dict]) -> list[dict]:
        """Score transactions in order, with the same results as calling `score` on each
        (probabilities to float rounding: the model runs once over all the windows).

        Every transaction is validated before any is scored, so invalid input changes no
        state; the error names the position of the first invalid one. The batch is one
        unit: a conflicting id (see ConflictError) fails it before anything is written.
        Features are computed for all accounts at once (`fraudseq.serving.batch`); the
        stores read and write the whole batch in one transaction.
        """
        columns = parse_batch(txs, self.schema)
        if not len(columns):
            return []
        try:
            self.clock.check_many(columns.time_ns, columns.ids)
        except DataValidationError as err:
            self._report("time", 1, "refused a batch of %d: %s", len(columns), err)
            raise
        if not hasattr(self.store, "transact_batch"):
            out = []
            for i in range(len(columns)):
                out.append(self._score(columns.row(i)))
                self.clock.accepted(int(columns.time_ns[i]))
            return out
        # Repeated ids within the batch: the first is scored, later copies get its result.
        unique, source = columns, None
        if len(set(columns.ids)) < len(columns):
            first: dict[str, int] = {}
            source = [first.setdefault(tx_id, i) for i, tx_id in enumerate(columns.ids)]
            for i, j in enumerate(source):
                if j != i and columns.digest(j) != columns.digest(i):
                    raise _conflict(columns.ids[i])
            unique_rows = list(first.values())
            unique = columns.take(unique_rows)
            position = {row: u for u, row in enumerate(unique_rows)}
        counterparties, buckets = [], None
        if self.live.counterparty:
            counterparties = list(dict.fromkeys(unique.counterparty))
            early = unique.row(int(np.argmin(unique.time_ns)))
            late = unique.row(int(np.argmax(unique.time_ns)))
            buckets = (
                self.live.counterparty_buckets(early)[0],
                self.live.counterparty_buckets(late)[1],
            )
        update = self.store.transact_batch(
            unique.ids,
            list(dict.fromkeys(unique.entities)),
            counterparties,
            buckets,
            lambda snapshot: self._compute_many(unique, snapshot),
        )
        results = update.results
        records = update.records  # RecordRows: ids without making the texts
        new = set(records.ids if isinstance(records, RecordRows) else [r[0] for r in records])
        if len(new) == len(unique):  # all new (the common case): every result counts
            histories = list(map(_HISTORY, results))
            alerts = sum(map(_ALERT, results))
            is_new = None
        else:
            is_new = [tx_id in new for tx_id in unique.ids]
            histories = [r["history"] for r, fresh in zip(results, is_new, strict=True) if fresh]
            alerts = sum(r["alert"] for r, fresh in zip(results, is_new, strict=True) if fresh)
        self._count(len(new), alerts, len(columns) - len(new))
        dropped = []
        if NOT_INSERTED in histories:  # rare: name them
            dropped = [
                (tx_id, entity)
                for tx_id, entity, r, fresh in zip(
                    unique.ids, unique.entities, results, is_new or repeat(True), strict=False
                )
                if fresh and r["history"] == NOT_INSERTED
            ]
        self._count_late(histories, dropped)
        self.clock.accepted(int(columns.time_ns.max()))
        if source is None:
            return results  # each result already starts with its transaction's id
        return [dict(results[position[j]]) for j in source]  # repeated ids: copies

    def _score(self, tx: LiveTransaction) -> dict:
        counterparty = tx.counterparty if self.live.counterparty else None
        update = self.store.transact(
            tx.id,
            tx.entity,
            counterparty,
            self.live.counterparty_buckets(tx),
            lambda snapshot: self._compute(tx, snapshot),
        )
        if update.record is None:
            self._count(replayed=1)
        else:
            self._count(1, int(update.result["alert"]))
            history = update.result["history"]
            self._count_late([history], [(tx.id, tx.entity)] if history == NOT_INSERTED else [])
        return {"transaction_id": tx.id, **update.result}

    def _count(self, scored: int = 0, alerts: int = 0, replayed: int = 0) -> None:
        counts = self.counts
        counts["scored"] += scored
        counts["alerts"] += alerts
        counts["replayed"] += replayed

    def _count_late(self, histories: list[str], dropped: list[tuple[str, str]]) -> None:
        """Count new transactions inserted late and not inserted; report those not inserted
        (`_report`)."""
        inserted = histories.count(INSERTED)
        if inserted:
            self.counts["inserted"] += inserted
        if not dropped:
            return
        self.counts["not_inserted"] += len(dropped)
        tx_id, entity = dropped[0]
        self._report(
            "late", len(dropped),
            "transaction %s of %s is more than %s older than the account's latest event (or "
            "older than the history kept): scored, recorded, not inserted into its history",
            tx_id, entity, pd.Timedelta(LATENESS_NS, "ns"),
        )  # fmt: skip

    def _report(self, kind: str, count: int, message: str, *args) -> None:
        """Log at info, at most one line of each kind per LATE_LOG_SECONDS (a feed of late
        or mis-timed transactions must not flood the log), with how many since the last."""
        with self._late_lock:
            report = self._reports[kind]
            report[1] += count
            now = time.monotonic()
            if now - report[0] < LATE_LOG_SECONDS:
                return
            since, report[0], report[1] = report[1], now, 0
        log.info(message + " (%d such since the last report)", *args, since)

    def _compute(self, tx: LiveTransaction, snapshot: Snapshot) -> Update:
        if snapshot.record is not None:
            return Update(result=self._stored_result(tx, snapshot.record))
        live = self.live
        account = (
            AccountState.from_bytes(snapshot.account)
            if snapshot.account is not None
            else live.empty_state()
        )
        in_order = account.n == 0 or tx.time_ns >= account.last_time
        history = account if in_order else live.before(account, tx.time_ns)
        features = live.encode(tx, history, snapshot.counterparty)
        numeric, codes = live.window_rows(history, features)
        with single_thread():
            logit = self._window.logit(numeric, codes)
        if logit != logit:
            _no_score(tx.id)
        place = (
            APPENDED if in_order else INSERTED if live.can_insert(account, tx.time_ns)
            else NOT_INSERTED
        )  # fmt: skip
        result = self._result(logit, history.n, not in_order, place)
        if self._wants_reasons(result["alert"]):
            earlier = len(numeric) - 1
            events = (
                _tail(history.ids, earlier),
                _tail(history.times, earlier),
                _tail(history.amounts, earlier),
            )
            with single_thread():
                result["reasons"] = self._reasons(tx, numeric, codes, events, logit)
        record = self._record(tx, place != NOT_INSERTED, result)
        text = None  # a record not inserted is rare: the store dumps it
        if place != NOT_INSERTED:
            text = record_json(
                tx.digest, tx.entity, tx.time_ns, record["counterparty"], record["counted"],
                result, self._version_json,
            )  # fmt: skip
        if place == APPENDED:
            state = live.append(account, tx, features).to_bytes()
        elif place == INSERTED:
            state = live.insert(account, tx, features).to_bytes()
        else:
            state = None
        return Update(
            result=result,
            record=record,
            record_json=text,
            account=state,
            counterparty_bucket=tx.bucket if live.counterparty else None,
            history=tx.history_json() if self._history else None,
            history_bucket=tx.bucket,
        )

    def _stored_result(self, tx: LiveTransaction, record: dict) -> dict:
        """A retried transaction's stored result, or ConflictError if its content changed."""
        if record.get("digest") != tx.digest:
            raise _conflict(tx.id)
        return stored_result(record)

    def _result(self, logit: float, n_previous: int, out_of_order: bool, history: str) -> dict:
        probability = _sigmoid(logit)
        return result_dict(
            probability, probability >= self.threshold, self.threshold,
            n_previous < self.min_history, out_of_order, history, self.model_version,
        )  # fmt: skip

    def _wants_reasons(self, alert: bool) -> bool:
        return self.explain == "all" or (self.explain == "alerts" and alert)

    def _record(self, tx: LiveTransaction, inserted: bool, result: dict) -> dict:
        counted = self.live.counterparty
        return {
            "digest": tx.digest,
            "entity": tx.entity,
            "time_ns": tx.time_ns,
            "counterparty": tx.counterparty if counted else None,
            "day": tx.bucket,
            "inserted": inserted,
            "counted": counted,
            "label": None,
            "result": result,
        }

    # -- batches ---------------------------------------------------------------------------
    def _compute_many(self, txs: TransactionColumns, snapshot: BatchSnapshot) -> BatchUpdate:
        """Score the batch's new transactions (distinct ids, in order) against the snapshot:
        features vectorised over all accounts (see `fraudseq.serving.batch`), one forward
        pass over every window, state written back per account."""
        live = self.live
        results: list[dict | None] = [None] * len(txs)
        stored = snapshot.records
        new = [] if stored else list(range(len(txs)))  # no stored record: all new
        for i, tx_id in enumerate(txs.ids if stored else ()):
            record = stored.get(tx_id)
            if record is None:
                new.append(i)
            elif record.get("digest") != txs.digest(i):
                raise _conflict(tx_id)
            else:
                results[i] = {"transaction_id": tx_id, **stored_result(record)}
        if not new:
            return BatchUpdate(results=results)
        fresh = txs.take(new) if len(new) < len(txs) else txs
        n = len(fresh)
        # Accounts: those the store holds decoded (memory) first, as its table's rows; the
        # others' bytes decoded after them (an account new to the store: the empty state).
        stored_accounts, held = snapshot.accounts, []
        if isinstance(stored_accounts, AccountStates):
            held = stored_accounts.entities
            if not set(held) <= set(fresh.entities):  # accounts of retries only: as bytes
                stored_accounts, held = dict(stored_accounts), []
        entity_index = {entity: a for a, entity in enumerate(held)}
        account = np.array(
            [entity_index.setdefault(e, len(entity_index)) for e in fresh.entities], np.int64
        )
        entities = list(entity_index)
        empty = self._empty_state
        blobs = stored_accounts.blobs if held else stored_accounts
        others = [blobs.get(e) or empty for e in entities[len(held) :]]
        table = decode_states(others, live) if others else None
        if held:
            table = stored_accounts.table if table is None else stored_accounts.table.concat(table)

        def state_bytes(a: int) -> bytes:
            return stored_accounts[entities[a]] if a < len(held) else others[a - len(held)]

        fast_account = vectorisable(table, account, fresh.time_ns)
        slow_states = {
            int(a): AccountState.from_bytes(state_bytes(a)) for a in np.flatnonzero(~fast_account)
        }
        fast = fast_account[account]

        buckets = snapshot.counterparty
        own = fresh.bucket  # each transaction's hour bucket
        chunks = day_chunks(own, live.delay_buckets) if live.counterparty else [(0, n)]
        # One run of every transaction (the usual): its windows are used as they are.
        whole = len(chunks) == 1 and bool(fast.all())
        k = self.model.window
        if not whole:
            window_numeric = np.zeros((n, k, live.n_numeric), dtype=np.float32)
            window_codes = np.zeros((n, k, live.n_categorical), dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        n_previous = np.zeros(n, dtype=np.int64)
        in_order = np.ones(n, dtype=bool)
        places = [APPENDED] * n
        events: dict[int, tuple] = {}  # earlier events of one-at-a-time windows (reasons)
        runs = []
        run_of = np.full(n, -1, dtype=np.int64)  # vectorised: its run and index there
        index_in_run = np.zeros(n, dtype=np.int64)
        # The batch's transactions per (counterparty, bucket), as columns.
        added = BucketCounts(fresh.counterparty, own) if live.counterparty else {}
        for start, stop in chunks:
            run = np.arange(start, stop)
            vector = run[fast[run]]
            if len(vector):
                encoded, table = encode_batch(
                    live,
                    fresh if len(vector) == n else fresh.take(vector.tolist()),
                    table,
                    account[vector],
                    buckets,
                )
                if whole:
                    window_numeric, window_codes = encoded.window_numeric, encoded.window_codes
                else:
                    window_numeric[vector] = encoded.window_numeric
                    window_codes[vector] = encoded.window_codes
                lengths[vector] = encoded.lengths
                n_previous[vector] = encoded.n_previous
                run_of[vector] = len(runs)
                index_in_run[vector] = np.arange(len(vector))
                runs.append(encoded)
            for i in run[~fast[run]].tolist():  # one at a time, in order
                tx, state = fresh.row(i), slow_states[int(account[i])]
                in_order[i] = state.n == 0 or tx.time_ns >= state.last_time
                history = state if in_order[i] else live.before(state, tx.time_ns)
                features = live.encode(tx, history, buckets.of(tx.counterparty))
                numeric, codes = live.window_rows(history, features)
                length = len(numeric)
                window_numeric[i, :length] = numeric
                window_codes[i, :length] = codes
                lengths[i] = length
                n_previous[i] = history.n
                earlier = length - 1
                events[i] = (
                    _tail(history.ids, earlier),
                    _tail(history.times, earlier),
                    _tail(history.amounts, earlier),
                )
                if in_order[i]:
                    live.append(state, tx, features)
                elif live.can_insert(state, tx.time_ns):
                    places[i] = INSERTED
                    live.insert(state, tx, features)
                else:
                    places[i] = NOT_INSERTED
            if live.counterparty and stop < n:  # later runs see this one's transactions
                run_counts = Counter(
                    zip(fresh.counterparty[start:stop], own[start:stop].tolist(), strict=True)
                )
                buckets = buckets.adding(run_counts)

        with single_thread():
            logits = self._window.logits(window_numeric, window_codes, lengths)
        if np.isnan(logits).any():
            _no_score(fresh.ids[int(np.flatnonzero(np.isnan(logits))[0])])
        probability = _sigmoids(logits)
        alert = probability >= self.threshold
        insufficient = n_previous < self.min_history
        threshold, version = self.threshold, self.model_version
        columns = (probability.tolist(), alert.tolist(), insufficient.tolist(), in_order.tolist())
        # round(100 p, 2) of each (100 p as Python's float product, rounded by Python).
        scores = list(map(round, (100.0 * probability).tolist(), repeat(2)))
        # One result per transaction (the id first, as score_batch returns it): a dict
        # literal of per-transaction values and constants, nothing else per row.
        scored = [
            {
                "transaction_id": tx_id,
                "fraud_probability": p,
                "score": score,
                "alert": is_alert,
                "threshold": threshold,
                "insufficient_history": short,
                "out_of_order": not ordered,
                "history": place,
                "model_version": version,
                "reasons": [],
            }
            for tx_id, p, score, is_alert, short, ordered, place in zip(
                fresh.ids, columns[0], scores, *columns[1:], places, strict=True
            )
        ]
        explain = self.explain
        wanted = (  # as _wants_reasons, for the whole batch
            np.flatnonzero(alert) if explain == "alerts" else range(n) if explain == "all" else []
        )
        explained = []  # reasons for all alerts: one forward pass over all their occlusions
        for i in map(int, wanted):
            if run_of[i] >= 0:
                found = runs[run_of[i]].earlier_events(int(index_in_run[i]))
            else:
                found = events[i]
            length = int(lengths[i])
            window = (window_numeric[i, :length], window_codes[i, :length])
            explained.append((scored[i], (fresh.row(i), *window, found, float(logits[i]))))
        if explained:
            with single_thread():
                reasons = self._reasons_many([item for _, item in explained])
            for (result, _), found in zip(explained, reasons, strict=True):
                result["reasons"] = found
        if len(new) == len(txs):
            results = scored
        else:
            for i, result in zip(new, scored, strict=True):
                results[i] = result
        # The records' texts are made when a store reads them (`RecordRows`: SQLite and
        # Redis at once, the memory store when a record is read back), from these columns
        # and copies of the reasons given, never from the result dicts the caller gets.
        given = {
            int(i): json.loads(dumps(result["reasons"]))
            for i, (result, _) in zip(wanted, explained, strict=False)
        }
        records = RecordRows(
            fresh.ids,
            fresh.entities,
            [place != NOT_INSERTED for place in places],
            lambda i: self._record_text(
                fresh, i, (*columns, places), (threshold, version), given.get(i, [])
            ),
            prepare=lambda: fresh.digests,  # all texts at once: the digests in one pass
        )
        # The new states as the table (a store that keeps bytes encodes them on reading);
        # the accounts scored one at a time as their bytes.
        slow_blobs = {entities[a]: state.to_bytes() for a, state in slow_states.items()}
        return BatchUpdate(
            results=results,
            records=records,
            accounts=AccountStates(entities, table, slow_blobs, live),
            counterparty_buckets=added,
            history=fresh.history_json if self._history else None,  # made when read
            history_bucket=int(own.max()),
        )

    def _record_text(
        self, fresh: TransactionColumns, i: int, columns: tuple, constants: tuple, reasons: list
    ) -> str:
        """The JSON record of a batch's new transaction i, from `_compute_many`'s columns
        (probability, alert, insufficient history, in order, history) and constants
        (threshold, model version) as they were when it was scored."""
        p, is_alert, short, ordered, place = (column[i] for column in columns)
        threshold, version = constants
        result = result_dict(p, is_alert, threshold, short, not ordered, place, version)
        result["reasons"] = reasons
        counted = self.live.counterparty
        if place == NOT_INSERTED:  # rare
            return dumps(self._record(fresh.row(i), False, result))
        return record_json(
            fresh.digest(i), fresh.entities[i], int(fresh.time_ns[i]),
            fresh.counterparty[i] if counted else None, counted, result, self._version_json,
        )  # fmt: skip

    # -- feedback ------------------------------------------------------------------------
    def feedback(self, transaction_id: str, label: int) -> dict:
        """Record the 0/1 label of a scored transaction (idempotent; a new label replaces the
        old one). The counterparty features see it once it is older than the label delay,
        and it is kept in the store's labels table for retraining."""
        if isinstance(transaction_id, bool) or not isinstance(transaction_id, str | int):
            raise DataValidationError(
                f"transaction_id must be text, got {type(transaction_id).__name__}"
            )
        transaction_id = str(transaction_id)
        value = _label(label)
        change = self.store.label(transaction_id, value)
        if change is None:
            raise UnknownTransactionError(
                f"transaction id {transaction_id!r} was never scored by this detector (or its "
                f"record expired); score it first"
            )
        return {
            "transaction_id": transaction_id,
            "label": value,
            "previous_label": change.previous,
            "changed": change.changed,
        }

    # -- lifecycle -----------------------------------------------------------------------
    def ready(self) -> bool:
        """True when the model is loaded and the state store answers."""
        return hasattr(self.model, "model_") and self.store.ping()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- explanations -------------------------------------------------------------------
    def _reasons(
        self,
        tx: LiveTransaction,
        numeric: np.ndarray,
        codes: np.ndarray,
        earlier: tuple[list[str], list[int], list[float]],
        logit: float,
    ) -> list[dict]:
        """The reasons `fraudseq explain` gives for the exact window scored (its `occlude`
        and `rank_reasons`, with the live logit as the base), without building its tables:
        the same attributions and the same dicts. [] if it fails."""
        return self._reasons_many([(tx, numeric, codes, earlier, logit)])[0]

    def _reasons_many(self, items: list[tuple]) -> list[list[dict]]:
        """`_reasons` of several windows (tx, numeric, codes, earlier, logit): the occlusions
        of `fraudseq.explain.occlude`, all their copies in one forward pass."""
        try:
            k, live = self.model.window, self.live
            numeric = np.zeros((len(items), k, live.n_numeric), dtype=np.float32)
            codes = np.zeros((len(items), k, live.n_categorical), dtype=np.int64)
            lengths = np.array([len(item[1]) for item in items], dtype=np.int64)
            for i, (_, rows, row_codes, _, _) in enumerate(items):
                numeric[i, : len(rows)], codes[i, : len(rows)] = rows, row_codes
            logits = np.array([item[4] for item in items], dtype=np.float32)
            occlusion = occlude(numeric, codes, lengths, self._window.logits, logits)
            last = numeric[np.arange(len(items)), lengths - 1]
            described = described_features(
                self.model.encoder_, last, [item[0].categorical for item in items]
            )
            return [
                rank_reasons(
                    occlusion.event_drops[i, : length - 1],
                    item[3],
                    occlusion.feature_drops[i],
                    described[i],
                )
                for i, (item, length) in enumerate(zip(items, lengths.tolist(), strict=True))
            ]
        except Exception as err:  # explanations must never fail a score
            if not self._explain_failed:
                self._explain_failed = True
                log.warning("reasons unavailable: %s", err)
            return [[] for _ in items]


_ESCAPE = json.encoder.encode_basestring_ascii  # what json.dumps does to a str


def model_version(model_dir: str | Path) -> str:
    """A model directory's version: the first 12 hex digits of its model.json's digest in
    the manifest. Cheap; a directory without a valid manifest is checked in full, which
    raises ModelDirectoryError naming the problem (`FraudModel.load` verifies every file)."""
    files = model_manifest(model_dir)
    if files is None:
        files = verify_model_dir(model_dir)
    return files[MODEL_JSON][:12]


def record_json(
    digest: str,
    entity: str,
    time_ns: int,
    counterparty: str | None,
    counted: bool,
    result: dict,
    version_json: str,
) -> str:
    """`dumps(Detector._record(...))` of an inserted transaction, written directly (the
    same JSON document, about 5x faster; batches write one per transaction)."""
    reasons = result["reasons"]
    return (
        f'{{"digest":"{digest}","entity":{_ESCAPE(entity)},"time_ns":{time_ns},'
        f'"counterparty":{_ESCAPE(counterparty) if counterparty is not None else "null"},'
        f'"day":{time_ns // COUNTERPARTY_BUCKET_NS},"inserted":true,'
        f'"counted":{"true" if counted else "false"},"label":null,"result":{{'
        f'"fraud_probability":{result["fraud_probability"]!r},"score":{result["score"]!r},'
        f'"alert":{"true" if result["alert"] else "false"},"threshold":{result["threshold"]!r},'
        f'"insufficient_history":{"true" if result["insufficient_history"] else "false"},'
        f'"out_of_order":{"true" if result["out_of_order"] else "false"},'
        f'"history":"{result["history"]}",'
        f'"model_version":{version_json},'
        f'"reasons":{dumps(reasons) if reasons else "[]"}}}}}'
    )


def result_dict(
    probability: float,
    alert: bool,
    threshold: float,
    insufficient_history: bool,
    out_of_order: bool,
    history: str,
    model_version: str,
) -> dict:
    """A score's result (without its transaction id; `reasons` empty). A batch builds its
    results with the same literal inline (one per transaction, no call)."""
    return {
        "fraud_probability": probability,
        "score": round(100.0 * probability, 2),
        "alert": alert,
        "threshold": threshold,
        "insufficient_history": insufficient_history,
        "out_of_order": out_of_order,
        "history": history,
        "model_version": model_version,
        "reasons": [],
    }


def history_retention_buckets(live: LiveEncoder, days: float | None) -> int:
    """The history log's retention in hour buckets: `days` (0: no log), by default the
    state's retention (`LiveEncoder.counterparty_retention_buckets`)."""
    if days is None:
        return live.counterparty_retention_buckets
    if isinstance(days, bool) or not isinstance(days, int | float) or not 0 <= days < 1e6:
        raise FraudseqError(f"history_days must be a number of days >= 0 or None, got {days!r}")
    return math.ceil(days * BUCKETS_PER_DAY)


def stored_result(record: dict) -> dict:
    """A stored record's result, as a retry returns it. Records written before results
    carried ``out_of_order`` or ``history`` get them from ``inserted`` (out-of-order
    transactions were then never inserted into their account's history), so a retry
    reports what happened to it. Keys are in the order of a new result."""
    result = record["result"]
    if "history" in result and "out_of_order" in result:
        return dict(result)
    inserted = record.get("inserted", True)
    history = result.get("history", APPENDED if inserted else NOT_INSERTED)
    out_of_order = result.get("out_of_order", history != APPENDED)
    out = {}
    for key, value in result.items():
        if key == "model_version":
            out["out_of_order"], out["history"] = out_of_order, history
        if key not in ("out_of_order", "history"):
            out[key] = value
    out.setdefault("out_of_order", out_of_order)
    out.setdefault("history", history)
    return out


def default_clock(live: LiveEncoder, clock="wall", **window) -> EventClock:
    """The EventClock of a detector: `clock` with max_future (default 1 day) and max_age
    (default the state's retention, what its counterparty history keeps)."""
    if isinstance(clock, EventClock):
        return clock
    if window.get("max_age") is None:  # the retention is in hour buckets
        window["max_age"] = timedelta(hours=live.counterparty_retention_buckets)
    window.setdefault("max_future", DEFAULT_MAX_FUTURE)
    return EventClock(clock, max_future=window["max_future"], max_age=window["max_age"])


def _conflict(tx_id: str) -> ConflictError:
    return ConflictError(
        f"transaction id {tx_id!r} was already scored with different content; "
        f"a retry must resend the same transaction, a new transaction needs a new id"
    )


def _no_score(tx_id: str) -> None:
    """A NaN logit is the model's fault, not the request's (features are finite and
    bounded): fail the call (HTTP 500) before anything is stored."""
    raise RuntimeError(f"the model gave no score (NaN) for transaction {tx_id!r}; nothing stored")


def _tail(values, n: int) -> list:
    """The last n items (none for n = 0)."""
    return list(values[len(values) - n :]) if n > 0 else []


def _sigmoids(logits: np.ndarray) -> np.ndarray:
    """`_sigmoid` of float32 logits, vectorised (float64 of the float32 values)."""
    x = np.asarray(logits, dtype=np.float32).astype(np.float64)
    with np.errstate(over="ignore"):
        out = 1.0 / (1.0 + np.exp(-x))
    return np.where(x < -709.0, 0.0, out)


def _sigmoid(logit: float) -> float:
    """FraudModel's probability: 1 / (1 + exp(-logit)) in float64 of the float32 logit."""
    x = float(np.float32(logit))
    if x < -709.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def _label(label) -> int:
    if isinstance(label, bool | np.bool_):
        return int(label)
    if isinstance(label, int | np.integer | float | np.floating) and label in (0, 1):
        return int(label)
    if isinstance(label, str) and label.strip() in ("0", "1"):
        return int(label.strip())
    raise DataValidationError(f"label must be 0 or 1, got {type(label).__name__} {label!r}")
