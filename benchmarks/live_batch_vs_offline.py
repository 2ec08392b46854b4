"""Live batches against offline scoring on the same transactions, in one process.

    .venv/bin/python benchmarks/live_batch_vs_offline.py --model-dir DIR [--accounts 3000]
        [--days 45] [--batch 1000] [--out FILE]

Simulates `--days` of `--accounts` (seed 1, the serving benchmark's data), then times:
1. `FraudModel.score` over the whole period (features, windows, one pass of the model):
   transactions per second;
2. `Detector.score_batch` in batches of `--batch` over the same transactions in time order,
   with the memory store and with a SQLite store (state read and written per batch, as
   `fraudseq serve` does; reasons off, one torch thread as the service runs).
The issue-18 goal: the live batch with the memory store reaches at least 50% of (1)'s
transactions per second, and SQLite batches of 1,000 at least 12,000 transactions/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

import fraudseq  # noqa: E402
from fraudseq.serving import Detector  # noqa: E402


def requests(frame) -> list[dict]:
    loaded = fraudseq.load_transactions(frame).drop(columns=["is_fraud", "fraud_type"])
    loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
    return loaded.to_dict("records")


def live_rate(model_dir: Path, state: str, txs: list[dict], size: int) -> float:
    import torch

    torch.set_num_threads(1)
    with Detector.load(model_dir, state, clock="data") as detector:
        detector.explain = "none"
        started = time.perf_counter()
        for start in range(0, len(txs), size):
            detector.score_batch(txs[start : start + size])
        return len(txs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print(describe())
    frame = fraudseq.simulate(accounts=args.accounts, days=args.days, seed=1)
    model = fraudseq.FraudModel.load(args.model_dir)
    started = time.perf_counter()
    model.score(frame)
    offline = len(frame) / (time.perf_counter() - started)
    txs = requests(frame)
    memory = live_rate(args.model_dir, "memory", txs, args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = live_rate(args.model_dir, f"sqlite:///{tmp}/state.db", txs, args.batch)
    results = {
        "transactions": len(frame),
        "offline_tx_per_s": round(offline),
        "live_batch_memory_tx_per_s": round(memory),
        "live_batch_sqlite_tx_per_s": round(sqlite),
        "memory_to_offline": round(memory / offline, 3),
    }
    print(
        f"{len(frame):,} transactions: FraudModel.score {offline:,.0f} tx/s; score_batch "
        f"(batches of {args.batch}) memory {memory:,.0f} tx/s ({memory / offline:.0%} of "
        f"offline), SQLite {sqlite:,.0f} tx/s"
    )
    save_results("live_batch_vs_offline", results, args.out)


if __name__ == "__main__":
    main()
