"""The memory store's decoded account states (`StatePool`): what a batch writes reads back
as the same states the bytes codec gives, through rewrites, drops and compactions; and a
memory store mixing batches and single scores holds the bytes a SQLite store holds."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from fraudseq.features.state import decode_states, encode_states
from fraudseq.serving import Detector
from fraudseq.serving.stores import state_pool
from fraudseq.serving.stores.state_pool import StatePool
from test_state import accounts_slice, transactions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stream(small_frame):
    """12 accounts over 40 days, time ordered (about 900 transactions)."""
    return transactions(accounts_slice(small_frame, 200, 12))


@pytest.fixture(scope="module")
def blobs(tiny_lstm_dir, stream):
    """Account states in bytes after 1 to 4 thirds of the stream (varied sizes), and the
    detector's LiveEncoder."""
    txs, _ = stream
    out = []
    with Detector.load(tiny_lstm_dir, "memory", clock="data") as detector:
        detector.explain = "none"
        for part in range(3):
            chunk = txs[part * len(txs) // 3 : (part + 1) * len(txs) // 3]
            detector.score_batch(chunk)
            entities = sorted({tx["card_id"] for tx in txs})
            out.append({e: detector.store.account(e) for e in entities})
        return out, detector.live


@pytest.mark.parametrize("seed", range(4))
def test_pool_reads_what_was_written(blobs, seed, monkeypatch):
    monkeypatch.setattr(state_pool, "_MIN_COMPACT", 8)  # compact often
    snapshots, live = blobs
    rng = np.random.default_rng(seed)
    empty = live.empty_state().to_bytes()
    expected: dict[str, bytes] = {}
    pool = None
    for step in range(40):
        snapshot = snapshots[rng.integers(len(snapshots))]
        names = sorted(snapshot)
        chosen = rng.choice(len(names), size=rng.integers(1, len(names) + 1), replace=False)
        entities = [f"{names[i]}-{rng.integers(3)}" for i in chosen.tolist()]
        entities = list(dict.fromkeys(entities))
        states = [snapshot[e.rsplit("-", 1)[0]] or empty for e in entities]
        table = decode_states(states, live)
        if pool is None:
            pool = StatePool(table)
        pool.write(entities, table)
        expected.update(zip(entities, states, strict=True))
        if step % 5 == 4:  # forget some
            for entity in rng.choice(sorted(expected), size=3, replace=False).tolist():
                pool.drop(entity)
                del expected[entity]
        held = sorted(expected)
        rng.shuffle(held)
        assert set(pool.slot) == set(held)
        assert encode_states(pool.read(held), live) == [expected[e] for e in held]


def test_memory_store_holds_the_bytes_sqlite_holds(tiny_lstm_dir, stream, tmp_path, monkeypatch):
    """Batches (decoded states in the pool) mixed with single scores (bytes) give a memory
    store the results and account bytes of a SQLite store (which keeps bytes only)."""
    monkeypatch.setattr(state_pool, "_MIN_COMPACT", 8)
    txs, labels = stream
    with (
        Detector.load(tiny_lstm_dir, "memory", clock="data") as memory,
        Detector.load(tiny_lstm_dir, f"sqlite:///{tmp_path}/s.db", clock="data") as sqlite,
    ):
        for detector in (memory, sqlite):
            detector.explain = "none"
        entities = sorted({tx["card_id"] for tx in txs})
        start, size = 0, 37
        while start < len(txs):
            chunk = txs[start : start + size]
            if (start // size) % 3 == 2:  # every third chunk one at a time
                got = [memory.score(tx) for tx in chunk]
                want = [sqlite.score(tx) for tx in chunk]
            else:
                got, want = memory.score_batch(chunk), sqlite.score_batch(chunk)
            assert got == want
            for tx, label in zip(chunk, labels[start : start + size], strict=True):
                memory.feedback(tx["tx_id"], label)
                sqlite.feedback(tx["tx_id"], label)
            for entity in entities:
                assert memory.store.account(entity) == sqlite.store.account(entity), entity
            start += size


def test_batch_records_are_the_results_when_scored(tiny_lstm_dir, stream):
    """The memory store makes a batch's record texts when they are read back: from what
    was scored, not from the result dicts the caller got (and may change) nor from the
    detector's threshold later."""
    txs, _ = stream
    with Detector.load(tiny_lstm_dir, "memory", clock="data") as detector:
        detector.explain = "all"
        out = detector.score_batch(txs[:60])
        expected = copy.deepcopy(out)
        assert any(result["reasons"] for result in out)
        for result in out:
            result["fraud_probability"] = -1.0
            result["alert"] = None
            result["reasons"].clear()
        detector.threshold = 0.0
        assert detector.score_batch(txs[:60]) == expected  # retries: the stored results
        assert (
            detector.store.record(txs[0]["tx_id"])["result"]["threshold"]
            == (expected[0]["threshold"])
        )


def test_expired_batch_records_and_states_are_purged(tiny_lstm_dir, stream, monkeypatch):
    """With a TTL, a batch's records and account states expire like those kept as text
    and bytes; the rows a batch's records are made from go with its last record."""
    from types import SimpleNamespace

    from fraudseq.serving.stores import MemoryStore
    from fraudseq.serving.stores import memory as memory_module

    now = [1000.0]
    monkeypatch.setattr(memory_module, "time", SimpleNamespace(time=lambda: now[0]))
    txs, _ = stream
    first = txs[:10]
    second = [tx for tx in txs[10:40] if tx["card_id"] not in {t["card_id"] for t in first}]
    assert second
    store = MemoryStore(ttl_seconds=10)
    with Detector.load(tiny_lstm_dir, store, clock="data") as detector:
        detector.explain = "none"
        detector.score_batch(first)
        now[0] += 6
        kept = detector.score_batch(second)
        now[0] += 6
        store.purge()
        assert store.record(first[0]["tx_id"]) is None
        assert store.account(first[0]["card_id"]) is None
        assert (
            store.record(second[0]["tx_id"])["result"]["fraud_probability"]
            == (kept[0]["fraud_probability"])
        )
        assert store.account(second[0]["card_id"]) is not None
        assert len(store._batches) == 1
        assert first[0]["card_id"] not in store._pool


def test_bucket_counts_add_as_their_dict():
    """A batch's (counterparty, bucket) columns (`BucketCounts`) add to the memory store's
    buckets what the dict they count to adds, new counterparties in order of appearance;
    SQLite and Redis read them as that dict."""
    from fraudseq.serving.stores import BucketCounts
    from fraudseq.serving.stores.bucket_columns import BucketColumns

    rng = np.random.default_rng(0)
    by_columns, by_dict = BucketColumns(), BucketColumns()
    for _ in range(6):
        names = [f"M{i}" for i in rng.integers(0, 40, size=200).tolist()]
        buckets = rng.integers(-5, 30, size=200)
        counts = BucketCounts(names, buckets)
        expected: dict[tuple[str, int], int] = {}
        for key in zip(names, buckets.tolist(), strict=True):
            expected[key] = expected.get(key, 0) + 1
        assert dict(counts.items()) == expected and len(counts) == len(expected)
        by_columns.add(counts)
        by_dict.add(expected)
        assert by_columns.index == by_dict.index
        for name in (by_columns.key, by_columns.count, by_columns.fraud):
            assert name.dtype == np.int64
        np.testing.assert_array_equal(by_columns.key, by_dict.key)
        np.testing.assert_array_equal(by_columns.count, by_dict.count)
    by_columns.add(BucketCounts([], np.zeros(0, dtype=np.int64)))
    np.testing.assert_array_equal(by_columns.count, by_dict.count)


def test_expired_pooled_states_are_absent_before_a_purge(tiny_lstm_dir, stream, monkeypatch):
    """A state the pool holds past the TTL is read as absent (by a batch and by `account`)
    even before `purge` drops it, as a state kept in bytes is."""
    from types import SimpleNamespace

    from fraudseq.serving.stores import AccountStates, MemoryStore
    from fraudseq.serving.stores import memory as memory_module

    now = [1000.0]
    monkeypatch.setattr(memory_module, "time", SimpleNamespace(time=lambda: now[0]))
    txs, _ = stream
    store = MemoryStore(ttl_seconds=10)
    with Detector.load(tiny_lstm_dir, store, clock="data") as detector:
        detector.explain = "none"
        detector.score_batch(txs[:30])
        entities = list(dict.fromkeys(tx["card_id"] for tx in txs[:30]))
        read = store._read_accounts(entities, now[0])
        assert isinstance(read, AccountStates) and read.entities == entities
        now[0] += 11
        assert store.account(entities[0]) is None
        assert store._read_accounts(entities, now[0]) == {}
        assert entities[0] in store._pool  # not purged yet
