"""The champion's reply latency with a shadow model: alone, with a real challenger, with one
that fails every call and with one that sleeps in every call.

    .venv/bin/python benchmarks/shadow_latency.py [--n 300] [--sleep 2.0] [--out FILE.json]

Trains two small models on simulated data (the champion XGBoost, 20 trees; the challenger
a small LSTM), then for each case builds the app in-process (FastAPI's TestClient: the
whole ASGI stack, no network) and times `POST /v1/score` one transaction at a time, in
time order, memory state. Prints per case the median, 99th percentile and maximum in
milliseconds, and how many challenger calls were compared, failed and dropped. A first
pass alone, not reported, warms up the process; the load average is recorded (the numbers
are only comparable on one machine under one load).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient

import fraudseq
from fraudseq.serving import Detector
from fraudseq.serving.http.app import create_app
from fraudseq.serving.http.shadow import ShadowOptions


class Troubled:
    """A real detector whose `score` raises, or sleeps `seconds` first."""

    def __init__(self, inner: Detector, seconds: float | None) -> None:
        self.inner, self.seconds = inner, seconds

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def score(self, tx: dict) -> dict:
        if self.seconds is None:
            raise RuntimeError("the challenger failed")
        time.sleep(self.seconds)
        return self.inner.score(tx)


def train(root: Path) -> tuple[Path, Path, list[dict]]:
    frame = fraudseq.simulate(accounts=200, days=30, seed=0)
    champion = fraudseq.FraudModel("xgboost", n_estimators=20)
    champion.fit(frame, train_until="2026-01-24").save(root / "champion")
    challenger = fraudseq.FraudModel("lstm", epochs=1, hidden_size=16, seed=0, progress=False)
    challenger.fit(frame, train_until="2026-01-24").save(root / "challenger")
    rows = frame[frame.ts >= "2026-01-24"].sort_values("ts")
    columns = ["tx_id", "card_id", "amount", "mcc", "country", "channel", "device_id"]
    txs = [
        {**{c: getattr(r, c) for c in columns}, "merchant_id": r.merchant_id,
         "ts": r.ts.isoformat(), "amount": float(r.amount)}
        for r in rows.itertuples()
    ]  # fmt: skip
    return root / "champion", root / "challenger", txs


def timed(app, txs: list[dict]) -> tuple[list[float], str]:
    latencies = []
    with TestClient(app) as client:
        for tx in txs:
            started = time.perf_counter()
            reply = client.post("/v1/score", json=tx)
            latencies.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
        text = client.get("/metrics").text
    return latencies, text


def counted(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def run_case(name: str, champion_dir: Path, challenger, txs: list[dict]) -> dict:
    champion = Detector.load(champion_dir, "memory", clock="data")
    champion.explain = "none"
    options = ShadowOptions(queue_size=100, timeout=0.5)
    try:
        app = create_app(champion, shadow=challenger, shadow_options=options)
        latencies, text = timed(app, txs)
    finally:
        champion.close()
    ms = np.array(latencies[10:]) * 1000  # the first calls warm up the route
    return {
        "case": name,
        "requests": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "pairs": counted(text, "fraudseq_shadow_pairs_total"),
        "errors": counted(text, 'fraudseq_shadow_errors_total{operation="score"}'),
        "dropped": counted(text, 'fraudseq_shadow_dropped_total{operation="score"}'),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="transactions scored per case")
    parser.add_argument("--sleep", type=float, default=2.0, help="the slow challenger's sleep")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        champion_dir, challenger_dir, txs = train(Path(tmp))
        txs = txs[: args.n]
        run_case("warm-up", champion_dir, None, txs)
        results = []
        for name, wrap in (
            ("alone", None),
            ("lstm challenger", lambda d: d),
            ("failing challenger", lambda d: Troubled(d, None)),
            (f"challenger sleeping {args.sleep:g}s per call", lambda d: Troubled(d, args.sleep)),
        ):
            challenger = None
            if wrap is not None:
                challenger = wrap(Detector.load(challenger_dir, "memory", clock="data"))
            results.append(run_case(name, champion_dir, challenger, txs))
            print(json.dumps(results[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
