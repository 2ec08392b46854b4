"""The headline handbook benchmark, on the handbook's exact prequential protocol.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/handbook_protocol.py   # or: make bench-handbook
    .venv/bin/python benchmarks/handbook_protocol.py --markdown           # tables from the JSON

The handbook's "test performance" of its prequentially selected models (XGBoost, LSTM, LSTM
with attention; ../shared/data/README.md) is the mean over four folds whose training weeks
start on 2018-08-15, 08-08, 08-01 and 07-25: 7 training days, 7 delay days, 7 test days, so
the test weeks are 08-29..09-04, 08-22..28, 08-15..21 and 08-08..14. Each fold here trains
the default model (`FraudModel()` at its defaults, seed 0) on its training week, with the 7
days before it for validation (early stopping, ensemble weights, threshold), and scores its
test week with all earlier transactions as history. The known compromised cards are removed
from each test day exactly as the handbook does (`handbook.test_set`, anchored at the fold's
training week). This is `fraudseq evaluate --protocol prequential --start 2018-08-15`
(`fraudseq.prequential.prequential`), plus per fold the CP@100 bound that labels at least 7
days old allow (`handbook.revealable_cp_at_100`).

Prints per-fold and mean ± std AUC ROC, AP and CP@100 beside the handbook's published rows and
writes benchmarks/results/handbook_protocol.json; `--markdown` prints the README's headline
table and the per-fold table from that file without training.

For tuning without the test weeks, `--start 2018-07-18` runs the same protocol on the four
weeks before them (test weeks 07-11..08-07), and `--set name=value,...` overrides FraudModel
defaults; the data is cut at the last test week's end before anything is fitted, so later
weeks are never read.
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
from handbook import (  # noqa: E402
    ROOT,
    cp_at_100,
    ranking,
    revealable,
    revealable_cp_at_100,
    test_set,
)
from handbook_prequential import KEYS, PUBLISHED  # noqa: E402
from machine import describe, save_results  # noqa: E402

from fraudseq import metrics  # noqa: E402
from fraudseq.fraud_model import FraudModel  # noqa: E402
from fraudseq.prequential import Fold, prequential, prequential_folds  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

START = "2018-08-15"  # the latest fold's first training day (the handbook's)
FOLDS, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = 4, 7, 7, 7
RESULTS = ROOT / "benchmarks/results/handbook_protocol.json"
DATA = ROOT.parent / "shared/data/handbook_transactions.csv.gz"
# The handbook's single split (fold 3 here): its known-card removal leaves these.
HANDBOOK_TEST_WEEK = ("2018-08-08", 58_264, 385)
GOALS = {"auc_roc": 0.89, "average_precision": 0.74, "cp_gap_to_bound": 0.003}
NAMES = {"auc_roc": "AUC ROC", "average_precision": "AP", "cp_at_100": "CP@100"}


def folds(data_start, data_end, start=START) -> list[Fold]:
    """The four folds (fold 0 the latest), as `fraudseq evaluate --protocol prequential`
    plans them."""
    return prequential_folds(
        pd.Timestamp(data_start),
        pd.Timestamp(data_end),
        folds=FOLDS,
        train_days=TRAIN_DAYS,
        delay_days=DELAY_DAYS,
        test_days=TEST_DAYS,
        start=start,
    )


def span(start, until) -> str:
    """A half-open period [start, until) of whole days as `MM-DD..MM-DD` (last day shown)."""
    last = pd.Timestamp(until) - pd.Timedelta(days=1)
    return f"{pd.Timestamp(start):%m-%d}..{last:%m-%d}"


def fold_test_set(frame: pd.DataFrame, s: Schema, fold: Fold) -> pd.DataFrame:
    """The fold's test week without the known compromised cards: the handbook's rule
    anchored at the fold's first training day."""
    return test_set(frame, s, week_from=fold.test_from, known_from=fold.train_from)


