"""The README's model comparison, through `fraudseq.comparison` (what `fraudseq compare` runs).

    .venv/bin/python benchmarks/compare_models.py --dataset simulator
    .venv/bin/python benchmarks/compare_models.py --dataset handbook

simulator: 2000 accounts x 60 days (seed 0), train before 2026-02-16 (validation: its last 7
days), test on the 14 days after. handbook: the handbook's training week 2018-07-25..07-31
(validation: the 7 days before it is not possible with `compare`'s split, so validation is the
last 2 days of the training week), test on 2018-08-01 onwards.
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
from fraudseq.models import MODELS  # noqa: E402
from fraudseq.schema import Schema  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {
    "simulator": {
        "data": lambda: simulate(accounts=2000, days=60, seed=0),
        "schema": Schema.simulator,
        "split": {"train_until": "2026-02-16", "valid_days": 7},
    },
    "handbook": {
        "data": lambda: str(ROOT.parent / "shared/data/handbook_transactions.csv.gz"),
        "schema": lambda: Schema.from_toml(ROOT / "schemas/handbook.toml"),
        "split": {"train_from": "2018-07-25", "train_until": "2018-08-01", "valid_days": 2},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="simulator")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    spec = DATASETS[args.dataset]
    print("machine:", describe())
    rows = compare_models(
        spec["data"](),
        spec["schema"](),
        args.models.split(","),
        epochs=args.epochs,
        seed=args.seed,
        **spec["split"],
    )
    print(f"dataset: {args.dataset}, split {spec['split']}, epochs {args.epochs}, seed {args.seed}")
    print("| Model | AP | AUC ROC | Recall @ 1% FPR | CP@100 | Train (s) | Scored/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['model']} | {r['average_precision']:.3f} | {r['auc_roc']:.3f} | "
            f"{r['recall_at_1pct_fpr']:.3f} | {r['cp_at_100']:.3f} | {r['train_seconds']:.0f} | "
            f"{r['scored_per_second']:,.0f} |"
        )
    out = ROOT / f"benchmarks/results/compare_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
