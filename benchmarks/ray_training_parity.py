"""Training on Ray against training in one process, on the same shards: how far apart the
models' test scores are (docs/scale.md, "Training on Ray" and "XGBoost on Ray").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ray_training_parity.py \
        [--torch] [--xgboost] [--seeds 0,1,2] [--dropout 0,0.1] [--families gru,...]

Data: the tests' simulation (simulate(accounts=300, days=40, seed=7), tests/conftest.py),
trained before 2026-01-31 with the last 7 days as validation, scored from 2026-01-31.
Everything runs on one local Ray instance of --workers CPUs (default 2).

--torch: `FraudModel.fit(..., shards=2)` with `engine="local"` (a work directory) against
`engine="ray"` (Ray Train, --workers DDP workers). For lstm (--epochs 5, --hidden-size 16,
patience = epochs), each --dropout and --seeds: max and mean |score difference| and test
AP of both, and in one process how far the next seed moves the scores (the seed-to-seed
variation the dropout difference is compared with). Then each of --families at the tests'
2 epochs, hidden size 8, dropout 0, seed 0: max |score difference|.

--xgboost: the xgboost family, 3 shards, --trees 10, `engine="local"` against
`engine="ray"` (`engine.ray_xgboost`, --workers workers), with `subsample` 0.8 (shipped)
and 1: max |score difference|, correlation, trees kept, and how many summary features get
other histogram cuts than the single process's; also the single process's seed 0 against
seed 1. And an EXPERIMENT, not in fraudseq (`_with_single_process_cuts`): each worker
first sketches every training window alone and bins its own windows with those cuts
(`QuantileDMatrix(ref=)`), the rest being `engine.ray_xgboost` unchanged.

Neither part given: both. Prints a line per run and saves
benchmarks/results/ray_training_parity.json (or --out), with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq.engine import ray_xgboost  # noqa: E402
from fraudseq.engine.run import ray_mapper  # noqa: E402
from fraudseq.fraud_model import FraudModel  # noqa: E402
from fraudseq.metrics import average_precision  # noqa: E402
from fraudseq.models import boosted  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402

DATA = {"accounts": 300, "days": 40, "seed": 7}  # tests/conftest.py SMALL
SPLIT = {"train_until": "2026-01-31", "valid_days": 7}
TEST = {"start": "2026-01-31"}
FAMILY_CHECK = {"epochs": 2, "hidden_size": 8, "dropout": 0.0, "seed": 0}  # the tests' TINY
TORCH_SHARDS, XGBOOST_SHARDS = 2, 3


class Runs:
    """Fits on one CSV, each in its own work directory, and their test scores."""

    def __init__(self, tmp: Path, workers: int) -> None:
        self.tmp, self.workers, self.count = tmp, workers, 0
        self.csv = tmp / "tx.csv"
        simulate(**DATA).to_csv(self.csv, index=False)
        self.labels = pd.read_csv(self.csv).set_index("tx_id")["is_fraud"]

    def fit(self, model: FraudModel, engine: str, shards: int) -> tuple[FraudModel, float]:
        self.count += 1
        ray = {"ray_workers": self.workers} if engine == "ray" else {}
        start = time.perf_counter()
        model.fit(
            str(self.csv), **SPLIT, work_dir=self.tmp / f"w{self.count}", shards=shards,
            engine=engine, **ray,
        )  # fmt: skip
        return model, time.perf_counter() - start

    def scores(self, model: FraudModel) -> tuple[np.ndarray, float]:
        """The test scores, and their AP."""
        scored = model.score(str(self.csv), **TEST)
        scores = scored["score"].to_numpy()
        labels = self.labels.loc[scored["transaction_id"]].to_numpy()
        return scores, float(average_precision(labels, scores))


def torch_part(runs: Runs, args) -> dict:
    out = {"lstm": [], "families": []}
    params = {"epochs": args.epochs, "hidden_size": args.hidden_size, "patience": args.epochs}
    for dropout in args.dropout:
        local = {}  # seed -> (scores, AP): the seeds and the next one, in one process
        for seed in [*args.seeds, max(args.seeds) + 1]:
            model = FraudModel("lstm", seed=seed, dropout=dropout, progress=False, **params)
            local[seed] = runs.scores(runs.fit(model, "local", TORCH_SHARDS)[0])
        for seed in args.seeds:
            model = FraudModel("lstm", seed=seed, dropout=dropout, progress=False, **params)
            model, seconds = runs.fit(model, "ray", TORCH_SHARDS)
            scores, ap = runs.scores(model)
            (mine, mine_ap), (nxt, nxt_ap) = local[seed], local[seed + 1]
            row = {
                "family": "lstm", **params, "dropout": dropout, "seed": seed,
                "max_abs_diff": float(np.abs(scores - mine).max()),
                "mean_abs_diff": float(np.abs(scores - mine).mean()),
                "ap_local": mine_ap, "ap_ray": ap, "ap_local_next_seed": nxt_ap,
                "max_abs_diff_next_seed_local": float(np.abs(nxt - mine).max()),
                "ray_seconds": round(seconds, 1),
            }  # fmt: skip
            out["lstm"].append(row)
            print(
                f"lstm dropout {dropout} seed {seed}: ray vs local max |diff| "
                f"{row['max_abs_diff']:.2g} (mean {row['mean_abs_diff']:.2g}), AP ray "
                f"{ap:.4f} local {mine_ap:.4f}; local seed {seed + 1} vs {seed}: max |diff| "
                f"{row['max_abs_diff_next_seed_local']:.3f}, AP {nxt_ap:.4f}  "
                f"(ray fit {seconds:.0f} s)",
                flush=True,
            )
    for family in args.families:
        scores = []
        for engine in ("local", "ray"):
            model = FraudModel(family, progress=False, **FAMILY_CHECK)
            scores.append(runs.scores(runs.fit(model, engine, TORCH_SHARDS)[0])[0])
        row = {
            "family": family,
            **FAMILY_CHECK,
            "max_abs_diff": float(np.abs(np.subtract(*scores)).max()),
        }
        out["families"].append(row)
        print(
            f"{family} (2 epochs, hidden 8, dropout 0): max |diff| {row['max_abs_diff']:.2g}",
            flush=True,
        )
    return out


@contextlib.contextmanager
def subsample(value: float):
    """XGBoost's `subsample` set to `value` (the parameters are made in this process, also
    for the Ray workers)."""
    params = boosted.BoostedWindowModel._params
    boosted.BoostedWindowModel._params = lambda self, labels: {
        **params(self, labels), "subsample": value
    }  # fmt: skip
    try:
        yield
    finally:
        boosted.BoostedWindowModel._params = params


@contextlib.contextmanager
def recording_cuts(cuts: dict, single_process_cuts: bool = False):
    """Each training `QuantileDMatrix`'s histogram cuts into `cuts` ("single" in this
    process, "ray" from the first Ray worker), and with `single_process_cuts` the
    EXPERIMENT `_with_single_process_cuts` in the Ray workers."""
    project = boosted.summary_matrix, ray_xgboost.fit_xgboost_ray, ray_xgboost._train_part

    def summary_matrix(windows, ref=None):  # BoostedWindowModel.fit's training matrix
        matrix = project[0](windows, ref=ref)
        if ref is None:
            cuts["single"] = matrix.get_quantile_cut()
        return matrix

    def fit_xgboost_ray(model, train, valid, *, workers):
        pieces = train.pieces if single_process_cuts else None

        def train_part(task):  # runs on a worker
            return _with_single_process_cuts(pieces, task)

        ray_xgboost._train_part = train_part
        project[1](model, train, valid, workers=workers)
        cuts["ray"] = model.history_.pop()["cuts"]
        model.model_.history_ = model.history_

    boosted.summary_matrix, ray_xgboost.fit_xgboost_ray = summary_matrix, fit_xgboost_ray
    try:
        yield
    finally:
        boosted.summary_matrix, ray_xgboost.fit_xgboost_ray, ray_xgboost._train_part = project


def _with_single_process_cuts(pieces, task):
    """`engine.ray_xgboost._train_part(task)` on a Ray worker, returning its training
    matrix's cuts after the history. EXPERIMENT (not in fraudseq) when `pieces` (every
    training window) is given: the worker first sketches them all, alone (outside the
    collective, so the single process's sketch), and bins its own windows with those cuts."""
    from fraudseq.engine import ray_xgboost as module
    from fraudseq.engine.training import EncodedShards, ShardedWindowSet

    project, seen = module.summary_matrix, {}
    every = None
    if pieces is not None:
        _, _, _, directory, window, *_ = task
        every = project(ShardedWindowSet(EncodedShards(directory, window), pieces))

    def summary_matrix(windows, ref=None):
        matrix = project(windows, ref=ref if ref is not None else every)
        if ref is None:
            seen["cuts"] = matrix.get_quantile_cut()
        return matrix

    module.summary_matrix = summary_matrix
    try:
        raw, history = module._train_part(task)
    finally:
        module.summary_matrix = project
    return raw, [*history, {"cuts": seen["cuts"]}]


def cuts_differ(a, b) -> tuple[int, int]:
    """Summary features whose cuts differ between two `get_quantile_cut()`s, of all."""
    (pa, va), (pb, vb) = a, b
    features = len(pa) - 1
    same = sum(
        np.array_equal(va[pa[f] : pa[f + 1]], vb[pb[f] : pb[f + 1]]) for f in range(features)
    )
    return features - same, features


def xgboost_part(runs: Runs, args) -> dict:
    def fit(engine, seed=0):
        model = FraudModel("xgboost", seed=seed, progress=False, n_estimators=args.trees)
        model, seconds = runs.fit(model, engine, XGBOOST_SHARDS)
        return model, runs.scores(model)[0], seconds

    out = {"trees": args.trees, "shards": XGBOOST_SHARDS, "runs": []}
    _, seed0, _ = fit("local", 0)
    _, seed1, _ = fit("local", 1)
    out["seed_0_vs_1_local"] = {
        "max_abs_diff": float(np.abs(seed0 - seed1).max()),
        "correlation": float(np.corrcoef(seed0, seed1)[0, 1]),
    }
    print(
        f"xgboost, one process, seed 0 vs 1: max |diff| "
        f"{out['seed_0_vs_1_local']['max_abs_diff']:.3f}, "
        f"correlation {out['seed_0_vs_1_local']['correlation']:.4f}",
        flush=True,
    )
    for value in args.subsample:
        with subsample(value):
            cuts = {}
            with recording_cuts(cuts):
                single, expected, _ = fit("local")
            for shared in (False, True):
                with recording_cuts(cuts, single_process_cuts=shared):
                    model, got, seconds = fit("ray")
                differ, features = cuts_differ(cuts["single"], cuts["ray"])
                row = {
                    "subsample": value, "single_process_cuts": shared,
                    "max_abs_diff": float(np.abs(got - expected).max()),
                    "correlation": float(np.corrcoef(got, expected)[0, 1]),
                    "trees_kept_ray": model.model_.booster_.num_boosted_rounds(),
                    "trees_kept_local": single.model_.booster_.num_boosted_rounds(),
                    "features_with_other_cuts": differ, "features": features,
                    "ray_seconds": round(seconds, 1),
                }  # fmt: skip
                out["runs"].append(row)
                print(
                    f"xgboost subsample {value}"
                    f"{', single-process cuts (experiment)' if shared else ''}: max |diff| "
                    f"{row['max_abs_diff']:.2g}, correlation {row['correlation']:.6f}, trees "
                    f"{row['trees_kept_ray']} ({row['trees_kept_local']} in one process), "
                    f"{differ} of {features} features with other cuts  (ray fit {seconds:.0f} s)",
                    flush=True,
                )
    return out


def numbers(kind):
    return lambda text: [kind(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", action="store_true", help="The torch part.")
    parser.add_argument("--xgboost", action="store_true", help="The XGBoost part.")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (and CPUs).")
    parser.add_argument("--seeds", type=numbers(int), default=[0, 1, 2])
    parser.add_argument("--dropout", type=numbers(float), default=[0.0, 0.1])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--hidden-size", type=int, default=16)
    parser.add_argument(
        "--families",
        type=numbers(str),
        default=["gru", "lstm-attention", "bilstm-attention", "autoencoder"],
    )
    parser.add_argument("--trees", type=int, default=10)
    parser.add_argument("--subsample", type=numbers(float), default=[0.8, 1.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not (args.torch or args.xgboost):
        args.torch = args.xgboost = True
    logging.basicConfig(level=logging.WARNING)
    machine = describe()
    print("machine:", machine)
    load_before = os.getloadavg()
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*load_before), flush=True)
    started = time.perf_counter()
    results = {"args": {k: v for k, v in vars(args).items() if k != "out"}}
    with tempfile.TemporaryDirectory(prefix="ray-parity-") as tmp, ray_mapper(workers=args.workers):
        runs = Runs(Path(tmp), args.workers)
        if args.xgboost:
            results["xgboost"] = xgboost_part(runs, args)
        if args.torch:
            results["torch"] = torch_part(runs, args)
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*load_after))
    print(f"total {seconds:.0f} s")
    results |= {"seconds": round(seconds, 1), "load_average": [load_before, load_after]}
    save_results("ray_training_parity", results, args.out)


if __name__ == "__main__":
    main()
