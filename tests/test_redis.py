"""The Redis state store against a real redis-server (started by scripts/redis-server.sh):
the store contract, replay parity, and two processes scoring concurrently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from fraudseq.serving import AccountState, Detector, open_store
from fraudseq.serving.stores import Update
from test_state import (
    CLOCK,
    accounts_slice,
    check_counterparty_reads,
    check_store_contract,
    replay,
    transactions,
)

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")


@pytest.fixture
def url(redis_url):
    """A fresh key prefix per test; its keys are deleted afterwards."""
    prefix = f"fraudseq-test-{uuid.uuid4().hex[:8]}:"
    full = f"{redis_url}?prefix={prefix}"
    yield full
    store = open_store(full)
    store.clear()
    store.close()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tiny_lstm_dir) -> Path:
    return tiny_lstm_dir


def test_store_contract(url):
    store = open_store(url)
    check_store_contract(store)
    store.close()
    assert not store.ping()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counterparty_reads_equal_the_python_kernels(url, seed):
    store = open_store(url)
    check_counterparty_reads(store, seed)
    store.close()


def test_ttl_sets_key_expiry(url, model_dir, small_frame):
    txs, _ = transactions(accounts_slice(small_frame, 150, 1))
    with Detector.load(model_dir, url, ttl_seconds=3600, clock=CLOCK) as detector:
        detector.score(txs[0])
        client, prefix = detector.store._client, detector.store.prefix
        for key in (f"{prefix}a:{txs[0]['card_id']}", f"{prefix}t:{txs[0]['tx_id']}"):
            assert 3500 < client.ttl(key) <= 3600


def test_replay_on_redis_equals_memory(url, model_dir, small_frame):
    txs, labels = transactions(accounts_slice(small_frame, 150, 4))
    with Detector.load(model_dir, "memory", clock=CLOCK) as detector:
        detector.explain = "none"
        expected = replay(detector, txs, labels)
    with Detector.load(model_dir, url, clock=CLOCK) as detector:
        detector.explain = "none"
        assert detector.ready()
        assert replay(detector, txs, labels) == expected
        assert detector.store.labels() == dict(zip(expected, labels, strict=True))


def test_unreachable_redis_is_reported():
    from fraudseq.serving import StateStoreError

    store = open_store("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert not store.ping()
    with pytest.raises(StateStoreError, match="Redis unavailable"):
        store.meta("k", "v")


def test_a_refused_command_is_a_state_store_error(redis_url):
    from fraudseq.serving import StateStoreError

    store = open_store(redis_url.rsplit("/", 1)[0] + "/99")  # no database 99
    assert not store.ping()
    with pytest.raises(StateStoreError, match="Redis error: .*DB index"):
        store.meta("k", "v")
    store.close()


WORKER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from fraudseq.serving import Detector
    model_dir, url, path, go, out = sys.argv[1:6]
    data = json.load(open(path))
    detector = Detector.load(model_dir, url, clock="2026-02-10")
    detector.explain = "none"
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    results = {}
    for tx in data["txs"]:
        results[tx["tx_id"]] = detector.score(tx)["fraud_probability"]
        if tx["tx_id"] in data["labels"]:
            detector.feedback(tx["tx_id"], data["labels"][tx["tx_id"]])
    json.dump({"results": results, "conflicts": detector.store.conflicts}, open(out, "w"))
    """
)


def test_two_processes_lose_no_event(url, model_dir, small_frame, tmp_path):
    # Disjoint accounts (with disjoint merchants, so no shared counterparty state): scores
    # must equal a single-process run of the combined file, whatever the interleaving.
    frames = [accounts_slice(small_frame, 220, 4), accounts_slice(small_frame, 230, 4).copy()]
    frames[1]["merchant_id"] = "B-" + frames[1]["merchant_id"]
    streams = [transactions(frame) for frame in frames]
    combined = sorted(
        [(tx, label) for txs, labels in streams for tx, label in zip(txs, labels, strict=True)],
        key=lambda pair: pair[0]["ts"],
    )
    with Detector.load(model_dir, "memory", clock=CLOCK) as detector:
        detector.explain = "none"
        expected = replay(detector, [tx for tx, _ in combined], [label for _, label in combined])

    # Contention: the same 4 accounts (same timestamp, so arrival order is free) scored by
    # both processes, alternating transactions.
    contended = [
        {
            "tx_id": f"X{account}-{k}",
            "card_id": f"X{account}",
            "ts": "2026-02-01T12:00:00",
            "amount": 10.0 + k,
            "mcc": "5411",
            "country": "FR",
            "channel": "web",
            "device_id": f"D{k % 3}",
            "merchant_id": "MX",
        }
        for account in range(4)
        for k in range(30)
    ]
    go = tmp_path / "go"
    workers = []
    for i, (txs, labels) in enumerate(streams):
        mine = contended[i::2]
        mixed = []  # round robin: one transaction of the own accounts, one contended
        for k in range(max(len(txs), len(mine))):
            mixed += txs[k : k + 1] + mine[k : k + 1]
        path = tmp_path / f"worker{i}.json"
        path.write_text(
            json.dumps(
                {
                    "txs": mixed,
                    "labels": {tx["tx_id"]: lab for tx, lab in zip(txs, labels, strict=True)},
                }
            )
        )
        args = [str(model_dir), url, str(path), str(go), str(tmp_path / f"out{i}.json")]
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, *args],
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        )
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        go.touch()  # both start scoring together
        for worker in workers:
            assert worker.wait(timeout=300) == 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    outputs = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    live = {k: v for out in outputs for k, v in out["results"].items()}
    assert {k: live[k] for k in expected} == expected

    store = open_store(url)
    try:
        for account in range(4):
            assert AccountState.from_bytes(store.account(f"X{account}")).n == 30
        assert all(store.record(tx["tx_id"])["inserted"] for tx in contended)
        assert sum(n for n, _ in store.counterparty_buckets("MX").values()) == len(contended)
        for txs, _ in streams:
            for entity in {tx["card_id"] for tx in txs}:
                n = AccountState.from_bytes(store.account(entity)).n
                assert n == sum(tx["card_id"] == entity for tx in txs)
    finally:
        store.close()
    print("commit conflicts retried:", [out["conflicts"] for out in outputs])


