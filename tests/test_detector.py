"""Detector: parity with batch scoring for every model family, the result, idempotency,
out-of-order events, feedback, validation and reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.models import MODELS
from fraudseq.serving import (
    AccountState,
    ConflictError,
    Detector,
    MemoryStore,
    UnknownTransactionError,
)
from test_state import accounts_slice, make_model_dir, transactions

# The fields of a live score (test_batch_scoring compares batches with single scores on them).
RESULT_FIELDS = {
    "transaction_id",
    "fraud_probability",
    "score",
    "alert",
    "threshold",
    "insufficient_history",
    "out_of_order",
    "history",
    "model_version",
    "reasons",
}

PARITY_TOLERANCE = 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def parity_file(small_frame):
    """The file replayed live: 12 accounts (about 900 transactions over 40 days)."""
    return accounts_slice(small_frame, 200, 12)


@pytest.mark.parametrize(
    ("model_name", "state"),
    [(name, "memory") for name in MODELS] + [("lstm", "sqlite")],  # SQLite sums in SQL
)
def test_live_replay_equals_batch_scores(model_name, state, small_frame, parity_file, tmp_path):
    """Replaying a file through `score` in time order, feeding each label back right after
    its transaction, gives batch FraudModel.score's probabilities on that file."""
    model_dir = make_model_dir(small_frame, tmp_path / model_name, model_name)
    batch = FraudModel.load(model_dir).score(parity_file)
    txs, labels = transactions(parity_file)
    url = "memory" if state == "memory" else f"sqlite:///{tmp_path}/state.db"
    with Detector.load(model_dir, url, clock="data") as detector:
        detector.explain = "none"
        live = {}
        for tx, label in zip(txs, labels, strict=True):
            result = detector.score(tx)
            detector.feedback(tx["tx_id"], label)
            live[result["transaction_id"]] = result["fraud_probability"]
    assert len(live) == len(batch) == len(parity_file)
    difference = np.abs(batch["transaction_id"].map(live).to_numpy() - batch["score"].to_numpy())
    print(f"{model_name}: max |live - batch| = {difference.max():.3g} over {len(batch)}")
    assert difference.max() <= PARITY_TOLERANCE, f"{model_name}: max |diff| {difference.max()}"
    assert batch["score"].nunique() > 1


# -- one model for everything else ---------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tiny_lstm_dir) -> Path:
    return tiny_lstm_dir


@pytest.fixture(scope="module")
def stream(small_frame):
    return transactions(accounts_slice(small_frame, 150, 6))


@pytest.fixture
def detector(model_dir):
    with Detector.load(model_dir, "memory", clock="data") as detector:
        detector.explain = "none"
        yield detector


def test_result_fields(detector, model_dir, stream):
    txs, _ = stream
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert detector.model_version == manifest["files"]["model.json"][:12]
    assert detector.schema.entity == "card_id"
    assert detector.ready()
    results = [detector.score(tx) for tx in txs[:40]]
    first = results[0]
    assert set(first) == RESULT_FIELDS
    for result in results:
        assert result["out_of_order"] is False  # the stream is in time order
        assert result["history"] == "appended"
        p = result["fraud_probability"]
        assert 0.0 <= p <= 1.0 and result["score"] == round(100 * p, 2)
        assert result["alert"] == (p >= result["threshold"])
        assert result["threshold"] == detector.threshold
        assert result["model_version"] == detector.model_version
        assert result["reasons"] == []
        json.dumps(result)  # JSON-able as it is
    # insufficient_history: fewer than min_history (3) earlier transactions of the account.
    seen: dict[str, int] = {}
    for tx, result in zip(txs[:40], results, strict=True):
        assert result["insufficient_history"] == (seen.get(tx["card_id"], 0) < 3)
        seen[tx["card_id"]] = seen.get(tx["card_id"], 0) + 1
    detector.close()
    assert not detector.ready()


def test_min_history_option(model_dir, stream):
    txs, _ = stream
    with Detector.load(model_dir, min_history=0, clock="data") as detector:
        assert not detector.score(txs[0])["insufficient_history"]


