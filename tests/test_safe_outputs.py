"""Outputs never destroy inputs or the model, `train --out` replaces only a model directory,
and what fraudseq writes for people (terminal, spreadsheet) carries no active content from
the data (issue 17, items 4 and 9)."""

import json
import os

import pandas as pd
import pytest

from fraudseq.artifacts import save_model_dir
from fraudseq.errors import ModelDirectoryError
from test_cli import run


@pytest.fixture(autouse=True)
def _no_model_key(monkeypatch):
    monkeypatch.delenv("FRAUDSEQ_MODEL_KEY", raising=False)


def snapshot(directory) -> dict:
    """Every file under `directory` with its bytes (links as their target)."""
    return {
        str(p.relative_to(directory)): (
            os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None
        )
        for p in sorted(directory.rglob("*"))
    }


def web_project(root):
    """A folder that holds a file named manifest.json but is no model."""
    root.mkdir()
    (root / "manifest.json").write_text('{"name": "my app", "icons": []}\n')
    (root / "index.html").write_text("<h1>hi</h1>\n")
    (root / "src").mkdir()
    (root / "src" / "app.js").write_text("console.log(1)\n")
    return root


# -- train --out replaces only a fraudseq model directory ------------------------------------


def test_save_refuses_a_folder_that_merely_has_a_manifest(tmp_path):
    site = web_project(tmp_path / "site")
    before = snapshot(site)
    with pytest.raises(ModelDirectoryError, match="not a fraudseq model directory"):
        save_model_dir(site, {"a": 1})
    assert snapshot(site) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no staging left


def model_dir(path):
    save_model_dir(path, {"a": 1}, None, {"booster.ubj": b"\x00"})
    return path


@pytest.mark.parametrize(
    "change",
    ["extra file", "extra folder", "manifest names other files", "symlink", "not json"],
)
def test_save_refuses_a_model_directory_holding_anything_else(tmp_path, change):
    out = model_dir(tmp_path / "m")
    manifest = out / "manifest.json"
    if change == "extra file":
        (out / "notes.txt").write_text("mine\n")
    elif change == "extra folder":
        (out / "src").mkdir()
        (out / "src" / "app.js").write_text("x\n")
    elif change == "manifest names other files":
        (out / "index.html").write_text("<h1>hi</h1>\n")
        doc = json.loads(manifest.read_text())
        doc["files"]["index.html"] = "0" * 64
        manifest.write_text(json.dumps(doc))
    elif change == "symlink":
        (tmp_path / "elsewhere.txt").write_text("keep\n")
        (out / "link").symlink_to(tmp_path / "elsewhere.txt")
    else:
        manifest.write_text("{not json")
    before = snapshot(out)
    with pytest.raises(ModelDirectoryError, match="not a fraudseq model directory"):
        save_model_dir(out, {"a": 2})
    assert snapshot(out) == before


def test_save_replaces_a_model_directory_and_an_empty_one(tmp_path):
    out = model_dir(tmp_path / "m")
    (out / ".DS_Store").write_bytes(b"")  # the OS's own file does not make it user data
    save_model_dir(out, {"a": 2})
    assert json.loads((out / "model.json").read_text()) == {"a": 2}
    (tmp_path / "empty").mkdir()
    save_model_dir(tmp_path / "empty", {"a": 3})


def test_train_out_refuses_a_web_project_before_training(tmp_path, monkeypatch, capsys, small_csv):
    site = web_project(tmp_path / "site")
    before = snapshot(site)
    args = ["--model", "xgboost", "--train-until", "2026-01-31"]  # quick, if it ran at all
    code = run(monkeypatch, "train", small_csv, "--out", site, *args)
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: --out ") and err.count("\n") == 1
    assert "not a fraudseq model directory" in err
    assert snapshot(site) == before


# -- no output option names an input or a file in the model directory ------------------------


