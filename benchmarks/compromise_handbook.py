"""Common points of compromise on the Fraud Detection Handbook data: are the top-ranked
terminals of `fraudseq compromise` the compromised ones (TX_FRAUD_SCENARIO 2)?

    .venv/bin/python benchmarks/compromise_handbook.py [--data FILE] [--periods 7 14 30]

For analysis dates T every 14 days (2018-05-01 .. 2018-09-18), ranks the terminals by
`fraudseq.compromise.rank_counterparties` over the visits of [T - period, T), with only the
labels of transactions before T. A terminal counts as compromised when it has a scenario-2
fraud in [T - period, T) (the handbook compromises 2 terminals a day for 28 days: every
transaction there is fraud). Prints, per period length, the mean precision of the top 20 and
top 50 against that, the share of compromised terminals among all ranked (what a random
ranking gets), and the time of one ranking; writes benchmarks/results/compromise_handbook.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq.compromise import rank_counterparties  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "handbook_transactions.csv.gz"
DATES = pd.date_range("2018-05-01", "2018-09-18", freq="14D")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--periods", type=int, nargs="+", default=[7, 14, 30])
    parser.add_argument("--window-days", type=float, default=30)
    args = parser.parse_args()
    print("machine:", describe(), "| load average:", os.getloadavg())
    schema = Schema.from_toml(ROOT / "schemas" / "handbook.toml")
    started = time.perf_counter()
    frame = load_transactions(args.data, schema)
    load_seconds = time.perf_counter() - started
    print(f"loaded {len(frame):,} transactions in {load_seconds:.1f} s")
    times = frame[schema.time]
    compromised = frame[schema.scenario].astype(str) == "2"

    started = time.perf_counter()
    whole = rank_counterparties(frame, schema, window_days=args.window_days)
    whole_seconds = time.perf_counter() - started
    print(f"one ranking of the whole file: {whole_seconds:.2f} s ({len(whole.table):,} terminals)")

    rows = []
    for period in args.periods:
        per_date = []
        for until in DATES:
            start = until - pd.Timedelta(days=period)
            began = time.perf_counter()
            result = rank_counterparties(
                frame, schema, start=start, end=until, window_days=args.window_days
            )
            seconds = time.perf_counter() - began
            inside = ((times >= start) & (times < until)).to_numpy()
            truth = set(frame.loc[inside & compromised.to_numpy(), schema.counterparty])
            hit = result.table["counterparty"].isin(truth).to_numpy()
            per_date.append(
                {
                    "until": str(until.date()),
                    "precision_top20": float(hit[:20].mean()),
                    "precision_top50": float(hit[:50].mean()),
                    "random": float(hit.mean()),
                    "compromised_terminals": len(truth),
                    "ranked": len(result.table),
                    "base_rate": result.base_rate,
                    "seconds": seconds,
                }
            )
        row = {
            "period_days": period,
            **{
                key: float(np.mean([d[key] for d in per_date]))
                for key in ("precision_top20", "precision_top50", "random", "base_rate", "seconds")
            },
            "dates": per_date,
        }
        rows.append(row)
    print(f"{len(DATES)} analysis dates {DATES[0].date()} .. {DATES[-1].date()}, "
          f"window {args.window_days:g} days; terminal compromised = a scenario-2 fraud in "
          "the period")  # fmt: skip
    print("| Period (days) | Precision top 20 | Precision top 50 | Random | Base rate | s/run |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['period_days']} | {row['precision_top20']:.3f} | "
            f"{row['precision_top50']:.3f} | {row['random']:.3f} | {row['base_rate']:.3f} | "
            f"{row['seconds']:.2f} |"
        )
    save_results(
        "compromise_handbook",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "load_seconds": load_seconds,
            "whole_file_seconds": whole_seconds,
            "periods": rows,
        },
    )


if __name__ == "__main__":
    main()
