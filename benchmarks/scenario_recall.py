"""Novelty fusion (issue 23): per-scenario recall at 1% FPR of today's default model and of
the default with an unsupervised member fused as novelty, on the simulator with both opt-in
typologies (`skimmer`, and `new_scheme` starting on the first held-out day, as in the demo).

    .venv/bin/python benchmarks/scenario_recall.py [--accounts 2000 --days 60 --seed 0]
        [--features +exposure]   # the default blocks plus another block, or a full list

One ensemble of lstm, xgboost, surprise and autoencoder is trained (its members as the
default model trains them: the lstm and xgboost are the same, with the same seeds); each
variant is then the ensemble's own combination chosen on validation (`EnsembleWindowModel`:
weights, and the novelty gate and boost) over a subset of these fitted members:

- (a) `default`: lstm + xgboost (no novelty member: today's default model);
- (b) `+ surprise`: lstm + xgboost, surprise fused as novelty;
- (c) `+ autoencoder`: lstm + xgboost, autoencoder fused as novelty;
- (d) `+ surprise + autoencoder`: both, their mean rank logit fused.

Prints held-out AP, AUC ROC, recall at 1% FPR, CP@100 and recall per scenario at the
threshold where 1% of the held-out legitimate transactions alert, the chosen gate and
boost, and each unsupervised member alone. Saves benchmarks/results/scenario_recall.json
(with `--features`, scenario_recall-<features>.json), with the machine and the load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402
from simulator_quality import recall_at_legit_fpr  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.fraud_model import DEFAULT_FEATURES, FraudModel  # noqa: E402
from fraudseq.models.ensemble import (  # noqa: E402
    NOVELTY_BOOSTS,
    NOVELTY_GATES,
    EnsembleWindowModel,
    pick_novelty,
    rank_logit,
)
from fraudseq.schema import Schema, load_transactions  # noqa: E402
from fraudseq.simulate import OPT_IN_SCENARIOS, simulate  # noqa: E402
from fraudseq.training import WindowSet, WindowSource  # noqa: E402

MEMBERS = ("lstm", "xgboost", "surprise", "autoencoder")
VARIANTS = {
    "default (lstm + xgboost)": ("lstm", "xgboost"),
    "+ surprise (fused)": ("lstm", "xgboost", "surprise"),
    "+ autoencoder (fused)": ("lstm", "xgboost", "autoencoder"),
    "+ surprise + autoencoder (fused)": ("lstm", "xgboost", "surprise", "autoencoder"),
}


class Fitted:
    """A member already trained: `fit` does nothing, its logits are computed once a set."""

    def __init__(self, member) -> None:
        self.member, self.history_, self._logits = member, member.history_, {}

    def fit(self, train, valid) -> Fitted:
        return self

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        key = id(windows.positions)
        if key not in self._logits:
            self._logits[key] = self.member.decision_function(windows)
        return self._logits[key]


def features_of(option: str | None) -> tuple[str, ...] | None:
    """None (the model's default blocks), the defaults plus `+a,b`, or the blocks `a,b`."""
    if not option:
        return None
    blocks = tuple(b for b in option.lstrip("+").split(",") if b)
    return (*DEFAULT_FEATURES, *blocks) if option.startswith("+") else blocks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--test-days", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--features", default="", help="+block,... adds to the defaults")
    parser.add_argument("--name", default="", help="results file suffix")
    parser.add_argument(
        "--picks",
        type=Path,
        help="print what each --novelty-ap-loss picks from a results file's sweep, no training",
    )
    args = parser.parse_args()
    if args.picks:
        print_picks(json.loads(args.picks.read_text())["surprise_novelty_sweep"])
        return
    logging.basicConfig(level=logging.WARNING)
    print("machine:", describe())
    print("load average at the start:", os.getloadavg())
    load_start = os.getloadavg()
    started = time.perf_counter()

    start = pd.Timestamp("2026-01-01")  # as fraudseq.demo.run simulates
    test_from = (start + pd.Timedelta(days=args.days - args.test_days)).date()
    frame = simulate(
        accounts=args.accounts,
        days=args.days,
        seed=args.seed,
        start=str(start.date()),
        scenarios=OPT_IN_SCENARIOS,
        new_scheme_start=str(test_from),
    )
    schema = Schema.simulator()
    model = FraudModel(
        "ensemble",
        members=MEMBERS,
        epochs=args.epochs,
        seed=args.seed,
        features=features_of(args.features),
        progress=False,
    )
    model.fit(frame, schema, train_until=test_from, valid_days=7)
    trained = time.perf_counter() - started

    loaded = model.schema_  # the frame as the model reads it: sorted, canonical
    data = load_transactions(frame, loaded)
    source = WindowSource(model.encoder_.transform(data), model.window)
    times = data[loaded.time]
    period = model.training_period_
    valid_rows = np.flatnonzero(
        ((times >= period["valid_from"]) & (times < pd.Timestamp(test_from))).to_numpy()
    )
    test_rows = np.flatnonzero((times >= pd.Timestamp(test_from)).to_numpy())
    labels = data[loaded.label].to_numpy().astype(np.float32)
    valid = WindowSet(source, source.positions_of(valid_rows), labels[valid_rows])
    test = WindowSet(source, source.positions_of(test_rows), labels[test_rows])
    y = labels[test_rows]
    scenario = data[loaded.scenario].to_numpy()[test_rows]
    entity = data[loaded.entity].to_numpy()[test_rows]
    day = times.dt.floor("D").to_numpy()[test_rows]

    fitted = {name: Fitted(member) for name, member in model.model_.members}

    def measure(score: np.ndarray) -> dict:
        return {
            "average_precision": metrics.average_precision(y, score),
            "auc_roc": metrics.auc_roc(y, score),
            "recall_at_1pct_fpr": metrics.recall_at_fpr(y, score, 0.01),
            "cp_at_100": metrics.card_precision_at_k(entity, day, y, score, 100),
            "recall_at_1pct_fpr_by_scenario": {
                k: v["recall"]
                for k, v in recall_at_legit_fpr(y, score, scenario).items()
                if v["n_fraud"]
            },
        }

    results: dict = {}
    for name, members in VARIANTS.items():
        ensemble = EnsembleWindowModel([(m, fitted[m]) for m in members])
        ensemble.fit(valid, valid)  # members are fitted: this chooses the combination
        boost, gate = ensemble.novelty_ or (0.0, None)
        results[name] = {
            "members": list(members),
            "weights": [float(w) for w in ensemble.weights_],
            "novelty_boost": boost,
            "novelty_gate_rank": None if gate is None else float(1 / (1 + np.exp(-gate))),
            "validation_ap": metrics.average_precision(
                valid.labels, ensemble.decision_function(valid)
            ),
            **measure(ensemble.decision_function(test)),
        }
    alone = {m: measure(fitted[m].decision_function(test)) for m in ("surprise", "autoencoder")}
    sweep = novelty_sweep(fitted, valid, test, y, scenario)
    seconds = time.perf_counter() - started
    load_end = os.getloadavg()

    print(
        f"simulator: {args.accounts} accounts, {args.days} days, seed {args.seed}, scenarios "
        f"{', '.join(OPT_IN_SCENARIOS)} (new_scheme from {test_from}); held-out = last "
        f"{args.test_days} days ({len(test)} transactions, {int(y.sum())} fraud); features "
        f"{', '.join(model.encoder_.blocks)}"
    )
    scenarios = sorted({s for r in results.values() for s in r["recall_at_1pct_fpr_by_scenario"]})
    head = ["AP", "AUC ROC", "R@1%FPR", "CP@100", "gate", "boost", *scenarios]
    print("| Model | " + " | ".join(head) + " |")
    print("|" + " --- |" * (len(head) + 1))
    rows = {**results, **{f"{m} alone": r for m, r in alone.items()}}
    for name, r in rows.items():
        gate = r.get("novelty_gate_rank")
        cells = [
            f"{r['average_precision']:.3f}",
            f"{r['auc_roc']:.3f}",
            f"{r['recall_at_1pct_fpr']:.3f}",
            f"{r['cp_at_100']:.3f}",
            "-" if gate is None else f"{gate:g}",
            "-" if "novelty_boost" not in r or gate is None else f"{r['novelty_boost']:g}",
            *(f"{r['recall_at_1pct_fpr_by_scenario'].get(s, float('nan')):.3f}" for s in scenarios),
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("surprise fused with every (gate, boost) the ensemble considers (validation AP first):")
    print("| gate | boost | valid AP | test AP | new_scheme R@1%FPR |")
    print("| --- | --- | --- | --- | --- |")
    for r in sweep:
        print(
            f"| {r['gate_rank']:g} | {r['boost']:g} | {r['validation_ap']:.4f} | "
            f"{r['average_precision']:.4f} | {r['new_scheme_recall']:.3f} |"
        )
    print_picks(sweep)
    print(
        f"train {trained:.0f} s, all {seconds:.0f} s; load average start {load_start}, "
        f"end {load_end}"
    )
    suffix = args.name or (args.features.strip("+").replace(",", "-") if args.features else "")
    save_results(
        "scenario_recall" + (f"-{suffix}" if suffix else ""),
        {
            "args": vars(args),
            "test_from": str(test_from),
            "features": list(model.encoder_.blocks),
            "n_test": len(test),
            "n_fraud": int(y.sum()),
            "variants": results,
            "members_alone": alone,
            "surprise_novelty_sweep": sweep,
            "member_histories": {n: m.history_ for n, m in fitted.items()},
            "seconds": seconds,
            "train_seconds": trained,
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
        },
    )


def novelty_sweep(fitted: dict, valid: WindowSet, test: WindowSet, y, scenario) -> list[dict]:
    """Validation AP, test AP and test new_scheme recall of lstm + xgboost + surprise for
    every (gate, boost) of the ensemble's grid: what the validation rule leaves on the table."""
    ensemble = EnsembleWindowModel([(m, fitted[m]) for m in ("lstm", "xgboost", "surprise")])
    ensemble.fit(valid, valid)
    out = []
    for gate_rank in NOVELTY_GATES:
        for boost in (0.0, *NOVELTY_BOOSTS):
            ensemble.novelty_ = (boost, rank_logit(gate_rank))
            score = ensemble.decision_function(test)
            out.append(
                {
                    "gate_rank": gate_rank,
                    "boost": boost,
                    "validation_ap": metrics.average_precision(
                        valid.labels, ensemble.decision_function(valid)
                    ),
                    "average_precision": metrics.average_precision(y, score),
                    "new_scheme_recall": recall_at_legit_fpr(y, score, scenario)["new_scheme"][
                        "recall"
                    ],
                }
            )
    return out


ALLOWANCES = (0.0, 0.005, 0.01)


def print_picks(sweep: list[dict]) -> None:
    """What the ensemble's rule (`pick_novelty`) chooses from the sweep at each allowance of
    validation AP (`fraudseq train --novelty-ap-loss`), and its test figures."""
    rows = {(r["boost"], rank_logit(r["gate_rank"])): r for r in sweep}
    (base,) = [r for r in sweep if r["boost"] == 0 and r["gate_rank"] == NOVELTY_GATES[0]]
    candidates = [(b, g, r["validation_ap"]) for (b, g), r in rows.items() if b > 0]
    print("| --novelty-ap-loss | gate | boost | valid AP | test AP | new_scheme R@1%FPR |")
    print("| --- | --- | --- | --- | --- | --- |")
    for allowance in ALLOWANCES:
        boost, gate = pick_novelty(candidates, base["validation_ap"], allowance)
        r = rows.get((boost, gate), base)
        print(
            f"| {allowance:g} | {r['gate_rank']:g} | {boost:g} | {r['validation_ap']:.4f} | "
            f"{r['average_precision']:.4f} | {r['new_scheme_recall']:.3f} |"
        )


if __name__ == "__main__":
    main()