def fold_bound(frame: pd.DataFrame, s: Schema, fold: Fold) -> dict:
    """The fold's test set and what it allows: CP@100 of a perfect ranking (by the label)
    and of the best ranking of the frauds that labels at least 7 days old can reveal (the
    bound), and the AUC ROC and AP of the ranking that puts those frauds first and ties
    everything else (the unrevealable frauds are generated like legitimate transactions,
    so a model ranks them among those at best by chance)."""
    test = fold_test_set(frame, s, fold)
    y = test[s.label].to_numpy()
    shown = revealable(frame, test, s)
    return {
        "n_test": int(len(test)),
        "n_fraud": int(y.sum()),
        "revealable_frauds": int(shown.sum()),
        "cp_at_100_perfect_ranking": cp_at_100(test, s, y.astype(float)),
        "revealable_cp_at_100": revealable_cp_at_100(test, s, shown),
        "revealable_auc_roc": metrics.auc_roc(y, shown),
        "revealable_average_precision": metrics.average_precision(y, shown),
    }


def parse_overrides(spec: str) -> dict:
    """`name=value,...` -> FraudModel keyword arguments, typed like the defaults."""
    defaults = FraudModel().get_params()
    out = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        name, _, value = item.partition("=")
        if name not in defaults or not value:
            raise SystemExit(f"bad --set item {item!r}: use name=value with a FraudModel argument")
        default = defaults[name]
        if isinstance(default, bool):
            out[name] = value.lower() in ("1", "true", "yes")
        elif isinstance(default, int | float) and not isinstance(default, bool):
            out[name] = type(default)(value)
        elif default is None:
            out[name] = float(value) if value.replace(".", "", 1).isdigit() else value
        else:
            out[name] = value
    return out


def diagnose(args) -> dict:
    """One fold trained and scored as handbook.py does protocol A (FraudModel.fit, then
    handbook.ranking), to see where AP is lost: AUC ROC and AP of each kind of fraud
    against the legitimate transactions (the other frauds left out)."""
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    frame = load_transactions(args.data, schema, require_label=True)
    times = frame[schema.time]
    plan = folds(times.min(), times.max(), args.start)
    frame = frame[(times < plan[0].test_until).to_numpy()].reset_index(drop=True)
    fold = plan[args.diagnose]
    model = FraudModel(seed=args.seed, **parse_overrides(args.set))
    model.fit(
        frame,
        schema,
        train_from=fold.train_from,
        train_until=fold.train_until,
        valid_period=(fold.valid_from, fold.valid_until),
    )
    test = fold_test_set(frame, schema, fold)
    score = ranking(model, frame, test, schema, fold.test_from)["score"]
    y = test[schema.label].to_numpy()
    shown = revealable(frame, test, schema) > 0
    scenario = test[schema.scenario].astype(str).to_numpy()
    groups = {
        "all frauds": y == 1,
        "revealable frauds": shown,
        "unrevealable frauds": (y == 1) & ~shown,
        "scenario 1 (amount)": scenario == "1",
        "scenario 2, revealable (terminal)": (scenario == "2") & shown,
        "scenario 2, unrevealable": (scenario == "2") & ~shown,
        "scenario 3 (customer)": scenario == "3",
    }
    out = {"fold": fold.describe(), "cp_at_100": cp_at_100(test, schema, score), "groups": {}}
    print(f"fold {fold.index}, test {span(fold.test_from, fold.test_until)}:")
    for name, frauds in groups.items():
        keep = frauds | (y == 0)
        row = {
            "n_fraud": int(frauds.sum()),
            "auc_roc": metrics.auc_roc(y[keep], score[keep]),
            "average_precision": metrics.average_precision(y[keep], score[keep]),
            # how many legitimate transactions score above the group's median fraud
            "legit_above_median_fraud": int((score[y == 0] > np.median(score[frauds])).sum()),
        }
        out["groups"][name] = row
        print(
            f"  {name} ({row['n_fraud']}) against the {int((y == 0).sum()):,} legitimate: AUC "
            f"ROC {row['auc_roc']:.4f} AP {row['average_precision']:.4f}; legitimate above "
            f"its median fraud: {row['legit_above_median_fraud']:,}"
        )
    return out


def summarise(rows: list[dict]) -> dict:
    """Mean and (population, as fraudseq.prequential) std over folds of the metrics, the
    bound and the gap between them."""
    keys = (*KEYS, *(f"revealable_{k}" for k in KEYS), "cp_gap_to_bound")
    return {
        "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
        "std": {k: float(np.std([r[k] for r in rows])) for k in keys},
    }


