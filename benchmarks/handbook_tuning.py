"""Honest XGBoost tuning for the handbook benchmark: protocol B shifted back 14 days.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/handbook_tuning.py \
        --variants "default;max_depth=8;eta=0.1,min_child_weight=5" --seeds 0,1

Protocol B (benchmarks/handbook.py) trains on everything before 2018-08-01 (early stopping on
07-25..07-31) and tests on 08-08..08-14. Choosing hyperparameters on that test week would
make its numbers optimistic, so this script never reads it: every fit here sees data before
the shifted `train_until` only, and every score is on the *tuning week*, protocol B moved
back by `--shift-days` (default 14):

- train on everything before 2018-07-18, early stopping on its last 7 days (07-11..07-17);
- a 7-day label delay (07-18..07-24), as protocol B has 08-01..08-07;
- score 2018-07-25..07-31 with all earlier transactions as history (features use labels at
  least 7 days old, as in the benchmark), without the known compromised cards, by
  handbook.py's rule shifted the same 14 days (frauds from 07-11 up to the day minus 8 days).

The transactions are loaded once and read past 2018-08-01 by nobody: the frame is cut at the
tuning week's end before any model sees it.

A variant is a set of BoostedWindowModel / xgboost overrides of the default XGBoost model
(`FraudModel("xgboost", seed=...)`, what handbook.py trains for protocol B): `default`, or
comma-separated `name=value` pairs of max_depth, eta, min_child_weight, class_weight,
n_estimators, subsample, colsample_bytree, early_stopping. Variants are separated by `;`.
Each (variant, seed) row is merged into benchmarks/results/handbook_tuning.json, so the
search can be run in stages; rows with the same key are replaced.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from handbook import (  # noqa: E402
    KNOWN_FROM,
    PROTOCOLS,
    ROOT,
    TEST_FROM,
    WEEK,
    build,
    cp_at_100,
    ranking,
    revealable,
    revealable_cp_at_100,
    test_set,
)
from machine import describe  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.fraud_model import FraudModel  # noqa: E402
from fraudseq.io import write_json  # noqa: E402
from fraudseq.models.boosted import BoostedWindowModel  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

DAY = pd.Timedelta(days=1)

# The default XGBoost model's settings (BoostedWindowModel and its _params), written out so
# that every row of the results names all of them.
DEFAULTS = {
    "max_depth": 6,
    "eta": 0.05,
    "min_child_weight": 1.0,
    "class_weight": "auto",
    "n_estimators": 600,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "early_stopping": 50,
}
# Settings only reachable through BoostedWindowModel._params (FraudModel does not expose them).
XGB_ONLY = ("min_child_weight", "subsample", "colsample_bytree")


class TunedBoostedModel(BoostedWindowModel):
    """BoostedWindowModel with extra xgboost parameters laid over its `_params`."""

    def __init__(self, *, xgb_overrides: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.xgb_overrides = dict(xgb_overrides)

    def _params(self, labels: np.ndarray) -> dict:
        return {**super()._params(labels), **self.xgb_overrides}


class TunedXGBoost(FraudModel):
    """FraudModel("xgboost") whose window model is a TunedBoostedModel (this script only)."""

    def __init__(self, params: dict, *, seed: int) -> None:
        super().__init__(
            "xgboost",
            n_estimators=int(params["n_estimators"]),
            max_depth=int(params["max_depth"]),
            class_weight=params["class_weight"],
            seed=seed,
        )
        self.tuned = dict(params)

    def _build(self):
        p = self.tuned
        return TunedBoostedModel(
            n_estimators=int(p["n_estimators"]),
            max_depth=int(p["max_depth"]),
            learning_rate=float(p["eta"]),
            early_stopping=int(p["early_stopping"]),
            class_weight=p["class_weight"],
            seed=self.seed,
            xgb_overrides={k: float(p[k]) for k in XGB_ONLY},
        )


def parse_variant(spec: str) -> dict:
    """`default` or `name=value,...` -> the full parameter set (DEFAULTS overridden)."""
    spec = spec.strip()
    params = dict(DEFAULTS)
    if spec in ("", "default"):
        return params
    for item in spec.split(","):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in DEFAULTS or not value:
            raise SystemExit(f"bad variant item {item!r}; names: {', '.join(DEFAULTS)}")
        if name == "class_weight":
            params[name] = value if value in ("auto", "none") else float(value)
        elif name in ("max_depth", "n_estimators", "early_stopping"):
            params[name] = int(value)
        else:
            params[name] = float(value)
    return params


def variant_name(params: dict) -> str:
    """Canonical name: `default`, or the overrides in DEFAULTS' order."""
    changed = [f"{k}={params[k]}" for k in DEFAULTS if params[k] != DEFAULTS[k]]
    return ",".join(changed) or "default"


def make_model(params: dict, seed: int) -> FraudModel:
    if params == DEFAULTS:  # exactly what handbook.py trains: FraudModel("xgboost", seed=seed)
        return build("xgboost", 10, seed)
    return TunedXGBoost(params, seed=seed)


def shifted_protocol(shift_days: int) -> dict:
    """Protocol B moved back `shift_days` days: fit arguments, tuning week, known-card start."""
    if shift_days * DAY < 2 * WEEK:  # else the tuning week would reach into 08-01..08-14
        raise SystemExit("--shift-days must be at least 14 so the tuning week ends by 08-01")
    shift = shift_days * DAY
    base_until = pd.Timestamp(PROTOCOLS["B"]["train_until"])
    week_from = TEST_FROM - shift
    return {
        "fit": {"train_until": str((base_until - shift).date()), "valid_days": 7},
        "week_from": week_from,
        "week_until": week_from + WEEK,
        "known_from": KNOWN_FROM - shift,
    }


