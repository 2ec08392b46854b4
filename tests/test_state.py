"""State stores: the common contract (memory, SQLite; Redis in test_redis.py), SQLite restart
continuity and consistency after a writer is killed with SIGKILL mid-stream."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.features.blocks.counterparty import CounterpartyTotals
from fraudseq.features.constants import BUCKETS_PER_DAY, COUNTERPARTY_WINDOWS_DAYS
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import load_transactions
from fraudseq.serving import AccountState, Detector, MemoryStore, StateStoreError, open_store
from fraudseq.serving.stores import BatchUpdate, BucketTable, Snapshot, Update
from fraudseq.serving.stores.base import counterparty_totals, dumps
from fraudseq.serving.stores.sqlite import SQLiteStore, _between, uniform_regions

TRAIN_UNTIL = "2026-01-31"
#: A fixed event clock for replays of the small frame (simulate() writes 2026-01-01 to
#: 2026-02-09): every time in it is within the detector's window (1 day ahead, the state's
#: retention of 44 days behind). `clock="data"` suits dense streams in time order; a few
#: sparse accounts can be more than its 1 day of skew apart.
CLOCK = "2026-02-10T00:00:00"
TINY = {"epochs": 1, "hidden_size": 8, "n_estimators": 20, "max_depth": 3, "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def accounts_slice(frame, first: int, count: int):
    keep = sorted(frame["card_id"].unique())[first : first + count]
    return frame[frame["card_id"].isin(keep)].reset_index(drop=True)


def make_model_dir(small_frame, path: Path, model: str = "lstm") -> Path:
    """A tiny model trained on 80 accounts of the small frame, saved to `path`."""
    fitted = FraudModel(model, seed=1, **TINY).fit(
        accounts_slice(small_frame, 0, 80), train_until=TRAIN_UNTIL, valid_days=7
    )
    return fitted.save(path)


def transactions(frame) -> tuple[list[dict], list[int]]:
    """A loaded frame's rows as JSON-able request dicts (ISO times), and their labels."""
    loaded = load_transactions(frame)
    labels = loaded["is_fraud"].astype(int).tolist()
    loaded = loaded.drop(columns=["is_fraud", "fraud_type"])
    loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
    return loaded.to_dict("records"), labels


def replay(detector: Detector, txs: list[dict], labels: list[int]) -> dict[str, float]:
    out = {}
    for tx, label in zip(txs, labels, strict=True):
        result = detector.score(tx)
        detector.feedback(result["transaction_id"], label)
        out[result["transaction_id"]] = result["fraud_probability"]
    return out


@pytest.fixture(scope="module")
def model_dir(tiny_lstm_dir):
    return tiny_lstm_dir


@pytest.fixture(scope="module")
def stream(small_frame):
    return transactions(accounts_slice(small_frame, 150, 8))


@pytest.fixture(scope="module")
def uninterrupted(model_dir, stream):
    with Detector.load(model_dir, "memory", clock="data") as detector:
        detector.explain = "none"
        return replay(detector, *stream)


