"""Live scoring latency of `Detector.score` in process, and the state kept per account.

    .venv/bin/python benchmarks/detector_latency.py [--model lstm] [--state sqlite]
        [--accounts 500] [--days 30] [--measure 5000] [--explain alerts]

Simulates `--accounts` x `--days` of transactions, trains a small model on the first two
thirds (window 16, hidden size 32, one epoch: the network's size, not its quality, sets the
latency), then replays the file through one Detector: every transaction but the last
`--measure` warms the state, and the last `--measure` are timed one `score` call each
(validation, state read, features, model, state write and commit). Prints p50/p90/p99/max
wall-clock latency and the calling thread's CPU time (robust to other load on the machine),
split by alert (alerts get `reasons`: every occlusion of `fraudseq.explain` in one batched
forward pass, with --explain alerts), and the bytes of state per account. Goal: p99 <= 1 ms
with SQLite state. Before the timed calls the process freezes its objects out of the garbage
collector (`gc.freeze()`), as `fraudseq serve` does after loading the model: otherwise a full
collection walks ~1M long-lived objects (torch, pandas, the model) and stalls one call by
~100 ms every few thousand calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from fraudseq.fraud_model import FraudModel  # noqa: E402
from fraudseq.schema import load_transactions  # noqa: E402
from fraudseq.serving import AccountState, Detector  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ms = np.asarray(values) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return f"p50 {p50:.3f}  p90 {p90:.3f}  p99 {p99:.3f}  max {ms.max():.2f} ms  (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm")
    parser.add_argument("--state", default="sqlite", help="sqlite, memory or a redis:// URL")
    parser.add_argument("--accounts", type=int, default=500)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--measure", type=int, default=5000)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--explain", default="alerts", choices=["alerts", "all", "none"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe())

    frame = load_transactions(simulate(accounts=args.accounts, days=args.days, seed=args.seed))
    train_until = frame["ts"].min().normalize() + np.timedelta64(args.days * 2 // 3, "D")
    model = FraudModel(
        args.model, epochs=1, hidden_size=args.hidden_size, n_estimators=200, seed=args.seed
    )
    started = time.perf_counter()
    model.fit(frame, train_until=train_until, valid_days=5)
    print(
        f"trained {args.model} (hidden {args.hidden_size}) in {time.perf_counter() - started:.1f}s"
    )

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model.save(Path(tmp) / "model")
        state = f"sqlite:///{tmp}/state.db" if args.state == "sqlite" else args.state
        requests = frame.drop(columns=["is_fraud", "fraud_type"])
        requests["ts"] = requests["ts"].map(lambda t: t.isoformat())
        txs = requests.to_dict("records")
        labels = frame["is_fraud"].astype(int).tolist()
        measure = min(args.measure, len(txs) // 2)
        warm = len(txs) - measure

        # The simulated transactions are from January 2026: a replay, on the data clock.
        with Detector.load(model_dir, state, clock="data") as detector:
            detector.explain = args.explain
            started = time.perf_counter()
            for tx, label in zip(txs[:warm], labels[:warm], strict=True):
                detector.score(tx)
                detector.feedback(tx["tx_id"], label)
            warm_s = time.perf_counter() - started
            print(
                f"warm-up: {warm:,} transactions scored + labelled in {warm_s:.1f}s "
                f"({detector.store.url.split('?')[0]})"
            )

            gc.collect()
            gc.freeze()  # as fraudseq serve does once the model is loaded
            wall = {True: [], False: []}
            cpu = {True: [], False: []}
            for tx in txs[warm:]:
                t0, c0 = time.perf_counter(), time.thread_time()
                result = detector.score(tx)
                c1, t1 = time.thread_time(), time.perf_counter()
                wall[result["alert"]].append(t1 - t0)
                cpu[result["alert"]].append(c1 - c0)
            everything = wall[True] + wall[False]
            print(
                f"\nDetector.score, {measure:,} transactions after warm-up "
                f"(state: {args.state}, model: {args.model}, explain: {args.explain})"
            )
            print(f"  wall, all        {percentiles(everything)}")
            print(f"  wall, no alert   {percentiles(wall[False])}")
            print(f"  wall, alert      {percentiles(wall[True])}")
            print(f"  thread CPU, all  {percentiles(cpu[True] + cpu[False])}")
            print(f"  thread CPU, no alert {percentiles(cpu[False])}")

            entities = frame["card_id"].unique()
            sizes = [len(detector.store.account(e) or b"") for e in entities]
            sizes = [s for s in sizes if s]
            events = [AccountState.from_bytes(detector.store.account(e)).n for e in entities]
            print(
                f"\nstate per account: mean {statistics.mean(sizes):,.0f} B, median "
                f"{statistics.median(sizes):,.0f} B, max {max(sizes):,} B over {len(sizes):,} "
                f"accounts ({statistics.mean(events):.0f} events each on average; bounded by "
                f"window {model.window} + 7-day velocity buffer + seen categorical values)"
            )
            records = [detector.store.record(t["tx_id"]) for t in txs[-200:]]
            record_bytes = statistics.mean(len(json.dumps(r)) for r in records)
            print(f"transaction record (idempotency/feedback): ~{record_bytes:.0f} B each")
        if args.state == "sqlite":
            size = sum(p.stat().st_size for p in Path(tmp).glob("state.db*"))
            print(f"SQLite files: {size / 1e6:.1f} MB for {len(txs):,} transactions")


if __name__ == "__main__":
    main()
