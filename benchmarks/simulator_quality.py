"""The demo's comparison on the built-in simulator: fraudseq's default model (an ensemble of
an LSTM and XGBoost) against a one-transaction-at-a-time baseline (an LSTM with a window of 1
and the transaction's own features only).

    .venv/bin/python benchmarks/simulator_quality.py [--accounts 2000 --days 60 --seed 0]

Runs what `make demo` runs (fraudseq.demo.run) in a temporary directory, prints the
held-out metrics of both models and saves them to benchmarks/results/simulator_quality.json,
with the run's wall time. By default on the simulator's default data (the README's numbers);
`make demo` also simulates the opt-in typologies since issue 23, which `--scenarios
skimmer,new_scheme` adds here too (results then in simulator_quality-typologies.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.demo import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--test-days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", default="", help="Opt-in typologies, comma-separated.")
    args = parser.parse_args()
    scenarios = tuple(s for s in args.scenarios.split(",") if s)
    logging.basicConfig(level=logging.WARNING)
    print("machine:", describe())
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run(
            Path(tmp),
            args.accounts,
            args.days,
            args.test_days,
            args.epochs,
            args.seed,
            scenarios=scenarios,
        )
        results = json.loads((Path(tmp) / "metrics.json").read_text())
        per_scenario = scenario_recall(Path(tmp))
    seconds = time.perf_counter() - started
    print(
        f"simulator: {args.accounts} accounts, {args.days} days, seed {args.seed}; "
        f"held-out = last {args.test_days} days"
    )
    print("| Model | AP | AUC ROC | Recall @ 1% FPR | n fraud |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        print(
            f"| {name} | {r['average_precision']:.3f} | {r['auc_roc']:.3f} | "
            f"{r['recall_at_1pct_fpr']:.3f} | {r['n_fraud']} |"
        )
    print("default model, recall per scenario at 1% FPR (threshold from the held-out legit):")
    print("| Scenario | Frauds | Caught | Recall |")
    print("| --- | --- | --- | --- |")
    for scenario, r in per_scenario.items():
        if r["n_fraud"]:
            print(f"| {scenario} | {r['n_fraud']} | {r['caught']} | {r['recall']:.3f} |")
    print(f"simulate, train both, evaluate and report: {seconds:.0f}s")
    name = "simulator_quality" + ("-typologies" if scenarios else "")
    save_results(
        name,
        {
            "args": vars(args),
            "seconds": seconds,
            "models": results,
            "default_model_recall_at_1pct_fpr_by_scenario": per_scenario,
        },
    )


def scenario_recall(out: Path) -> dict:
    """The demo's default model (its scores.csv on the held-out days): recall per scenario at
    the threshold where 1% of the held-out legitimate transactions alert."""
    scores = pd.read_csv(out / "scores.csv", dtype={"transaction_id": str})
    data = pd.read_csv(out / "transactions.csv.gz", dtype={"tx_id": str})
    joined = scores.merge(data, left_on="transaction_id", right_on="tx_id", validate="1:1")
    y, score = joined["is_fraud"].to_numpy(), joined["score"].to_numpy()
    legit = np.sort(score[y == 0])
    threshold = np.nextafter(legit[int(np.ceil(0.99 * legit.size)) - 1], np.inf)
    return metrics.recall_by_scenario(y, score, threshold, joined["fraud_type"].to_numpy())


if __name__ == "__main__":
    main()