# -- the contract every store meets ----------------------------------------------------------
def check_store_contract(store) -> None:
    """Transact, idempotent no-op, rollback on error, counterparty buckets, labels, meta."""

    def put(tx_id, entity, cp, day, account=b"state-1"):
        def compute(snapshot: Snapshot) -> Update:
            if snapshot.record is not None:
                return Update(result=snapshot.record["result"])
            record = {
                "digest": tx_id,
                "entity": entity,
                "counterparty": cp,
                "day": day,
                "inserted": True,
                "counted": cp is not None,
                "label": None,
                "result": {
                    "seen": snapshot.account is not None,
                    "cp": dataclasses.asdict(snapshot.counterparty),
                },
            }
            return Update(record["result"], record, account, day if cp else None)

        return store.transact(tx_id, entity, cp, (day - 8, day - 7) if cp else None, compute)

    nothing = {"counts": [0, 0, 0], "frauds": [0, 0, 0], "first_fraud": None, "last_fraud": None}
    first = put("t1", "A", "M", 100)
    assert first.record is not None
    assert json.loads(json.dumps(first.result)) == {"seen": False, "cp": nothing}
    assert store.account("A") == b"state-1"
    again = put("t1", "A", "M", 100, account=b"never-written")
    assert again.record is None and store.account("A") == b"state-1"
    assert store.record("t1")["result"] == {"seen": False, "cp": nothing}
    put("t2", "A", "M", 100, account=b"state-2")
    assert store.account("A") == b"state-2"

    def failing(snapshot):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        store.transact("t3", "A", "M", None, failing)
    assert store.record("t3") is None and store.account("A") == b"state-2"

    # Counterparty buckets: two transactions in bucket 100, read by a transaction in bucket
    # 108 over [100, 101): the totals of the windows ending at 101 all hold that bucket.
    assert store.label("unknown", 1) is None
    change = store.label("t1", 1)
    assert (change.previous, change.changed) == (None, True)
    assert store.label("t1", 1).changed is False
    later = put("t4", "B", "M", 108)
    assert json.loads(json.dumps(later.result["cp"])) == {
        "counts": [2, 2, 2], "frauds": [1, 1, 1], "first_fraud": 100, "last_fraud": 100
    }  # fmt: skip
    store.label("t1", 0)
    store.label("t2", 1)
    assert store.label("t2", 1).previous == 1
    assert store.counterparty_buckets("M")[100] == (2, 1)
    assert store.labels() == {"t1": 0, "t2": 1}
    assert store.record("t2")["label"] == 1
    # No counterparty: nothing counted.
    put("t5", "C", None, 100)
    assert store.label("t5", 1).changed is True

    assert store.meta("fingerprint", "abc") == "abc"
    assert store.meta("fingerprint", "other") == "abc"
    assert store.ping()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_store_contract(kind, tmp_path):
    store = open_store("memory" if kind == "memory" else f"sqlite:///{tmp_path}/s.db")
    try:
        check_store_contract(store)
    finally:
        store.close()
    assert not store.ping()
    with pytest.raises(FraudseqError, match="closed"):
        store.label("t1", 1)


def test_sqlite_sums_counterparty_totals_like_the_buckets(tmp_path):
    """The totals SQLite computes in SQL equal `counterparty_totals` of the same buckets,
    for ranges that cut windows, hold no fraud or hold nothing."""
    rng = np.random.default_rng(5)
    buckets = {
        int(b): (int(rng.integers(1, 9)), int(rng.random() < 0.2) * int(rng.integers(1, 3)))
        for b in rng.choice(np.arange(10_000, 11_500), 400, replace=False)
    }
    store = SQLiteStore(tmp_path / "cp.db")
    store._db.executemany(
        "INSERT INTO counterparty_days (counterparty, day, n, fraud) VALUES ('M', ?, ?, ?)",
        [(day, n, fraud) for day, (n, fraud) in buckets.items()],
    )
    span = 30 * 24
    for hi in [10_000, 10_010, 10_300, 10_760, 11_000, 11_500, 12_000, 13_000]:
        days = (hi - span, hi)
        expected = counterparty_totals(buckets, days)
        assert store._totals(store._db, "M", days) == expected, hi
        nothing = counterparty_totals({}, days)
        assert store._totals(store._db, "other", days) == nothing
    store.close()


LONGEST = max(COUNTERPARTY_WINDOWS_DAYS) * BUCKETS_PER_DAY


def load_counterparties(store, rng: np.random.Generator, names: list[str]) -> dict:
    """Random {counterparty: {hour bucket: (count, frauds)}} written through the store's own
    writes (counts by a batch update, frauds by labelling counted records); returned."""
    table = {}
    for cp in names:
        chosen = rng.choice(np.arange(10_000, 11_600), int(rng.integers(0, 500)), replace=False)
        table[cp] = {}
        for bucket in chosen.tolist():
            n = int(rng.integers(1, 6))
            table[cp][bucket] = (n, int(rng.integers(1, n + 1)) if rng.random() < 0.1 else 0)
    record = {"counted": True, "label": None}
    records = [
        (f"{cp}/{b}/{k}", "E", True, dumps({**record, "counterparty": cp, "day": b}))
        for cp, by in table.items() for b, (_, f) in by.items() for k in range(f)
    ]  # fmt: skip
    counts = {(cp, b): n for cp, by in table.items() for b, (n, _) in by.items()}
    update = BatchUpdate([], records, {}, counts)
    store.transact_batch([r[0] for r in records], ["E"], names, None, lambda _: update)
    for tx_id, *_ in records:
        assert store.label(tx_id, 1).changed
    assert {cp: store.counterparty_buckets(cp) for cp in names} == table
    return table


