"""`make demo`: simulate -> train -> evaluate -> report on the built-in simulator."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import pandas as pd

from fraudseq.fraud_model import FraudModel
from fraudseq.io import write_json, write_table
from fraudseq.report import write_model_report
from fraudseq.schema import Schema
from fraudseq.simulate import simulate

log = logging.getLogger("fraudseq")


def run(out: Path, accounts: int, days: int, test_days: int, epochs: int, seed: int) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    frame = simulate(accounts=accounts, days=days, seed=seed)
    data = write_table(frame, out / "transactions.csv.gz")
    log.info(
        "simulated %d transactions (%.2f%% fraud) -> %s",
        len(frame),
        100 * frame["is_fraud"].mean(),
        data,
    )

    schema = Schema.simulator()
    test_from = (frame["ts"].min().normalize() + pd.Timedelta(days=days - test_days)).date()
    models = {
        "fraudseq default (ensemble: LSTM + XGBoost)": FraudModel(epochs=epochs, seed=seed),
        "single-event baseline": FraudModel(
            "lstm", window=1, features=("event",), epochs=epochs, seed=seed
        ),
    }
    results = {}
    for name, model in models.items():
        log.info(
            "training %s (train until %s, validation = last 7 days before it)", name, test_from
        )
        model.fit(data, schema, train_until=test_from, valid_days=7)
        results[name] = model.evaluate(data, start=test_from)
        log.info(
            "%s: held-out AP %.4f, AUC ROC %.4f",
            name,
            results[name]["average_precision"],
            results[name]["auc_roc"],
        )
    model = next(iter(models.values()))
    model.save(out / "model")
    write_table(model.score(data, start=test_from), out / "scores.csv")
    write_json(results, out / "metrics.json")
    log.info("writing the HTML report of the default model on the held-out period")
    report = write_model_report(
        out / "report.html",
        model,
        data,
        start=test_from,
        model_dir=out / "model",
        title="fraudseq demo: the default model on simulated card transactions",
        comparison=results,
        notes={
            "simulated": f"{len(frame):,} transactions, {accounts} accounts, {days} days",
            "run time before report": f"{time.perf_counter() - started:.0f} s",
        },
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo_output"))
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--test-days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run(args.out, args.accounts, args.days, args.test_days, args.epochs, args.seed)
    print(f"\nreport: {report.resolve()}")


if __name__ == "__main__":
    main()
