"""Live (one transaction at a time) features against the batch FeatureEncoder."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import DataValidationError, FraudseqError
from fraudseq.features import BLOCKS as FEATURE_BLOCKS
from fraudseq.features import FeatureEncoder
from fraudseq.features.blocks.exposure import ExposureBook
from fraudseq.schema import STREAM_KEY, Schema, entity_key, load_transactions, numeric_times
from fraudseq.serving.live_features import (
    LATE_ROWS,
    VELOCITY_CAP,
    AccountState,
    LiveEncoder,
)
from fraudseq.transaction import parse_transaction
from fraudseq.transaction import request_columns as _request_columns

SCHEMA = Schema.simulator()
EXTRA = Schema.from_dict({**SCHEMA.to_dict(), "numeric": ["risk"]})
NO_CP = Schema.from_dict({k: v for k, v in SCHEMA.to_dict().items() if k != "counterparty"})


def _awkward(small_frame: pd.DataFrame, accounts: int = 90) -> pd.DataFrame:
    """A slice of the simulator data with refunds, equal timestamps, a numeric column with
    missing values and missing categorical values."""
    keep = sorted(small_frame["card_id"].unique())[:accounts]
    frame = small_frame[small_frame["card_id"].isin(keep)].reset_index(drop=True).copy()
    rng = np.random.default_rng(0)
    n = len(frame)
    frame.loc[rng.random(n) < 0.03, "amount"] *= -1
    frame.loc[rng.random(n) < 0.02, "amount"] = 0.0
    frame["risk"] = np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n))
    frame.loc[rng.random(n) < 0.02, "country"] = None
    # Ties: some transactions get the previous transaction's timestamp of the same card.
    frame = frame.sort_values(["card_id", "ts"], kind="stable").reset_index(drop=True)
    tie = (rng.random(n) < 0.05) & (frame["card_id"] == frame["card_id"].shift()).to_numpy()
    frame.loc[tie, "ts"] = frame["ts"].shift()[tie]
    frame = frame.sort_values("ts", kind="stable").reset_index(drop=True)
    # Late extreme values, which would overflow float32 features unless clipped.
    late = (np.arange(n) > 0.9 * n) & (rng.random(n) < 0.05)
    frame.loc[late, "amount"] = 9.9e14
    frame.loc[np.roll(late, 1), "risk"] = -1e300
    return frame


def replay(encoder: FeatureEncoder, frame: pd.DataFrame, schema: Schema, window: int = 16):
    """Encode every row of a loaded frame one at a time, in file (time) order, the way the
    Detector does, with labels fed back right after each transaction."""
    live = LiveEncoder(encoder, window)
    accounts: dict[str, bytes] = {}
    buckets: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    book = ExposureBook()
    labels = frame[schema.label].to_numpy()
    numeric = np.zeros((len(frame), encoder.n_numeric), np.float32)
    codes = np.zeros((len(frame), len(schema.categorical)), np.int64)
    raw = np.zeros((len(frame), encoder.n_numeric))
    columns = schema.columns(with_label=False)
    for i, row in enumerate(frame[columns].to_dict("records")):
        tx = parse_transaction(row, schema)
        blob = accounts.get(tx.entity)
        account = AccountState.from_bytes(blob) if blob else live.empty_state()
        days = live.counterparty_buckets(tx)
        cp = {}
        if days is not None:
            stored = buckets[tx.counterparty]
            cp = {d: tuple(stored[d]) for d in range(*days) if d in stored}
        totals = None
        if live.exposure:  # the exposure block: the counterparty tables, as a store keeps them
            totals = book.totals(account.visits, tx.bucket, live.delay_buckets)
        features = live.encode(tx, account, cp, totals)
        visit = live.new_visit(account, tx)
        account = live.append(account, tx, features)
        book.add_visit(visit)
        if labels[i] == 1:
            book.apply(live.fraud(account, tx.time_ns))
        accounts[tx.entity] = account.to_bytes()
        if days is not None:
            buckets[tx.counterparty][tx.bucket][0] += 1
            buckets[tx.counterparty][tx.bucket][1] += int(labels[i])
        numeric[i], codes[i] = features.numeric, features.codes
        raw[i] = [features.raw[name] for name in encoder.numeric_names_]
    return numeric, codes, raw, accounts


@pytest.mark.parametrize(
    ("schema", "blocks", "delay"),
    [
        (EXTRA, tuple(FEATURE_BLOCKS), 7),
        (SCHEMA, tuple(FEATURE_BLOCKS), 0.5),
        (NO_CP, ("event", "recency", "velocity"), 7),
    ],
    ids=["all-blocks+numeric", "half-day-delay", "no-counterparty"],
)
def test_live_features_equal_batch_encoding(small_frame, schema, blocks, delay):
    frame = load_transactions(_awkward(small_frame), schema)
    fit_rows = frame[frame["ts"] < pd.Timestamp("2026-01-25")]
    encoder = FeatureEncoder(schema, blocks=blocks, label_delay_days=delay).fit(fit_rows)
    batch = encoder.transform(frame)
    numeric, codes, raw, _ = replay(encoder, frame, schema)

    rows = batch.order  # sorted position -> frame row
    np.testing.assert_allclose(numeric[rows], batch.numeric, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(codes[rows], batch.categorical)
    batch_raw, _ = encoder._raw_numeric(frame)
    for j, name in enumerate(encoder.numeric_names_):
        np.testing.assert_allclose(
            raw[rows, j], batch_raw[name], rtol=1e-9, atol=1e-9, err_msg=name
        )
    # The features really vary (the comparison is not between constants): every raw feature,
    # and every scaled one whose training range is not a single value (a feature constant in
    # the training rows, here cp_risk_1d, is clipped to that value everywhere).
    assert all(np.unique(batch_raw[name]).size > 1 for name in encoder.numeric_names_)
    varied = encoder.high_ > encoder.low_
    assert varied.sum() >= len(varied) - 1
    assert all(np.unique(batch.numeric[:, j]).size > 1 for j in np.flatnonzero(varied))


def test_state_is_bounded_and_round_trips(small_frame):
    frame = load_transactions(small_frame, SCHEMA).iloc[:200]
    encoder = FeatureEncoder(SCHEMA, blocks=tuple(FEATURE_BLOCKS)).fit(frame)
    live = LiveEncoder(encoder, window=16)
    account = live.empty_state()
    start = pd.Timestamp("2026-01-01").value
    for i in range(VELOCITY_CAP + 100):  # a burst: every event is inside the 7-day window
        tx = parse_transaction(
            {
                "tx_id": f"T{i}",
                "card_id": "C",
                "ts": pd.Timestamp(start + i * 1_000_000_000),
                "amount": 1.0 + i % 7,
                "mcc": str(i % 3),
                "country": "FR",
                "channel": "web",
                "device_id": f"D{i}",
                "merchant_id": "M1",
            },
            SCHEMA,
        )
        features = live.encode(tx, account, {})
        account = live.append(account, tx, features)
    assert account.n == VELOCITY_CAP + 100
    assert len(account.times) == VELOCITY_CAP  # capped
    # The window's K - 1 rows and LATE_ROWS more; the novelty zone 15 events beyond them.
    assert live.rows_kept == 15 + LATE_ROWS and live.zone == live.rows_kept + 15
    rows = live.rows_kept
    assert account.numeric.shape == (rows, encoder.n_numeric) and len(account.ids) == rows
    assert len(account.new_totals) == live.zone == len(account.firsts) // len(SCHEMA.categorical)
    blob = account.to_bytes()
    again = AccountState.from_bytes(blob)
    assert again.to_bytes() == blob
    assert again.n == account.n and again.seen == account.seen and again.ids == account.ids
    np.testing.assert_array_equal(again.numeric, account.numeric)
    assert math.isclose(again.sum_log, account.sum_log)


def test_encoder_with_unknown_features_is_refused(small_frame):
    frame = load_transactions(small_frame, SCHEMA).iloc[:300]
    encoder = FeatureEncoder(SCHEMA, blocks=tuple(FEATURE_BLOCKS)).fit(frame)
    encoder.numeric_names_ = [*encoder.numeric_names_[:-1], "from_the_future"]
    with pytest.raises(FraudseqError, match="from_the_future"):
        LiveEncoder(encoder, 16)


# -- input validation and canonical values -----------------------------------------------
GOOD = {
    "tx_id": "T1",
    "card_id": "C1",
    "ts": "2026-01-05T10:00:00Z",
    "amount": 12.5,
    "mcc": "5411",
    "country": "FR",
    "channel": "web",
    "device_id": "D1",
    "merchant_id": "M1",
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("amount", float("nan"), "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", float("inf"), "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", "12,50", "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", None, "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", True, "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", [1], "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", 1e300, "'amount': missing, non-numeric, infinite or out-of-range"),
        ("amount", -1e15, "'amount': missing, non-numeric, infinite or out-of-range"),
        ("ts", "yesterday-ish", "'ts': missing or unparseable timestamp"),
        ("ts", "now", "'ts': missing or unparseable timestamp"),
        ("ts", None, "'ts': missing or unparseable timestamp"),
        ("ts", "3000-01-01", "'ts': missing or unparseable timestamp"),
        ("ts", [2026], "'ts': missing or unparseable timestamp"),
        ("tx_id", None, "'tx_id': missing transaction id"),
        ("tx_id", 1.5, "'tx_id': the transaction id must be text or an integer"),
        ("card_id", "  ", "'card_id': missing entity"),
        ("card_id", True, "'card_id': a entity cannot be a boolean"),
        ("mcc", {"a": 1}, "'mcc': a categorical value must be text or a number"),
    ],
)
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(DataValidationError, match=message.replace("(", r"\(")):
        parse_transaction({**GOOD, field: value}, SCHEMA)


def test_missing_field_and_wrong_container():
    tx = dict(GOOD)
    del tx["device_id"]
    with pytest.raises(DataValidationError, match="missing field 'device_id' \\(categorical\\)"):
        parse_transaction(tx, SCHEMA)
    with pytest.raises(DataValidationError, match="must be a JSON object"):
        parse_transaction([GOOD], SCHEMA)
    with pytest.raises(DataValidationError, match="'risk': non-numeric or infinite"):
        parse_transaction({**GOOD, "risk": "high"}, EXTRA)


def test_values_are_canonicalised_like_load_transactions():
    rows = [
        {**GOOD, "tx_id": 7, "card_id": 42.0, "mcc": 5411, "country": None, "amount": "3.5"},
        {**GOOD, "tx_id": "T2", "ts": "2026-01-05T12:00:00+02:00", "mcc": 5411.0, "channel": ""},
        {**GOOD, "tx_id": "T3", "ts": datetime(2026, 1, 5, 10, tzinfo=UTC), "device_id": "007"},
        {**GOOD, "tx_id": "T4", "ts": pd.Timestamp("2026-01-05 10:00:00.123456789")},
        {**GOOD, "tx_id": "T5", "merchant_id": float("nan")},
    ]
    for row in rows:
        loaded = load_transactions(pd.DataFrame([row]), SCHEMA).iloc[0]
        tx = parse_transaction(row, SCHEMA)
        assert tx.id == loaded["tx_id"] and tx.entity == loaded["card_id"]
        assert tx.time_ns == loaded["ts"].value
        assert tx.amount == loaded["amount"]
        assert list(tx.categorical) == [loaded[c] for c in SCHEMA.categorical]
        assert tx.counterparty == loaded["merchant_id"]
    assert parse_transaction(rows[1], SCHEMA).time_ns == parse_transaction(GOOD, SCHEMA).time_ns
    # The content digest ignores how a value was written, not what it is.
    assert parse_transaction(rows[1], SCHEMA).digest != parse_transaction(GOOD, SCHEMA).digest
    same = {**GOOD, "ts": "2026-01-05 10:00:00", "amount": "12.5", "is_fraud": 1}
    assert parse_transaction(same, SCHEMA).digest == parse_transaction(GOOD, SCHEMA).digest


# -- every shape of data: request fields, entity keys, numeric times ---------------------
NO_ID = Schema(entity="card_id", time="ts", amount="amount", categorical=("mcc",))
STREAM = Schema(id="tx_id", time="ts", amount="amount", numeric=("risk",))
COMPOSITE = Schema(id="tx_id", entity=("card1", "addr1"), time="ts", amount="amount")
HOURS = Schema(id="tx_id", entity="card_id", time="step", amount="amount", time_unit="h",
               time_origin="2026-01-01")  # fmt: skip


def test_request_fields_follow_the_schema_shape():
    """The id under `schema.id_column` (transaction_id without an id column), each source
    column of the entity (none for one stream), then the other roles."""
    assert _request_columns(SCHEMA) == (
        "tx_id", "card_id", "ts", "amount", *SCHEMA.categorical,
    )  # fmt: skip
    assert _request_columns(NO_ID) == ("transaction_id", "card_id", "ts", "amount", "mcc")
    assert _request_columns(STREAM) == ("tx_id", "ts", "amount", "risk")
    assert _request_columns(COMPOSITE) == ("tx_id", "card1", "addr1", "ts", "amount")
    assert _request_columns(HOURS) == ("tx_id", "card_id", "step", "amount")
    with pytest.raises(DataValidationError, match="missing field 'addr1' \\(entity\\)"):
        parse_transaction({"tx_id": "T1", "card1": "C", "ts": GOOD["ts"], "amount": 1.0}, COMPOSITE)
    with pytest.raises(DataValidationError, match="missing field 'transaction_id' \\(id\\)"):
        parse_transaction({k: v for k, v in GOOD.items() if k != "tx_id"}, NO_ID)


def test_each_shape_reads_ids_and_entities_like_load_transactions():
    base = {"ts": "2026-01-05T10:00:00", "amount": 5.0}
    no_id = parse_transaction({**base, "transaction_id": 17, "card_id": 42, "mcc": 1}, NO_ID)
    assert (no_id.id, no_id.entity, no_id.categorical) == ("17", "42", ("1",))
    stream = parse_transaction({**base, "tx_id": "S1", "risk": None}, STREAM)
    assert stream.entity == STREAM_KEY == "all" and math.isnan(stream.numeric[0])
    # Composite keys: integer and text parts, a missing part "<NA>", separators escaped.
    rows = [
        {"tx_id": "A", "card1": 1234, "addr1": 315},
        {"tx_id": "B", "card1": "1234", "addr1": None},
        {"tx_id": "C", "card1": "x|y", "addr1": ""},
        {"tx_id": "D", "card1": None, "addr1": "a\\b"},
        {"tx_id": "E", "card1": 77, "addr1": "<NA>"},
    ]
    loaded = load_transactions(pd.DataFrame([{**base, **row} for row in rows]), COMPOSITE)
    for row, expected in zip(rows, loaded[COMPOSITE.entity_column], strict=True):
        assert parse_transaction({**base, **row}, COMPOSITE).entity == expected
    keys = [parse_transaction({**base, **row}, COMPOSITE).entity for row in rows]
    assert keys[:2] == [entity_key(["1234", "315"]), "1234|<NA>"] and len(set(keys)) == 5
    # Every part missing: an error, in files and live alike.
    empty = {**base, "tx_id": "F", "card1": None, "addr1": "  "}
    with pytest.raises(DataValidationError, match="every part of the entity key card1 \\+ addr1"):
        parse_transaction(empty, COMPOSITE)
    with pytest.raises(DataValidationError, match="every part of the entity key"):
        load_transactions(pd.DataFrame([empty]), COMPOSITE)
    # Ids: booleans, fractions and blanks are refused, integers are their digits.
    for bad in (True, 1.5, " ", None):
        with pytest.raises(DataValidationError, match="'tx_id'"):
            parse_transaction({**GOOD, "tx_id": bad}, SCHEMA)
    assert parse_transaction({**GOOD, "tx_id": 123}, SCHEMA).id == "123"


@pytest.mark.parametrize(
    ("unit", "origin", "values"),
    [
        ("h", "2026-01-01", [0, 1, 36, 743, 0.5, -2]),
        ("s", "1970-01-01", [1767607200, 1767607200.25, 0]),
        ("ms", "2017-12-01T00:00:00+01:00", [86_400_000, 1.5]),
    ],
)
def test_numeric_times_use_the_time_table_as_files_do(unit, origin, values):
    schema = Schema(**{**HOURS.to_dict(), "time": "ts"}, time_unit=unit, time_origin=origin)
    frame = pd.DataFrame({**GOOD, "tx_id": f"T{i}", "ts": v} for i, v in enumerate(values))
    loaded = load_transactions(frame, schema).set_index("tx_id")
    expected, _ = numeric_times(np.array(values, dtype=float), unit, origin)
    for i, value in enumerate(values):
        tx = parse_transaction({**GOOD, "tx_id": f"T{i}", "ts": value}, schema)
        assert tx.time_ns == loaded.loc[f"T{i}", "ts"].value == expected[i].astype(np.int64)
    # An ISO string is still a time; a number out of range is not.
    iso = parse_transaction({**GOOD, "ts": "2026-01-05T10:00:00Z"}, schema)
    assert iso.time_ns == parse_transaction(GOOD, SCHEMA).time_ns
    for value in (1e30, 10**400, float("inf")):
        with pytest.raises(DataValidationError, match="'ts': non-finite or out-of-range time"):
            parse_transaction({**GOOD, "ts": value}, schema)


def test_a_number_without_a_time_table_is_refused_naming_the_fix():
    """Files refuse numeric times without [time]; live requests agree (they were read as
    epoch seconds before)."""
    for value in (1767607200, 1767607200.25, np.int64(5)):
        with pytest.raises(DataValidationError, match="'ts': a number is not a time.*\\[time\\]"):
            parse_transaction({**GOOD, "ts": value}, SCHEMA)
    with pytest.raises(DataValidationError, match="\\[time\\]"):
        load_transactions(pd.DataFrame([{**GOOD, "ts": 1767607200}]), SCHEMA)