def evaluate_week(
    model: FraudModel, frame, week: pd.DataFrame, s: Schema, proto, shown: np.ndarray
) -> dict:
    """handbook.evaluate's ranking metrics on the tuning week."""
    score = ranking(model, frame, week, s, proto["week_from"])["score"]
    y = week[s.label].to_numpy()
    return {
        "auc_roc": metrics.auc_roc(y, score),
        "average_precision": metrics.average_precision(y, score),
        "cp_at_100": cp_at_100(week, s, score),
        "cp_at_100_revealable_only": revealable_cp_at_100(week, s, shown, score),
    }


def summary(results: dict) -> dict:
    """Per variant: the mean of each metric over its seeds."""
    groups: dict[str, list[dict]] = {}
    for row in results.values():
        groups.setdefault(row["variant"], []).append(row)
    out = {}
    for name, rows in sorted(groups.items()):
        out[name] = {"seeds": sorted(r["seed"] for r in rows)}
        for m in ("average_precision", "auc_roc", "cp_at_100", "trees_kept", "train_seconds"):
            out[name][m] = float(np.mean([r[m] for r in rows]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared/data/handbook_transactions.csv.gz")
    )
    parser.add_argument("--variants", default="default", help="';'-separated, see the docstring")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--shift-days", type=int, default=14)
    parser.add_argument("--threads", type=int, default=1, help="torch (and so xgboost) threads")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/handbook_tuning.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)  # BoostedWindowModel's nthread
    variants = [parse_variant(v) for v in args.variants.split(";")]
    seeds = [int(x) for x in args.seeds.split(",")]
    proto = shifted_protocol(args.shift_days)
    print("machine:", describe())
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    started = time.perf_counter()
    frame = load_transactions(args.data, schema, require_label=True)
    # Nothing from the tuning week's end on is kept: the real test week is never read.
    frame = frame[(frame[schema.time] < proto["week_until"]).to_numpy()].reset_index(drop=True)
    assert frame[schema.time].max() < TEST_FROM
    week = test_set(frame, schema, proto["week_from"], proto["known_from"])
    ceiling = cp_at_100(week, schema, week[schema.label].to_numpy().astype(float))
    shown = revealable(frame, week, schema)
    bound = revealable_cp_at_100(week, schema, shown)
    print(
        f"loaded in {time.perf_counter() - started:.0f}s; fit {proto['fit']}; tuning week "
        f"{proto['week_from'].date()}..{(proto['week_until'] - DAY).date()}: {len(week):,} "
        f"transactions, {int(week[schema.label].sum())} frauds; CP@100 ceiling {ceiling:.3f}; "
        f"{int(shown.sum())} frauds revealable by labels at least 7 days old, CP@100 of the "
        f"best ranking of them {bound:.4f}",
        flush=True,
    )
    results = {}
    for params in variants:
        name = variant_name(params)
        for seed in seeds:
            model = make_model(params, seed)
            started = time.perf_counter()
            model.fit(frame, schema, **proto["fit"])
            train_s = time.perf_counter() - started
            row = {
                "variant": name,
                "seed": seed,
                "params": params,
                **evaluate_week(model, frame, week, schema, proto, shown),
                "trees_kept": int(model.model_.booster_.num_boosted_rounds()),
                "best_valid_ap": max(h["valid_ap"] for h in model.history_),
                "train_seconds": train_s,
            }
            results[f"shift{args.shift_days}|{name}|seed={seed}"] = row
            print(
                f"{name} seed {seed}: AP {row['average_precision']:.4f} AUC "
                f"{row['auc_roc']:.4f} CP@100 {row['cp_at_100']:.4f} (revealable frauds only "
                f"{row['cp_at_100_revealable_only']:.4f}) trees "
                f"{row['trees_kept']} valid AP {row['best_valid_ap']:.4f} train {train_s:.0f}s",
                flush=True,
            )
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    merged = {**previous.get("results", {}), **results}
    this_shift = {k: v for k, v in merged.items() if k.startswith(f"shift{args.shift_days}|")}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(
        {
            "machine": describe(),
            "protocol": {
                "description": "handbook protocol B shifted back by shift_days; the test week "
                "2018-08-08..08-14 is never read",
                "shift_days": args.shift_days,
                "fit": proto["fit"],
                "tuning_week": [str(proto["week_from"].date()), str(proto["week_until"].date())],
                "known_cards_from": str(proto["known_from"].date()),
                "n_week": int(len(week)),
                "n_fraud": int(week[schema.label].sum()),
                "cp_at_100_perfect_ranking": ceiling,
                "revealable_frauds": int(shown.sum()),
                "cp_at_100_revealable_bound": bound,
            },
            "summary": {
                **previous.get("summary", {}),
                f"shift{args.shift_days}": summary(this_shift),
            },
            "results": dict(sorted(merged.items())),
        },
        out,
    )
    print()
    print("| variant | seeds | AP | AUC | CP@100 | trees | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in summary(this_shift).items():
        print(
            f"| {name} | {r['seeds']} | {r['average_precision']:.4f} | {r['auc_roc']:.4f} | "
            f"{r['cp_at_100']:.4f} | {r['trees_kept']:.0f} | {r['train_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