@pytest.fixture
def workspace(tmp_path, trained, small_frame):
    data = tmp_path / "tx.csv"
    small_frame.to_csv(data, index=False)
    schema = tmp_path / "schema.toml"
    schema.write_text(
        "[columns]\n"
        'id = "tx_id"\nentity = "card_id"\ntime = "ts"\namount = "amount"\n'
        'label = "is_fraud"\ncategorical = ["mcc", "country", "channel", "device_id"]\n'
    )
    model = tmp_path / "model"
    trained.save(model)
    (tmp_path / "link.csv").symlink_to(data)
    os.link(data, tmp_path / "hard.csv")
    os.link(model / "model.json", tmp_path / "hard-model.json")
    return tmp_path


CASES = [
    # command line (DATA, SCHEMA, MODEL and W/ stand for the workspace's), option, what it names
    ("report MODEL DATA --out DATA", "--out", "the transactions file"),
    ("report MODEL DATA --out W/link.csv", "--out", "the transactions file"),
    ("report MODEL DATA --out W/hard.csv", "--out", "the transactions file"),
    ("report MODEL DATA --out MODEL/model.json", "--out", "inside the model directory"),
    ("report MODEL DATA --out W/hard-model.json", "--out", "the model directory's model.json"),
    ("evaluate MODEL DATA --json DATA", "--json", "the transactions file"),
    ("evaluate MODEL DATA --json MODEL/metrics.json", "--json", "inside the model directory"),
    (
        "explain MODEL DATA --transaction-id T00000100 --json DATA",
        "--json",
        "the transactions file",
    ),
    (
        "explain MODEL DATA --transaction-id T00000100 --json MODEL/x.json",
        "--json",
        "inside the model",
    ),
    ("score MODEL DATA --out DATA", "--out", "the transactions file"),
    ("score MODEL DATA --out W/hard.csv", "--out", "the transactions file"),
    ("score MODEL DATA --out MODEL/scores.csv", "--out", "inside the model directory"),
    ("compare DATA --schema SCHEMA --json SCHEMA COMPARE", "--json", "the schema file"),
    ("compare DATA --json W/link.csv COMPARE", "--json", "the transactions file"),
    ("check DATA --schema SCHEMA --json W/hard.csv", "--json", "the transactions file"),
    ("check DATA --schema SCHEMA --json MODEL/profile.json", "--json", "inside the model"),
    ("simulate --out MODEL/tx.csv", "--out", "inside the model directory"),
    ("train DATA --schema SCHEMA --out MODEL/sub", "--out", "inside the model directory"),
]


def expand(line: str, root) -> list[str]:
    line = line.replace("COMPARE", "--models xgboost --train-until 2026-01-31 --epochs 1")
    names = {"DATA": root / "tx.csv", "SCHEMA": root / "schema.toml", "MODEL": root / "model"}
    args = []
    for word in line.split():
        for key, value in names.items():
            word = word.replace(key, str(value))
        args.append(word.replace("W/", f"{root}/"))
    return args


