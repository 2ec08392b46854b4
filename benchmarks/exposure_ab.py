"""The compromise-exposure block (issue 23) on the simulator: what it shows, what it adds
to XGBoost, and what it costs.

    .venv/bin/python benchmarks/exposure_ab.py [--accounts 4000] [--days 90]
        [--train-until 2026-03-02] [--seed 1] [--work DIR] [--out FILE] [--speed-only]
        [--scenario skimmer ...]

1. Simulates the data (its compromised_merchant scenario clones cards that visited a
   compromised merchant and uses them elsewhere days later) and writes it to Parquet.
2. The block's raw features over the whole file (labels used only once older than the
   7-day delay): on the test rows (time >= --train-until), the AP and AUC of exposure_max
   alone as a score, each fraud type's frauds against genuine rows, and the features'
   means; compromised_merchant split into the merchant's own charges (`:at_merchant`) and
   the cloned cards used elsewhere (`:elsewhere`: `subtypes`).
3. `fraudseq train --model xgboost` with the default blocks, and with them plus exposure
   (`--features`); `fraudseq score` on the test period; per model the test AP and AUC,
   and per fraud type (with the split) the recall at 1% FPR (its frauds against all genuine
   test rows).
4. Cost: `FeatureEncoder.fit` + `transform` over the file, default blocks against default +
   exposure (median of 3, wall clock), in rows per second.
Prints the tables and `uptime` before and after; writes benchmarks/results/exposure_ab.json.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import save_results  # noqa: E402

from fraudseq.features import FeatureEncoder  # noqa: E402
from fraudseq.fraud_model import DEFAULT_FEATURES  # noqa: E402
from fraudseq.metrics import auc_roc, average_precision, recall_at_fpr  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402

SRC = Path(__file__).resolve().parent.parent / "src"
WITH = (*DEFAULT_FEATURES, "exposure")
SCENARIO = "compromised_merchant"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cli(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "from fraudseq.cli import main; main()", *args]
    subprocess.run(command, check=True, env=env)


def subtypes(frame: pd.DataFrame) -> np.ndarray:
    """Per row, its fraud_type; compromised_merchant frauds split into `:at_merchant` (the
    card had a genuine transaction at the same merchant in the 48 hours before: the
    merchant's own charges, part (a)) and `:elsewhere` (cloned cards, part (b))."""
    kind = frame["fraud_type"].fillna("").astype(str).to_numpy().copy()
    target = (frame["is_fraud"] == 1).to_numpy() & (kind == SCENARIO)
    genuine = frame.loc[frame["is_fraud"] == 0, ["card_id", "merchant_id", "ts"]]
    genuine = genuine.assign(seen=genuine["ts"]).sort_values("ts")
    rows = frame.loc[target, ["card_id", "merchant_id", "ts"]].reset_index()
    found = pd.merge_asof(
        rows.sort_values("ts"), genuine, on="ts", by=["card_id", "merchant_id"],
        direction="backward", tolerance=pd.Timedelta(hours=48),
    )  # fmt: skip
    at = found.set_index("index")["seen"].notna()
    kind[at.index[at.to_numpy()]] = f"{SCENARIO}:at_merchant"
    kind[at.index[~at.to_numpy()]] = f"{SCENARIO}:elsewhere"
    return kind


def separation(frame: pd.DataFrame, train_until: str) -> dict:
    schema = Schema.simulator()
    encoder = FeatureEncoder(schema, blocks=("exposure",), label_delay_days=7)
    raw, sorted_frame = encoder._raw_numeric(frame)
    rows = sorted_frame.order
    test = (frame[schema.time].to_numpy()[rows] >= np.datetime64(train_until)).astype(bool)
    kind = subtypes(frame)[rows]
    fraud = frame[schema.label].to_numpy()[rows] == 1
    genuine = test & ~fraud
    groups = {k: test & fraud & (kind == k) for k in sorted(set(kind[test & fraud]))}
    out = {"test_rows": int(test.sum()), "frauds": {k: int(m.sum()) for k, m in groups.items()}}
    for name, values in raw.items():
        out[name] = {"mean_genuine": float(values[genuine].mean())}
        for k, m in groups.items():
            both = genuine | m
            out[name][k] = {
                "mean": float(values[m].mean()),
                "auc_alone": auc_roc(m[both].astype(int), values[both]),
                "ap_alone": average_precision(m[both].astype(int), values[both]),
            }
    return out


def model_metrics(frame: pd.DataFrame, scores_path: Path) -> dict:
    schema = Schema.simulator()
    scores = pd.read_csv(scores_path)
    kinds = frame.set_index(schema.id_column)[["fraud_type", schema.label]]
    joined = scores.join(kinds, on="transaction_id")
    y = (joined[schema.label] == 1).to_numpy().astype(int)
    s = joined["score"].to_numpy()
    out = {"ap": average_precision(y, s), "auc": auc_roc(y, s), "n": len(y), "frauds": int(y.sum())}
    kind = pd.Series(subtypes(frame), index=frame[schema.id_column])
    kind = kind.reindex(joined["transaction_id"]).to_numpy()
    per = {}
    for scenario in sorted(set(kind[y == 1])):
        mask = (y == 0) | (kind == scenario)
        per[scenario] = {
            "recall_at_1pct_fpr": recall_at_fpr(y[mask], s[mask], 0.01),
            "frauds": int(((kind == scenario) & (y == 1)).sum()),
        }
    out["per_scenario"] = per
    out["recall_at_1pct_fpr"] = recall_at_fpr(y, s, 0.01)
    return out


def encoding_speed(frame: pd.DataFrame, blocks: tuple[str, ...], repeat: int = 3) -> dict:
    schema = Schema.simulator()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        FeatureEncoder(schema, blocks=blocks).fit(frame).transform(frame)
        times.append(time.perf_counter() - started)
    median = float(np.median(times))
    return {"seconds": median, "rows_per_s": len(frame) / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=4000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-until", default="2026-03-02")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--speed-only", action="store_true", help="only part 4 (the cost)")
    parser.add_argument(
        "--scenario", action="append", default=[],
        help="an opt-in simulator typology to add (skimmer, new_scheme), where simulate has them",
    )  # fmt: skip
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="exposure-ab-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"uptime_before": uptime(), "args": {k: str(v) for k, v in vars(args).items()}}
    print(results["uptime_before"])

    data = work / "tx.parquet"
    if not data.exists():
        extra = {"scenarios": tuple(args.scenario)} if args.scenario else {}
        simulate(accounts=args.accounts, days=args.days, seed=args.seed, **extra).to_parquet(data)
    frame = load_transactions(str(data), Schema.simulator())
    print(f"{len(frame):,} rows; frauds by scenario:")
    print(frame[frame["is_fraud"] == 1]["fraud_type"].value_counts().to_string())

    if not args.speed_only:
        results["separation"] = separation(frame, args.train_until)
        print("exposure features on test rows:", results["separation"])

    results["models"] = {}
    for name, blocks in (("default", DEFAULT_FEATURES), ("default+exposure", WITH)):
        if args.speed_only:
            break
        model_dir, scores = work / f"model-{name}", work / f"scores-{name}.csv"
        started = time.perf_counter()
        cli("train", str(data), "--out", str(model_dir), "--model", "xgboost",
            "--train-until", args.train_until, "--features", ",".join(blocks),
            "--seed", "0")  # fmt: skip
        trained = time.perf_counter() - started
        cli("score", str(model_dir), str(data), "--out", str(scores), "--from", args.train_until)
        metrics = model_metrics(frame, scores)
        metrics["train_seconds"] = trained
        results["models"][name] = metrics
        print(name, metrics)

    results["encoding"] = {
        "default": encoding_speed(frame, DEFAULT_FEATURES),
        "default+exposure": encoding_speed(frame, WITH),
        "rows": len(frame),
    }
    print("encoding (fit + transform):", results["encoding"])
    results["uptime_after"] = uptime()
    print(results["uptime_after"])
    save_results("exposure_ab", results, args.out)


if __name__ == "__main__":
    main()
