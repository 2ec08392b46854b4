"""Commands that make data and models: simulate, train, score."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from fraudseq.cli.app import DataArg, FromOpt, ModelDirArg, UntilOpt, app
from fraudseq.io import write_table

log = logging.getLogger("fraudseq")


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Output file (.csv, .csv.gz or .parquet).")],
    accounts: Annotated[int, typer.Option(min=1, help="Number of card accounts.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Number of days.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    start: Annotated[str, typer.Option(help="First day.")] = "2026-01-01",
) -> None:
    """Write simulated card transactions with labelled fraud scenarios."""
    from fraudseq.simulate import simulate as run_simulation

    frame = run_simulation(accounts=accounts, days=days, seed=seed, start=start)
    write_table(frame, out)
    log.info("wrote %d transactions (%d fraud) to %s", len(frame), frame["is_fraud"].sum(), out)


@app.command()
def train(
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Model directory to write (replaced only on success).")],
    schema: Annotated[
        Path | None, typer.Option(help="Schema TOML; default: simulator columns.")
    ] = None,
    model: Annotated[str, typer.Option(help="Model family: lstm, gru or rnn.")] = "lstm",
    train_from: Annotated[str | None, typer.Option(help="First training date (inclusive).")] = None,
    train_until: Annotated[str | None, typer.Option(help="Train on time < this date.")] = None,
    valid_days: Annotated[
        float, typer.Option(min=0, help="Last days before --train-until for validation.")
    ] = 7,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    window: Annotated[int, typer.Option(min=1, help="Events per window.")] = 16,
    batch_size: Annotated[int, typer.Option(min=1)] = 512,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a sequence model on labelled transactions before --train-until."""
    from fraudseq.fraud_model import FraudModel
    from fraudseq.schema import Schema

    parsed = Schema.from_toml(schema) if schema else Schema.simulator()
    fitted = FraudModel(model, window=window, epochs=epochs, batch_size=batch_size, seed=seed)
    fitted.fit(data, parsed, train_from=train_from, train_until=train_until, valid_days=valid_days)
    fitted.save(out)
    m = fitted.validation_metrics_
    log.info(
        "validation AP %.4f  AUC ROC %.4f  threshold %.4f",
        m["average_precision"],
        m["auc_roc"],
        fitted.threshold_,
    )
    log.info("model saved to %s", out)


@app.command()
def score(
    model_dir: ModelDirArg,
    data: DataArg,
    out: Annotated[Path, typer.Option(help="Scores file: transaction_id,score,alert.")],
    start: FromOpt = None,
    end: UntilOpt = None,
) -> None:
    """Score transactions in [--from, --until); earlier ones serve as history."""
    from fraudseq.fraud_model import FraudModel

    scores = FraudModel.load(model_dir).score(data, start=start, end=end)
    write_table(scores, out)
    log.info("scored %d transactions (%d alerts) into %s", len(scores), scores["alert"].sum(), out)