def test_score_batch_equals_score_one_by_one(model_dir, stream):
    """score_batch is vectorised (one forward pass over all windows): the same results,
    probabilities to PARITY_TOLERANCE (tests/test_batch_scoring.py covers every family)."""
    txs, _ = stream
    with (
        Detector.load(model_dir, clock="data") as one,
        Detector.load(model_dir, clock="data") as many,
    ):
        one.explain = many.explain = "none"
        expected = [one.score(tx) for tx in txs[:60]]
        got = many.score_batch(txs[:30]) + many.score_batch(txs[30:60])
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            p, q = a.pop("fraud_probability"), b.pop("fraud_probability")
            assert abs(p - q) <= PARITY_TOLERANCE
            assert abs(a.pop("score") - b.pop("score")) <= 0.01 + 1e-9
            assert a == b


def test_score_batch_validates_everything_first(detector, stream):
    txs, _ = stream
    bad = {**txs[3], "amount": "lots"}
    with pytest.raises(DataValidationError, match="position 3: .*'amount'"):
        detector.score_batch([txs[0], txs[1], txs[2], bad])
    assert detector.store.account(txs[0]["card_id"]) is None  # nothing was scored
    with pytest.raises(DataValidationError, match="list of transactions"):
        detector.score_batch(txs[0])


def test_retry_returns_the_stored_result_and_conflict_is_an_error(detector, stream):
    txs, _ = stream
    first = detector.score(txs[0])
    state = detector.store.account(txs[0]["card_id"])
    retried = dict(txs[0], ts=pd.Timestamp(txs[0]["ts"]).isoformat() + "Z")  # same content
    assert detector.score(retried) == first
    assert detector.store.account(txs[0]["card_id"]) == state  # not appended again
    assert AccountState.from_bytes(state).n == 1
    assert detector.counts["scored"] == 1 and detector.counts["replayed"] == 1
    with pytest.raises(ConflictError, match=f"{txs[0]['tx_id']!r} was already scored"):
        detector.score({**txs[0], "amount": txs[0]["amount"] + 1})
    assert isinstance(ConflictError("x"), FraudseqError)


def test_late_transaction_is_inserted_in_time_order(model_dir, stream):
    """A transaction older than its account's latest (within the allowed lateness) is scored
    against the events before it and inserted in its place: the account's state, and so
    every later score, is that of the events in time order."""
    txs, _ = stream
    account = txs[0]["card_id"]
    own = [tx for tx in txs if tx["card_id"] == account][:9]
    late = own[4]
    arrival = own[:4] + own[5:7] + [late] + own[7:]  # own[4] arrives after own[5], own[6]
    with (
        Detector.load(model_dir, clock="data") as shuffled,
        Detector.load(model_dir, clock="data") as ordered,
    ):
        shuffled.explain = ordered.explain = "none"
        expected = {tx["tx_id"]: ordered.score(tx) for tx in own}
        got = {tx["tx_id"]: shuffled.score(tx) for tx in arrival}
        result = got[late["tx_id"]]
        assert result["out_of_order"] is True and result["history"] == "inserted"
        assert shuffled.store.record(late["tx_id"])["inserted"] is True
        # All events before it had arrived and 2 <= LATE_ROWS later ones: its own score is
        # the in-order one; the later events' scores and the final state are too.
        assert result["fraud_probability"] == pytest.approx(
            expected[late["tx_id"]]["fraud_probability"], abs=1e-6
        )
        for tx in own[7:]:
            assert got[tx["tx_id"]] == expected[tx["tx_id"]]
        a = AccountState.from_bytes(shuffled.store.account(account))
        b = AccountState.from_bytes(ordered.store.account(account))
        assert (a.n, a.times, a.ids, a.new_totals, bytes(a.firsts), a.seen) == (
            b.n, b.times, b.ids, b.new_totals, bytes(b.firsts), b.seen
        )  # fmt: skip
        np.testing.assert_allclose(a.numeric, b.numeric, atol=1e-6)
        assert shuffled.score(late) == result  # idempotent like any other, flags included
        assert shuffled.counts["inserted"] == 1 and shuffled.counts["not_inserted"] == 0
        assert shuffled.feedback(late["tx_id"], 1)["changed"]


