"""Live batches of two checkouts A/B, interleaved batch by batch, on a loaded machine.

    .venv/bin/python benchmarks/live_batch_ab.py --model-dir DIR --old SRC --new SRC
        [--accounts 3000] [--days 45] [--batch 1000] [--state memory] [--out FILE]

Starts one worker process per checkout (`SRC`: its src directory on PYTHONPATH), each
holding a Detector on the same `--state` and the serving benchmark's transactions (seed 1,
as benchmarks/live_batch_vs_offline.py). The driver asks them in turn to score the next
batch (old, new, old, new, ...), so both see the same machine load within milliseconds,
and times `FraudModel.score` over the whole period in each, alternately, `--offline-runs`
times spread over the replay. Reports per checkout, by wall clock and by the worker
thread's CPU time (torch runs on that one thread; CPU time barely moves with the machine's
load), the live rate (sum of batch times), the median offline rate and their ratio, and the
new/old ratio of the live rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

WORKER = r"""
import gc, json, sys, tempfile, time
import torch
import fraudseq
from fraudseq.serving import Detector
torch.set_num_threads(1)
model_dir, state, accounts, days, size = sys.argv[1:6]
frame = fraudseq.simulate(accounts=int(accounts), days=int(days), seed=1)
loaded = fraudseq.load_transactions(frame).drop(columns=["is_fraud", "fraud_type"])
loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
txs = loaded.to_dict("records")
size = int(size)
tmp = tempfile.TemporaryDirectory()
url = state if state == "memory" else f"sqlite:///{tmp.name}/state.db"
detector = Detector.load(model_dir, url, clock="data")
detector.explain = "none"
model = fraudseq.FraudModel.load(model_dir)
print(json.dumps({"batches": (len(txs) + size - 1) // size, "transactions": len(txs)}), flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "batch":
        start = int(command[1]) * size
        batch = txs[start : start + size]
        t, c = time.perf_counter(), time.thread_time()
        detector.score_batch(batch)
        cpu = time.thread_time() - c
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu": cpu}), flush=True)
    elif command[0] == "single":  # score transactions [a, b) one call each
        a, b = int(command[1]), int(command[2])
        wall, cpu = [], []
        for tx in txs[a:b]:
            t, c = time.perf_counter(), time.thread_time()
            detector.score(tx)
            cpu.append(time.thread_time() - c)
            wall.append(time.perf_counter() - t)
        print(json.dumps({"wall": wall, "cpu": cpu}), flush=True)
    elif command[0] == "offline":
        t, c = time.perf_counter(), time.thread_time()
        model.score(frame)
        cpu = time.thread_time() - c
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu": cpu}), flush=True)
    elif command[0] == "freeze":  # as fraudseq serve does after loading
        gc.collect()
        gc.freeze()
        print("{}", flush=True)
    else:
        break
detector.close()
"""


def start(src: str, args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", WORKER, str(args.model_dir), args.state,
               str(args.accounts), str(args.days), str(args.batch)]  # fmt: skip
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def ask(worker: subprocess.Popen, command: str) -> dict:
    worker.stdin.write(command + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def stop(workers: dict) -> None:
    for worker in workers.values():
        worker.stdin.write("stop\n")
        worker.stdin.flush()
        worker.wait()


def single(workers: dict, n: int, args) -> None:
    """`Detector.score` of the last `--single` transactions one call each, after the rest
    in batches; old and new alternate every 50 calls. p50/p90 of wall and thread CPU."""
    measured_from = n - args.single
    warm = range(0, measured_from, args.batch)
    for worker in workers.values():
        for start in warm:  # whole batches, then the rest of the warm-up one call each
            if start + args.batch <= measured_from:
                ask(worker, f"batch {start // args.batch}")
            else:
                ask(worker, f"single {start} {measured_from}")
        ask(worker, "freeze")
    times = {name: {"wall": [], "cpu": []} for name in workers}
    load_before = os.getloadavg()
    for a in range(measured_from, n, 50):
        for name, worker in workers.items():
            got = ask(worker, f"single {a} {min(a + 50, n)}")
            times[name]["wall"] += got["wall"]
            times[name]["cpu"] += got["cpu"]
    stop(workers)
    results = {"transactions_timed": args.single, "state": args.state,
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    for name, got in times.items():
        results[name] = {
            f"{kind}_p{q}_ms": round(1e3 * float(np.percentile(got[kind], q)), 4)
            for kind in ("wall", "cpu")
            for q in (50, 90)
        }
    results["new_to_old_cpu_p50"] = round(
        results["new"]["cpu_p50_ms"] / results["old"]["cpu_p50_ms"], 3
    )
    print(json.dumps(results, indent=1))
    save_results("live_single_ab", results, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--old", required=True, help="the old checkout's src directory")
    parser.add_argument("--new", required=True, help="the new checkout's src directory")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--state", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--offline-runs", type=int, default=3)
    parser.add_argument(
        "--single", type=int, default=0, help="time this many last transactions one call each"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print(describe())
    load_before = os.getloadavg()
    workers = {"old": start(args.old, args), "new": start(args.new, args)}
    info = {name: json.loads(w.stdout.readline()) for name, w in workers.items()}
    batches = info["old"]["batches"]
    if args.single:
        single(workers, info["old"]["transactions"], args)
        return
    live = {name: {"seconds": 0.0, "cpu": 0.0} for name in workers}
    offline = {name: {"seconds": [], "cpu": []} for name in workers}
    # Offline runs spread over the replay (before, between and after equal parts of it).
    every = max(batches // max(args.offline_runs - 1, 1), 1)
    for b in range(batches + 1):
        if b % every == 0 and len(offline["old"]["cpu"]) < args.offline_runs:
            for name, worker in workers.items():
                got = ask(worker, "offline")
                for kind in ("seconds", "cpu"):
                    offline[name][kind].append(got[kind])
        if b == batches:
            break
        for name, worker in workers.items():
            got = ask(worker, f"batch {b}")
            for kind in ("seconds", "cpu"):
                live[name][kind] += got[kind]
    stop(workers)
    n = info["old"]["transactions"]
    results = {"transactions": n, "batch": args.batch, "state": args.state,
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    for name in workers:  # wall clock, and the worker thread's CPU time (robust to load)
        results[name] = {}
        for kind, label in (("seconds", "wall"), ("cpu", "cpu")):
            rate = n / live[name][kind]
            off = n / float(np.median(offline[name][kind]))
            results[name][label] = {
                "live_batch_tx_per_s": round(rate), "offline_tx_per_s": round(off),
                "offline_runs_s": [round(s, 3) for s in offline[name][kind]],
                "live_to_offline": round(rate / off, 3),
            }  # fmt: skip
    for label in ("wall", "cpu"):
        results[f"new_to_old_live_{label}"] = round(
            results["new"][label]["live_batch_tx_per_s"]
            / results["old"][label]["live_batch_tx_per_s"],
            3,
        )
    print(json.dumps(results, indent=1))
    save_results("live_batch_ab", results, args.out)


if __name__ == "__main__":
    main()
