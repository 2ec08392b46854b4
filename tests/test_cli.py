"""End-to-end CLI runs on a small simulated file, in-process through the real entry point."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from fraudseq.cli import main


def run(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["fraudseq", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


def test_simulate_train_score_evaluate(tmp_path, monkeypatch, capsys):
    data = tmp_path / "tx.csv.gz"
    assert run(monkeypatch, "simulate", "--out", data, "--accounts", 200, "--days", 30) == 0
    assert len(pd.read_csv(data)) > 1000

    model = tmp_path / "model"
    assert (
        run(
            monkeypatch,
            "train",
            data,
            "--schema",
            "schemas/simulator.toml",
            "--out",
            model,
            "--train-until",
            "2026-01-24",
            "--valid-days",
            5,
            "--epochs",
            1,
            "--seed",
            1,
        )
        == 0
    )
    # The default model is the ensemble: the LSTM's weights and the booster's native file.
    assert {p.name for p in model.iterdir()} == {
        "model.json",
        "weights.safetensors",
        "m1.booster.ubj",
        "manifest.json",
    }

    scores = tmp_path / "scores.csv"
    assert (
        run(
            monkeypatch,
            "score",
            model,
            data,
            "--out",
            scores,
            "--from",
            "2026-01-24",
            "--until",
            "2026-01-28",
        )
        == 0
    )
    table = pd.read_csv(scores)
    assert list(table.columns) == ["transaction_id", "score", "alert"]
    frame = pd.read_csv(data, parse_dates=["ts"])
    assert len(table) == ((frame.ts >= "2026-01-24") & (frame.ts < "2026-01-28")).sum()
    before = data.read_bytes()  # --out naming the input would replace the transactions
    assert run(monkeypatch, "score", model, data, "--out", tmp_path / "." / data.name) == 1
    assert "is the transactions file itself" in capsys.readouterr().err
    assert data.read_bytes() == before

    metrics = tmp_path / "m.json"
    assert run(monkeypatch, "evaluate", model, data, "--from", "2026-01-24", "--json", metrics) == 0
    out = capsys.readouterr().out
    assert "average_precision" in out and "auc_roc" in out and "recall_at_1pct_fpr" in out
    # the alerting view at every stored strategy, the model's marked
    assert "best-f1 *" in out and "recall:0.8" in out and "precision:0.8" in out
    result = json.loads(metrics.read_text())
    assert 0 <= result["average_precision"] <= 1
    assert set(result["confusion"]) == {"tp", "fp", "fn", "tn"}


def test_failed_train_keeps_existing_model(tmp_path, monkeypatch, capsys):
    data = tmp_path / "tx.csv"
    assert run(monkeypatch, "simulate", "--out", data, "--accounts", 150, "--days", 20) == 0
    model = tmp_path / "model"
    assert run(monkeypatch, "train", data, "--out", model, "--epochs", 1) == 0
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    code = run(monkeypatch, "train", data, "--out", model, "--train-until", "2025-01-01")
    assert code == 1
    assert "no training transactions" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def test_bad_data_exits_nonzero_with_message(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("tx_id,card_id,ts,amount,is_fraud\n1,a,2026-01-01,5,0\n2,a,2026-01-02,oops,0\n")
    schema = tmp_path / "s.toml"
    schema.write_text(
        '[columns]\nid = "tx_id"\nentity = "card_id"\ntime = "ts"\n'
        'amount = "amount"\nlabel = "is_fraud"\n'
    )
    code = run(monkeypatch, "train", bad, "--schema", schema, "--out", tmp_path / "m")
    err = capsys.readouterr().err
    assert code == 1
    assert "amount" in err and "bad.csv" in err
    assert not (tmp_path / "m").exists()


def test_console_script_usage_error():
    result = subprocess.run(
        [sys.executable, "-m", "fraudseq", "score"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Missing argument" in result.stderr


def test_threshold_and_compare(tmp_path, monkeypatch, capsys):
    data = tmp_path / "tx.csv"
    assert run(monkeypatch, "simulate", "--out", data, "--accounts", 150, "--days", 30) == 0
    model = tmp_path / "model"
    assert (
        run(
            monkeypatch,
            "train",
            data,
            "--out",
            model,
            "--train-until",
            "2026-01-24",
            "--epochs",
            1,
            "--threshold",
            "recall:0.5",
            "--fraud-ratio",
            0.1,
        )
        == 0
    )
    config = json.loads((model / "model.json").read_text())
    assert config["threshold"]["strategy"] == "recall:0.5"
    assert set(config["threshold"]["all"]) >= {"recall:0.5", "best-f1"}

    assert run(monkeypatch, "threshold", model, data, "--strategy", "budget:5") == 0
    config = json.loads((model / "model.json").read_text())
    assert config["threshold"]["strategy"] == "budget:5"
    no_fraud = tmp_path / "no_fraud.csv"
    pd.read_csv(data).assign(is_fraud=0).to_csv(no_fraud, index=False)
    capsys.readouterr()
    assert run(monkeypatch, "threshold", model, no_fraud, "--strategy", "best-f1") == 1
    assert "no fraud in" in capsys.readouterr().err
    assert json.loads((model / "model.json").read_text()) == config  # left as it was
    scores = tmp_path / "s.csv"
    assert (
        run(
            monkeypatch,
            "score",
            model,
            data,
            "--out",
            scores,
            "--from",
            "2026-01-17",
            "--until",
            "2026-01-24",
        )
        == 0
    )
    assert pd.read_csv(scores)["alert"].sum() == 5 * 7  # 5 alerts a day on its validation week

    table = tmp_path / "compare.json"
    assert (
        run(
            monkeypatch,
            "compare",
            data,
            "--models",
            "gru,xgboost",
            "--train-until",
            "2026-01-24",
            "--epochs",
            1,
            "--json",
            table,
        )
        == 0
    )
    rows = json.loads(table.read_text())
    assert [r["model"] for r in rows] == ["gru", "xgboost"]
    assert all(0 <= r["average_precision"] <= 1 and r["scored_per_second"] > 0 for r in rows)
    out = capsys.readouterr().out
    assert "CP@100" in out and f"on {rows[0]['n_test']:,} transactions" in out
    # A test period without fraud: refused before any model trains.
    assert run(monkeypatch, "compare", no_fraud, "--train-until", "2026-01-24") == 1
    assert "no fraud among the" in capsys.readouterr().err

    code = run(monkeypatch, "threshold", model, data, "--strategy", "wat")
    assert code == 1 and "unknown threshold strategy" in capsys.readouterr().err


def test_train_bidirectional_attention_model(tmp_path, monkeypatch, small_csv):
    out = tmp_path / "model"
    code = run(
        monkeypatch, "train", small_csv, "--out", out, "--model", "lstm-attention",
        "--bidirectional", "--attention-heads", 2, "--hidden-size", 8, "--epochs", 1,
        "--train-until", "2026-01-31",
    )  # fmt: skip
    assert code == 0
    stored = json.loads((out / "model.json").read_text())
    params = stored["params"]
    assert (stored["model"], params["bidirectional"], params["attention_heads"]) == (
        "lstm-attention",
        True,
        2,
    )


def test_cli_logging_follows_the_current_stderr(tmp_path, monkeypatch):
    """The CLI's log handler writes to sys.stderr as it is when a record is logged, so a
    replaced (and later closed) stderr is never written to."""
    import io
    import logging

    assert run(monkeypatch, "simulate", "--out", tmp_path / "tx.csv", "--accounts", 20) == 0
    replacement = io.StringIO()
    monkeypatch.setattr(sys, "stderr", replacement)
    logging.getLogger("fraudseq").info("hello from the test")
    assert "hello from the test" in replacement.getvalue()


def test_brackets_in_errors_and_data_print_verbatim(
    tmp_path, monkeypatch, capsys, trained, small_frame
):
    """Messages and tables quote user data; Rich markup must neither eat nor choke on it."""
    schema = tmp_path / "s.toml"
    schema.write_text('id = "tx_id"\n')  # keys outside the [columns] table
    assert run(monkeypatch, "train", tmp_path / "x.csv", "--schema", schema, "--out", "m") == 1
    assert "missing the [columns] table" in capsys.readouterr().err

    schema.write_text(
        '[columns]\nid = "tx_id"\nentity = "card_id"\ntime = "ts"\namount = "amount"\n'
        'label = "is_fraud"\n'
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("tx_id,card_id,ts,amount,is_fraud\n1,a,2026-01-01,[/oops],0\n")
    assert run(monkeypatch, "train", bad, "--schema", schema, "--out", tmp_path / "m") == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'[/oops]'" in err and "Traceback" not in err

    frame = small_frame.copy()
    frame.loc[frame.index[-1], "device_id"] = "[/d]"
    data = tmp_path / "tx.csv"
    frame.to_csv(data, index=False)
    trained.save(tmp_path / "model")
    tx = frame["tx_id"].iloc[-1]
    assert run(monkeypatch, "explain", tmp_path / "model", data, "--transaction-id", tx) == 0
    assert "[/d]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "tx.csv", "--out", "m", "--model", "bogus"], "--model 'bogus': choose one of"),
        (["train", "tx.csv", "--out", "m", "--loss", "bogus"], "choose one of bce, focal"),
        (["train", "tx.csv", "--out", "m", "--members", "lstm,foo"], "unknown 'foo'; choose"),
        (["train", "tx.csv", "--out", "m", "--combiner", "x"], "average, stacker"),
        (["train", "tx.csv", "--out", "m", "--threshold", "foo"], "--threshold: unknown"),
        (["train", "tx.csv", "--out", "m", "--train-until", "nope"], "--train-until: cannot"),
        (["train", "tx.csv", "--out", "."], "--out .: give the model directory a name"),
        (["train", "tx.csv", "--out", "tx.csv/m"], "is a file, not a directory"),
        (["compare", "tx.csv", "--models", "lstm,bogus"], "--models 'lstm,bogus': unknown"),
        (["threshold", "m", "tx.csv", "--strategy", "percentile:150"], "0 <= P <= 100"),
        (["simulate", "--out", "x.csv", "--start", "notadate"], "--start: cannot parse"),
        (["simulate", "--out", "x.txt"], "unknown file type"),
        (["score", "m", "tx.csv", "--out", "x.csv", "--until", "soon"], "--until: cannot"),
        (["score", "m", "tx.csv", "--out", "."], "--out . is a directory"),
        (["score", "m", "tx.csv", "--out", "tx.csv/x.csv"], "is a file, not a directory"),
        (["evaluate", "m", "tx.csv", "--json", "."], "--json . is a directory"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path, monkeypatch, capsys, args, message):
    """One `error:` line naming the option and what it accepts, exit 1, and nothing read or
    trained first (neither the data nor the model directory exist)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tx.csv").write_text("not read\n")
    assert run(monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_unwritable_output_is_one_error_naming_the_path(tmp_path):
    from fraudseq.errors import FraudseqError
    from fraudseq.io import write_table

    (tmp_path / "file").write_text("")
    with pytest.raises(FraudseqError, match="cannot write .*file/x.csv"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "file" / "x.csv")


def test_evaluate_without_fraud_warns_and_writes_strict_json(
    tmp_path, monkeypatch, capsys, trained, small_frame
):
    data = tmp_path / "tx.csv"
    small_frame.assign(is_fraud=0).to_csv(data, index=False)
    trained.save(tmp_path / "model")
    out = tmp_path / "m.json"
    assert run(monkeypatch, "evaluate", tmp_path / "model", data, "--json", out) == 0
    assert "no fraud among the" in capsys.readouterr().err

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    result = json.loads(out.read_text(), parse_constant=reject)
    assert result["n_fraud"] == 0 and result["auc_roc"] is None
    assert result["average_precision"] is None
