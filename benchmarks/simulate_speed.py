"""Time fraudseq.simulate.simulate() and print rows, seconds, rows/s and fraud share per type.

Usage: python benchmarks/simulate_speed.py [--accounts 20000 --days 30 --seed 0 --repeat 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from fraudseq.simulate import FRAUD_TYPES, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="Runs; the fastest is reported.")
    args = parser.parse_args()

    timings = []
    for _ in range(max(1, args.repeat)):
        began = time.perf_counter()
        frame = simulate(accounts=args.accounts, days=args.days, seed=args.seed)
        timings.append(time.perf_counter() - began)
    seconds = min(timings)

    print(
        f"machine: {platform.platform()} | python {platform.python_version()} | "
        f"{platform.processor() or platform.machine()} | cpus {os.cpu_count()}"
    )
    print(f"accounts={args.accounts} days={args.days} seed={args.seed}")
    print(f"rows: {len(frame):,}")
    print(
        f"seconds: {seconds:.2f}"
        + (f" (runs: {', '.join(f'{t:.2f}' for t in timings)})" if len(timings) > 1 else "")
    )
    print(f"rows/s: {len(frame) / seconds:,.0f}")
    print(f"fraud share: {frame['is_fraud'].mean():.4%}")
    shares = frame["fraud_type"].value_counts() / len(frame)
    for fraud_type in FRAUD_TYPES:
        print(f"  {fraud_type:<22} {shares.get(fraud_type, 0.0):.4%}")


if __name__ == "__main__":
    main()
