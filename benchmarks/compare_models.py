"""The README's model comparison on the simulator, through `fraudseq.comparison` (what
`fraudseq compare` runs).

    .venv/bin/python benchmarks/compare_models.py [--models lstm,gru,...] [--epochs 10]

2000 accounts x 60 days (seed 0), train before 2026-02-16 (validation: its last 7 days), test
on the 14 days after. The comparison on the handbook data is `benchmarks/handbook.py
--protocols A --models ...`, which applies the handbook's test-set rules.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from fraudseq.comparison import compare_models  # noqa: E402
from fraudseq.io import write_json  # noqa: E402
from fraudseq.models import MODELS  # noqa: E402
from fraudseq.schema import Schema  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIMULATOR = {
    "data": lambda: simulate(accounts=2000, days=60, seed=0),
    "schema": Schema.simulator,
    "split": {"train_until": "2026-02-16", "valid_days": 7},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = SIMULATOR
    print("machine:", describe())
    rows = compare_models(
        spec["data"](),
        spec["schema"](),
        args.models.split(","),
        epochs=args.epochs,
        seed=args.seed,
        **spec["split"],
    )
    out = ROOT / "benchmarks/results/compare_simulator.json"
    # A run of some models replaces their rows and keeps the others (in MODELS order).
    previous = {r["model"]: r for r in json.loads(out.read_text())["rows"]} if out.exists() else {}
    merged = previous | {r["model"]: r for r in rows}
    rows = [merged[m] for m in MODELS if m in merged]
    print(f"dataset: simulator, split {spec['split']}, epochs {args.epochs}, seed {args.seed}")
    print("| Model | AP | AUC ROC | Recall @ 1% FPR | CP@100 | Train (s) | Scored/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['average_precision']:.3f} | {r['auc_roc']:.3f} | "
            f"{r['recall_at_1pct_fpr']:.3f} | {r['cp_at_100']:.3f} | {r['train_seconds']:.0f} | "
            f"{r['scored_per_second']:,.0f} |"
        )
    write_json({"machine": describe(), "rows": rows}, out)


if __name__ == "__main__":
    main()
