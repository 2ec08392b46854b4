"""How exactly a late transaction inserted into its account's history scores (the detector's
promise: as in time order when at most LATE_ROWS later events of its account were stored
first; `fraudseq.serving.detector`, "Late transactions").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/late_insert_exactness.py \
        [--accounts 700] [--days 3] [--held 0.03] [--seeds 0,1] [--out FILE]

Trains a small LSTM (1 epoch) on a simulated history, then replays `--days` of new
transactions through `Detector.score` (memory store, one call each) with a `--held` share
of them held back by up to 0.9 day of data (inside the 1-day lateness). For every
transaction answered `"history": "inserted"` whose earlier events had all been scored
before it, compares its probability with batch `FraudModel.score` of the same data, apart
for those with at most LATE_ROWS later events of its account stored first and those with
more. Writes benchmarks/results/late_insert_exactness.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import save_results  # noqa: E402

from fraudseq import FraudModel, load_transactions, simulate  # noqa: E402
from fraudseq.serving import Detector  # noqa: E402
from fraudseq.serving.live_features import LATE_ROWS  # noqa: E402

CLOCK = "2026-02-10T00:00:00"


def replay(model_dir: Path, txs: list[dict], order: np.ndarray) -> dict[str, dict]:
    with Detector.load(model_dir, "memory", clock=CLOCK) as detector:
        detector.explain = "none"
        return {txs[i]["tx_id"]: detector.score(txs[i]) for i in order}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=700)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--held", type=float, default=0.03)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    history = simulate(accounts=200, days=30, seed=3)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        FraudModel("lstm", epochs=1, hidden_size=8, seed=1, progress=False).fit(
            history, train_until="2026-01-24"
        ).save(model_dir)
        frame = simulate(accounts=args.accounts, days=args.days, seed=11)
        loaded = load_transactions(frame).drop(columns=["is_fraud", "fraud_type"])
        batch = FraudModel.load(model_dir).score(loaded)
        expected = dict(zip(batch["transaction_id"], batch["score"], strict=True))
        times = loaded["ts"].to_numpy().astype("datetime64[ns]").astype(np.int64)
        account = loaded["card_id"].to_numpy()
        loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
        txs = loaded.to_dict("records")
        n, groups = len(txs), {"at_most_late_rows": [], "more": []}
        for seed in map(int, args.seeds.split(",")):
            rng = np.random.default_rng(seed)
            delay = (rng.random(n) < args.held) * rng.uniform(0, 0.9 * 86_400e9, n)
            order = np.argsort(times + delay, kind="stable")
            position = np.empty(n, dtype=np.int64)
            position[order] = np.arange(n)
            results = replay(model_dir, txs, order)
            for i, tx in enumerate(txs):
                if results[tx["tx_id"]]["history"] != "inserted":
                    continue
                if not (position[times < times[i]] < position[i]).all():
                    continue  # an earlier event arrived after it: not the promise's case
                first = (account == account[i]) & (times > times[i]) & (position < position[i])
                difference = abs(results[tx["tx_id"]]["fraud_probability"] - expected[tx["tx_id"]])
                key = "at_most_late_rows" if first.sum() <= LATE_ROWS else "more"
                groups[key].append(difference)
    out = {
        "late_rows": LATE_ROWS,
        "transactions": n,
        **{
            key: {"inserted": len(v), "max_abs_difference": float(max(v, default=0.0))}
            for key, v in groups.items()
        },
    }
    print(out)
    save_results("late_insert_exactness", out, args.out)


if __name__ == "__main__":
    main()