def goals(summary: dict) -> dict:
    mean = summary["mean"]
    return {
        "auc_roc >= 0.89": mean["auc_roc"] >= GOALS["auc_roc"],
        "average_precision >= 0.74": mean["average_precision"] >= GOALS["average_precision"],
        "cp_at_100 within 0.003 of the bound": mean["cp_gap_to_bound"] <= GOALS["cp_gap_to_bound"],
    }


def run(args) -> dict:
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    started = time.perf_counter()
    frame = load_transactions(args.data, schema, require_label=True)
    times = frame[schema.time]
    plan = folds(times.min(), times.max(), args.start)
    # Nothing from the last test week's end on is kept (with --start before 08-15 the
    # headline test weeks are never read).
    frame = frame[(times < plan[0].test_until).to_numpy()].reset_index(drop=True)
    print(
        f"loaded {len(frame):,} rows up to {plan[0].test_until.date()} in "
        f"{time.perf_counter() - started:.0f}s",
        flush=True,
    )
    bounds = {}
    for fold in plan:
        bounds[fold.index] = b = fold_bound(frame, schema, fold)
        print(
            f"fold {fold.index}: test {span(fold.test_from, fold.test_until)}: "
            f"{b['n_test']:,} transactions, {b['n_fraud']} frauds after known-card removal, "
            f"{b['revealable_frauds']} revealable by labels at least 7 days old; CP@100 of a "
            f"perfect ranking {b['cp_at_100_perfect_ranking']:.4f}, bound "
            f"{b['revealable_cp_at_100']:.4f}; revealable frauds first, the rest tied: AUC ROC "
            f"{b['revealable_auc_roc']:.4f}, AP {b['revealable_average_precision']:.4f}",
            flush=True,
        )
        if str(fold.test_from.date()) == HANDBOOK_TEST_WEEK[0]:
            print(f"  (handbook's own count for this week: {HANDBOOK_TEST_WEEK[1]:,} and 385)")
    template = FraudModel(seed=args.seed, **parse_overrides(args.set))
    started = time.perf_counter()
    result = prequential(
        template.model,
        template.get_params(),
        frame,
        schema,
        folds=FOLDS,
        train_days=TRAIN_DAYS,
        delay_days=DELAY_DAYS,
        test_days=TEST_DAYS,
        start=args.start,
        drop_known_frauds=True,
    )
    seconds = time.perf_counter() - started
    rows = []
    for fold in result["folds"]:
        b = bounds[fold["index"]]
        # The same rule through two code paths (fraudseq.prequential and handbook.test_set).
        if (fold["n_test"], fold["n_fraud"]) != (b["n_test"], b["n_fraud"]):
            raise SystemExit(
                f"fold {fold['index']}: prequential kept {fold['n_test']} transactions and "
                f"{fold['n_fraud']} frauds, handbook.test_set {b['n_test']} and {b['n_fraud']}"
            )
        row = {
            **fold,
            **b,
            "cp_gap_to_bound": b["revealable_cp_at_100"] - fold["cp_at_100"],
        }
        rows.append(row)
        print(
            f"fold {row['index']} test {span(row['test_from'], row['test_until'])}: AUC "
            f"{row['auc_roc']:.4f} AP {row['average_precision']:.4f} CP@100 "
            f"{row['cp_at_100']:.4f} (bound {row['revealable_cp_at_100']:.4f}, gap "
            f"{row['cp_gap_to_bound']:+.4f}) {row['seconds']:.0f}s",
            flush=True,
        )
    summary = summarise(rows)
    defaults = FraudModel().get_params()
    return {
        "protocol": {
            "description": "the handbook's prequential test performance: 4 folds of 7 "
            "training, 7 delay and 7 test days, validation the 7 days before training, known "
            "compromised cards removed per test day",
            "start": args.start,
            "folds": FOLDS,
            "train_days": TRAIN_DAYS,
            "delay_days": DELAY_DAYS,
            "test_days": TEST_DAYS,
            "data": Path(args.data).name,
        },
        "model": template.model,
        "overrides": parse_overrides(args.set),
        "params": {k: v for k, v in template.get_params().items() if v != defaults[k]}
        or "FraudModel() defaults",
        "seed": args.seed,
        "published": PUBLISHED,
        "folds": rows,
        **summary,
        "goals": goals(summary),
        "seconds": seconds,
    }


