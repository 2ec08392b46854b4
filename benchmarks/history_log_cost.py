"""What the history log adds to one score's store write: interleaved A/B in one process.

    .venv/bin/python benchmarks/history_log_cost.py [STATE_URL]   # default: a new SQLite file

Simulates 300 accounts x 10 days, parses the transactions, then commits one `transact` per
transaction to the store, alternating an update without a history entry and one with it
(`LiveTransaction.history_json` encoded inside `compute`, as the Detector does, and written
in the same transaction or commit script). The first 1,000 commits warm up. Prints wall and
thread-CPU p50/p99 of each half: alternating in one process keeps other load on the machine
from favouring either side, which separate runs of detector_latency.py could not resolve.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402

from fraudseq.schema import Schema, load_transactions  # noqa: E402
from fraudseq.serving.stores import Update, open_store  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402
from fraudseq.transaction import parse_transaction  # noqa: E402

WARM = 1_000


def main() -> None:
    print(describe())
    schema = Schema.simulator()
    frame = load_transactions(simulate(accounts=300, days=10, seed=1))
    frame = frame.drop(columns=["is_fraud", "fraud_type"])
    frame["ts"] = frame["ts"].map(lambda t: t.isoformat())
    txs = [parse_transaction(tx, schema) for tx in frame.to_dict("records")]
    with tempfile.TemporaryDirectory() as tmp:
        url = sys.argv[1] if len(sys.argv) > 1 else f"sqlite:///{tmp}/state.db"
        store = open_store(url)
        store.history_buckets = 10_000
        state = bytes(600)  # about an account's state
        times: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
        for i, tx in enumerate(txs):
            logged = bool(i % 2)

            def compute(snapshot, tx=tx, logged=logged) -> Update:
                return Update(
                    result={},
                    record={"digest": tx.digest},
                    record_json=f'{{"digest":"{tx.digest}"}}',
                    account=state,
                    counterparty_bucket=tx.bucket,
                    history=tx.history_json() if logged else None,
                    history_bucket=tx.bucket,
                )

            t0, c0 = time.perf_counter(), time.thread_time()
            store.transact(tx.id, tx.entity, tx.counterparty, None, compute)
            c1, t1 = time.thread_time(), time.perf_counter()
            if i >= WARM:
                times[logged][0].append(t1 - t0)
                times[logged][1].append(c1 - c0)
        if hasattr(store, "clear"):
            store.clear()
        store.close()
    print(f"store: {url.split('?')[0]}, {len(txs) - WARM:,} commits timed")
    for logged in (False, True):
        wall, cpu = (np.array(values) * 1e6 for values in times[logged])
        print(
            f"  {'with' if logged else 'without'} history entry: wall p50 "
            f"{np.median(wall):.1f} us, p99 {np.percentile(wall, 99):.1f} us; thread CPU p50 "
            f"{np.median(cpu):.1f} us, mean {cpu.mean():.1f} us (n={len(cpu):,})"
        )
    print(f"load average after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