def check_counterparty_reads(store, seed: int) -> None:
    """What a store's reads give the counterparty features equals the Python kernels on the
    stored buckets, for random bucket tables and random queries: a score's totals equal
    `CounterpartyTotals.from_buckets`; a batch's buckets (SQLite sums some in SQL) give
    the counterparty block's kernel and `from_buckets` the same numbers as all the stored
    buckets do."""
    rng = np.random.default_rng(seed)
    names = ["M0", "M1", "M2", "M3"]
    table = load_counterparties(store, rng, names)
    everything = BucketTable.from_dicts(table)
    seen = []

    def capture(snapshot):
        seen.append(snapshot.counterparty)
        return Update({}) if isinstance(snapshot, Snapshot) else BatchUpdate([])

    for _ in range(60):  # single scores: windows end at `hi`
        cp, hi = str(rng.choice([*names, "unseen"])), int(rng.integers(9_900, 12_500))
        store.transact("q", "Q", cp, (hi - LONGEST, hi), capture)
        assert seen.pop() == CounterpartyTotals.from_buckets(table.get(cp, {}), hi), (cp, hi)
    for _ in range(20):  # batches: transactions in buckets `own`, seen `delay` buckets late
        delay = int(rng.choice([0, 7, 168]))
        start = int(rng.integers(10_000, 12_500))
        own = start + rng.integers(0, int(rng.choice([1, 24, 300, 1_000])), 40)
        cps = [str(c) for c in rng.choice([*names, "unseen"], len(own))]
        span = (int(own.min()) - delay - LONGEST, int(own.max()) - delay)
        store.transact_batch(["q"], ["Q"], list(dict.fromkeys(cps)), span, capture)
        read = seen.pop()
        got, expected = (counterparty_features(cps, own, t, delay) for t in (read, everything))
        for name, values in expected.items():
            np.testing.assert_array_equal(got[name], values, err_msg=f"{name} {span}")
        for cp, end in zip(cps, (own - delay).tolist(), strict=True):
            want = CounterpartyTotals.from_buckets(table.get(cp, {}), end)
            assert CounterpartyTotals.from_buckets(read.of(cp), end) == want, (cp, end, span)
    assert store.record("q") is None and store.account("Q") is None  # reads wrote nothing


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_counterparty_reads_equal_the_python_kernels(kind, seed, tmp_path):
    store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "cp.db")
    check_counterparty_reads(store, seed)
    store.close()


@pytest.mark.parametrize("spread", [0, 5, 30, 200, 800, 2000])
def test_regions_and_gaps_cover_the_read_range_once(spread):
    lo, hi = 10_000, 10_000 + 720 + spread
    ranges = sorted(uniform_regions(lo, hi) + _between((lo, hi), uniform_regions(lo, hi)))
    covered = np.concatenate([np.arange(a, b) for a, b in ranges])
    np.testing.assert_array_equal(covered, np.arange(lo, hi))


def counterparty_features(cps: list[str], own: np.ndarray, table, delay: int) -> dict:
    """The counterparty block's kernel for transactions of counterparties `cps` in hour
    buckets `own`, over a store's bucket table."""
    from fraudseq.features import BLOCKS
    from fraudseq.features.constants import COUNTERPARTY_BUCKET_NS
    from fraudseq.features.kernel import Buckets, Chunk, Context
    from fraudseq.features.state import StateTable

    index = dict(table.index)
    codes = np.array([index.setdefault(cp, len(index)) for cp in cps], dtype=np.int64)
    n = len(cps)
    chunk = Chunk(np.zeros(n, np.int64), own * COUNTERPARTY_BUCKET_NS, np.zeros(n), [], codes)
    stored = Buckets(table.code, table.bucket, table.count, table.fraud)
    context = Context(StateTable.empty(1, 0), chunk, (), delay, stored)
    return BLOCKS["counterparty_risk"].kernel(context)


