"""`fraudseq export-history`: the stores' history log of scored transactions, the labels
sent as feedback with their arrival time, a file `fraudseq train` accepts, and the log's
retention bound."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import FraudseqError
from fraudseq.io import write_table
from fraudseq.schema import Schema, load_transactions
from fraudseq.serving import Detector, open_store
from fraudseq.serving.export_history import LABEL_TIME, export_history, history_table
from fraudseq.serving.stores import History
from fraudseq.transaction import history_frame, parse_batch, parse_transaction
from test_cli import run
from test_state import accounts_slice, transactions

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEMA = Schema.simulator()


@pytest.fixture(scope="module")
def model_dir(tiny_lstm_dir):
    return tiny_lstm_dir


@pytest.fixture(scope="module")
def stream(small_frame):
    return transactions(accounts_slice(small_frame, 150, 12))


@pytest.fixture(scope="module")
def wide(small_frame):
    """60 accounts, with frauds before and in the validation period of the retraining."""
    return transactions(accounts_slice(small_frame, 100, 60))


@pytest.fixture
def redis_state(redis_url):
    url = f"{redis_url}?prefix=fraudseq-test-{uuid.uuid4().hex[:8]}:"
    yield url
    store = open_store(url)
    store.clear()
    store.close()


def serve(detector: Detector, txs: list[dict], labels: list[int]) -> dict[str, int]:
    """Score the first 300 one at a time and the rest in batches of 200 (both paths write
    the log); send feedback for every fraud and every third other transaction. Returns the
    labels sent."""
    for tx in txs[:300]:
        detector.score(tx)
    for start in range(300, len(txs), 200):
        detector.score_batch(txs[start : start + 200])
    sent = {
        tx["tx_id"]: label
        for i, (tx, label) in enumerate(zip(txs, labels, strict=True))
        if label == 1 or i % 3 == 0
    }
    for tx_id, label in sent.items():
        detector.feedback(tx_id, label)
    return sent


def test_the_log_codec_gives_back_the_canonical_transactions(stream):
    txs, _ = stream
    columns = parse_batch(txs[:50], SCHEMA)
    one = parse_transaction(txs[50], SCHEMA)
    frame = history_frame([columns.history_json(), one.history_json()], SCHEMA)
    expected = load_transactions(pd.DataFrame(txs[:51]), SCHEMA)
    pd.testing.assert_frame_equal(frame, expected[frame.columns.tolist()])


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_export_history_is_what_was_scored_and_trains(
    kind, model_dir, wide, tmp_path, monkeypatch, request
):
    txs, labels = wide
    state = (
        f"sqlite:///{tmp_path / 'state.db'}"
        if kind == "sqlite"
        else request.getfixturevalue("redis_state")
    )
    before = time.time()
    with Detector.load(model_dir, state, clock="data") as detector:
        detector.explain = "none"
        sent = serve(detector, txs, labels)
    after = time.time()

    # Every transaction, labels where sent: what was scored, exactly.
    everything = tmp_path / "all.parquet"
    summary = export_history(state, everything, unlabelled="keep")
    assert summary.rows == len(txs) and summary.labelled == len(sent)
    got = pd.read_parquet(everything)
    scored = load_transactions(pd.DataFrame(txs), SCHEMA)
    assert got.columns.tolist() == [
        *SCHEMA.source_columns(with_label=True)[:4],
        "is_fraud",
        LABEL_TIME,
        *SCHEMA.source_columns(with_label=True)[5:-1],
    ]
    pd.testing.assert_frame_equal(
        got[scored.columns].astype({"tx_id": "str", "card_id": "str"}), scored, check_dtype=False
    )
    by_id = got.set_index("tx_id")
    label_sent = pd.Series(sent, dtype="float64")
    np.testing.assert_array_equal(by_id["is_fraud"].reindex(label_sent.index), label_sent)
    assert by_id["is_fraud"].drop(label_sent.index).isna().all()
    arrived = by_id[LABEL_TIME].reindex(label_sent.index)
    assert arrived.notna().all() and by_id[LABEL_TIME].drop(label_sent.index).isna().all()
    seconds = arrived.to_numpy().astype("datetime64[ns]").view(np.int64) / 1e9
    assert (seconds >= before - 1).all() and (seconds <= after + 1).all()

    # The default (mature): a file `fraudseq train` accepts with the model's schema.
    data = tmp_path / "history.csv"
    code = run(monkeypatch, "export-history", state, "--out", data, "--model", model_dir)
    assert code == 0
    exported = load_transactions(data, SCHEMA, require_label=True)
    newest = scored["ts"].max()
    recent = scored["ts"] >= newest - pd.Timedelta(days=7)  # the tiny model's label delay
    unlabelled = ~scored["tx_id"].isin(list(sent))
    assert set(exported["tx_id"]) == set(scored["tx_id"][~(recent & unlabelled)])
    assert (exported.set_index("tx_id")["is_fraud"].reindex(label_sent.index) == label_sent).all()
    challenger = tmp_path / "challenger"
    code = run(
        monkeypatch, "train", data, "--schema", "schemas/simulator.toml", "--out", challenger,
        "--model", "xgboost", "--train-until", "2026-01-26", "--valid-days", 5, "--seed", 1,
    )  # fmt: skip
    assert code == 0 and (challenger / "model.json").is_file()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_retention_bound_drops_old_transactions(kind, model_dir, stream, tmp_path):
    txs, _ = stream
    state = "memory" if kind == "memory" else f"sqlite:///{tmp_path / 'state.db'}"
    with Detector.load(model_dir, state, clock="data", history_days=5) as detector:
        detector.explain = "none"
        for tx in txs:
            detector.score(tx)
        assert detector.store.history_buckets == 5 * 24
        detector.store.purge()
        kept = history_frame(detector.store.history().entries, SCHEMA)
        clock_bucket = detector.clock.now_ns() // 3_600_000_000_000
        written = export_history(detector.store, tmp_path / "kept.csv", unlabelled="keep")
        assert written.rows == len(kept)
    buckets = kept["ts"].to_numpy().view(np.int64) // 3_600_000_000_000
    assert 0 < len(kept) < len(txs)
    assert (buckets >= clock_bucket - 5 * 24).all()
    scored = load_transactions(pd.DataFrame(txs), SCHEMA)
    within = scored["ts"].to_numpy().view(np.int64) // 3_600_000_000_000 >= clock_bucket - 120
    assert set(kept["tx_id"]) == set(scored["tx_id"][within])


def test_redis_log_is_pruned_on_commit(model_dir, stream, redis_state):
    txs, _ = stream
    with Detector.load(model_dir, redis_state, clock="data", history_days=5) as detector:
        detector.explain = "none"
        detector.score_batch(txs[: len(txs) // 2])
        for tx in txs[len(txs) // 2 :]:
            # The last commit prunes by the clock before its transaction is accepted.
            limit = detector.clock.now_ns() // 3_600_000_000_000 - 5 * 24
            detector.score(tx)
        kept = history_frame(detector.store.history().entries, SCHEMA)
    buckets = kept["ts"].to_numpy().view(np.int64) // 3_600_000_000_000
    assert 0 < len(kept) < len(txs) and (buckets >= limit).all()


def test_no_log_and_bad_inputs_are_clear_errors(model_dir, stream, tmp_path, monkeypatch):
    txs, _ = stream
    state = f"sqlite:///{tmp_path / 'state.db'}"
    with Detector.load(model_dir, state, clock="data", history_days=0) as detector:
        detector.explain = "none"
        detector.score(txs[0])
    with pytest.raises(FraudseqError, match="no history log"):
        export_history(state, tmp_path / "out.csv")
    with pytest.raises(FraudseqError, match="no such SQLite state file"):
        export_history(f"sqlite:///{tmp_path / 'absent.db'}", tmp_path / "out.csv")
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(FraudseqError, match="lives only in the process"):
        export_history("memory", tmp_path / "out.csv")
    code = run(monkeypatch, "export-history", state, "--out", tmp_path / "state.db")
    assert code != 0 and (tmp_path / "state.db").stat().st_size > 0


def test_composite_entity_and_numeric_time_are_written_as_their_columns(tmp_path):
    """A file of a schema with a composite entity (parts holding the separator, a missing
    part) and a numeric time reads back into the same canonical transactions."""
    schema = Schema(
        id="id", entity=("card", "addr"), time="t", amount="amount", label="y",
        categorical=("mcc",), numeric=("x",), time_unit="s", time_origin="2026-01-01",
    )  # fmt: skip
    txs = [
        {"id": "a", "card": "C|1", "addr": "A\\1", "t": 10, "amount": 1.5, "mcc": "5411", "x": 2},
        {"id": "b", "card": "C|1", "addr": None, "t": 3600, "amount": -2.0, "mcc": None, "x": None},
        {"id": "c", "card": "C2", "addr": "A2", "t": 7200.5, "amount": 3.0, "mcc": "1", "x": 1},
    ]
    entries = [
        parse_batch(txs[:2], schema).history_json(),
        parse_transaction(txs[2], schema).history_json(),
    ]
    history = History(entries, {"a": 1, "c": 0}, {"a": 1.7e9, "c": 1.7e9 + 1}, {})
    frame, counts = history_table(history, schema, label_delay_days=0, unlabelled="drop")
    assert counts["labelled"] == 2 and counts["left_out"] == 1
    path = tmp_path / "out.csv"
    write_table(frame, path)
    got = load_transactions(path, schema, require_label=True)
    expected = load_transactions(pd.DataFrame([txs[0], txs[2]]).assign(y=[1, 0]), schema)
    pd.testing.assert_frame_equal(got, expected)
    assert pd.read_csv(path)[LABEL_TIME].notna().all()
