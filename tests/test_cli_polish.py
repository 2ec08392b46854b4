"""Issue 16: a fast `--help`, ISO-only dates, `threshold` shows what it does, `evaluate` says
why a strategy never alerts, and `make demo` logs a line at least every few seconds."""

import subprocess
import sys

import pytest

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