@pytest.mark.parametrize("spread", [0, 5, 30, 200, 800])
def test_sqlite_batch_buckets_give_the_features_of_every_bucket(tmp_path, spread):
    """SQLite sums the fraud-free buckets of `uniform_regions` for a batch; the batch's
    counterparty features are those of the full buckets, whatever hours (spread) the
    batch's transactions cover."""
    rng = np.random.default_rng(spread)
    names = ["M0", "M1", "M2"]
    buckets = {
        cp: {
            int(b): (int(rng.integers(1, 5)), int(rng.random() < 0.1))
            for b in rng.choice(np.arange(9_000, 11_000), 900, replace=False)
        }
        for cp in names
    }
    store = SQLiteStore(tmp_path / "cp.db")
    store._db.executemany(
        "INSERT INTO counterparty_days (counterparty, day, n, fraud) VALUES (?, ?, ?, ?)",
        [(cp, d, n, f) for cp, by in buckets.items() for d, (n, f) in by.items()],
    )
    own = 10_800 + rng.integers(0, spread + 1, 300)  # the transactions' buckets
    cps = [names[i] for i in rng.integers(0, 4, 300) % 3] + ["unseen"]
    own = np.r_[own, 10_800]
    days = (int(own.min()) - 168 - 720, int(own.max()) - 168)
    wanted = [*names, "unseen"]
    summed = BucketTable.from_rows(wanted, store._counterparty_rows(store._db, wanted, days))
    in_range = {
        cp: {d: v for d, v in by.items() if days[0] <= d < days[1]} for cp, by in buckets.items()
    }
    assert len(summed) < sum(len(by) for by in in_range.values()) or spread > 500
    got = counterparty_features(cps, own, summed, 168)
    expected = counterparty_features(cps, own, BucketTable.from_dicts(in_range), 168)
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_ttl_expires_accounts_and_records(kind, tmp_path, monkeypatch):
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    url = "memory" if kind == "memory" else f"sqlite:///{tmp_path}/ttl.db"
    store = open_store(url, ttl_seconds=60)

    def compute(snapshot):
        record = {"digest": "d", "inserted": True, "label": None, "result": {}}
        return Update({}, record, b"acct") if snapshot.record is None else Update({})

    store.transact("t1", "A", None, None, compute)
    now[0] += 30
    assert store.account("A") == b"acct" and store.record("t1") is not None
    now[0] += 31
    assert store.account("A") is None and store.record("t1") is None
    store.purge()
    assert store.transact("t1", "A", None, None, compute).record is not None  # new again
    store.close()


def test_sqlite_ttl_sweep_is_incremental(tmp_path, monkeypatch):
    """Each purge looks at a bounded key range (PURGE_SCAN keys per table, wrapping round),
    yet repeated purges remove every expired row and keep the fresh ones."""
    import fraudseq.serving.stores.sqlite as sqlite_store

    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    monkeypatch.setattr(sqlite_store, "PURGE_SCAN", 3)
    store = SQLiteStore(tmp_path / "sweep.db", ttl_seconds=60)

    def put(i):
        record = {"digest": "d", "inserted": True, "label": None, "result": {}}
        store.transact(f"t{i:02d}", f"A{i:02d}", None, None, lambda _: Update({}, record, b"s"))

    for i in range(10):
        put(i)
    now[0] += 61
    for i in range(10, 12):
        put(i)

    def rows(table):
        return store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    counts = [rows("accounts")]
    for _ in range(6):
        store.purge()
        counts.append(rows("accounts"))
    assert counts[0] == 12 and counts[-1] == 2 and rows("transactions") == 2
    assert all(0 <= a - b <= 3 for a, b in zip(counts, counts[1:], strict=False))
    assert {store.account(f"A{i}") for i in (10, 11)} == {b"s"}
    store.close()


