"""Schema shapes: no id, no entity, composite entity keys and numeric times with [time]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import public_shapes
from fraudseq.errors import DataValidationError, SchemaError
from fraudseq.schema import (
    MISSING_CATEGORY,
    TIME_UNITS,
    Schema,
    entity_key,
    entity_keys,
    load_transactions,
    numeric_times,
)


def frame(**columns) -> pd.DataFrame:
    base = {
        "ts": ["2026-01-01 10:00", "2026-01-01 09:00", "2026-01-02 08:00"],
        "amount": [10.0, 20.0, 30.0],
    }
    return pd.DataFrame({**base, **columns})


def test_without_id_the_id_is_the_1_based_data_row(tmp_path):
    path = tmp_path / "tx.csv"
    frame(card=["A", "B", "A"]).to_csv(path, index=False)
    schema = Schema(entity="card", time="ts", amount="amount")
    out = load_transactions(path, schema)
    assert schema.id_column == "transaction_id"
    # Sorted by time: row 2 (09:00) first; ids are the file's rows, not positions after sorting.
    assert out["transaction_id"].tolist() == ["2", "1", "3"]
    assert out["amount"].tolist() == [20.0, 10.0, 30.0]


def test_without_entity_the_file_is_one_stream():
    schema = Schema(time="ts", amount="amount")
    out = load_transactions(frame(), schema)
    assert schema.entity_column == "stream" and schema.entity_parts == ()
    assert set(out["stream"]) == {"all"}


def test_composite_entity_missing_part_is_a_value_of_its_own():
    schema = Schema(entity=["card1", "addr1"], time="ts", amount="amount")
    out = load_transactions(frame(card1=[7, 7, 7], addr1=[315.0, None, 315.0]), schema)
    assert schema.entity_column == "card1+addr1"
    by_time = out.sort_values("amount")["card1+addr1"].tolist()
    assert by_time == ["7|315", f"7|{MISSING_CATEGORY}", "7|315"]


def test_composite_entity_every_part_missing_is_an_error():
    schema = Schema(entity=["card1", "addr1"], time="ts", amount="amount")
    with pytest.raises(DataValidationError) as err:
        load_transactions(frame(card1=[7, None, 7], addr1=[1, None, 2]), schema)
    assert "'card1'" in str(err.value) and "index 1" in str(err.value)


def test_entity_key_escapes_the_separator_and_matches_the_vectorised_join():
    parts = [("a|b", "c"), ("a", "b|c"), ("a\\", "|c"), ("x", MISSING_CATEGORY)]
    keys = entity_keys([pd.Series([p[i] for p in parts], dtype="str") for i in range(2)])
    assert keys.tolist() == [entity_key(p) for p in parts]
    assert len(set(keys)) == len(parts)  # distinct parts never join to the same key


@pytest.mark.parametrize("unit", list(TIME_UNITS))
def test_numeric_time_units(unit):
    schema = Schema(time="t", amount="amount", time_unit=unit, time_origin="2026-01-01")
    out = load_transactions(pd.DataFrame({"t": [0, 3], "amount": [1.0, 2.0]}), schema)
    expected = pd.Timestamp("2026-01-01") + pd.to_timedelta([0, 3], unit=unit)
    assert out["t"].tolist() == list(expected)


def test_numeric_times_are_exact_for_integers_and_round_fractions():
    ticks, bad = numeric_times(np.array([86_400, 1.5, np.nan]), "s", "2017-11-30")
    assert ticks[0] == np.datetime64("2017-12-01T00:00:00", "ns")
    assert ticks[1] == np.datetime64("2017-11-30T00:00:01.5", "ns")
    assert bad.tolist() == [False, False, True]


def test_numeric_time_out_of_range_names_the_row():
    schema = Schema(time="t", amount="amount", time_unit="D", time_origin="2026-01-01")
    with pytest.raises(DataValidationError) as err:
        load_transactions(pd.DataFrame({"t": [0, 1e9], "amount": [1.0, 2.0]}), schema)
    assert "'t'" in str(err.value) and "index 1" in str(err.value) and "1678-2261" in str(err)


def test_paysim_step_is_hours_from_the_origin(tmp_path):
    path = public_shapes.write_shape("paysim", tmp_path / "paysim.csv")
    schema = Schema.from_toml(public_shapes.SCHEMAS_DIR / "paysim.toml")
    out = load_transactions(path, schema)
    raw = pd.read_csv(path)
    assert out["step"].min() == pd.Timestamp("2000-01-01") + pd.Timedelta(hours=raw.step.min())


@pytest.mark.parametrize(
    "table, problem",
    [
        ('unit = "s"', "missing 'origin'"),
        ('origin = "2026-01-01"', "missing 'unit'"),
        ('unit = "sec"\norigin = "2026-01-01"', "not a time unit"),
        ('unit = "s"\norigin = "01/02/2026"', "not an ISO date"),
        ('unit = "s"\norigin = "2026-01-01"\nzone = "UTC"', "unknown key"),
    ],
)
def test_time_table_errors(tmp_path, table, problem):
    path = tmp_path / "s.toml"
    path.write_text(f'[columns]\ntime = "t"\namount = "a"\n[time]\n{table}\n')
    with pytest.raises(SchemaError) as err:
        Schema.from_toml(path)
    assert problem in str(err.value) and "s.toml" in str(err.value)


def test_canonical_names_may_not_shadow_another_role():
    with pytest.raises(SchemaError, match="canonical id column 'transaction_id'"):
        Schema(time="ts", amount="amount", categorical=("transaction_id",))
    with pytest.raises(SchemaError, match="canonical entity column 'stream'"):
        Schema(id="i", time="ts", amount="amount", numeric=("stream",))


def test_schema_document_round_trip_and_old_model_json():
    schema = Schema(
        entity=("card1", "addr1"), time="t", amount="a", time_unit="s", time_origin="2017-11-30"
    )
    assert Schema.from_document(schema.to_document()) == schema
    # model.json written before the [time] table held the [columns] table itself.
    old = Schema.simulator().to_dict()
    assert Schema.from_document(old) == Schema.simulator()


@pytest.mark.parametrize("shape", sorted(public_shapes.SHAPES))
def test_loading_a_loaded_frame_again_changes_nothing(shape, tmp_path):
    path = public_shapes.write_shape(shape, tmp_path / "data.csv")
    schema = Schema.from_toml(public_shapes.SCHEMAS_DIR / public_shapes.SCHEMA_FILES[shape])
    once = load_transactions(path, schema)
    pd.testing.assert_frame_equal(load_transactions(once, schema), once)


def test_sparkov_repeated_trans_num_error_says_to_leave_id_out(tmp_path):
    path = tmp_path / "sparkov.csv"
    public_shapes.sparkov(duplicate_ids=True).to_csv(path, index=False)
    schema_file = public_shapes.SCHEMAS_DIR / "sparkov.toml"
    with pytest.raises(DataValidationError) as err:
        load_transactions(path, Schema.from_toml(schema_file))
    assert "duplicate transaction ids" in str(err.value) and "leave 'id' out" in str(err.value)
    no_id = tmp_path / "no_id.toml"
    no_id.write_text(public_shapes.without_keys(schema_file.read_text(), "id"))
    out = load_transactions(path, Schema.from_toml(no_id))
    assert out["transaction_id"].is_unique and len(out) == 400


def test_readme_schema_files_all_load():
    files = {file.name: file for file in Path(public_shapes.SCHEMAS_DIR).glob("*.toml")}
    # Not vacuous: the public shapes' files and the simulator's are all there.
    assert {*public_shapes.SCHEMA_FILES.values(), "simulator.toml"} <= set(files), sorted(files)
    readme = (Path(public_shapes.SCHEMAS_DIR).parent / "README.md").read_text()
    for name, file in files.items():
        assert f"schemas/{name}" in readme, f"{name} is not in the README"
        assert isinstance(Schema.from_toml(file), Schema)
