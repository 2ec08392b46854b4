"""Vectorised `Detector.score_batch` against `score` one transaction at a time: the same
results (probabilities to 1e-6) for every model family, with several transactions per
account in a batch, retried and repeated ids, out-of-order arrivals and conflicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudseq.features.state import decode_states, encode_states
from fraudseq.models import MODELS
from fraudseq.serving import AccountState, ConflictError, Detector
from fraudseq.transaction import parse_batch, parse_transaction
from fraudseq.transaction import request_columns as _request_columns
from test_detector import RESULT_FIELDS
from test_state import accounts_slice, make_model_dir, transactions

TOLERANCE = 1e-6
# Compared exactly; the probability, score and reasons are compared below with tolerances.
EXACT = sorted(RESULT_FIELDS - {"fraud_probability", "score", "reasons"})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stream(small_frame):
    """12 accounts over 40 days, time ordered (about 900 transactions)."""
    return transactions(accounts_slice(small_frame, 200, 12))


def assert_same(batch: list[dict], single: list[dict]) -> None:
    assert len(batch) == len(single)
    for got, expected in zip(batch, single, strict=True):
        assert {k: got[k] for k in EXACT} == {k: expected[k] for k in EXACT}
        assert abs(got["fraud_probability"] - expected["fraud_probability"]) <= TOLERANCE
        assert abs(got["score"] - expected["score"]) <= 0.01 + 1e-9
        assert [_reason_key(r) for r in got["reasons"]] == [
            _reason_key(r) for r in expected["reasons"]
        ]
        for a, b in zip(got["reasons"], expected["reasons"], strict=True):
            assert a["attribution"] == pytest.approx(b["attribution"], abs=1e-4)


def _reason_key(reason: dict):
    return reason["kind"], reason.get("transaction_id"), reason.get("feature")


def replay_both(model_dir, txs, labels, size, state_one="memory", state_many="memory"):
    """Score in chunks of `size`: one at a time on one detector, score_batch on the other;
    labels of a chunk are fed back to both after it. Each chunk also carries a retry of
    the previous chunk's first transaction and a repeat of its own first one."""
    single, batch = [], []
    with (
        Detector.load(model_dir, state_one, clock="data") as one,
        Detector.load(model_dir, state_many, clock="data") as many,
    ):
        for detector in (one, many):
            detector.explain = "alerts"
            detector.threshold = float(np.quantile(_probe(model_dir, txs), 0.9))
        previous = None
        for start in range(0, len(txs), size):
            chunk = txs[start : start + size]
            extra = [chunk[0]] + ([previous] if previous is not None else [])
            mixed = chunk[: len(chunk) // 2] + extra + chunk[len(chunk) // 2 :]
            single.extend(one.score(tx) for tx in mixed)
            batch.extend(many.score_batch(mixed))
            for tx, label in zip(chunk, labels[start : start + size], strict=True):
                one.feedback(tx["tx_id"], label)
                many.feedback(tx["tx_id"], label)
            previous = chunk[-1]
        states = {tx["card_id"] for tx in txs}
        for entity in states:
            a = AccountState.from_bytes(one.store.account(entity))
            b = AccountState.from_bytes(many.store.account(entity))
            assert (a.n, a.last_time, a.ids, a.times, a.new_totals) == (
                b.n,
                b.last_time,
                b.ids,
                b.times,
                b.new_totals,
            )
            assert a.sum_log == pytest.approx(b.sum_log, rel=1e-12)
            assert np.allclose(a.amounts, b.amounts) and np.array_equal(a.codes, b.codes)
            assert np.allclose(a.numeric, b.numeric, atol=1e-6)
            assert [list(s) for s in a.seen] == [list(s) for s in b.seen]
        for tx in txs[:50]:
            assert (
                one.store.record(tx["tx_id"])["inserted"]
                == many.store.record(tx["tx_id"])["inserted"]
            )
    return batch, single


_PROBES: dict = {}


def _probe(model_dir, txs) -> list[float]:
    """Probabilities of the stream (to put the threshold where some alerts get reasons)."""
    key = str(model_dir)
    if key not in _PROBES:
        with Detector.load(model_dir, clock="data") as detector:
            detector.explain = "none"
            _PROBES[key] = [r["fraud_probability"] for r in detector.score_batch(txs)]
    return _PROBES[key]


@pytest.mark.parametrize("model_name", MODELS)
def test_score_batch_equals_score_for_every_model(model_name, small_frame, stream, tmp_path):
    txs, labels = stream
    model_dir = make_model_dir(small_frame, tmp_path / model_name, model_name)
    batch, single = replay_both(model_dir, txs, labels, size=97)
    assert_same(batch, single)
    assert sum(r["alert"] for r in single) > 10 and any(r["reasons"] for r in single)


@pytest.fixture(scope="module")
def model_dir(tiny_lstm_dir):
    return tiny_lstm_dir


def test_sqlite_and_one_big_batch(model_dir, stream, tmp_path):
    """SQLite state, batches spanning many days (counterparty counts of earlier days in the
    same batch are seen after the label delay), and batches larger than the stream's
    accounts."""
    txs, labels = stream
    batch, single = replay_both(
        model_dir, txs, labels, size=400, state_many=f"sqlite:///{tmp_path}/many.db"
    )
    assert_same(batch, single)


def test_out_of_order_and_repeats_in_one_batch(model_dir, stream):
    txs, _ = stream
    account = txs[0]["card_id"]
    own = [tx for tx in txs if tx["card_id"] == account][:10]
    before_5 = (pd.Timestamp(own[5]["ts"]) - pd.Timedelta(hours=1)).isoformat()
    late = {**own[4], "tx_id": "LATE", "amount": 999.0, "ts": before_5}  # older than own[5]
    dropped = {**own[0], "tx_id": "DROPPED"}  # days older than own[5]: too late to insert
    sequence = own[:6] + [late, own[6], late, own[1], dropped] + own[7:] + [txs[1], txs[2]]
    # One sparse account: days between transactions, more than a "data" clock's 1 day of
    # skew allows; a fixed clock at the end of the data (February 2026) accepts them all.
    with (
        Detector.load(model_dir, clock="2026-02-10") as one,
        Detector.load(model_dir, clock="2026-02-10") as many,
    ):
        one.explain = many.explain = "none"
        single = [one.score(tx) for tx in sequence]
        batch = many.score_batch(sequence)
        assert_same(batch, single)
        # LATE is older than own[5], scored earlier in the same batch: out of order and
        # inserted in time order, and so is its repeat (the first's result); own[1] again is
        # a retry of an in-order one; DROPPED is too late to insert.
        assert pd.Timestamp(own[4]["ts"]) < pd.Timestamp(before_5)
        assert pd.Timestamp(own[6]["ts"]) - pd.Timestamp(own[0]["ts"]) > pd.Timedelta(days=1)
        late_flags = [True, False, True, False, True] + [False] * (len(sequence) - 11)
        assert [r["out_of_order"] for r in batch] == [False] * 6 + late_flags
        assert [r["history"] for r in batch[6:11]] == [
            "inserted", "appended", "inserted", "appended", "not_inserted"
        ]  # fmt: skip
        assert many.store.record("LATE")["inserted"] is True
        assert many.store.record("DROPPED")["inserted"] is False
        assert many.store.account(account) == one.store.account(account)
        assert AccountState.from_bytes(many.store.account(account)).n == len(own) + 1
        # the repeated LATE and own[1] are replays, counted alike one by one or in a batch
        assert one.counts == many.counts
        assert many.counts["replayed"] == 2 and many.counts["inserted"] == 1
        assert many.counts["not_inserted"] == 1
        assert many.counts["scored"] == len(sequence) - 2
        assert many.counts["alerts"] == sum(r["alert"] for r in single[:8] + single[10:])


def test_conflicts_write_nothing(model_dir, stream):
    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        detector.explain = "none"
        first = detector.score_batch(txs[:5])
        changed = {**txs[0], "amount": txs[0]["amount"] + 1}
        with pytest.raises(ConflictError, match="different content"):
            detector.score_batch([txs[5], changed, txs[6]])
        with pytest.raises(ConflictError, match="different content"):
            detector.score_batch([txs[5], {**txs[5], "amount": 1.0}])
        assert detector.store.record(txs[5]["tx_id"]) is None  # nothing was written
        assert detector.score_batch(txs[:5]) == first  # retries: the stored results
        assert detector.score_batch([]) == []


def test_state_table_bytes_round_trip(model_dir, stream):
    """decode_states / encode_states read and write AccountState bytes, byte for byte."""
    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        for tx in txs[:60]:
            detector.score(tx)
        entities = sorted({tx["card_id"] for tx in txs[:60]})
        blobs = [detector.store.account(e) for e in entities]
        blobs.append(detector.live.empty_state().to_bytes())
        assert encode_states(decode_states(blobs, detector.live), detector.live) == blobs


def test_parse_batch_equals_parse_transaction(model_dir, stream):
    """The column-at-a-time parser gives parse_transaction's values and digests, for the
    common case and for inputs that need the row-by-row path."""
    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        schema = detector.schema
    variants = [
        dict(txs[0], ts=txs[0]["ts"] + "Z"),
        dict(txs[1], ts=txs[1]["ts"].replace("T", " ") + "+02:00", amount=12),
        dict(txs[2], ts=txs[2]["ts"] + ".123456", mcc=5411, country=None),
        dict(txs[3], ts=txs[3]["ts"] + "-0530", channel="  ", device_id=3.0),
        dict(txs[4], card_id=77),  # an integer entity: row by row
        dict(txs[5], tx_id=123),
    ]
    for batch in (txs[:50], variants[:4], variants):
        columns = parse_batch(batch, schema)
        expected = [parse_transaction(tx, schema) for tx in batch]
        assert [columns.row(i) for i in range(len(batch))] == expected
    with pytest.raises(Exception, match="position 1: .*'amount'"):
        parse_batch([txs[0], dict(txs[1], amount=float("inf"))], schema)
    with pytest.raises(Exception, match="position 2: .*'ts': a number is not a time"):
        parse_batch([txs[0], txs[1], dict(txs[2], ts=1767225600.5)], schema)


def test_parse_batch_equals_parse_transaction_for_every_shape():
    """Without an id column, one stream, a composite key, numeric times with a [time]
    table and numeric columns: the column parser (used, not the row parser) gives
    parse_transaction's values and digests; an invalid row is named by the row parser."""
    from fraudseq.schema import Schema
    from fraudseq.transaction import _fast_columns, request_entity

    shapes = {
        "no id": Schema(entity="card_id", time="ts", amount="amount", categorical=("mcc",)),
        "one stream": Schema(id="tx_id", time="ts", amount="amount", numeric=("v1", "v2")),
        "composite": Schema(
            id="tx_id", entity=("card1", "addr1"), time="ts", amount="amount",
            counterparty="merchant",
        ),
        "hours": Schema(
            id="tx_id", entity="card_id", time="step", amount="amount", time_unit="h",
            time_origin="2026-01-01",
        ),
    }  # fmt: skip
    rows = [
        {"tx_id": f"T{i}", "transaction_id": str(i), "card_id": f"C{i % 3}", "mcc": 5411,
         "ts": f"2026-01-0{1 + i % 5}T10:00:00Z", "step": [0, 1.5, 36, 7, 743][i % 5],
         "amount": 10.0 * i - 5, "v1": [0.5, None, 3, float("nan"), -1e300][i % 5], "v2": i,
         "card1": ["1", "2", "3", "2", "1"][i % 5], "addr1": [None, "315", "", "7", 12][i % 5],
         "merchant": None if i % 4 else "M"}
        for i in range(10)
    ]  # fmt: skip
    for name, schema in shapes.items():
        batch = [{c: row[c] for c in _request_columns(schema)} for row in rows]
        assert _fast_columns(batch, schema) is not None, name
        columns = parse_batch(batch, schema)
        assert [columns.row(i) for i in range(len(batch))] == [
            parse_transaction(tx, schema) for tx in batch
        ], name
        # The producer side's entity key (consume partitions) is the parsed one.
        assert [request_entity(tx, schema) for tx in batch] == [
            parse_transaction(tx, schema).entity for tx in batch
        ], name
    composite = [{c: row[c] for c in _request_columns(shapes["composite"])} for row in rows]
    composite[3] = {**composite[3], "card1": None, "addr1": " "}
    with pytest.raises(Exception, match="position 3: .*every part of the entity key"):
        parse_batch(composite, shapes["composite"])
    hours = [{c: row[c] for c in _request_columns(shapes["hours"])} for row in rows]
    with pytest.raises(Exception, match="position 1: .*'step': non-finite or out-of-range"):
        parse_batch([hours[0], {**hours[1], "step": 1e30}], shapes["hours"])


def test_reasons_equal_the_explanations_module(model_dir, stream):
    """The Detector's occlusion reasons are `fraudseq.explain.top_reasons` of the window
    scored (same events and features, same attributions, same descriptions)."""
    import pandas as pd

    explain = pytest.importorskip("fraudseq.explain")
    from fraudseq.features import EncodedFrame
    from fraudseq.transaction import parse_transaction

    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        detector.explain = "all"
        schema, live = detector.schema, detector.live
        checked = 0
        for tx in txs[:80]:
            parsed = parse_transaction(tx, schema)
            blob = detector.store.account(parsed.entity)
            account = AccountState.from_bytes(blob) if blob else live.empty_state()
            days = detector.store.counterparty_buckets(parsed.counterparty)
            numeric, codes = live.window_rows(account, live.encode(parsed, account, days))
            result = detector.score(tx)
            n, earlier = len(numeric), len(numeric) - 1
            frame = pd.DataFrame(
                {
                    schema.id: [*account.ids[len(account.ids) - earlier :], parsed.id][-n:],
                    schema.entity: [parsed.entity] * n,
                    schema.time: pd.to_datetime(
                        np.array(
                            [*account.times[len(account.times) - earlier :], parsed.time_ns][-n:],
                            dtype="datetime64[ns]",
                        )
                    ),
                    schema.amount: [
                        *account.amounts[len(account.amounts) - earlier :],
                        parsed.amount,
                    ][-n:],
                    **{c: [None] * earlier + [parsed.categorical[j]] for j, c in enumerate(
                        schema.categorical
                    )},
                }
            )  # fmt: skip
            if schema.counterparty not in frame:
                frame[schema.counterparty] = [None] * earlier + [parsed.counterparty]
            encoded = EncodedFrame(numeric, codes, np.arange(n), np.zeros(n, dtype=np.int64))
            reference = explain.explain_rows(detector.model, frame, encoded, np.array([n - 1]))
            expected = explain.top_reasons(reference[0])
            got = result["reasons"]
            assert [_reason_key(r) for r in got] == [_reason_key(r) for r in expected]
            for a, b in zip(got, expected, strict=True):
                assert a["attribution"] == pytest.approx(b["attribution"], abs=1e-5)
                assert a["description"] == b["description"]
                assert {k: v for k, v in a.items() if k != "attribution"} == pytest.approx(
                    {k: v for k, v in b.items() if k != "attribution"}
                )
            checked += bool(got)
        assert checked > 10


def test_record_json_is_the_records_json():
    import json

    from fraudseq.serving.detector import record_json
    from fraudseq.serving.stores.base import dumps

    result = {
        "fraud_probability": 0.123456789012345,
        "score": 12.35,
        "alert": True,
        "threshold": 0.1,
        "insufficient_history": False,
        "out_of_order": False,
        "history": "appended",
        "model_version": 'v"1\u00e9',
        "reasons": [{"kind": "feature", "feature": "amount", "value": 1e-7, "attribution": 2.5}],
    }
    for entity, cp, counted in (('C"1\\\u00e9\n', "M\u2603", True), ("C2", None, False)):
        record = {
            "digest": "ab12",
            "entity": entity,
            "time_ns": 1_767_225_600_123_456_000,
            "counterparty": cp if counted else None,
            "day": 1_767_225_600_123_456_000 // 3_600_000_000_000,  # the hour bucket
            "inserted": True,
            "counted": counted,
            "label": None,
            "result": result,
        }
        text = record_json(
            "ab12", entity, record["time_ns"], cp if counted else None, counted, result,
            json.dumps(result["model_version"]),
        )  # fmt: skip
        assert json.loads(text) == record
        assert text == dumps(record)


def test_a_store_without_the_batch_form_scores_one_at_a_time(model_dir, stream):
    """transact_batch is optional: other StateStore implementations still get score_batch."""
    from fraudseq.serving import MemoryStore, StateStore

    class Plain:  # the protocol's methods only
        def __init__(self) -> None:
            self.inner = MemoryStore()
            self.url = "plain"

        def __getattr__(self, name):
            if name == "transact_batch":
                raise AttributeError(name)
            return getattr(self.inner, name)

        def transact(self, *args):
            return self.inner.transact(*args)

        def label(self, *args):
            return self.inner.label(*args)

        def meta(self, *args):
            return self.inner.meta(*args)

        def account(self, *args):
            return self.inner.account(*args)

        def record(self, *args):
            return self.inner.record(*args)

        def labels(self):
            return self.inner.labels()

        def ping(self):
            return self.inner.ping()

        def close(self):
            self.inner.close()

    txs, _ = stream
    store = Plain()
    assert isinstance(store, StateStore) and not hasattr(store, "transact_batch")
    with (
        Detector.load(model_dir, store, clock="data") as plain,
        Detector.load(model_dir, clock="data") as batch,
    ):
        plain.explain = batch.explain = "none"
        assert_same(plain.score_batch(txs[:40]), batch.score_batch(txs[:40]))


@pytest.mark.parametrize("scale", [1, 10**15])
def test_grouped_searchsorted_is_bisect_right_per_group(scale):
    """Times near the epoch and spans too wide for group * span + value (then ranks)."""
    import bisect

    from fraudseq.features.segments import grouped_searchsorted as _grouped_searchsorted

    rng = np.random.default_rng(scale % 97)
    for _ in range(50):
        groups = int(rng.integers(1, 30))
        sizes = rng.integers(0, 12, groups)
        values = [np.sort(rng.integers(-1000, 1000, n)) * scale for n in sizes]
        flat = np.concatenate(values).astype(np.int64)
        group = np.repeat(np.arange(groups), sizes)
        query_group = rng.integers(0, groups, 40)
        queries = rng.integers(-2000, 2000, 40) * scale
        if len(flat):
            queries[:5] = rng.choice(flat, 5)  # equal to a stored value
        starts = np.concatenate([[0], np.cumsum(sizes)])
        expected = [
            starts[g] + bisect.bisect_right(values[g].tolist(), int(q))
            for g, q in zip(query_group, queries, strict=True)
        ]
        got = _grouped_searchsorted(flat, group, queries, query_group)
        assert got.tolist() == expected


def test_whole_second_iso_times_are_read_a_column_at_a_time():
    """Times that all read YYYY-MM-DDTHH:MM:SS (T or space, optional Z) are checked and
    read as columns (`_iso_seconds`), giving parse_transaction's nanoseconds; any other
    shape, or an impossible date, goes to the general path, which names the row."""
    from fraudseq.schema import Schema
    from fraudseq.transaction import _iso_seconds

    schema = Schema(id="tx_id", entity="card_id", time="ts", amount="amount")
    good = ["2026-01-01T00:00:36", "2024-02-29 23:59:59", "1900-01-01T00:00:00",
            "2099-12-31T23:59:59", "1999-12-31T23:59:59"]  # fmt: skip
    for times in (good, [t + "Z" for t in good]):
        expected = [
            parse_transaction({"tx_id": "T", "card_id": "C", "ts": t, "amount": 1.0}, schema)
            for t in times
        ]
        assert _iso_seconds(times).tolist() == [tx.time_ns for tx in expected]
        batch = [{"tx_id": f"T{i}", "card_id": "C", "ts": t, "amount": 1.0}
                 for i, t in enumerate(times)]  # fmt: skip
        columns = parse_batch(batch, schema)
        assert [columns.row(i).time_ns for i in range(len(times))] == _iso_seconds(times).tolist()
    other = ["2026-13-01T00:00:36", "2026-02-30T00:00:00", "2026-01-01T24:00:00",
             "2026-01-01T23:59:60", "1899-12-31T00:00:00", "2100-01-01T00:00:00",
             "2026-01-01X00:00:00", "2026-01-01T00:00:3a", "2026-01-01T00-00:00",
             " 2026-01-01T00:00:0", "2026-01-01T00:00:00+", "2026-01-01", "2026-01-01T00:00:00\x00",
             "2026-01-01T00:00:36.5", "2026-01-01T00:00:36Y", "२०२६-01-01T00:00:00"]  # fmt: skip
    for bad in other:
        assert _iso_seconds(["2026-01-01T00:00:36", bad]) is None, bad
    assert _iso_seconds(["2026-01-01T00:00:36Z", "2026-01-01T00:00:36"]) is None  # mixed
    batch = [{"tx_id": f"T{i}", "card_id": "C", "ts": t, "amount": 1.0}
             for i, t in enumerate(["2026-01-01T00:00:36", "2026-02-30T00:00:00"])]  # fmt: skip
    with pytest.raises(Exception, match="position 1: .*'ts'"):
        parse_batch(batch, schema)


def test_digests_are_made_when_asked_for(model_dir, stream):
    """The parser leaves the digests to first use: all of them, one of them, or those of
    a part (`take`) are parse_transaction's."""
    txs, _ = stream
    with Detector.load(model_dir, clock="data") as detector:
        schema = detector.schema
    expected = [parse_transaction(tx, schema).digest for tx in txs[:40]]
    columns = parse_batch(txs[:40], schema)
    assert columns._digests is None
    assert [columns.digest(i) for i in (3, 0, 39)] == [expected[i] for i in (3, 0, 39)]
    part = columns.take([5, 1, 7])
    assert part.digests == [expected[i] for i in (5, 1, 7)]
    assert columns.digests == expected
    assert columns.take([2, 9]).digests == [expected[2], expected[9]]


def test_a_retry_with_other_content_in_a_batch_is_a_conflict(model_dir, stream):
    """Digests made only when needed still catch a changed retry, in the same batch and
    against a stored record, with the memory store."""
    txs, _ = stream
    with Detector.load(model_dir, "memory", clock="data") as detector:
        detector.explain = "none"
        first = detector.score_batch(txs[:20])
        assert detector.score_batch(txs[:20]) == first  # retries: the stored results
        changed = dict(txs[3], amount=txs[3]["amount"] + 1)
        with pytest.raises(ConflictError):
            detector.score_batch([*txs[20:25], changed])
        with pytest.raises(ConflictError):
            detector.score_batch([txs[30], dict(txs[30], amount=txs[30]["amount"] + 1)])
        assert detector.score_batch([txs[30], txs[30]]) == [detector.score(txs[30])] * 2


def test_value_tables_give_the_vocabulary_codes_and_hashes(monkeypatch):
    """A batch's categorical codes and hashes come from one look-up per value
    (`ValueTable`): the vocabulary's code (OOV when unknown) and `value_hash`, through new
    values, repeats and a table that starts again when full."""
    from fraudseq.features.encoder import OOV_CODE
    from fraudseq.features.state import value_hash
    from fraudseq.serving.batch import ValueTable

    monkeypatch.setattr(ValueTable, "CAP", 50)
    vocabulary = {f"v{i}": i + 2 for i in range(0, 60, 3)}
    table = ValueTable(vocabulary)
    rng = np.random.default_rng(3)
    largest = 0  # the most distinct values of one batch (a batch's values always fit)
    for size in (0, 1, 30, 200, 5, 40):
        values = [f"v{i}" for i in rng.integers(0, 70, size=size).tolist()]
        codes, hashes = table.lookup(values)
        assert codes.dtype == np.int32 and hashes.dtype == np.uint64
        assert codes.tolist() == [vocabulary.get(v, OOV_CODE) for v in values]
        assert hashes.tolist() == [value_hash(v) for v in values]
        largest = max(largest, len(set(values)))
        assert len(table.index) <= max(ValueTable.CAP, largest)