def test_open_store_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = open_store("sqlite:///rel/state.db")
    assert isinstance(relative, SQLiteStore) and (tmp_path / "rel" / "state.db").exists()
    relative.close()
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db?synchronous=FULL")
    assert absolute.path == f"{tmp_path}/abs.db"
    assert absolute._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert absolute._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    absolute.close()
    default = open_store(f"sqlite:///{tmp_path}/d.db")
    assert default._db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    default.close()
    assert isinstance(open_store("memory"), MemoryStore)
    store = MemoryStore()
    assert open_store(store) is store
    (tmp_path / "a_file").write_text("")
    for bad, message in [
        ("postgres://x", "unknown state store"),
        ("sqlite://", "no database path"),
        ("sqlite:///x.db?synchronous=SOMETIMES", "synchronous"),
        (f"sqlite:///{tmp_path}/a_file/state.db", "cannot open the SQLite state store"),
    ]:
        with pytest.raises(FraudseqError, match=message):
            open_store(bad)
    for ttl in (0, -5, 1.5, "10", True):  # whole seconds, as Redis expiries need
        with pytest.raises(FraudseqError, match="ttl_seconds must be a positive whole number"):
            open_store("memory", ttl_seconds=ttl)
    with pytest.raises(FraudseqError, match="StateStore"):
        open_store(42)


