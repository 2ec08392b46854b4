"""The compromise-exposure block (issue 23) on the handbook data: does it help scenario 2,
compromised terminals, and do the handbook results hold?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/exposure_handbook.py \
        [--data ../shared/data/handbook_transactions.csv.gz] [--models xgboost] [--out FILE]

Protocol B of benchmarks/handbook.py (training before 2018-08-01, its last 7 days for
validation, the delay week, test 2018-08-08..14 without the known compromised cards). For
each model family (`--models`, default XGBoost), trains it with the default feature blocks
and with the defaults plus `exposure`, and reports for both `handbook.evaluate`'s metrics
(AP, AUC ROC, recall at 1% FPR, CP@100) and, per handbook scenario (1: amount over 220, 2:
compromised terminal, 3: compromised customer), the recall at 1% FPR: that scenario's frauds
against every genuine test transaction, at the score that flags 1% of them. Prints the
table and writes benchmarks/results/exposure_handbook.json (machine, load averages, times).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from handbook import PROTOCOLS, ROOT, evaluate, ranking, revealable, test_set  # noqa: E402
from machine import describe, save_results  # noqa: E402

from fraudseq.fraud_model import DEFAULT_FEATURES, FraudModel  # noqa: E402
from fraudseq.metrics import recall_at_fpr  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

BLOCKS = {"default": DEFAULT_FEATURES, "default+exposure": (*DEFAULT_FEATURES, "exposure")}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def per_scenario(test, schema: Schema, score: np.ndarray) -> dict[str, float]:
    """Each scenario's recall at 1% FPR: its frauds against all genuine test rows."""
    scenario = test[schema.scenario].astype(str).to_numpy()
    fraud = test[schema.label].to_numpy() == 1
    out = {}
    for name in sorted(set(scenario[fraud])):
        rows = ~fraud | (scenario == name)
        out[name] = recall_at_fpr(fraud[rows].astype(int), score[rows], 0.01)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/handbook_transactions.csv.gz")
    )
    parser.add_argument("--models", default="xgboost")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/exposure_handbook.json"))
    args = parser.parse_args()
    results = {"machine": describe(), "command": " ".join(sys.argv), "load_start": load()}
    print("machine:", results["machine"], "| load average:", results["load_start"])
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    frame = load_transactions(args.data, schema, require_label=True)
    test = test_set(frame, schema)
    shown = revealable(frame, test, schema)
    fraud = test[schema.label] == 1
    results["frauds_per_scenario"] = (
        test.loc[fraud, schema.scenario].astype(str).value_counts().to_dict()
    )
    print(
        f"test set {len(test):,} transactions; frauds by scenario:", results["frauds_per_scenario"]
    )
    results["runs"] = []
    for family in args.models.split(","):
        for name, blocks in BLOCKS.items():
            model = FraudModel(family, features=blocks, epochs=args.epochs, seed=0)
            started = time.perf_counter()
            model.fit(frame, schema, **PROTOCOLS["B"])
            seconds = time.perf_counter() - started
            run = {"model": family, "features": name, "train_seconds": seconds, "load": load()}
            run.update(evaluate(model, frame, test, schema, shown))
            score = ranking(model, frame, test, schema)["score"]
            run["recall_at_1pct_fpr_per_scenario"] = per_scenario(test, schema, score)
            results["runs"].append(run)
            print(
                family,
                name,
                {
                    k: run[k]
                    for k in (
                        "average_precision",
                        "auc_roc",
                        "recall_at_1pct_fpr",
                        "cp_at_100",
                        "recall_at_1pct_fpr_per_scenario",
                        "train_seconds",
                        "load",
                    )
                },
                flush=True,
            )
    results["load_end"] = load()
    print(table(results))
    save_results("exposure_handbook", results, Path(args.out))


def table(results: dict) -> str:
    lines = [
        "| Model | Features | AP | AUC ROC | Recall @ 1% FPR | CP@100 "
        "| Scenario 1 | Scenario 2 | Scenario 3 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        s = r["recall_at_1pct_fpr_per_scenario"]
        lines.append(
            f"| {r['model']} | {r['features']} | {r['average_precision']:.3f} | {r['auc_roc']:.3f} "
            f"| {r['recall_at_1pct_fpr']:.3f} | {r['cp_at_100']:.3f} | "
            + " | ".join(f"{s[k]:.3f}" if k in s else "-" for k in ("1", "2", "3"))
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
