"""`fraudseq check`: the data profile and its warnings, and --suggest-schema on files shaped
like the public fraud data sets (tests/public_shapes.py)."""

import inspect
import json
import subprocess
import sys
import tomllib

import numpy as np
import pandas as pd
import pytest

from fraudseq.cli import main
from fraudseq.data_profile import profile_transactions
from fraudseq.schema import TIME_UNITS, Schema, load_transactions, parse_origin
from fraudseq.schema_suggestion import suggest_from_frame, suggest_schema
from public_shapes import (
    HANDBOOK_COLUMNS,
    IEEE_CIS_COLUMNS,
    PAYSIM_COLUMNS,
    SCHEMAS,
    SHAPES,
    SPARKOV_COLUMNS,
    ULB_COLUMNS,
    without_keys,
    write_shape,
)


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["fraudseq", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def one_line(text: str) -> str:
    """Rich wraps long lines; compare text with its line breaks undone."""
    return " ".join(text.split())


def shape_file(tmp_path, name: str, schema: str | None = None, **kwargs):
    data = write_shape(name, tmp_path / f"{name}.csv", **kwargs)
    toml = tmp_path / f"{name}.toml"
    toml.write_text(SCHEMAS[name] if schema is None else schema)
    return data, toml


# ----------------------------------------------------------------------- public shapes


def test_public_shapes_have_the_public_columns_and_are_seeded():
    columns = {
        "ulb": ULB_COLUMNS,
        "paysim": PAYSIM_COLUMNS,
        "ieee_cis": IEEE_CIS_COLUMNS,
        "sparkov": SPARKOV_COLUMNS,
        "handbook": HANDBOOK_COLUMNS,
    }
    for name, make in SHAPES.items():
        frame = make()
        assert list(frame.columns) == columns[name]
        pd.testing.assert_frame_equal(frame, make())
        assert 200 <= len(frame) <= 1000
    assert SHAPES["paysim"]()["step"].dtype.kind == "i"
    ieee = SHAPES["ieee_cis"]()
    assert ieee["TransactionDT"].min() == 86_400 and ieee["addr1"].isna().mean() > 0.2
    assert SHAPES["sparkov"]()["trans_num"].is_unique
    assert not SHAPES["sparkov"](duplicate_ids=True)["trans_num"].is_unique


@pytest.mark.parametrize("name", list(SHAPES))
def test_hand_written_schemas_load_their_shape(tmp_path, name):
    data, toml = shape_file(tmp_path, name)
    frame = load_transactions(data, Schema.from_toml(toml), require_label=True)
    label = Schema.from_toml(toml).label
    assert len(frame) == len(SHAPES[name]()) and 5 <= frame[label].sum() <= 20


# ----------------------------------------------------------------------------- profile


def test_check_prints_the_profile(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "handbook")
    code, out, err = run(monkeypatch, capsys, "check", data, "--schema", toml)
    assert code == 0, err
    text = one_line(out)
    frame = SHAPES["handbook"]()
    assert f"rows │ {len(frame)}" in text
    assert "2018-04-01" in text and "days)" in text
    assert f"entities │ {frame.CUSTOMER_ID.nunique()} (CUSTOMER_ID)" in text
    counts = frame.CUSTOMER_ID.value_counts()
    assert f"median {np.median(counts):g}, p90 {np.percentile(counts, 90):g}" in text
    assert f"{frame.TX_FRAUD.sum()} frauds in 'TX_FRAUD'" in text and "per week" in text
    assert "label coverage │ 100.0%" in text
    assert "TERMINAL_ID │ categorical+counterparty │ 50 │ 0.0%" in text
    # 10 frauds: evaluation will be noisy; the 30-day span is long enough.
    assert "warning: only 10 frauds: evaluation will be noisy" in text
    assert "spans" not in text and "single transaction" not in text
    assert "ignoring 2 column(s)" in err  # the loader's note on TX_TIME_SECONDS/DAYS


def test_check_warns_when_most_entities_have_one_transaction(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "paysim")
    code, out, _ = run(monkeypatch, capsys, "check", data, "--schema", toml)
    text = one_line(out)
    assert code == 0
    assert "of entities have one" in text
    assert "entities (nameOrig) have a single transaction" in text
    assert "sequence features will be weak" in text
    assert "composite key" in text and "one stream" in text


def test_check_warns_on_a_short_span_and_names_the_days(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "ulb")  # two days, one stream
    code, out, _ = run(monkeypatch, capsys, "check", data, "--schema", toml)
    text = one_line(out)
    assert code == 0
    assert "one stream (no entity column)" in text and "single transaction" not in text
    span = SHAPES["ulb"]()["Time"].max() / 86_400
    assert f"the data spans {span:.1f} days, {14 - span:.1f} days short" in text
    assert "--valid-days 7 + label delay 7 = 14 days" in text
    assert "pass a smaller --valid-days N" in text
    # The settings one plans to train with are what the span is judged against.
    code, out, _ = run(
        monkeypatch, capsys, "check", data, "--schema", toml, "--valid-days", 0.5,
        "--label-delay-days", 0.25,
    )  # fmt: skip
    assert code == 0 and "spans" not in one_line(out)

    # 16 days: enough for validation and delay, not for a week of training on top.
    data = write_shape("handbook", tmp_path / "hb16.csv", days=16)
    code, out, _ = run(
        monkeypatch, capsys, "check", data, "--schema", shape_file(tmp_path, "handbook")[1]
    )
    assert "days are left to train on, less than the 7-day validation" in one_line(out)


def test_check_json_writes_the_profile(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "ieee_cis")
    out_json = tmp_path / "profile.json"
    code, _, err = run(monkeypatch, capsys, "check", data, "--schema", toml, "--json", out_json)
    assert code == 0, err
    profile = json.loads(out_json.read_text())
    frame = SHAPES["ieee_cis"]()
    assert profile["rows"] == len(frame)
    assert profile["entity"] == ["card1", "addr1"] and not profile["one_stream"]
    keys = frame["card1"].astype(str) + "|" + frame["addr1"].astype("Int64").astype(str).fillna("")
    assert profile["entities"] == keys.nunique()
    assert profile["frauds"] == frame.isFraud.sum() and profile["label_coverage"] == 1.0
    assert profile["fraud_rate"] == pytest.approx(frame.isFraud.mean())
    assert profile["span_days"] == pytest.approx((frame.TransactionDT.max() - 86_400) / 86_400)
    columns = {c["column"]: c for c in profile["columns"]}
    assert columns["P_emaildomain"]["distinct"] == frame.P_emaildomain.nunique()
    assert columns["P_emaildomain"]["missing_share"] == pytest.approx(
        frame.P_emaildomain.isna().mean()
    )
    assert columns["dist2"]["role"] == "numeric"
    assert columns["dist2"]["missing_share"] == pytest.approx(frame.dist2.isna().mean())
    assert any("only 12 frauds" in w for w in profile["warnings"])


def test_check_json_never_overwrites_an_input(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "handbook")
    before = data.read_bytes(), toml.read_bytes()
    for target, what in ((data, "transactions file"), (toml, "schema file")):
        args = ("check", data, "--schema", toml, "--json", tmp_path / "." / target.name)
        code, _, err = run(monkeypatch, capsys, *args)
        assert code == 1 and err.startswith("error:") and f"is the {what} itself" in err
    assert (data.read_bytes(), toml.read_bytes()) == before


def test_check_warns_on_missing_labels_no_fraud_and_id_like_categories(
    tmp_path, monkeypatch, capsys
):
    frame = SHAPES["sparkov"]()
    frame.loc[frame.index[-30:], "is_fraud"] = np.nan  # the latest labels are not known yet
    data = tmp_path / "sparkov.csv"
    frame.to_csv(data, index=False)
    toml = tmp_path / "s.toml"
    schema = without_keys(SCHEMAS["sparkov"], "id")
    toml.write_text(schema.replace('"merchant", "category"', '"trans_num", "category"'))
    code, out, err = run(monkeypatch, capsys, "check", data, "--schema", toml)
    text = one_line(out)
    assert code == 0, err
    assert f"label coverage │ {1 - 30 / len(frame):.1%} ({len(frame) - 30} rows labelled)" in text
    assert f"30 of {len(frame)} rows (7.5%) have no label in 'is_fraud'" in text
    assert "train takes them as not known (history, never a training target)" in text
    assert "evaluate refuses them" in text
    assert f"categorical column 'trans_num' has {len(frame)} distinct values" in text
    assert "an id, not a category" in text and "remove it from categorical" in text

    frame["is_fraud"] = 0
    frame.to_csv(data, index=False)
    code, out, _ = run(monkeypatch, capsys, "check", data, "--schema", toml)
    assert "no fraud at all among the 400 labelled rows" in one_line(out)

    # Fraud only early on: train's default validation (the last 7 days) would have none.
    frame["is_fraud"] = (np.arange(len(frame)) < 40) & (np.arange(len(frame)) % 4 == 0)
    frame["is_fraud"] = frame["is_fraud"].astype(int)
    frame.to_csv(data, index=False)
    code, out, _ = run(monkeypatch, capsys, "check", data, "--schema", toml)
    text = one_line(out)
    assert "frauds in the last 7 days │ 0" in text and "no fraud in the last 7 days" in text


def test_check_without_a_label_column(tmp_path, monkeypatch, capsys):
    schema = without_keys(SCHEMAS["handbook"], "label", "scenario")
    data, toml = shape_file(tmp_path, "handbook", schema=schema)
    code, out, _ = run(
        monkeypatch, capsys, "check", data, "--schema", toml, "--json", tmp_path / "p.json"
    )
    assert code == 0
    assert "no label column: this file can be scored, but not trained on" in one_line(out)
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["label"] is None and profile["frauds"] is None


def test_profile_on_a_frame_counts_histories_exactly():
    n = 1_000
    frame = pd.DataFrame(
        {
            "id": np.arange(n),
            "card": np.r_[np.repeat(["a", "b", "c"], [500, 300, 100]), np.arange(100)],
            "ts": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), "h"),
            "amount": 1.0,
            "fraud": (np.arange(n) % 50 == 0).astype(int),
        }
    )
    schema = Schema(id="id", entity="card", time="ts", amount="amount", label="fraud")
    p = profile_transactions(load_transactions(frame, schema), schema)
    counts = np.r_[500, 300, 100, np.ones(100)]
    assert p.entities == 103 and p.history_max == 500
    assert p.history_median == np.median(counts) and p.history_p90 == np.percentile(counts, 90)
    assert p.single_share == pytest.approx(100 / 103)
    assert p.frauds == 20 and p.fraud_rate == 0.02
    assert p.span_days == pytest.approx((n - 1) / 24)
    assert p.frauds_per_week == pytest.approx(20 / ((n - 1) / 24) * 7)
    assert p.valid_frauds == int(
        frame.fraud[frame.ts >= frame.ts.max() - pd.Timedelta(days=7)].sum()
    )
    assert any("single transaction" in w for w in p.warnings)