def label(results: dict) -> str:
    over = results.get("overrides") or {}
    settings = ", ".join(f"{k}={v}" for k, v in over.items())
    name = "fraudseq default model (ensemble: LSTM + XGBoost)"
    return f"{name}, {settings}" if settings else name


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def headline(results: dict) -> str:
    """The README's table: the published prequential rows and ours, mean ± std over folds."""
    weeks = ", ".join(span(r["test_from"], r["test_until"]) for r in results["folds"])
    m, s = results["mean"], results["std"]
    rows = [
        [f"Handbook: {name} (published)", *(f"{v:.3f}" for v in values)]
        for name, values in PUBLISHED.items()
    ]
    rows.append([label(results), *(f"**{m[k]:.3f}** ± {s[k]:.3f}" for k in KEYS)])
    rows.append(
        [
            "What labels ≥ 7 days old allow (revealable frauds first)",
            *(f"{m['revealable_' + k]:.3f} ± {s['revealable_' + k]:.3f}" for k in KEYS),
        ]
    )
    return table(["Model", *(NAMES[k] for k in KEYS)], rows) + (
        f"\n\nMean ± std over the handbook's four folds (test weeks {weeks}), known "
        "compromised cards removed."
    )


def per_fold(results: dict) -> str:
    """Per fold: the metrics, and in brackets what labels at least 7 days old allow (AUC ROC
    and AP of the ranking with the revealable frauds first and the rest tied; the CP@100
    bound), and the gap between that bound and CP@100."""
    rows = [
        [
            str(r["index"]),
            span(r["train_from"], r["train_until"]),
            span(r["test_from"], r["test_until"]),
            f"{r['n_test']:,}",
            f"{r['n_fraud']} ({r['revealable_frauds']})",
            *(f"{r[k]:.3f} ({r['revealable_' + k]:.3f})" for k in KEYS),
            f"{r['cp_gap_to_bound']:+.3f}",
        ]
        for r in results["folds"]
    ]
    m, s = results["mean"], results["std"]
    rows.append(
        [
            "mean ± std",
            *[""] * 4,
            *(f"{m[k]:.3f} ± {s[k]:.3f} ({m['revealable_' + k]:.3f})" for k in KEYS),
            f"{m['cp_gap_to_bound']:+.3f} ± {s['cp_gap_to_bound']:.3f}",
        ]
    )
    header = ["Fold", "Train", "Test", "Transactions", "Frauds (revealable)"]
    return table([*header, *(NAMES[k] for k in KEYS), "CP@100 gap"], rows)


def report(results: dict) -> str:
    met = ", ".join(f"{g}: {'met' if ok else 'NOT met'}" for g, ok in results["goals"].items())
    return "\n\n".join([headline(results), per_fold(results), f"goals (mean over folds): {met}"])


def load_average() -> str:
    """The 1, 5 and 15 minute load averages (other work on the machine included)."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--start", default=START, help="the latest fold's first training day")
    parser.add_argument("--set", default="", help="FraudModel overrides: name=value,...")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument(
        "--diagnose",
        type=int,
        metavar="FOLD",
        help="train and score one fold only, and print AUC ROC and AP per kind of fraud "
        "(results to handbook_protocol-diagnose-fold<FOLD>.json)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the tables from --out; train nothing",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.markdown:
        if not out.exists():
            raise SystemExit(f"{out} does not exist: run this script without --markdown first")
        print(report(json.loads(out.read_text())))
        return
    if args.diagnose is not None:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        machine = describe()
        if out == RESULTS:
            out = out.with_name(f"handbook_protocol-diagnose-fold{args.diagnose}.json")
        save_results(out.stem, {**diagnose(args), "machine": machine}, out)
        return
    if (args.start != START or args.set or args.seed) and out == RESULTS:
        raise SystemExit(
            f"{out} holds the default model (seed 0) on the handbook's folds: give another "
            "--out for another --start, --set or --seed"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    machine = describe()  # the code that runs: edits during the run do not change it
    load_before = load_average()
    print("machine:", machine, "; load average:", load_before, flush=True)
    results = {
        **run(args),
        "machine": machine,
        "load_average": {"start": load_before, "end": load_average()},
    }
    save_results(out.stem, results, out)
    print()
    print(report(results))


if __name__ == "__main__":
    main()
