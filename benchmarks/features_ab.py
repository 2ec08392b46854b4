"""Encoding and windows of two checkouts A/B, interleaved run by run, on a loaded machine.

    .venv/bin/python benchmarks/features_ab.py --old SRC --new SRC [--accounts 20000]
        [--days 30] [--rounds 5] [--out FILE]

The first stage of benchmarks/pipeline_speed.py (`FeatureEncoder.fit`, `transform`, and
`window_index` over every row, 16 events), on the same simulated transactions, in one
worker process per checkout (`SRC`: its src directory on PYTHONPATH). The transactions are
simulated once and written to Parquet; each worker loads them with its own
`load_transactions`. The driver runs old and new in turn, `--rounds` times, alternating
which goes first, so both see the same load. Reports per checkout the median seconds and
rows per second of each stage, by wall clock and by the process's CPU time, and new/old.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from live_batch_ab import ask, stop  # noqa: E402
from machine import describe, save_results  # noqa: E402

WORKER = r"""
import json, sys, time
import numpy as np
from fraudseq.features import FeatureEncoder
from fraudseq.schema import Schema, load_transactions
from fraudseq.windows import window_index
schema = Schema.simulator()
frame = load_transactions(sys.argv[1], schema)
print(json.dumps({"rows": len(frame)}), flush=True)

def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - t, time.process_time() - c

for line in sys.stdin:
    if line.strip() != "run":
        break
    encoder, fit_s, fit_c = timed(lambda: FeatureEncoder(schema).fit(frame))
    encoded, tr_s, tr_c = timed(lambda: encoder.transform(frame))
    positions = np.arange(len(encoded))
    _, win_s, win_c = timed(lambda: window_index(positions, encoded.starts, 16, len(encoded)))
    print(json.dumps({"wall": {"fit": fit_s, "transform": tr_s, "windows": win_s},
                      "cpu": {"fit": fit_c, "transform": tr_c, "windows": win_c}}), flush=True)
"""


def start(src: str, data: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(data)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip


def medians(runs: list[dict], rows: int) -> dict:
    out = {}
    for clock in ("wall", "cpu"):
        stages = {s: float(np.median([r[clock][s] for r in runs])) for s in runs[0][clock]}
        stages["total"] = float(np.median([sum(r[clock].values()) for r in runs]))
        out[f"{clock}_seconds"] = {s: round(v, 3) for s, v in stages.items()}
        out[f"{clock}_rows_per_s"] = {s: round(rows / v) for s, v in stages.items() if v > 0}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="The reference checkout's src directory.")
    parser.add_argument("--new", required=True, help="The measured checkout's src directory.")
    parser.add_argument("--accounts", type=int, default=20000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print("machine:", describe())
    from fraudseq.simulate import simulate

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "tx.parquet"
        simulate(accounts=args.accounts, days=args.days, seed=0).to_parquet(data)
        workers = {"old": start(args.old, data), "new": start(args.new, data)}
        rows = {name: json.loads(w.stdout.readline())["rows"] for name, w in workers.items()}
        assert rows["old"] == rows["new"], rows
        load_before = os.getloadavg()
        runs = {name: [] for name in workers}
        for i in range(args.rounds):
            order = ("old", "new") if i % 2 == 0 else ("new", "old")
            for name in order:
                runs[name].append(ask(workers[name], "run"))
                print(name, runs[name][-1], flush=True)
        stop(workers)
    results = {"rows": rows["new"], "rounds": args.rounds, "old_src": args.old,
               "new_src": args.new, "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    for name, got in runs.items():
        results[name] = medians(got, rows[name])
    results["new_to_old_total"] = {
        clock: round(
            results["new"][f"{clock}_seconds"]["total"]
            / results["old"][f"{clock}_seconds"]["total"],
            3,
        )
        for clock in ("wall", "cpu")
    }
    print(results)
    save_results("features_ab", results, args.out)


if __name__ == "__main__":
    main()
