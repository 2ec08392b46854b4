"""The unsupervised autoencoder on the built-in simulator: trained on legitimate windows only
(labels unused otherwise), evaluated on the held-out days.

    .venv/bin/python benchmarks/autoencoder_simulator.py [--accounts 2000 --days 60 --seed 0]

Trains FraudModel("autoencoder") on transactions before --train-until with the last
--valid-days as validation (early stopping on reconstruction loss, ranks taken there), then
prints AUC ROC, AP and recall at 1% FPR on [--train-until, end), overall and per scenario,
and saves them to benchmarks/results/autoencoder_simulator.json (with --without given:
autoencoder_simulator-without-<blocks or "nothing">.json).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.fraud_model import DEFAULT_FEATURES, FraudModel  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402

HELD_OUT = ("average_precision", "auc_roc", "recall_at_1pct_fpr", "n_fraud")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-until", default="2026-02-16")
    parser.add_argument("--valid-days", type=float, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument(
        "--without",
        help="comma-separated feature blocks to leave out (default: the autoencoder's default, "
        "every block but counterparty_risk, the one built from delayed labels); '' keeps all",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    print("machine:", describe())
    frame = simulate(accounts=args.accounts, days=args.days, seed=args.seed)
    started = time.perf_counter()
    without = None if args.without is None else {b for b in args.without.split(",") if b}
    model = FraudModel(
        "autoencoder",
        features=None
        if without is None
        else tuple(b for b in DEFAULT_FEATURES if b not in without),
        epochs=args.epochs,
        hidden_size=args.hidden_size,
        seed=args.seed,
        progress=False,
    ).fit(frame, train_until=args.train_until, valid_days=args.valid_days)
    seconds = time.perf_counter() - started
    result = model.evaluate(frame, start=args.train_until)
    scores = model.score(frame, start=args.train_until)
    held_out = (
        frame[frame["ts"] >= args.train_until].set_index("tx_id").loc[scores["transaction_id"]]
    )
    print(
        f"simulator: {args.accounts} accounts, {args.days} days, seed {args.seed}; "
        f"train until {args.train_until}, {args.valid_days:g} validation days; "
        f"{len(model.history_)} epochs in {seconds:.0f}s; "
        f"feature blocks: {', '.join(model.encoder_.blocks)}"
    )
    name = "autoencoder" + (
        " (no labels at all)"
        if "counterparty_risk" not in model.encoder_.blocks
        else " (labels only in the delayed counterparty-risk features)"
    )
    print("| Model | AP | AUC ROC | Recall @ 1% FPR | n fraud |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| {name} | {result['average_precision']:.3f} | "
        f"{result['auc_roc']:.3f} | {result['recall_at_1pct_fpr']:.3f} | {result['n_fraud']} |"
    )
    legit = (held_out["is_fraud"] == 0).to_numpy()
    score = scores["score"].to_numpy()
    per_scenario = {}
    for scenario in sorted(set(held_out["fraud_type"]) - {"none"}):
        picked = legit | (held_out["fraud_type"] == scenario).to_numpy()
        y = held_out["is_fraud"].to_numpy()[picked]
        per_scenario[scenario] = {"auc_roc": metrics.auc_roc(y, score[picked]), "n": int(y.sum())}
        print(f"  {scenario}: AUC ROC {per_scenario[scenario]['auc_roc']:.3f} (n={int(y.sum())})")
    threshold = model.model_.default_threshold(99.0)
    print(
        f"  99th validation percentile (threshold {threshold:.4f}): "
        f"{int(np.sum(score >= threshold))} alerts of {len(score)}, "
        f"{int(held_out['is_fraud'].to_numpy()[score >= threshold].sum())} of them fraud"
    )
    suffix = "" if without is None else "-without-" + ("-".join(sorted(without)) or "nothing")
    save_results(
        f"autoencoder_simulator{suffix}",
        {
            "args": vars(args),
            "feature_blocks": list(model.encoder_.blocks),
            "train_seconds": seconds,
            "epochs_run": len(model.history_),
            "held_out": {k: result[k] for k in HELD_OUT},
            "auc_roc_by_scenario": per_scenario,
        },
    )


if __name__ == "__main__":
    main()