def test_a_transaction_too_late_to_insert_is_scored_recorded_and_counted(model_dir, stream, caplog):
    """More than the allowed lateness (1 day) older than the account's latest: scored
    against the history before it that the state holds, recorded, counted in its
    counterparty bucket, not inserted; said in the reply, counted and logged at info."""
    txs, _ = stream
    account = txs[0]["card_id"]
    own = [tx for tx in txs if tx["card_id"] == account][:8]
    first = pd.Timestamp(own[0]["ts"])
    assert pd.Timestamp(own[5]["ts"]) - first > pd.Timedelta(days=1)
    late = {**own[0], "tx_id": "LATE", "ts": (first + pd.Timedelta(minutes=1)).isoformat()}
    with (
        Detector.load(model_dir, clock="data") as with_late,
        Detector.load(model_dir, clock="data") as without,
    ):
        with_late.explain = without.explain = "none"
        for tx in own[:6]:
            with_late.score(tx)
            without.score(tx)
        before = with_late.store.account(account)
        with caplog.at_level("INFO", logger="fraudseq"):
            result = with_late.score(late)
        assert 0.0 <= result["fraud_probability"] <= 1.0
        assert result["out_of_order"] is True and result["history"] == "not_inserted"
        assert result["insufficient_history"] is True  # one event before it
        assert with_late.store.account(account) == before  # history unchanged
        record = with_late.store.record("LATE")
        assert record["inserted"] is False and record["counted"] is True
        assert with_late.score(late) == result  # a retry: the same reply
        assert with_late.counts["not_inserted"] == 1 and with_late.counts["scored"] == 7
        assert "LATE" in caplog.text and "not inserted" in caplog.text
        # The same time as the account's latest is in order (ties break by arrival).
        tie = {**own[5], "tx_id": "TIE"}
        assert with_late.score(tie)["history"] == "appended"
        without.score(tie)
        assert with_late.feedback("LATE", 1)["changed"]
        # Later transactions score as if the late one never came (same counterparty days
        # are not read by transactions within the label delay).
        for tx in own[6:]:
            assert with_late.score(tx) == without.score(tx)
        assert AccountState.from_bytes(with_late.store.account(account)).n == 9  # 8 + TIE


def test_feedback(detector, stream):
    txs, _ = stream
    detector.score(txs[0])
    tx_id = txs[0]["tx_id"]
    assert detector.feedback(tx_id, 1) == {
        "transaction_id": tx_id,
        "label": 1,
        "previous_label": None,
        "changed": True,
    }
    assert detector.feedback(tx_id, True)["changed"] is False  # idempotent
    assert detector.feedback(tx_id, 0) == {
        "transaction_id": tx_id,
        "label": 0,
        "previous_label": 1,
        "changed": True,
    }
    assert detector.store.labels() == {tx_id: 0}
    with pytest.raises(UnknownTransactionError, match="never scored"):
        detector.feedback("nope", 1)
    for bad in (2, -1, "yes", None, 0.5):
        with pytest.raises(DataValidationError, match="label must be 0 or 1"):
            detector.feedback(tx_id, bad)


def test_feedback_reaches_counterparty_features_after_the_delay(detector):
    """A fraud label on a merchant's transaction raises cp_risk for transactions more than
    the label delay (7 days -> day + 8 on) later, at any account."""
    base = {
        "card_id": "C1",
        "amount": 20.0,
        "mcc": "5411",
        "country": "FR",
        "channel": "web",
        "device_id": "D1",
        "merchant_id": "M-RISK",
    }
    detector.score({**base, "tx_id": "A", "ts": "2026-02-01T10:00:00"})
    detector.feedback("A", 1)
    live = detector.live

    def risk(tx_id, day, card):
        tx = {**base, "tx_id": tx_id, "card_id": card, "ts": f"2026-02-{day:02d}T10:00:00"}
        from fraudseq.transaction import parse_transaction

        parsed = parse_transaction(tx, detector.schema)
        days = detector.store.counterparty_buckets("M-RISK")
        features = live.encode(parsed, live.empty_state(), days)
        return features.raw["cp_risk_7d"], features.raw["cp_count_7d"]

    assert risk("B", 8, "C2") == (0.0, 0.0)  # day 8 reads days < 1 (Feb 8 - 7 days)
    assert risk("C", 9, "C3") == (1.0, np.log1p(1))


def test_invalid_input_raises_data_validation_error(detector, stream):
    txs, _ = stream
    tx = dict(txs[0])
    del tx["mcc"]
    with pytest.raises(DataValidationError, match="missing field 'mcc'"):
        detector.score(tx)
    with pytest.raises(DataValidationError, match="'amount'"):
        detector.score({**txs[0], "amount": float("nan")})
    with pytest.raises(DataValidationError, match="'ts'"):
        detector.score({**txs[0], "ts": "31/31/2026"})
    with pytest.raises(DataValidationError, match="'card_id'"):
        detector.score({**txs[0], "card_id": None})


