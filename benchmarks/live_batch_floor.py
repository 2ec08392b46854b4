"""What a live batch costs before any feature or model: the API's per-transaction floor.

    .venv/bin/python benchmarks/live_batch_floor.py --model-dir DIR [--accounts 3000]
        [--days 45] [--batch 1000] [--repeat 5] [--out FILE]

`Detector.score_batch` takes a list of request dicts and returns a list of result dicts;
whatever the features and the store, it must read every field of every request, compute
each transaction's content digest (idempotency: a retry must match what was scored) and
build one result dict per transaction. This times those steps alone, on the requests of
benchmarks/live_batch_vs_offline.py (seed 1) in batches of `--batch`, by thread CPU time
(best of `--repeat` passes over all batches), in microseconds per transaction:

- fields: one list per request field (`[tx[c] for tx in txs]`), nothing checked;
- digests: `content_digest` of the canonical values (its format is fixed by the stores);
- times: ISO text to int64 ns (`pd.to_datetime`, as the parser);
- parse_batch: the parser as it runs (validation, canonical values, digests);
- results: the result dicts, one dict literal per transaction of precomputed columns.

Compared with `FraudModel.score` per transaction (its median of three runs), this is the
part of the live batch that no change to features, state or store can remove.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

import fraudseq  # noqa: E402
from fraudseq.transaction import content_digest, parse_batch, request_columns  # noqa: E402


def best(function, batches: list, repeat: int) -> float:
    """Thread CPU seconds of the fastest of `repeat` passes of `function` over `batches`."""
    runs = []
    for _ in range(repeat):
        started = time.thread_time()
        for batch in batches:
            function(batch)
        runs.append(time.thread_time() - started)
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print(describe())
    frame = fraudseq.simulate(accounts=args.accounts, days=args.days, seed=1)
    loaded = fraudseq.load_transactions(frame).drop(columns=["is_fraud", "fraud_type"])
    model = fraudseq.FraudModel.load(args.model_dir)
    schema = model.schema_
    loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
    txs = loaded.to_dict("records")
    n = len(txs)
    batches = [txs[s : s + args.batch] for s in range(0, n, args.batch)]
    columns = request_columns(schema)
    parsed = [parse_batch(batch, schema) for batch in batches]

    def fields(batch):
        return {c: [tx[c] for tx in batch] for c in columns}

    def digests(columns_):
        cat = list(zip(*columns_.categorical, strict=True)) or [()] * len(columns_)
        num = list(zip(*columns_.numeric, strict=True)) or [()] * len(columns_)
        cps = columns_.counterparty or [None] * len(columns_)
        return list(
            map(
                content_digest, columns_.ids, columns_.entities, columns_.time_ns.tolist(),
                columns_.amount.tolist(), cat, num, cps,
            )
        )  # fmt: skip

    def times(batch):
        text = pd.Series([tx[schema.time] for tx in batch], dtype=object)
        return pd.to_datetime(text, format="ISO8601", utc=True)

    rng = np.random.default_rng(0)
    scored = [
        (c.ids, rng.random(len(c)).tolist(), [False] * len(c), [True] * len(c)) for c in parsed
    ]

    def results(item):
        ids, probabilities, flags, ordered = item
        return [
            {
                "transaction_id": tx_id, "fraud_probability": p, "score": round(100.0 * p, 2),
                "alert": flag, "threshold": 0.5, "insufficient_history": flag,
                "out_of_order": not in_order, "history": "appended", "model_version": "v",
                "reasons": [],
            }
            for tx_id, p, flag, in_order in zip(ids, probabilities, flags, ordered, strict=True)
        ]  # fmt: skip

    out = {
        "fields": best(fields, batches, args.repeat),
        "digests": best(digests, parsed, args.repeat),
        "times": best(times, batches, args.repeat),
        "parse_batch": best(lambda b: parse_batch(b, schema), batches, args.repeat),
        "results": best(results, scored, args.repeat),
    }
    per_tx = {name: round(1e6 * seconds / n, 2) for name, seconds in out.items()}
    results_ = {
        "clock": "thread CPU time, best of --repeat passes",
        "transactions": n,
        "batch": args.batch,
        "floor_us_per_tx": per_tx,
        "api_floor_us_per_tx": round(per_tx["parse_batch"] + per_tx["results"], 2),
    }
    runs = []
    for _ in range(3):
        started = time.thread_time()
        model.score(frame)
        runs.append(time.thread_time() - started)
    results_["offline_us_per_tx"] = round(1e6 * sorted(runs)[1] / n, 2)
    for key, value in results_.items():
        print(f"{key}: {value}")
    save_results("live_batch_floor", results_, args.out)


if __name__ == "__main__":
    main()
