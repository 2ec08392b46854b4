"""Commands that judge models: evaluate (and later report, explain)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fraudseq.cli.app import DataArg, FromOpt, ModelDirArg, UntilOpt, app
from fraudseq.io import write_json


@app.command()
def evaluate(
    model_dir: ModelDirArg,
    data: DataArg,
    start: FromOpt = None,
    end: UntilOpt = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write metrics as JSON.")
    ] = None,
) -> None:
    """Print AUC ROC, AP, recall at 1% FPR and the alerting view at the model's threshold."""
    from fraudseq.fraud_model import FraudModel

    result = FraudModel.load(model_dir).evaluate(data, start=start, end=end)
    Console().print(metrics_table(result))
    if json_out:
        write_json(result, json_out)


def metrics_table(result: dict) -> Table:
    table = Table(title=f"{result['n']} transactions, {result['n_fraud']} fraud")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
        "average_precision",
        "auc_roc",
        "recall_at_1pct_fpr",
        "threshold",
        "precision",
        "recall",
        "f1",
    ):
        table.add_row(key, f"{result[key]:.4f}")
    c = result["confusion"]
    table.add_row("confusion (tp fp / fn tn)", f"{c['tp']} {c['fp']} / {c['fn']} {c['tn']}")
    return table