def test_extreme_amounts_are_refused_and_a_nan_score_stores_nothing(detector, stream):
    txs, _ = stream
    with pytest.raises(DataValidationError, match="'amount'.*out-of-range"):
        detector.score({**txs[0], "amount": 1e300})
    with pytest.raises(DataValidationError, match="position 1: .*'amount'.*out-of-range"):
        detector.score_batch([txs[0], {**txs[1], "amount": -2e15}])
    # The largest amount allowed scores finitely (its features are clipped, not inf).
    assert 0.0 <= detector.score({**txs[0], "amount": 9.99e14})["fraud_probability"] <= 1.0

    detector._window.logit = lambda numeric, codes: float("nan")
    detector._window.logits = lambda numeric, codes, lengths: np.full(len(lengths), np.nan)
    with pytest.raises(RuntimeError, match=f"NaN.*{txs[1]['tx_id']}.*nothing stored"):
        detector.score(txs[1])
    with pytest.raises(RuntimeError, match="NaN"):
        detector.score_batch(txs[1:3])
    for tx in txs[1:3]:  # no record was stored
        with pytest.raises(UnknownTransactionError):
            detector.feedback(tx["tx_id"], 1)


def test_reasons_for_alerts(model_dir, stream):
    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        detector.threshold = 0.0  # every transaction is an alert
        results = [detector.score(tx) for tx in txs[:12]]
    pytest.importorskip("fraudseq.explain")
    with_reasons = [r for r in results if r["reasons"]]
    assert with_reasons, "alerts should come with reasons"
    for result in with_reasons:
        json.dumps(result)
        for reason in result["reasons"]:
            assert reason["kind"] in ("event", "feature") and reason["attribution"] > 0
            assert isinstance(reason["description"], str)


def test_ttl_and_store_options(model_dir, stream, tmp_path):
    txs, _ = stream
    with Detector.load(
        model_dir, f"sqlite:///{tmp_path}/ttl.db", ttl_seconds=3600, clock="data"
    ) as d:
        assert d.store.ttl == 3600
        d.score(txs[0])
    with pytest.raises(FraudseqError, match="ttl_seconds"):
        Detector.load(model_dir, MemoryStore(), ttl_seconds=10)
    with pytest.raises(FraudseqError, match="min_history"):
        Detector.load(model_dir, min_history=-1)


def test_stored_results_without_the_out_of_order_flag_get_it_from_their_record(
    model_dir, stream, tmp_path
):
    """Records stored before results carried out_of_order and history (when a late
    transaction was never inserted): a retry (one at a time or in a batch) reports them from
    the record's `inserted` field, true exactly for an in-order one."""
    import sqlite3

    txs, _ = stream
    account = txs[0]["card_id"]
    own = [tx for tx in txs if tx["card_id"] == account][:4]
    late = {**own[1], "tx_id": "LATE"}
    url = f"sqlite:///{tmp_path}/old.db"
    with Detector.load(model_dir, url, clock="data") as detector:
        detector.explain = "none"
        first = [detector.score(tx) for tx in [*own, late]]
    assert [r["out_of_order"] for r in first] == [False] * 4 + [True]
    with sqlite3.connect(tmp_path / "old.db") as db:  # as an older fraudseq wrote them
        db.execute(
            "UPDATE transactions SET record = json_remove(record, '$.result.out_of_order', "
            "'$.result.history')"
        )
        db.execute(
            "UPDATE transactions SET inserted = 0, record = json_set(record, '$.inserted', "
            "json('false')) WHERE id = 'LATE'"
        )
    db.close()
    first[-1]["history"] = "not_inserted"  # what older versions did with a late one
    with Detector.load(model_dir, url, clock="data") as detector:
        assert "out_of_order" not in detector.store.record("LATE")["result"]
        assert detector.score(late) == first[-1]
        assert list(detector.score(late)) == list(first[-1])  # the keys in their order
        assert detector.score(own[0]) == first[0]
        assert detector.score_batch([*own, late]) == first
        assert detector.counts["replayed"] == 8 and detector.counts["scored"] == 0