def test_commit_retries_when_the_account_changes_meanwhile(url):
    """Deterministic interleavings: another worker commits between this worker's read and
    its commit. A changed account makes it read and compute again; the same transaction id
    committed meanwhile returns that stored result."""
    mine, other = open_store(url), open_store(url)
    seen = []

    def record(tx_id, result):
        return {"digest": tx_id, "inserted": True, "label": None, "result": result}

    def compute_for(tx_id, interfere):
        def compute(snapshot):
            seen.append(snapshot.account)
            if snapshot.record is not None:
                return Update(result=snapshot.record["result"])
            if interfere:
                interfere.pop()()
            account = (snapshot.account or b"") + tx_id.encode()
            return Update({"by": "mine"}, record(tx_id, {"by": "mine"}), account)

        return compute

    def other_writes(tx_id):
        def write():
            def compute(snapshot):
                account = (snapshot.account or b"") + tx_id.encode()
                return Update({"by": "other"}, record(tx_id, {"by": "other"}), account)

            other.transact(tx_id, "A", None, None, compute)

        return write

    result = mine.transact("t1", "A", None, None, compute_for("t1", [other_writes("t0")]))
    assert result.result == {"by": "mine"} and seen == [None, b"t0"]
    assert mine.account("A") == b"t0t1" and mine.conflicts == 1

    seen.clear()
    result = mine.transact("t2", "A", None, None, compute_for("t2", [other_writes("t2")]))
    assert result.result == {"by": "other"}  # the stored result of the same id
    assert mine.account("A") == b"t0t1t2"
    mine.close()
    other.close()


def test_score_batch_on_redis_equals_memory(url, model_dir, small_frame):
    """The vectorised batch path on Redis: the results of one-at-a-time scoring in memory,
    retries answered from the stored records, and a commit that finds an account changed
    meanwhile reads and computes again (no event lost)."""
    txs, _ = transactions(accounts_slice(small_frame, 150, 4))
    with Detector.load(model_dir, "memory", clock=CLOCK) as detector:
        detector.explain = "none"
        expected = [detector.score(tx)["fraud_probability"] for tx in txs]
    with (
        Detector.load(model_dir, url, clock=CLOCK) as detector,
        Detector.load(model_dir, url, clock=CLOCK) as other,
    ):
        detector.explain = other.explain = "none"
        got = []
        for start in range(0, len(txs), 50):
            got += detector.score_batch(txs[start : start + 50])
        assert np.abs(np.array([r["fraud_probability"] for r in got]) - expected).max() <= 1e-6
        assert detector.score_batch(txs[:50]) == got[:50]  # retries: the stored results

        # Another worker commits to one of the batch's accounts between read and commit.
        fresh = [dict(tx, tx_id=f"again-{tx['tx_id']}", ts="2026-02-10T00:00:00") for tx in txs]
        account = fresh[0]["card_id"]
        compute = detector._compute_many
        interfered = []

        def interfering(columns, snapshot):
            if not interfered:
                interfered.append(other.score(dict(fresh[0], tx_id="other-worker")))
            return compute(columns, snapshot)

        detector._compute_many = interfering
        detector.score_batch(fresh[:5])
        assert detector.store.conflicts >= 1
        n = AccountState.from_bytes(detector.store.account(account)).n
        assert n == sum(tx["card_id"] == account for tx in txs + fresh[:5]) + 1


def test_a_far_future_transaction_purges_no_merchant_history(url, model_dir, small_frame):
    """Before: one transaction stamped 2261 made its merchant's next new bucket prune every
    bucket older than 2261 minus the retention (120 buckets became 1). Now the time is
    refused (422 over HTTP), and buckets are pruned by the detector's clock."""
    from fraudseq.errors import DataValidationError
    from test_event_time import FUTURE, buckets_of, recent

    frame = recent(accounts_slice(small_frame, 0, 30))
    txs, _ = transactions(frame)
    merchants = set(frame["merchant_id"])
    with Detector.load(model_dir, url) as detector:  # the wall clock: the data is recent
        detector.explain = "none"
        detector.score_batch(txs[:400])
        before = buckets_of(detector.store, merchants)
        future = {**txs[400], "tx_id": "FUTURE", "ts": FUTURE}
        with pytest.raises(DataValidationError, match="ahead of the server's clock"):
            detector.score(future)
        assert detector.store.record("FUTURE") is None
        for tx in txs[400:700]:
            detector.score(tx)
        after = buckets_of(detector.store, merchants)
        assert all(set(before[m]) <= set(after[m]) for m in merchants)
        assert sum(map(len, after.values())) > sum(map(len, before.values())) > 100
