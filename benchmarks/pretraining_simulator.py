"""`fraudseq pretrain` on the built-in simulator: pretraining time, held-out masked accuracy
against the majority class, and one fine-tuning check.

    .venv/bin/python benchmarks/pretraining_simulator.py [--accounts 3000 --days 60]

Simulates the data, keeps the labels of a seeded `--label-fraction` of the accounts (the
others blank: not known), then for each family in `--families` pretrains an encoder (CLI
defaults: 10 epochs at most, 100,000 windows an epoch) on every transaction before
`--test-from` (no labels read) and prints its wall and CPU time, the load, and each field's
held-out masked accuracy next to the majority class's. Then, for the transformer, it
fine-tunes from the encoder and trains from scratch on the same label-free features
(`--finetune-epochs`, seeds `--seeds`), labels of the period before `--test-from` only, and
prints the test AP of each on [--test-from, end) with every label. Results go to
benchmarks/results/pretraining_simulator.json. The full comparison over label fractions and
families is the label-efficiency benchmark (benchmarks/label_efficiency.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq.fraud_model import FraudModel, default_features  # noqa: E402
from fraudseq.pretraining import pretrain  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-from", default="2026-02-23")
    parser.add_argument("--label-fraction", type=float, default=0.1)
    parser.add_argument("--families", default="transformer,lstm")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(describe())

    full = simulate(accounts=args.accounts, days=args.days, seed=args.seed)
    accounts = full["card_id"].unique()
    rng = np.random.default_rng(args.seed)
    kept = rng.choice(accounts, int(len(accounts) * args.label_fraction), replace=False)
    data = full.assign(
        is_fraud=full["is_fraud"].astype(np.float64).where(full["card_id"].isin(kept))
    )
    print(f"{len(full):,} transactions; labels kept for {len(kept)} of {len(accounts)} accounts")

    results: dict = {"args": vars(args), "pretraining": {}, "fine_tuning": []}
    encoders = {}
    work = Path(tempfile.mkdtemp(prefix="pretraining-bench-"))
    for family in args.families.split(","):
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        params = FraudModel(family, batch_size=256, learning_rate=2e-3, progress=False)
        encoder = pretrain(data, None, params, until=args.test_from)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        encoders[family] = encoder.save(work / family)
        evaluation = encoder.info["evaluation"]
        row = {
            "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1),
            "load_before": load,
            "load_after": os.getloadavg()[0],
            "epochs": len(encoder.info["history"]),
            "rows": encoder.info["pretraining"]["rows"],
            "evaluation": evaluation,
        }
        results["pretraining"][family] = row
        print(
            f"\n{family}: {row['rows']:,} rows, {row['epochs']} epochs, {wall:.0f} s wall, "
            f"{cpu:.0f} s CPU (load {load:.2f} before, {row['load_after']:.2f} after)"
        )
        for field, v in evaluation.items():
            print(f"  {field:16s} accuracy {v['accuracy']:.3f}  majority {v['majority']:.3f}")

    if "transformer" in encoders:
        print(f"\ntransformer, {args.finetune_epochs} epochs, test AP from {args.test_from}:")
        free = default_features("autoencoder")
        for seed in (int(s) for s in args.seeds.split(",")):
            for name, model in (
                ("pretrained", FraudModel.from_encoder(encoders["transformer"], seed=seed,
                                                       epochs=args.finetune_epochs)),
                ("scratch", FraudModel("transformer", features=free, seed=seed,
                                       epochs=args.finetune_epochs)),
            ):  # fmt: skip
                model.progress = False
                model.fit(data, train_until=args.test_from)
                ap = model.evaluate(full, start=args.test_from)["average_precision"]
                results["fine_tuning"].append({"seed": seed, "start": name, "test_ap": ap})
                print(f"  seed {seed}  {name:10s} AP {ap:.4f}  (load {os.getloadavg()[0]:.2f})")
    save_results("pretraining_simulator", results)


if __name__ == "__main__":
    main()