def test_sqlite_errors_are_state_store_errors(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/e.db")
    store._db.execute("DROP TABLE accounts")

    def compute(snapshot):
        return Update({}, {"digest": "d", "inserted": True, "result": {}}, b"x")

    with pytest.raises(StateStoreError, match="SQLite error"):
        store.transact("t", "A", None, None, compute)
    store.close()


# -- SQLite with a real detector -------------------------------------------------------------
def test_sqlite_state_survives_restart(model_dir, stream, uninterrupted, tmp_path):
    txs, labels = stream
    half = len(txs) // 2
    url = f"sqlite:///{tmp_path}/restart.db"
    with Detector.load(model_dir, url, clock="data") as detector:
        detector.explain = "none"
        first = replay(detector, txs[:half], labels[:half])
    with Detector.load(model_dir, url, clock="data") as detector:
        detector.explain = "none"
        second = replay(detector, txs[half:], labels[half:])
        assert detector.store.labels() == {
            tx["tx_id"]: label for tx, label in zip(txs, labels, strict=True)
        }
    assert {**first, **second} == uninterrupted


def test_store_of_another_model_is_refused(model_dir, small_frame, tmp_path):
    url = f"sqlite:///{tmp_path}/owned.db"
    Detector.load(model_dir, url).close()
    other = FraudModel("lstm", seed=1, min_count=50, **TINY).fit(
        accounts_slice(small_frame, 0, 40), train_until=TRAIN_UNTIL, valid_days=7
    )
    other.save(tmp_path / "other")
    with pytest.raises(FraudseqError, match="another model's features"):
        Detector.load(tmp_path / "other", url)


WRITER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from fraudseq.serving import Detector
    model_dir, url, path = sys.argv[1:4]
    data = json.load(open(path))
    detector = Detector.load(model_dir, url, clock="data")
    detector.explain = "none"
    for i, (tx, label) in enumerate(zip(data["txs"], data["labels"])):
        detector.score(tx)
        detector.feedback(tx["tx_id"], label)
        if i == 20:
            print("writing", flush=True)
    print("done", flush=True)
    """
)


def check_consistent(db_path: Path) -> dict[str, int]:
    """integrity_check passes and every account's event count equals its transactions
    recorded as inserted; every counterparty count equals its counted transactions."""
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    inserted = dict(
        db.execute("SELECT entity, SUM(inserted) FROM transactions GROUP BY entity").fetchall()
    )
    accounts = {
        entity: AccountState.from_bytes(blob).n
        for entity, blob in db.execute("SELECT entity, state FROM accounts")
    }
    assert accounts == {e: n for e, n in inserted.items() if n}
    per_cp: dict[str, int] = {}
    for (text,) in db.execute("SELECT record FROM transactions"):
        record = json.loads(text)
        if record["counted"]:
            per_cp[record["counterparty"]] = per_cp.get(record["counterparty"], 0) + 1
    buckets = dict(db.execute("SELECT counterparty, SUM(n) FROM counterparty_days GROUP BY 1"))
    assert buckets == per_cp
    db.close()
    return accounts


def test_sigkill_mid_write_leaves_a_consistent_store(model_dir, stream, uninterrupted, tmp_path):
    txs, labels = stream
    db_path = tmp_path / "killed.db"
    url = f"sqlite:///{db_path}"
    data = tmp_path / "txs.json"
    data.write_text(json.dumps({"txs": txs, "labels": labels}))
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(model_dir), url, str(data)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert writer.stdout.readline().strip() == "writing"
        reader = sqlite3.connect(db_path)  # WAL: reading while the writer commits is fine
        while reader.execute("SELECT COUNT(*) FROM transactions").fetchone()[0] < 100:
            time.sleep(0.002)
        reader.close()
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    accounts = check_consistent(db_path)
    scored = sum(accounts.values())
    assert 100 <= scored < len(txs), "the writer should have been killed mid-stream"

    # Resume: replaying everything gives every transaction the uninterrupted score (the
    # ones already committed return their stored result).
    with Detector.load(model_dir, url, clock="data") as detector:
        detector.explain = "none"
        resumed = replay(detector, txs, labels)
    assert resumed == uninterrupted
    check_consistent(db_path)


def test_sqlite_store_made_before_the_fraud_index_gets_it_on_open(tmp_path):
    store = SQLiteStore(tmp_path / "old.db")
    store._db.execute("DROP INDEX counterparty_fraud_days")
    store._db.execute("INSERT INTO counterparty_days VALUES ('M', 10, 3, 1)")
    store.close()
    store = SQLiteStore(tmp_path / "old.db")
    totals = store._totals(store._db, "M", (0, 30 * 24))
    assert totals.counts == (0, 0, 3) and totals.frauds == (0, 0, 1)
    assert totals.first_fraud == totals.last_fraud == 10
    store.close()


def test_a_store_made_by_hand_keeps_the_models_counterparty_history(
    model_dir, small_frame, tmp_path, monkeypatch
):
    """Issue 18's bug: a store built directly kept its default retention of 45 *hour*
    buckets, so with a 7-day label delay every counterparty feature read 0 and its scores
    differed from a store opened by URL (by up to 0.45). A store has no retention of its
    own; the Detector gives every store the model's, so stores made by hand give non-zero
    counterparty features (counts and risks) and the scores of a store opened by URL."""
    txs, labels = transactions(accounts_slice(small_frame, 80, 60))
    memory_hand, sqlite_hand = MemoryStore(), SQLiteStore(tmp_path / "hand.db")
    assert memory_hand.retention_buckets is None and sqlite_hand.retention_buckets is None
    with (
        Detector.load(model_dir, memory_hand, clock="data") as by_hand,
        Detector.load(model_dir, f"sqlite:///{tmp_path / 's.db'}", clock="data") as by_url,
        Detector.load(model_dir, sqlite_hand, clock="data") as by_hand_sqlite,
    ):
        detectors = {"memory": by_hand, "url": by_url, "sqlite": by_hand_sqlite}
        features = {name: spy_on_features(d, monkeypatch) for name, d in detectors.items()}
        for detector in detectors.values():
            detector.explain = "none"
        hand = replay(by_hand, txs, labels)
        url = replay(by_url, txs, labels)
        hand_sqlite = replay(by_hand_sqlite, txs, labels)
    counterparty = [name for name in features["url"][0] if name.startswith("cp_")]
    assert len(counterparty) == 8 and len(features["url"]) == len(txs)
    for name in counterparty:
        assert max(raw[name] for raw in features["url"]) > 0, name
    for store in ("memory", "sqlite"):
        for raw, expected in zip(features[store], features["url"], strict=True):
            assert {n: raw[n] for n in counterparty} == {n: expected[n] for n in counterparty}
    assert max(abs(hand[k] - url[k]) for k in url) < 1e-9
    assert max(abs(hand_sqlite[k] - url[k]) for k in url) < 1e-9
    expected = by_url.live.counterparty_retention_buckets
    for detector in (by_hand, by_url, by_hand_sqlite):
        assert detector.store.retention_buckets == expected > 7 * 24


def spy_on_features(detector: Detector, monkeypatch) -> list[dict[str, float]]:
    """The raw features of every transaction `detector` encodes from now on."""
    seen: list[dict[str, float]] = []
    encode = detector.live.encode

    def recording(*args, **kwargs):
        features = encode(*args, **kwargs)
        seen.append(features.raw)
        return features

    monkeypatch.setattr(detector.live, "encode", recording)
    return seen
