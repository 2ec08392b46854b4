"""Issue 16: a fast `--help`, ISO-only dates, `threshold` shows what it does, `evaluate` says
why a strategy never alerts, and `make demo` logs a line at least every few seconds."""

import json
import logging
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from fraudseq import demo
from fraudseq.errors import FraudseqError
from fraudseq.splits import parse_time
from test_cli import run

HEAVY = (
    "torch",
    "sklearn",
    "xgboost",
    "scipy",
    "numpy",
    "pandas",
    "pyarrow",
    "fastapi",
    "uvicorn",
    "onnxruntime",
    "matplotlib",
    "safetensors",
)

# -- 1. `fraudseq --help` without torch, scikit-learn, XGBoost, pandas ---------------------

HELP_EVERY_COMMAND = f"""
import sys
import typer
from typer.testing import CliRunner
from fraudseq.cli import app

imported = {{m.split(".")[0] for m in sys.modules}}
runner = CliRunner()
for args in [["--help"]] + [[name, "--help"] for name in typer.main.get_command(app).commands]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.output, (args, result.output)
    print(" ".join(args), sorted(({{m.split(".")[0] for m in sys.modules}}) & set({HEAVY!r})))
print("on import", sorted(imported & set({HEAVY!r})))
"""


def test_the_cli_and_every_help_load_no_heavy_library():
    """Importing the CLI and answering `--help` (of the app and of each command) imports
    none of torch, scikit-learn, XGBoost, numpy, pandas...: they cost seconds to load."""
    result = subprocess.run(
        [sys.executable, "-c", HELP_EVERY_COMMAND], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[-1] == "on import []"
    commands = [line.split(" ")[0] for line in lines[1:-1]]
    assert {"train", "threshold", "evaluate", "serve"} <= set(commands)
    assert all(line.endswith(" []") for line in lines), result.stdout


def test_console_script_help_answers():
    result = subprocess.run(
        [sys.executable, "-m", "fraudseq", "train", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--train-until" in result.stdout


def test_the_package_loads_its_api_on_first_use():
    code = """
import sys
import fraudseq.simulate  # the submodule first: fraudseq.simulate must stay the function
import fraudseq
assert fraudseq.simulate.__name__ == "simulate" and callable(fraudseq.simulate)
assert "torch" not in sys.modules
from fraudseq import FraudModel, Schema, load_transactions, metrics
assert FraudModel.__name__ == "FraudModel" and metrics.__name__ == "fraudseq.metrics"
assert "torch" in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    import fraudseq

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fraudseq.nope  # noqa: B018


def test_choices_have_one_source():
    from fraudseq import choices, losses, models
    from fraudseq.models import attention, ensemble, recurrent

    assert models.MODELS is choices.MODELS and models.UNSUPERVISED is choices.UNSUPERVISED
    assert losses.LOSSES is choices.LOSSES and ensemble.COMBINERS is choices.COMBINERS
    assert tuple(recurrent.CELLS) == choices.RECURRENT
    assert tuple(attention.ATTENTION_NETWORKS) == choices.ATTENTION


# -- 2. dates: ISO 8601 only --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-02", "2026-01-02 00:00:00"),
        ("2026-01-02T10:30", "2026-01-02 10:30:00"),
        ("2026-01-02 10:30:15", "2026-01-02 10:30:15"),
        ("2026-01-02T10:30:15.250", "2026-01-02 10:30:15.250"),
        ("2026-01-02T10:30:15.123456789", "2026-01-02 10:30:15.123456789"),
        ("2026-01-02T10:30Z", "2026-01-02 10:30:00"),
        ("2026-01-02T10:30+02:00", "2026-01-02 08:30:00"),
        ("2026-01-02 10:30-05:30", "2026-01-02 16:00:00"),
    ],
)
def test_iso_dates_and_times_are_read(text, expected):
    assert parse_time(text) == pd.Timestamp(expected)


@pytest.mark.parametrize(
    "text",
    [
        "01/02/2026",  # pandas: 2 January; or is it 1 February?
        "20260102",
        "Jan 2 2026",
        "2 January 2026",
        "2026/01/02",
        "2026-W01-5",
        "2026-1-2",
        "2026-01-02T10",
        "2026-01-02T10:30+0200",
        "2026-01-02Z",
        "today",
    ],
)
def test_other_date_forms_are_refused_naming_the_accepted_ones(text):
    with pytest.raises(FraudseqError) as error:
        parse_time(text, "--from")
    message = str(error.value)
    assert message.startswith(f"--from: cannot parse {text!r} as a date; use YYYY-MM-DD")
    assert "YYYY-MM-DDTHH:MM[:SS[.fraction]]" in message and "±HH:MM" in message


def test_out_of_range_dates_say_which_part(tmp_path):
    with pytest.raises(FraudseqError, match=r"'2026-02-30' is not a valid date .*day is out"):
        parse_time("2026-02-30", "--until")
    with pytest.raises(FraudseqError, match="cannot parse 20260102"):
        parse_time(20260102)  # a number would be nanoseconds since 1970


@pytest.mark.parametrize(
    "args",
    [
        ["score", "m", "tx.csv", "--out", "x.csv", "--from", "01/02/2026"],
        ["train", "tx.csv", "--out", "m", "--train-until", "2026/01/02"],
        ["evaluate", "m", "tx.csv", "--until", "Jan 2 2026"],
        ["simulate", "--out", "x.csv", "--start", "20260101"],
    ],
)
def test_cli_refuses_non_iso_dates_before_any_work(tmp_path, monkeypatch, capsys, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tx.csv").write_text("not read\n")
    assert run(monkeypatch, *args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {args[-2]}: cannot parse {args[-1]!r} as a date; use")
    assert "YYYY-MM-DD" in err and err.count("\n") == 1


# -- 3. `fraudseq threshold` prints what the new threshold does ---------------------------


@pytest.fixture
def model_dir(trained, tmp_path):
    return trained.save(tmp_path / "model")


def stored(model_dir) -> dict:
    return json.loads((model_dir / "model.json").read_text())


def test_threshold_prints_what_it_does_on_validation(model_dir, small_csv, monkeypatch, capsys):
    assert run(monkeypatch, "threshold", model_dir, small_csv, "--strategy", "budget:5") == 0
    out = capsys.readouterr().out
    config = stored(model_dir)
    m, period = config["validation_metrics"], config["training_period"]
    c = m["confusion"]
    alerts = c["tp"] + c["fp"]
    assert out.startswith(
        f"budget:5 on the validation period [{period['valid_from']}, {period['valid_end']}): "
        f"{m['n']:,} transactions, {m['n_fraud']:,} fraud, {m['days']:g} days\n"
    )
    assert f"threshold       {config['threshold']['value']:.6f}  (was best-f1 " in out
    assert f"alerts per day  {alerts / m['days']:,.2f}  ({alerts:,} alerts)" in out
    assert abs(alerts / m["days"] - 5) < 0.5  # the budget, up to ties
    assert f"precision       {m['precision']:.4f}  ({c['tp']:,} of {alerts:,} alerts" in out
    assert f"recall          {m['recall']:.4f}  ({c['tp']:,} of {m['n_fraud']:,} fraud" in out


def test_threshold_prints_before_saving(model_dir, small_csv, monkeypatch, capsys):
    from fraudseq.fraud_model import FraudModel

    def fail(self, path):
        raise FraudseqError("disk full")

    before = stored(model_dir)
    monkeypatch.setattr(FraudModel, "save", fail)
    assert run(monkeypatch, "threshold", model_dir, small_csv, "--strategy", "recall:0.5") == 1
    captured = capsys.readouterr()
    assert "recall:0.5 on the validation period" in captured.out and "precision" in captured.out
    assert "disk full" in captured.err
    assert stored(model_dir) == before


def test_threshold_on_an_explicit_period_names_it(model_dir, small_csv, monkeypatch, capsys):
    args = ["--from", "2026-01-20", "--until", "2026-01-27"]
    assert run(monkeypatch, "threshold", model_dir, small_csv, "--strategy", "best-f1", *args) == 0
    assert capsys.readouterr().out.startswith("best-f1 on [2026-01-20, 2026-01-27): ")


# -- 4. a strategy that never alerts says why ---------------------------------------------


def test_unreachable_precision_carries_its_reason():
    from fraudseq.thresholds import choose, choose_threshold

    y = np.array([0, 1, 0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    chosen = choose("precision:0.9", y, score)
    assert chosen.threshold == np.inf
    assert chosen.reason == (
        "precision:0.9 was not reached on validation: the highest precision there was 0.5000 "
        "(1 fraud in 2 alerts at threshold 0.8000)"
    )
    assert choose("precision:0.5", y, score) == (0.6, None)  # the lowest reaching it
    assert choose_threshold("precision:0.9", y, score) == np.inf
    assert "on [a, b)" in choose("precision:0.9", y, score, period="[a, b)").reason


def test_cost_that_prefers_no_alerts_carries_its_reason():
    from fraudseq.thresholds import choose

    y = np.array([0, 1, 0, 0])
    score = np.array([0.9, 0.8, 0.7, 0.1])
    reason = choose("cost:1,5", y, score).reason
    assert reason.startswith("cost:1,5: alerting on nothing was cheapest on validation: it cost ")
    assert "1.00 (every fraud missed), the cheapest threshold 0.8000 cost 5.00 (2 alerts)" in reason
    assert choose("cost:100,1", y, score).reason is None
    assert choose("best-f1", y, score).reason is None


def validation_top_made_legit(model_dir, small_csv, tmp_path) -> str:
    """A copy of the data where the validation period's top-scored transaction is legit: no
    threshold there reaches precision 1 (every one alerts on it)."""
    from fraudseq.fraud_model import FraudModel

    period = stored(model_dir)["training_period"]
    model = FraudModel.load(model_dir)
    scores = model.score(small_csv, start=period["valid_from"], end=period["valid_end"])
    top = scores.loc[scores["score"].idxmax(), "transaction_id"]
    frame = pd.read_csv(small_csv)
    frame.loc[frame["tx_id"] == top, "is_fraud"] = 0
    path = tmp_path / "top_legit.csv"
    frame.to_csv(path, index=False)
    return str(path)


def test_threshold_and_evaluate_say_why_a_strategy_never_alerts(
    model_dir, small_csv, tmp_path, monkeypatch, capsys
):
    data = validation_top_made_legit(model_dir, small_csv, tmp_path)
    assert run(monkeypatch, "threshold", model_dir, data, "--strategy", "precision:1") == 0
    out = capsys.readouterr().out
    assert "  no alerts: precision:1 was not reached on validation: the highest precision " in out
    assert "alerts per day  0.00  (0 alerts)" in out and "precision       n/a" in out
    reason = stored(model_dir)["threshold"]["unreachable"]["precision:1"]
    assert reason.startswith("precision:1 was not reached on validation: the highest precision")

    metrics = tmp_path / "metrics.json"
    args = ["evaluate", model_dir, data, "--from", "2026-01-31", "--json", metrics]
    assert run(monkeypatch, *args) == 0
    out = capsys.readouterr().out
    assert f"precision:1 never alerts: {reason}" in out
    row = next(line for line in out.splitlines() if "precision:1 *" in line)
    assert "unreachable" in row and "n/a (no alerts)" in row and "inf" not in row
    assert " inf " not in out
    result = json.loads(metrics.read_text())
    assert result["at_thresholds"]["precision:1"]["unreachable"] == reason
    assert "unreachable" not in result["at_thresholds"]["best-f1"]


# -- 5. `make demo`: a line at least every few seconds without a terminal ------------------


def heartbeats(caplog, stage: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"... still {stage}: ")]


def test_heartbeat_logs_during_a_long_quiet_stage(caplog):
    caplog.set_level(logging.INFO)
    with demo.Heartbeat(interval=0.25) as beat:
        beat.stage = "training a fake model"
        time.sleep(1.6)  # a long epoch that logs nothing
    beats = heartbeats(caplog, "training a fake model")
    assert len(beats) >= 3
    assert "s in this stage, " in beats[0].getMessage()
    assert all(b.threadName == "heartbeat" for b in beats)
    assert not beat._thread.is_alive()  # stopped on leaving the block


def test_heartbeat_keeps_quiet_while_other_lines_flow(caplog):
    caplog.set_level(logging.INFO)
    with demo.Heartbeat(interval=1.0) as beat:
        beat.stage = "busy"
        for epoch in range(30):
            logging.getLogger("fraudseq").info("epoch %d", epoch)
            time.sleep(0.05)
    assert heartbeats(caplog, "busy") == []


def test_heartbeat_disabled_logs_nothing(caplog):
    caplog.set_level(logging.INFO)
    with demo.Heartbeat(interval=0.05, enabled=False) as beat:
        beat.stage = "on a terminal"
        time.sleep(0.3)
    assert heartbeats(caplog, "on a terminal") == [] and not beat._thread.is_alive()


def test_demo_main_beats_when_output_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(out, accounts, days, test_days, epochs, seed, heartbeat, scenarios):
        heartbeat.stage = "a fake stage"
        seen["enabled"] = heartbeat.enabled
        seen["alive"] = heartbeat._thread.is_alive()
        seen["scenarios"] = scenarios
        return tmp_path / "report.html"

    monkeypatch.setattr(demo, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["demo", "--out", str(tmp_path)])
    demo.main()  # pytest captures stderr: not a terminal
    # the demo simulates the opt-in typologies (issue 23)
    assert seen == {"enabled": True, "alive": True, "scenarios": ("skimmer", "new_scheme")}
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
