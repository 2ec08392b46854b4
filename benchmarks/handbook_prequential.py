"""The Fraud Detection Handbook's prequential validation: fraudseq against the published figures.

    .venv/bin/python benchmarks/handbook_prequential.py [--models xgboost,lstm] [--epochs 10]

Four folds of 7 training days, a 7-day delay and 7 test days, the latest fold training on
2018-07-25..07-31 and testing on 2018-08-08..08-14 (the handbook's test week), each earlier
fold shifted back 7 days. Every fold trains a fresh model with the same hyperparameters and
seed, validates on the 7 days before its training week, and drops the test transactions of
known compromised customers (the handbook's rule). Prints mean ± std of AUC ROC, AP and
CP@100 beside the handbook's prequential figures (../shared/data/README.md) and writes
benchmarks/results/handbook_prequential.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from handbook import build, test_set  # noqa: E402
from machine import describe  # noqa: E402

from fraudseq.prequential import prequential  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = {  # ../shared/data/README.md: prequential model selection, 4 folds
    "XGBoost": (0.869, 0.687, 0.303),
    "LSTM (last 5 transactions)": (0.876, 0.665, 0.297),
    "LSTM with attention": (0.874, 0.667, 0.295),
}


KEYS = ("auc_roc", "average_precision", "cp_at_100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/handbook_transactions.csv.gz")
    )
    parser.add_argument("--models", default="xgboost,lstm,ensemble")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--start", default="2018-07-25")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/handbook_prequential.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print("machine:", describe(), flush=True)
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    started = time.perf_counter()
    frame = load_transactions(args.data, schema, require_label=True)
    test = test_set(frame, schema)
    n_test, n_fraud = len(test), int(test[schema.label].sum())
    print(
        f"loaded {len(frame):,} rows in {time.perf_counter() - started:.0f}s; known-card removal "
        f"on the handbook's test week leaves {n_test:,} transactions, {n_fraud} frauds "
        "(handbook: 58,264 and 385)",
        flush=True,
    )
    results = {}
    for name in args.models.split(","):
        # Nets at batch 1024 (faster on CPU; the default is 512); xgboost ignores both.
        template = build(
            name, args.epochs, args.seed, hidden_size=args.hidden_size, batch_size=1024
        )
        started = time.perf_counter()
        result = prequential(
            template.model,
            template.get_params(),
            frame,
            schema,
            folds=args.folds,
            train_days=7,
            delay_days=7,
            test_days=7,
            start=args.start,
            drop_known_frauds=True,
        )
        result["seconds"] = round(time.perf_counter() - started, 1)
        results[name] = result
        for fold in result["folds"]:
            print(
                f"[{name}] fold {fold['index']} test {fold['test_from']}..{fold['test_until']}: "
                f"AUC {fold['auc_roc']:.3f} AP {fold['average_precision']:.3f} "
                f"CP@100 {fold['cp_at_100']:.3f} ({fold['n_test']:,} tx, {fold['n_fraud']} "
                f"fraud, {fold['seconds']:.0f}s)",
                flush=True,
            )
    print()
    print(markdown(results, args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": describe(), "args": vars(args), "published": PUBLISHED, "results": results},
            indent=2,
            default=str,
        )
        + "\n"
    )


def markdown(results: dict, args) -> str:
    lines = [
        "| Model | AUC ROC | AP | CP@100 | time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, values in PUBLISHED.items():
        cells = " | ".join(f"{v:.3f}" for v in values)
        lines.append(f"| Handbook: {name} (published) | {cells} | |")
    for name, r in results.items():
        cells = [f"{r['mean'][k]:.3f} ± {r['std'][k]:.3f}" for k in KEYS]
        label = f"fraudseq {name}" + (
            f" (window 16, hidden {args.hidden_size}, batch 1024, ≤{args.epochs} epochs)"
            if name != "xgboost"
            else " (fraudseq features)"
        )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {r['seconds']:.0f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
