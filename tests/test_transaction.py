"""The canonical transaction: files and requests share one range of valid times."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import DataValidationError
from fraudseq.schema import (
    EARLIEST_TIME,
    LATEST_TIME,
    MISSING_CATEGORY,
    TIME_YEARS,
    Schema,
    load_transactions,
)
from fraudseq.transaction import parse_batch, parse_transaction

ISO = Schema(id="tx_id", entity="card_id", time="ts", amount="amount")
SECONDS = replace(ISO, time_unit="s", time_origin="1970-01-01")
NS_PER_SECOND = 1_000_000_000

#: Times just outside EARLIEST_TIME..LATEST_TIME (naive UTC after converting the offset).
OUTSIDE = [
    (ISO, "1677-12-31T23:59:59.999999999"),
    (ISO, "1678-01-01T00:30:00+01:00"),  # 1677-12-31T23:30 in UTC
    (ISO, "2262-01-01T00:00:00"),
    (ISO, "2261-12-31T23:30:00-01:00"),  # 2262-01-01T00:30 in UTC
    (ISO, "1500-01-01"),  # far out: a file once read it as 2084 (ns overflow)
    (SECONDS, EARLIEST_TIME.value // NS_PER_SECOND - 1),
    (SECONDS, LATEST_TIME.value // NS_PER_SECOND + 1),
]
#: Times just inside, with their nanoseconds since the epoch.
INSIDE = [
    (ISO, "1678-01-01T00:00:00", EARLIEST_TIME.value),
    (ISO, "1678-01-01T01:00:00+01:00", EARLIEST_TIME.value),
    (ISO, "2261-12-31T23:59:59.999999999", LATEST_TIME.value),
    (SECONDS, EARLIEST_TIME.value // NS_PER_SECOND, EARLIEST_TIME.value),
    (SECONDS, LATEST_TIME.value // NS_PER_SECOND, LATEST_TIME.floor("s").value),
]


def _request(ts) -> dict:
    return {"tx_id": "T1", "card_id": "C1", "ts": ts, "amount": 1.0}


def _file(tmp_path, ts) -> str:
    path = tmp_path / "tx.csv"
    pd.DataFrame([_request(ts)]).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(("schema", "ts"), OUTSIDE)
def test_a_time_outside_the_range_is_refused_by_files_and_requests(tmp_path, schema, ts):
    attempts = {
        "file": lambda: load_transactions(_file(tmp_path, ts), schema),
        "parse_transaction": lambda: parse_transaction(_request(ts), schema),
        "parse_batch": lambda: parse_batch([_request(ts)], schema),
    }
    for name, attempt in attempts.items():
        with pytest.raises(DataValidationError) as err:
            attempt()
        message = str(err.value)
        assert "'ts'" in message and TIME_YEARS in message, (name, message)


@pytest.mark.parametrize(("schema", "ts", "expected_ns"), INSIDE)
def test_a_time_just_inside_gives_the_same_nanoseconds_everywhere(
    tmp_path, schema, ts, expected_ns
):
    loaded = load_transactions(_file(tmp_path, ts), schema)
    assert int(loaded["ts"].to_numpy().view(np.int64)[0]) == expected_ns
    assert parse_transaction(_request(ts), schema).time_ns == expected_ns
    assert int(parse_batch([_request(ts)], schema).time_ns[0]) == expected_ns


@pytest.mark.parametrize(
    ("moment", "ok"),
    [
        (np.datetime64("1677-12-31T23:59:59", "s"), False),
        (np.datetime64("1678-01-01T00:00:00", "s"), True),
        (np.datetime64("2261-12-31T23:59:59", "s"), True),
        (np.datetime64("2262-01-01T00:00:00", "s"), False),
        (np.datetime64("2300-01-01T00:00:00", "s"), False),
    ],
)
def test_a_datetime_column_and_a_datetime_value_share_the_range(moment, ok):
    frame = pd.DataFrame([_request(moment)]).astype({"ts": moment.dtype})
    attempts = (
        lambda: int(load_transactions(frame, ISO)["ts"].to_numpy().view(np.int64)[0]),
        lambda: parse_transaction(_request(moment), ISO).time_ns,
        lambda: int(parse_batch([_request(moment)], ISO).time_ns[0]),
    )
    for attempt in attempts:
        if ok:
            assert attempt() == moment.astype("datetime64[ns]").astype(np.int64)
        else:
            with pytest.raises(DataValidationError, match=TIME_YEARS):
                attempt()


#: Values of a categorical column, in a DataFrame's mixed (object) column and in a request.
CATEGORIES = [123.0, 1.5, 1e20, 2.0**53, -0.0, 7, "007", "123.0", " x ", True, np.float32(3.0)]
MISSING = [None, float("nan"), np.float64("nan"), pd.NA, "", "  "]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            CATEGORIES + MISSING,
            ["123", "1.5", "1e+20", "9007199254740992.0", "0", "7", "007", "123.0", " x "]
            + ["True", "3"]
            + [MISSING_CATEGORY] * len(MISSING),
        ),
        # float64 columns: each value on its own, whatever the others are
        ([123.0, 1.5, np.nan, 1e20], ["123", "1.5", MISSING_CATEGORY, "1e+20"]),
        ([1.0, np.nan, -3.0], ["1", MISSING_CATEGORY, "-3"]),
    ],
)
def test_files_and_requests_give_a_category_the_same_text(values, expected):
    schema = replace(ISO, categorical=("mcc",))
    rows = [{**_request("2024-01-01"), "tx_id": f"T{i}", "mcc": v} for i, v in enumerate(values)]
    loaded = list(load_transactions(pd.DataFrame(rows), schema)["mcc"])  # equal times: in order
    live = [parse_transaction(row, schema).categorical[0] for row in rows]
    assert loaded == live == parse_batch(rows, schema).categorical[0] == expected


def test_files_and_requests_give_a_float_id_the_same_text():
    rows = [{**_request("2024-01-01"), "tx_id": v} for v in (1.0, 2.0, 1e20)]
    loaded = list(load_transactions(pd.DataFrame(rows), ISO)["tx_id"])
    assert loaded == [parse_transaction(row, ISO).id for row in rows] == ["1", "2", "1e+20"]