def test_defaults_are_the_train_commands():
    from fraudseq import data_profile
    from fraudseq.cli import checking, modeling
    from fraudseq.fraud_model import FraudModel

    train = inspect.signature(modeling.train).parameters
    assert train["valid_days"].default == checking.VALID_DAYS == data_profile.VALID_DAYS
    assert train["label_delay_days"].default == checking.LABEL_DELAY_DAYS
    assert inspect.signature(FraudModel).parameters["label_delay_days"].default == (
        data_profile.LABEL_DELAY_DAYS
    )
    fit = inspect.signature(FraudModel.fit).parameters
    assert fit["valid_days"].default == data_profile.VALID_DAYS


def test_check_module_imports_nothing_heavy():
    """`fraudseq --help` stays fast: the command module defers pandas, torch and friends."""
    code = (
        "import sys, fraudseq.cli.app\n"
        "before = set(sys.modules)\n"
        "import fraudseq.cli.checking\n"
        "new = set(sys.modules) - before\n"
        "heavy = sorted(m for m in new if m.split('.')[0] in "
        "{'pandas', 'numpy', 'pyarrow', 'torch', 'xgboost'} or m in "
        "{'fraudseq.data_profile', 'fraudseq.schema_suggestion', 'fraudseq.schema'})\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ bad input


def test_bad_input_is_one_error_line(tmp_path, monkeypatch, capsys):
    data, toml = shape_file(tmp_path, "handbook")
    cases = [
        (("check", tmp_path / "nope.csv", "--schema", toml), "file not found"),
        (("check", tmp_path / "nope.csv", "--suggest-schema"), "file not found"),
        (("check", data, "--schema", tmp_path / "nope.toml"), "schema file not found"),
        (("check", data, "--suggest-schema", "--schema", toml), "takes no --schema or --json"),
    ]
    for args, message in cases:
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 1 and out == ""
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err

    # A schema that does not match the file: the loader's message, plus how to draft one.
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(SCHEMAS["paysim"])
    code, out, err = run(monkeypatch, capsys, "check", data, "--schema", wrong)
    assert code == 1 and out == "" and err.startswith("error: ") and "Traceback" not in err
    text = one_line(err)
    assert "missing column(s) 'nameOrig' (entity)" in text
    assert f"fraudseq check {data} --suggest-schema" in text
    # No schema at all: the simulator's columns are expected, and the error says so.
    code, _, err = run(monkeypatch, capsys, "check", data)
    assert code == 1 and "No schema was given" in one_line(err)


# ------------------------------------------------------------------------- suggestion

EXPECTED = {
    "ulb": {
        "time": "Time",
        "amount": "Amount",
        "label": "Class",
        "numeric": [f"V{i}" for i in range(1, 29)],
        "categorical": [],
        "time_unit": "s",
    },
    "paysim": {
        "entity": "nameOrig",
        "time": "step",
        "amount": "amount",
        "label": "isFraud",
        "counterparty": "nameDest",
        "numeric": ["oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest"],
        "time_unit": "h",
    },
    "ieee_cis": {
        "id": "TransactionID",
        "entity": "card1",
        "time": "TransactionDT",
        "amount": "TransactionAmt",
        "label": "isFraud",
        "time_unit": "s",
    },
    "sparkov": {
        "id": "trans_num",
        "entity": "cc_num",
        "time": "trans_date_trans_time",
        "amount": "amt",
        "label": "is_fraud",
        "counterparty": "merchant",
        "numeric": ["lat", "long", "city_pop", "merch_lat", "merch_long"],
    },
    "handbook": {
        "id": "TRANSACTION_ID",
        "entity": "CUSTOMER_ID",
        "time": "TX_DATETIME",
        "amount": "TX_AMOUNT",
        "label": "TX_FRAUD",
        "counterparty": "TERMINAL_ID",
        "scenario": "TX_FRAUD_SCENARIO",
        "numeric": [],
    },
}
#: Columns that must never become features (ground truth, personal data, row index, a
#: second clock).
NEVER_FEATURES = {
    "paysim": {"isFlaggedFraud"},
    "sparkov": {"Unnamed: 0", "first", "last", "street", "dob", "unix_time"},
    "handbook": {"TX_TIME_SECONDS", "TX_TIME_DAYS"},
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_suggest_schema_guesses_the_roles_and_loads_the_file(tmp_path, monkeypatch, capsys, name):
    data = write_shape(name, tmp_path / f"{name}.csv")
    code, out, err = run(monkeypatch, capsys, "check", data, "--suggest-schema")
    assert code == 0, err
    assert "check every line" in err
    toml = tmp_path / "suggested.toml"
    toml.write_text(out)
    schema = Schema.from_toml(toml)
    expected = dict(EXPECTED[name])
    unit = expected.pop("time_unit", None)
    for role, column in expected.items():
        got = getattr(schema, role)
        assert (list(got) if isinstance(got, tuple) else got) == column, role
    for role in ("id", "entity", "counterparty", "scenario"):
        if role not in expected:
            assert getattr(schema, role) is None, role
    assert schema.time_unit == unit
    named = set(schema.source_columns())
    assert not named & NEVER_FEATURES.get(name, set())
    ignored = out.split("# Columns left out")[-1] if "# Columns left out" in out else ""
    for column in NEVER_FEATURES.get(name, ()):
        assert f"#   {column} " in ignored
    # Every active line of [columns] says why it was guessed.
    body = out.split("\n[columns]\n")[1].split("\n[time]\n")[0].split("# Columns left out")[0]
    for line in body.splitlines():
        if line.strip() and not line.startswith("#") and line.strip() != "]":
            assert "  # " in line, line

    # The file loads with it, the numeric times through the guessed [time] table.
    frame = load_transactions(data, schema)
    raw = SHAPES[name]()
    assert len(frame) == len(raw)
    if unit is not None:
        step = pd.Timedelta(TIME_UNITS[unit], "ns")
        origin = parse_origin(schema.time_origin)
        assert "CHECK" in out.split("\n[time]\n")[1]
        assert frame[schema.time].min() == origin + raw[schema.time].min() * step
        assert frame[schema.time].max() == origin + raw[schema.time].max() * step
    # ... and `check` runs on it.
    code, out, err = run(monkeypatch, capsys, "check", data, "--schema", toml)
    assert code == 0, err


def test_suggest_schema_without_entity_says_one_stream():
    text = suggest_from_frame(SHAPES["ulb"](), source="creditcard.csv").to_toml()
    assert "# entity: no card/customer/account column found" in text and "one stream" in text
    assert "# id: no transaction id column" in text
    assert "\nentity =" not in text and "\nid =" not in text


def test_suggest_schema_comments_out_an_id_that_repeats(tmp_path, monkeypatch, capsys):
    data = write_shape("sparkov", tmp_path / "fraudTrain.csv", duplicate_ids=True)
    code, out, _ = run(monkeypatch, capsys, "check", data, "--suggest-schema")
    assert code == 0
    assert '# id = "trans_num"' in out and "NOT unique in the sample (20 repeated values)" in out
    toml = tmp_path / "s.toml"
    toml.write_text(out)
    schema = Schema.from_toml(toml)
    assert schema.id is None and "trans_num" not in schema.source_columns()
    frame = load_transactions(data, schema)  # ids are the row numbers
    assert list(frame[schema.id_column].astype(int).sort_values()) == list(range(1, 401))


def test_suggest_schema_reads_parquet_gzip_and_only_a_sample(tmp_path):
    frame = SHAPES["ieee_cis"]()
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    a = suggest_schema(tmp_path / "t.parquet").schema()
    b = suggest_schema(tmp_path / "t.csv.gz").schema()
    assert a.to_document() == b.to_document()
    assert a.entity == "card1" and a.time_unit == "s"
    small = suggest_schema(tmp_path / "t.csv.gz", sample_rows=50)
    assert small.sample_rows == 50 and "first 50 rows" in small.to_toml()


def test_suggest_schema_numeric_unix_time_gets_the_epoch(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "event_time": 1_700_000_000 + np.sort(rng.integers(0, 86_400 * 20, 300)),
            "account_id": rng.integers(0, 30, 300),
            "amount": rng.uniform(1, 100, 300).round(2),
            "channel": rng.choice(["web", "pos", "atm"], 300),
            "description": [f"free text {i}" for i in range(300)],
            "fraud": (rng.random(300) < 0.05).astype(int),
        }
    )
    frame["event_time"] = frame["event_time"] * 1000  # milliseconds, without saying so
    suggestion = suggest_from_frame(frame)
    doc = tomllib.loads(suggestion.to_toml())
    assert doc["time"] == {"unit": "ms", "origin": "1970-01-01"}
    assert doc["columns"]["entity"] == "account_id"
    assert doc["columns"]["categorical"] == ["channel"]
    assert doc["columns"]["label"] == "fraud" and "id" not in doc["columns"]
    loaded = load_transactions(frame, suggestion.schema())
    assert loaded["event_time"].min() == pd.Timestamp(frame.event_time.min(), unit="ms")
    assert "description  text with too many distinct values" in suggestion.to_toml()


def test_suggest_schema_odd_names_stay_valid_toml():
    """Quotes, backslashes and control characters in column names are escaped, and a file
    where nothing is recognised still gives a schema (with FIX placeholders)."""
    frame = pd.DataFrame({'we"ird\\name': ["x", "y"] * 10, "tab\tcol": np.arange(20.0)})
    suggestion = suggest_from_frame(frame)
    schema = suggestion.schema()
    assert schema.time == "<your time column>" and schema.amount == "<your amount column>"
    assert Schema.from_document(tomllib.loads(suggestion.to_toml())) == schema
    assert 'we"ird\\name' in schema.categorical and "tab\tcol" in schema.numeric


def test_suggest_schema_skips_an_unnamed_index_column(tmp_path):
    """The published fraudTrain.csv starts with an index column whose header is empty."""
    data = tmp_path / "fraudTrain.csv"
    SHAPES["sparkov"]().drop(columns="Unnamed: 0").to_csv(data)  # header ",trans_date..."
    assert data.read_text().startswith(",trans_date_trans_time,")
    suggestion = suggest_schema(data)
    assert ("", "a saved row index (0, 1, 2, ...), not data") in suggestion.ignored
    assert "#   (unnamed)" in suggestion.to_toml()
    schema = suggestion.schema()
    assert schema.id == "trans_num" and len(load_transactions(data, schema)) == 400


def test_suggest_schema_keeps_ground_truth_out_and_flags_what_loading_refuses():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=100, freq="h").astype(str),
            "amount": [f"${i}" for i in range(100)],
            "Class": rng.choice(["fraud", "legit"], 100),  # a label, but not 0/1
            "target": rng.integers(0, 2, 100),
            "const": 1.0,
        }
    )
    frame.loc[3, "ts"] = None
    suggestion = suggest_from_frame(frame)
    text, schema = suggestion.to_toml(), suggestion.schema()
    assert (schema.time, schema.amount, schema.label) == ("ts", "amount", "target")
    assert "CHECK: 1 missing in the sample, which loading refuses" in text
    assert "CHECK: not plain numbers in the sample (e.g. '$0')" in text
    assert "Class" not in schema.source_columns() and "const" not in schema.source_columns()
    assert "convert it to 1 = fraud, 0 = legitimate" in text
