"""Tests for fraudseq.schema: the column-role schema and load_transactions."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudseq.errors import DataValidationError, FraudseqError, SchemaError
from fraudseq.schema import (
    MISSING_CATEGORY,
    Schema,
    ignored_columns,
    load_transactions,
)

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


# ----------------------------------------------------------------------------- helpers


def base_frame() -> pd.DataFrame:
    """Five simulator-style transactions, deliberately not in time order."""
    return pd.DataFrame(
        {
            "tx_id": ["T00000001", "T00000002", "T00000003", "T00000004", "T00000005"],
            "card_id": ["C1", "C2", "C1", "C3", "C2"],
            "ts": [
                "2026-01-01 10:00:00",
                "2026-01-01 09:00:00",
                "2026-01-02 08:30:00",
                "2026-01-01 09:00:00",
                "2026-01-03 00:00:00",
            ],
            "amount": [10.5, 20.0, -5.0, 0.0, 99.99],
            "mcc": ["5411", "5812", "5411", "4829", "5999"],
            "country": ["FR", "NA", "FR", "DE", "FR"],
            "channel": ["pos", "ecom", "pos", "ecom", "pos"],
            "device_id": ["D1", "D2", "D1", "D3", "D2"],
            "merchant_id": ["M1", "M2", "M1", "M3", "M4"],
            "is_fraud": [0, 1, 0, 0, 1],
            "fraud_type": ["none", "card_testing", "none", "none", "account_takeover"],
            "extra": [1, 2, 3, 4, 5],
        }
    )


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def error_of(exc_info: pytest.ExceptionInfo) -> str:
    return str(exc_info.value)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def to_toml(columns: dict) -> str:
    lines = ["[columns]"]
    for key, value in columns.items():
        if isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    return "\n".join(lines) + "\n"


MINIMAL = '[columns]\nid = "tx_id"\nentity = "card_id"\ntime = "ts"\namount = "amount"\n'


# ------------------------------------------------------------------------------ schema


def test_simulator_schema_matches_toml_file():
    sim = Schema.simulator()
    assert Schema.from_toml(SCHEMAS / "simulator.toml") == sim
    assert sim.id == "tx_id" and sim.entity == "card_id" and sim.time == "ts"
    assert sim.amount == "amount" and sim.label == "is_fraud"
    assert sim.categorical == ("mcc", "country", "channel", "device_id", "merchant_id")
    assert sim.numeric == ()
    assert sim.counterparty == "merchant_id" and sim.scenario == "fraud_type"


def test_handbook_schema_file():
    hb = Schema.from_toml(SCHEMAS / "handbook.toml")
    assert hb == Schema(
        id="TRANSACTION_ID",
        entity="CUSTOMER_ID",
        time="TX_DATETIME",
        amount="TX_AMOUNT",
        label="TX_FRAUD",
        categorical=("TERMINAL_ID",),
        counterparty="TERMINAL_ID",
        scenario="TX_FRAUD_SCENARIO",
    )
    assert "TX_TIME_SECONDS" not in hb.columns() and "TX_TIME_DAYS" not in hb.columns()


@pytest.mark.parametrize(
    "schema",
    [
        Schema.simulator(),
        Schema(id="i", entity="e", time="t", amount="a"),
        Schema(id="i", entity="e", time="t", amount="a", numeric=("x", "y"), scenario="s"),
    ],
)
def test_dict_and_toml_round_trip(schema, tmp_path):
    d = schema.to_dict()
    assert all(v is not None for v in d.values())
    assert isinstance(d["categorical"], list) and isinstance(d["numeric"], list)
    assert Schema.from_dict(d) == schema
    path = write_toml(tmp_path / "s.toml", to_toml(d))
    assert Schema.from_toml(path) == schema


def test_to_dict_omits_none_and_keeps_role_order():
    d = Schema(id="i", entity="e", time="t", amount="a").to_dict()
    assert d == {
        "id": "i",
        "entity": "e",
        "time": "t",
        "amount": "a",
        "categorical": [],
        "numeric": [],
    }


def test_columns_role_order_no_duplicates():
    sim = Schema.simulator()
    assert sim.columns() == [
        "tx_id",
        "card_id",
        "ts",
        "amount",
        "is_fraud",
        "mcc",
        "country",
        "channel",
        "device_id",
        "merchant_id",
        "fraud_type",
    ]
    # Without the label the ground truth (label and scenario) is left out.
    assert sim.columns(with_label=False) == [
        "tx_id",
        "card_id",
        "ts",
        "amount",
        "mcc",
        "country",
        "channel",
        "device_id",
        "merchant_id",
    ]


def test_constructor_accepts_lists_and_freezes():
    s = Schema(id="i", entity="e", time="t", amount="a", categorical=["c"])  # type: ignore[arg-type]
    assert s.categorical == ("c",)
    with pytest.raises(AttributeError):
        s.id = "x"  # type: ignore[misc]


def test_counterparty_may_be_categorical():
    s = Schema.from_dict(
        {
            "id": "i",
            "entity": "e",
            "time": "t",
            "amount": "a",
            "categorical": ["m"],
            "counterparty": "m",
        }
    )
    assert s.columns() == ["i", "e", "t", "a", "m"]


def test_unknown_key_suggests_closest(tmp_path):
    path = write_toml(tmp_path / "typo.toml", MINIMAL + 'categorial = ["mcc"]\n')
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    msg = error_of(exc)
    assert "typo.toml" in msg and "'categorial'" in msg
    assert "did you mean 'categorical'" in msg
    assert "allowed keys" in msg and "counterparty" in msg


def test_unknown_key_from_dict_names_source():
    with pytest.raises(SchemaError) as exc:
        Schema.from_dict({"id": "i", "entty": "e", "time": "t", "amount": "a"}, source="my-config")
    msg = error_of(exc)
    assert "my-config" in msg and "did you mean 'entity'" in msg


def test_invalid_toml(tmp_path):
    path = write_toml(tmp_path / "broken.toml", "[columns]\nid = tx_id\n")
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    assert "broken.toml" in error_of(exc) and "not valid TOML" in error_of(exc)


def test_missing_columns_table(tmp_path):
    path = write_toml(tmp_path / "flat.toml", 'id = "tx_id"\nentity = "card_id"\n')
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    msg = error_of(exc)
    assert "flat.toml" in msg and "[columns]" in msg and "must be inside it" in msg


def test_unknown_top_level_table(tmp_path):
    path = write_toml(tmp_path / "extra.toml", MINIMAL + "[colums]\nx = 1\n")
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    assert "extra.toml" in error_of(exc) and "did you mean 'columns'" in error_of(exc)


def test_schema_file_not_found(tmp_path):
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(tmp_path / "nope.toml")
    assert "nope.toml" in error_of(exc) and "not found" in error_of(exc)


def test_missing_required_key(tmp_path):
    path = write_toml(tmp_path / "short.toml", '[columns]\nid = "tx_id"\nentity = "c"\n')
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    msg = error_of(exc)
    assert "short.toml" in msg and "time" in msg and "amount" in msg


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('categorical = "mcc"\n', 'categorical = ["mcc"]'),
        ("categorical = [1, 2]\n", "non-empty strings"),
        ("numeric = 3\n", "list of column names"),
        ("label = 1\n", "must be a column name"),
        ('label = ""\n', "empty column name"),
        ('categorical = ["a", "a"]\n', "more than once"),
    ],
)
def test_wrong_types(tmp_path, extra, expected):
    path = write_toml(tmp_path / "types.toml", MINIMAL + extra)
    with pytest.raises(SchemaError) as exc:
        Schema.from_toml(path)
    assert "types.toml" in error_of(exc) and expected in error_of(exc)


@pytest.mark.parametrize(
    ("columns", "column"),
    [
        ({"id": "x", "entity": "x", "time": "t", "amount": "a"}, "x"),
        ({"id": "i", "entity": "e", "time": "t", "amount": "t"}, "t"),
        (
            {
                "id": "i",
                "entity": "e",
                "time": "t",
                "amount": "a",
                "label": "y",
                "categorical": ["y"],
            },
            "y",
        ),
        (
            {
                "id": "i",
                "entity": "e",
                "time": "t",
                "amount": "a",
                "scenario": "s",
                "numeric": ["s"],
            },
            "s",
        ),
        (
            {
                "id": "i",
                "entity": "e",
                "time": "t",
                "amount": "a",
                "categorical": ["c"],
                "numeric": ["c"],
            },
            "c",
        ),
        ({"id": "i", "entity": "e", "time": "t", "amount": "a", "counterparty": "e"}, "e"),
        ({"id": "i", "entity": "e", "time": "t", "amount": "a", "numeric": ["a"]}, "a"),
    ],
)
def test_conflicting_roles(columns, column):
    with pytest.raises(SchemaError) as exc:
        Schema.from_dict(columns, source="roles.toml")
    msg = error_of(exc)
    assert "roles.toml" in msg and f"column {column!r}" in msg and "several roles" in msg


def test_schema_errors_are_fraudseq_errors():
    with pytest.raises(FraudseqError):
        Schema.from_dict({"id": "i"})


# ------------------------------------------------------------------- loading: formats


def test_file_formats_and_dataframe_give_equal_frames(tmp_path):
    df = base_frame()
    csv = write_csv(df, tmp_path / "tx.csv")
    gz = tmp_path / "tx.csv.gz"
    df.to_csv(gz, index=False, compression="gzip")
    pq = tmp_path / "tx.parquet"
    df.to_parquet(pq, index=False)
    frames = [load_transactions(src) for src in (csv, str(gz), pq, df)]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], other)


def test_canonical_dtypes_and_sort(tmp_path):
    out = load_transactions(write_csv(base_frame(), tmp_path / "tx.csv"))
    assert list(out.columns) == Schema.simulator().columns()
    assert out["ts"].dtype == np.dtype("datetime64[ns]")
    assert out["amount"].dtype == np.float64
    assert out["is_fraud"].dtype == np.int8
    for col in ("tx_id", "card_id", "mcc", "country", "merchant_id", "fraud_type"):
        assert pd.api.types.is_string_dtype(out[col].dtype), col
        assert isinstance(out[col].iloc[0], str)
    # Sorted by time; the two 09:00 rows keep their file order (T2 before T4).
    assert out["tx_id"].tolist() == [
        "T00000002",
        "T00000004",
        "T00000001",
        "T00000003",
        "T00000005",
    ]
    assert out.index.equals(pd.RangeIndex(5))
    assert out["ts"].is_monotonic_increasing
    # "NA" is a country (Namibia), not a missing value; "5411" keeps being text.
    assert out.loc[out["tx_id"] == "T00000002", "country"].item() == "NA"
    assert out["mcc"].iloc[0] == "5812"
    assert (out["amount"] <= 0).sum() == 2  # zero and refunds are allowed


def test_numeric_ids_become_text_and_leading_zeros_survive(tmp_path):
    df = pd.DataFrame(
        {
            "tx_id": ["007", "7", "010"],
            "card_id": [1, 2, 3],
            "ts": ["2026-01-01"] * 3,
            "amount": [1, 2, 3],
        }
    )
    schema = Schema(id="tx_id", entity="card_id", time="ts", amount="amount")
    out = load_transactions(write_csv(df, tmp_path / "z.csv"), schema)
    assert out["tx_id"].tolist() == ["007", "7", "010"]
    assert out["card_id"].tolist() == ["1", "2", "3"]
    assert out["amount"].dtype == np.float64
    # DataFrame input: integers and integral floats become "123", not "123.0".
    frame = pd.DataFrame(
        {"tx_id": [123, 124], "card_id": [5.0, 6.0], "ts": ["2026-01-01"] * 2, "amount": [1, 2]}
    )
    out = load_transactions(frame, schema)
    assert out["tx_id"].tolist() == ["123", "124"]
    assert out["card_id"].tolist() == ["5", "6"]


def test_missing_categorical_values_become_placeholder():
    df = base_frame()
    df["mcc"] = ["5411", None, np.nan, "", "5999"]
    out = load_transactions(df)
    assert MISSING_CATEGORY == "<NA>"
    assert sorted(out["mcc"].tolist()) == sorted(["5411", "<NA>", "<NA>", "<NA>", "5999"])
    assert not out["mcc"].isna().any()


def test_input_frame_not_mutated():
    df = base_frame()
    df["ts"] = pd.to_datetime(df["ts"]).dt.tz_localize("Europe/Paris")
    df["is_fraud"] = df["is_fraud"].astype(bool)
    df.index = [10, 11, 12, 13, 14]
    before = df.copy(deep=True)
    out = load_transactions(df)
    pd.testing.assert_frame_equal(df, before)
    assert out is not df
    out.loc[0, "amount"] = 1e9
    pd.testing.assert_frame_equal(df, before)


def test_timezones_converted_to_naive_utc(tmp_path):
    df = base_frame().iloc[:3].copy()
    df["ts"] = ["2026-01-01T12:00:00+02:00", "2026-01-01T12:00:00Z", "2026-01-01 12:00:00"]
    expected = pd.to_datetime(
        ["2026-01-01 10:00:00", "2026-01-01 12:00:00", "2026-01-01 12:00:00"]
    ).to_numpy(dtype="datetime64[ns]")
    for src in (df, write_csv(df, tmp_path / "tz.csv")):
        out = load_transactions(src)
        assert out["ts"].dt.tz is None
        np.testing.assert_array_equal(out["ts"].to_numpy(), expected)
    # tz-aware datetime column
    aware = base_frame().iloc[:2].copy()
    aware["ts"] = pd.to_datetime(["2026-06-01 12:00", "2026-06-01 13:00"]).tz_localize(
        "Europe/Paris"
    )
    out = load_transactions(aware)
    assert out["ts"].dtype == np.dtype("datetime64[ns]")
    assert out["ts"].tolist() == [
        pd.Timestamp("2026-06-01 10:00"),
        pd.Timestamp("2026-06-01 11:00"),
    ]


def test_numeric_time_without_time_table_is_an_error_showing_the_fix():
    # Issue 16: PaySim's `step` (hours) used to be read silently as Unix seconds.
    df = base_frame().iloc[:2].copy()
    df["ts"] = [0, 86400]
    with pytest.raises(DataValidationError) as exc:
        load_transactions(df)
    msg = error_of(exc)
    assert "'ts'" in msg and "[time]" in msg and 'unit = "s"' in msg and "1970-01-01" in msg


def test_epoch_seconds_with_time_table():
    df = base_frame().iloc[:2].copy()
    df["ts"] = [0, 86400]
    schema = replace(Schema.simulator(), time_unit="s", time_origin="1970-01-01")
    out = load_transactions(df, schema)
    assert out["ts"].tolist() == [pd.Timestamp("1970-01-01"), pd.Timestamp("1970-01-02")]


@pytest.mark.parametrize("values", [[True, False], ["0", "1"], [0.0, 1.0], ["true", "False"]])
def test_label_accepted_forms(values):
    df = base_frame().iloc[:2].copy()
    df["is_fraud"] = values
    out = load_transactions(df, require_label=True)
    assert out["is_fraud"].dtype == np.int8
    assert sorted(out["is_fraud"].tolist()) == [0, 1]


def test_label_optional_when_not_required():
    df = base_frame().drop(columns=["is_fraud", "fraud_type"])
    out = load_transactions(df)
    assert "is_fraud" not in out.columns and "fraud_type" not in out.columns


def test_missing_labels_are_not_known_yet_when_not_required(caplog):
    df = base_frame()
    df["is_fraud"] = [0, None, 1, 0, 0]
    with caplog.at_level(logging.WARNING, logger="fraudseq"):
        out = load_transactions(df)
    # The known labels stay (the delayed counterparty features use them); the missing one
    # is NaN, not 0: a label not known yet is not a legitimate transaction.
    labels = out.set_index("tx_id")["is_fraud"]
    assert labels.isna().sum() == 1 and labels.sum() == 1
    assert any("not known yet" in r.getMessage() for r in caplog.records)


def test_numeric_columns():
    df = base_frame()
    df["score"] = ["1.5", "2", None, "-3e2", "4"]
    schema = Schema.from_dict({**Schema.simulator().to_dict(), "numeric": ["score"]})
    out = load_transactions(df, schema)
    assert out["score"].dtype == np.float64
    assert out["score"].isna().sum() == 1


def test_ignored_columns_logged(tmp_path, caplog):
    df = base_frame()
    df["notes"] = "x"
    assert ignored_columns(df.columns, Schema.simulator()) == ["extra", "notes"]
    assert ignored_columns(df.columns, None) == ["extra", "notes"]
    with caplog.at_level(logging.INFO, logger="fraudseq"):
        out = load_transactions(write_csv(df, tmp_path / "wide.csv"))
    assert "extra" not in out.columns and "notes" not in out.columns
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "ignoring" in text and "extra" in text and "notes" in text and "wide.csv" in text


def test_schema_path_accepted(tmp_path):
    df = base_frame()
    out = load_transactions(df, SCHEMAS / "simulator.toml")
    pd.testing.assert_frame_equal(out, load_transactions(df))


def test_bad_value_after_many_good_rows_is_reported(tmp_path):
    n = 30_000
    df = pd.DataFrame(
        {
            "tx_id": np.arange(n),
            "card_id": np.arange(n) % 7,
            "ts": "2026-01-01 00:00:00",
            "amount": np.ones(n).astype(str).astype(object),
        }
    )
    df.loc[n - 2, "amount"] = "12,50"
    schema = Schema(id="tx_id", entity="card_id", time="ts", amount="amount")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(write_csv(df, tmp_path / "late.csv"), schema)
    assert f"row {n - 1} " in error_of(exc) and "'12,50'" in error_of(exc)


# ---------------------------------------------------------------- loading: validation


def check(msg: str, file: str, column: str, row: str, hint: str) -> None:
    assert file in msg, msg
    assert f"'{column}'" in msg, msg
    assert row in msg, msg
    assert "Fix:" in msg and hint in msg, msg


def load_bad(tmp_path: Path, df: pd.DataFrame, name: str = "bad.csv", **kw) -> str:
    with pytest.raises(DataValidationError) as exc:
        load_transactions(write_csv(df, tmp_path / name), **kw)
    return error_of(exc)


def test_missing_column_suggests_closest(tmp_path):
    df = base_frame().rename(columns={"card_id": "cardid"})
    msg = load_bad(tmp_path, df)
    assert "bad.csv" in msg and "'card_id'" in msg and "did you mean 'cardid'" in msg
    assert "The data has columns" in msg and "'tx_id'" in msg and "Fix:" in msg


def test_missing_label_column_when_required(tmp_path):
    df = base_frame().drop(columns=["is_fraud"])
    msg = load_bad(tmp_path, df, require_label=True)
    assert "bad.csv" in msg and "'is_fraud'" in msg and "label" in msg


def test_unparseable_timestamps(tmp_path):
    df = base_frame()
    df["ts"] = ["2026-01-01 10:00:00", "2026-01-01 09:00:00", "2026-13-45", "yesterday", "now"]
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "ts", "rows 3, 4, 5 (first 3 of 3", "ISO 8601")
    assert "'2026-13-45'" in msg and "'yesterday'" in msg


@pytest.mark.parametrize("bad", ["abc", "", "inf", "1e300", "-1e15"])
def test_bad_amounts(tmp_path, bad):
    df = base_frame()
    df["amount"] = df["amount"].astype(object)
    df.loc[1, "amount"] = bad
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "amount", "row 2 (first 1 of 1", "finite numbers")


def test_bad_amount_in_dataframe_reports_index_label():
    df = base_frame()
    df.index = [100, 101, 102, 103, 104]
    df.loc[103, "amount"] = np.nan
    with pytest.raises(DataValidationError) as exc:
        load_transactions(df)
    check(error_of(exc), "<DataFrame>", "amount", "index 103", "finite numbers")


@pytest.mark.parametrize("bad", [2, "yes"])
def test_bad_labels(tmp_path, bad):
    df = base_frame()
    df["is_fraud"] = df["is_fraud"].astype(object)
    df.loc[3, "is_fraud"] = bad
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "is_fraud", "row 4 (first 1 of 1", "use 1 for fraud")
    assert repr(bad) in msg


def test_missing_label_values_when_required(tmp_path):
    df = base_frame()
    df["is_fraud"] = [0, 1, None, 0, None]
    msg = load_bad(tmp_path, df, require_label=True)
    check(msg, "bad.csv", "is_fraud", "rows 3, 5 (first 2 of 2", "0/1 label")


def test_duplicate_ids(tmp_path):
    df = base_frame()
    df["tx_id"] = ["T1", "T2", "T3", "T2", "T1"]
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "tx_id", "rows 1, 2, 4, 5 (first 4 of 4", "unique")
    assert "'T2'" in msg


def test_duplicate_integer_ids(tmp_path):
    df = base_frame()
    df["tx_id"] = [1, 2, 3, 4, 3]
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "tx_id", "rows 3, 5", "unique")


def test_more_than_five_bad_rows_are_truncated(tmp_path):
    df = pd.concat([base_frame()] * 3, ignore_index=True)
    df["tx_id"] = [f"T{i}" for i in range(len(df))]
    df["card_id"] = None
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "card_id", "rows 1, 2, 3, 4, 5 (first 5 of 15", "card/customer")


def test_missing_entity(tmp_path):
    df = base_frame()
    df.loc[2, "card_id"] = None
    msg = load_bad(tmp_path, df)
    check(msg, "bad.csv", "card_id", "row 3 (first 1 of 1", "card/customer")


def test_non_numeric_numeric_column(tmp_path):
    df = base_frame()
    df["score"] = ["1", "2", "3", "high", "5"]
    schema = Schema.from_dict({**Schema.simulator().to_dict(), "numeric": ["score"]})
    msg = load_bad(tmp_path, df, schema=schema)
    check(msg, "bad.csv", "score", "row 4 (first 1 of 1", "plain numbers")
    assert "'high'" in msg


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(empty)
    assert "empty.csv" in error_of(exc) and "empty" in error_of(exc) and "Fix:" in error_of(exc)
    header_only = write_csv(base_frame().iloc[:0], tmp_path / "header.csv")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(header_only)
    assert "header.csv" in error_of(exc) and "no rows" in error_of(exc)
    with pytest.raises(DataValidationError) as exc:
        load_transactions(base_frame().iloc[:0])
    assert "<DataFrame>" in error_of(exc)


def test_file_not_found_and_unknown_type(tmp_path):
    write_csv(base_frame(), tmp_path / "transactions.csv")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(tmp_path / "transaction.csv")
    msg = error_of(exc)
    assert "transaction.csv" in msg and "not found" in msg and "transactions.csv" in msg
    xlsx = tmp_path / "tx.xlsx"
    xlsx.write_bytes(b"PK")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(xlsx)
    assert "tx.xlsx" in error_of(exc) and ".parquet" in error_of(exc)


def test_corrupt_file(tmp_path):
    bad = tmp_path / "tx.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataValidationError) as exc:
        load_transactions(bad)
    assert "tx.parquet" in error_of(exc) and "Fix:" in error_of(exc)