@pytest.mark.parametrize(("line", "option", "names"), CASES)
def test_outputs_never_name_an_input_or_the_model(
    workspace, monkeypatch, capsys, line, option, names
):
    before = snapshot(workspace)
    capsys.readouterr()
    assert run(monkeypatch, *expand(line, workspace)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {option} ") and err.count("\n") == 1, err
    assert names in err and "Traceback" not in err
    assert snapshot(workspace) == before


def test_train_out_must_not_hold_its_inputs(tmp_path, monkeypatch, capsys, small_frame):
    """A model directory that holds the data (or the schema) would delete it on success."""
    out = tmp_path / "model"
    out.mkdir()
    data = out / "tx.csv"
    small_frame.to_csv(data, index=False)
    before = snapshot(tmp_path)
    assert run(monkeypatch, "train", data, "--out", out, "--epochs", 1) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --out ") and err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_distinct_outputs_are_still_written(workspace, monkeypatch):
    """The check compares files, not names: a new file beside the data is fine."""
    out = workspace / "scores.csv"
    args = expand("score MODEL DATA --out W/scores.csv --from 2026-02-05", workspace)
    assert run(monkeypatch, *args) == 0
    assert len(pd.read_csv(out)) > 0


# -- terminal and spreadsheet injection -------------------------------------------------------

ESC = "\x1b"


def test_explain_escapes_control_characters_and_prints_markup_literally(
    tmp_path, monkeypatch, capsys, trained, small_frame
):
    frame = small_frame.copy()
    last = frame.index[-1]
    card = frame.loc[last, "card_id"]
    hostile = {
        "device_id": f"{ESC}]0;pwned{ESC}\\[red]dev :smile:",
        "country": f"FR{ESC}[2J\rXX",
        "mcc": "\u202egnp.exe",
    }
    for column, value in hostile.items():
        frame.loc[last, column] = value
    tx = f"T{ESC}[31mred"
    frame.loc[last, "tx_id"] = tx
    frame.loc[frame["card_id"] == card, "card_id"] = f"C{ESC}[5m\x07"
    data = tmp_path / "tx.parquet"  # CSV is read without line breaks in values
    frame.to_parquet(data, index=False)
    trained.save(tmp_path / "model")
    capsys.readouterr()
    assert run(monkeypatch, "explain", tmp_path / "model", data, "--transaction-id", tx) == 0
    out = capsys.readouterr().out
    assert not any(ch in out for ch in (ESC, "\x07", "\r", "\u202e")), repr(out)
    assert "T\\x1b[31mred" in out and "C\\x1b[5m\\x07" in out  # id and entity
    assert "FR\\x1b[2J\\rXX" in out and "\\u202egnp.exe" in out  # categorical values
    assert "[red]dev :smile:" in out  # Rich markup and emoji codes print as they are


def test_error_messages_escape_control_characters(
    tmp_path, monkeypatch, capsys, trained, small_frame
):
    trained.save(tmp_path / "model")
    data = tmp_path / "tx.csv"
    small_frame.head(50).to_csv(data, index=False)
    tx = f"X{ESC}[2J"
    assert run(monkeypatch, "explain", tmp_path / "model", data, "--transaction-id", tx) == 1
    err = capsys.readouterr().err
    assert ESC not in err and "X\\x1b[2J" in err


FORMULAS = ['=HYPERLINK("http://x","y")', "+1", "-123", "@SUM(A1)", "\tx", "\rx"]


def test_score_csv_neutralises_formula_leading_ids(tmp_path, monkeypatch, trained, small_frame):
    frame = small_frame.copy()
    rows = frame.index[-len(FORMULAS) :]
    frame.loc[rows, "tx_id"] = FORMULAS
    data = tmp_path / "tx.parquet"  # CSV is read without line breaks in values
    frame.to_parquet(data, index=False)
    trained.save(tmp_path / "model")
    for name in ("scores.csv", "scores.csv.gz", "scores.parquet"):
        out = tmp_path / name
        assert run(monkeypatch, "score", tmp_path / "model", data, "--out", out) == 0
        if name.endswith(".parquet"):
            ids = pd.read_parquet(out)["transaction_id"]
            expected = FORMULAS  # Parquet is typed data, not a spreadsheet: ids as they are
        else:
            ids = pd.read_csv(out, dtype=str, keep_default_na=False)["transaction_id"]
            expected = ["'" + value for value in FORMULAS]
        assert set(expected) <= set(ids), name
        assert frame["tx_id"].iloc[0] in set(ids)  # ordinary ids unchanged


def test_spreadsheet_safe_touches_only_text_cells():
    from fraudseq.io import spreadsheet_safe

    frame = pd.DataFrame(
        {"id": ["=1+1", "-5", "ok", None], "score": [-0.5, 1.0, 2.0, 3.0], "n": [-1, 2, 3, 4]}
    )
    safe = spreadsheet_safe(frame)
    assert safe["id"].tolist()[:3] == ["'=1+1", "'-5", "ok"] and pd.isna(safe["id"].iloc[3])
    assert safe["score"].tolist() == [-0.5, 1.0, 2.0, 3.0] and safe["n"].tolist() == [-1, 2, 3, 4]
    assert frame["id"].iloc[0] == "=1+1"  # the caller's frame is left as it was


def test_categorical_text_is_written_and_neutralised(tmp_path):
    from fraudseq.io import write_table

    frame = pd.DataFrame({"id": pd.Series(["=1+1", "a\rb"], dtype="category"), "n": [1, 2]})
    out = write_table(frame, tmp_path / "t.csv", for_spreadsheets=True)
    assert out.read_bytes() == b'id,n\r\n\'=1+1,1\r\n"a\rb",2\r\n'
