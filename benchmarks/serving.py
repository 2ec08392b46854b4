"""HTTP serving speed and robustness: `fraudseq serve` in a subprocess, SQLite state, loopback.

    .venv/bin/python benchmarks/serving.py [--model lstm|xgboost] [--rate 300] [--seconds 20]
        [--batch 1000] [--batches 20] [--load-seconds 60] [--load-rate R] [--workers 1]
        [--reasons alerts|all|none] [--model-dir DIR] [--skip-null] [--out FILE]
        [--warm-days 33]

Steady state: the first --warm-days of the 45-day stream (default 33, past the 30-day
counterparty windows and the label delay) fill the SQLite state first, with score_batch in
process; the server starts from a copy of that store. Everything below runs on the days
after (0 measures from an empty store, which flatters every number: no counterparty
history to read, short account histories).

0. The Detector alone, in process, SQLite state (the floor under every HTTP number): the
   history replayed with `score_batch` (transactions/s), then `Detector.score` one call at a
   time on the next transactions: p50/p90/p99/max (goal p99 <= 1 ms), alerts (which carry
   reasons) and other transactions apart; also the scoring thread's CPU time per call, which
   leaves out the time other work on the machine held the CPU. Like `fraudseq serve`, the
   process freezes its startup objects out of the garbage collector (gc.freeze) and uses
   one torch thread. Two references from the same process: the network alone on random
   windows, and the SQLite store alone (the same store calls replayed on a copy of the
   store with every compute already done: the reads, writes and commits, nothing else).
1. Batch throughput: the history replayed through POST /v1/score/batch in batches of
   --batch, one request at a time, in transactions/s (goal >= 20,000/s).
2. Single-transaction latency: POST /v1/score at a fixed --rate for --seconds, open loop
   (requests leave at fixed times whatever the replies; latency is measured from the
   scheduled send time, so a stalled server - or client - cannot hide queueing):
   p50/p90/p99/max (goal p99 <= 15 ms at 300 requests/s). The client reports how late it
   sent requests against the schedule, and a run that cannot keep up is marked SATURATED.
3. Load test: --load-seconds (default 60) of the same open-loop traffic at --load-rate
   (default --rate), with a feedback label for every tenth transaction. Errors must be 0.
   Then no lost state: every transaction scored in the whole run is sent again through the
   batch endpoint and every reply must equal the first one (idempotent replays are answered
   from the stored state; a lost or mixed-up event gives a different reply or a 409), and
   the SQLite store must hold a record for every transaction and, per account, exactly the
   number of events sent (AccountState.n).

Before 1-3, the same HTTP tests run against the same app with a constant-time detector (the
cost of the HTTP layer itself: JSON, validation, middleware, metrics), unless --skip-null.
With it, the batch floor: per transaction, HTTP layer alone + network alone + store alone,
the most the batch endpoint could reach if features, parsing and glue cost nothing.
A scheduler probe before and after (how late time.sleep(2 ms) wakes up) shows whether other
work on the machine was stealing CPU: every latency here inherits those tails.
Everything measured is also written as JSON to --out (default
benchmarks/results/serving-MODEL.json).

The client runs on the same machine, so it takes CPU from the server: the numbers are a
lower bound for a server with the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

import fraudseq  # noqa: E402

CATEGORICAL = ("mcc", "country", "channel", "device_id", "merchant_id")
TRAIN_UNTIL = "2026-01-24"


def transactions(frame) -> list[dict]:
    out = []
    for row in frame.itertuples(index=False):
        tx = {
            "tx_id": row.tx_id,
            "card_id": row.card_id,
            "ts": row.ts.isoformat(),
            "amount": float(row.amount),
        }
        for column in CATEGORICAL:
            tx[column] = getattr(row, column)
        out.append(tx)
    return out


def train(model_dir: Path, family: str, frame) -> None:
    started = time.perf_counter()
    if family == "xgboost":
        model = fraudseq.FraudModel("xgboost", n_estimators=100, seed=0)
    else:
        model = fraudseq.FraudModel(family, epochs=2, seed=0, progress=False)
    model.fit(frame, train_until=TRAIN_UNTIL).save(model_dir)
    print(f"trained {family} in {time.perf_counter() - started:.1f}s -> {model_dir}")


class NullDetector:
    """The Detector interface at (almost) zero cost: measures the HTTP layer alone."""

    schema = fraudseq.Schema.simulator()
    model_version = "null"
    counts = Counter(scored=0, replayed=0, alerts=0)  # left at 0: no metrics wanted here

    def score(self, tx: dict) -> dict:
        return {
            "transaction_id": tx["tx_id"],
            "fraud_probability": 0.01,
            "score": 1.0,
            "alert": False,
            "threshold": 0.5,
            "insufficient_history": False,
            "model_version": "null",
            "reasons": [],
        }

    def score_batch(self, txs: list[dict]) -> list[dict]:
        return [self.score(tx) for tx in txs]

    def feedback(self, transaction_id: str, label: int) -> dict:
        return {"transaction_id": transaction_id, "label": label}

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


def serve_null(port: int) -> None:
    import uvicorn

    from fraudseq.serving.http import create_app

    uvicorn.run(create_app(NullDetector()), port=port, access_log=False, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model_dir: Path | None, state_db: Path, workers: int, reasons: str = "alerts"
) -> tuple[subprocess.Popen, str]:
    """`fraudseq serve` with SQLite state, or (model_dir None) the null-detector app."""
    port = free_port()
    if model_dir is None:
        command = [sys.executable, __file__, "--serve-null", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "fraudseq",
            "serve",
            str(model_dir),
            "--state",
            f"sqlite:///{state_db}",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--reasons",
            reasons,
            "--no-access-log",
            "--clock",  # the simulated days are January-February 2026: replayed data
            "data",
        ]
    log = open(state_db.parent / "server.log", "a")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{(state_db.parent / 'server.log').read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server not ready after 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def batch_throughput(
    url: str, txs: list[dict], batch: int, label: str = "batch endpoint"
) -> tuple[dict[str, dict], dict]:
    """POST the batches one after the other; replies are parsed after the clock stops."""
    bodies = [
        json.dumps({"transactions": txs[i : i + batch]}).encode() for i in range(0, len(txs), batch)
    ]
    replies: list[bytes] = []
    errors = 0
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        for body in bodies:
            response = client.post("/v1/score/batch", content=body, headers=headers)
            if response.status_code != 200:
                errors += 1
                print(f"  batch error {response.status_code}: {response.text[:300]}")
                continue
            replies.append(response.content)
        elapsed = time.perf_counter() - started
    results: dict[str, dict] = {}
    for content in replies:
        for result in json.loads(content)["results"]:
            results[result["transaction_id"]] = result
    print(
        f"  {label}: {len(txs):,} transactions in {len(bodies)} batches of {batch} in "
        f"{elapsed:.2f}s = {len(txs) / elapsed:,.0f} transactions/s, {errors} failed batches"
    )
    stats = {
        "transactions": len(txs),
        "batch": batch,
        "seconds": round(elapsed, 3),
        "tx_per_s": round(len(txs) / elapsed),
        "failed_batches": errors,
    }
    return results, stats


class RawPool:
    """Keep-alive HTTP/1.1 connections spoken by hand: a far cheaper client than an HTTP
    library, so the client takes less CPU from the server on the same machine."""

    def __init__(self, url: str, size: int) -> None:
        host_port = url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.size = size
        self.idle: asyncio.Queue = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            connection = self.idle.get_nowait()
            if connection is not None:
                connection[1].close()

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        request = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        for attempt in (1, 2):  # a closed keep-alive connection: reconnect once (idempotent)
            connection = await self.idle.get()  # None: open a new connection
            writer = None
            try:
                if connection is None:
                    connection = await asyncio.open_connection(self.host, self.port)
                reader, writer = connection
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lower = head.lower()
                start = lower.index(b"content-length:") + len(b"content-length:")
                length = int(lower[start : lower.index(b"\r\n", start)])
                data = await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if writer is not None:
                    writer.close()
                self.idle.put_nowait(None)
                if attempt == 2:
                    raise
                continue
            except BaseException:  # cancelled mid-request: the connection's state is unknown
                if writer is not None:
                    writer.close()
                self.idle.put_nowait(None)
                raise
            self.idle.put_nowait(connection)
            return status, data
        raise AssertionError("unreachable")


async def open_loop(
    url: str, txs: list[dict], rate: float, feedback_every: int = 0, connections: int = 64
) -> tuple[list[float], Counter, dict[str, dict], float]:
    """Send txs[i] at t0 + i / rate; latency from the scheduled time; returns replies."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    results: dict[str, dict] = {}
    pool = RawPool(url, connections)
    await pool.open()

    lags: list[float] = []

    async def one(tx: dict, scheduled: float, index: int) -> None:
        lags.append(time.perf_counter() - scheduled)  # how late the client sends it
        try:
            status, data = await asyncio.wait_for(pool.post("/v1/score", tx), 30)
            statuses[status] += 1
            if status == 200:
                results[tx["tx_id"]] = json.loads(data)
            else:
                print(f"  error {status}: {data[:300]!r}")
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as err:
            statuses[type(err).__name__] += 1
        latencies.append(time.perf_counter() - scheduled)
        if feedback_every and index % feedback_every == 0 and tx["tx_id"] in results:
            label = {"transaction_id": tx["tx_id"], "label": int(index % 20 == 0)}
            status, _ = await pool.post("/v1/feedback", label)
            statuses[f"feedback {status}"] += 1

    tasks = []
    started = time.perf_counter()
    for i, tx in enumerate(txs):
        scheduled = started + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(tx, scheduled, i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    await pool.close()
    client_lag.extend(lags)
    return latencies, statuses, results, elapsed


client_lag: list[float] = []  # send delays of the last open_loop run (client health)


def run_open_loop(*args, **kwargs):
    """open_loop on uvloop when installed, with the client's own garbage collector paused
    (its pauses would be counted as server latency)."""
    client_lag.clear()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(open_loop(*args, **kwargs))
        return uvloop.run(open_loop(*args, **kwargs))
    finally:
        gc.enable()


def report_latency(
    name: str, latencies: list[float], statuses: Counter, elapsed: float, rate: float
) -> dict:
    ms = np.array(latencies) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    achieved = len(ms) / elapsed
    saturated = achieved < 0.95 * rate
    lag = np.array(client_lag) * 1000 if client_lag else np.zeros(1)
    print(
        f"{name}: {len(ms):,} requests in {elapsed:.1f}s ({achieved:.0f}/s): "
        f"p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms, max {ms.max():.1f} ms; "
        f"status {dict(statuses)}; client send lag p99 {np.percentile(lag, 99):.2f} ms"
        + " SATURATED: the server answers slower than the offered rate"
        * saturated
    )
    return {
        "requests": len(ms),
        "offered_rate": rate,
        "achieved_rate": round(achieved, 1),
        "p50_ms": round(p50, 3),
        "p90_ms": round(p90, 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(float(ms.max()), 3),
        "client_send_lag_p99_ms": round(float(np.percentile(lag, 99)), 3),
        "status": {str(k): v for k, v in statuses.items()},
        "saturated": bool(saturated),
    }


def scheduler_probe(seconds: float = 5.0) -> dict:
    """How late a sleeping thread wakes up on this machine right now (time.sleep(2 ms)
    repeatedly): a quiet machine oversleeps by ~0.1 ms; other CPU-bound work shows up as
    multi-millisecond tails that every latency below also suffers."""
    over = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        time.sleep(0.002)
        over.append(time.perf_counter() - t0 - 0.002)
    ms = np.array(over) * 1000
    p50, p99, p999 = np.percentile(ms, [50, 99, 99.9])
    print(
        f"scheduler probe ({seconds:.0f}s of sleep(2 ms)): oversleep p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms, p99.9 {p999:.2f} ms, max {ms.max():.1f} ms"
    )
    return {
        "seconds": seconds,
        "oversleep_p50_ms": round(p50, 3),
        "oversleep_p99_ms": round(p99, 3),
        "oversleep_p999_ms": round(p999, 3),
        "oversleep_max_ms": round(float(ms.max()), 3),
    }


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    if not len(ms):
        return {"n": 0}
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": len(ms),
        "p50_ms": round(p50, 3),
        "p90_ms": round(p90, 3),
        "p99_ms": round(p99, 3),
        "max_ms": round(float(ms.max()), 3),
    }


def detector_alone(
    model_dir: Path,
    prefill: list[dict],
    history: list[dict],
    timed: list[dict],
    state_dir: Path,
    reasons: str,
    server_db: Path,
) -> dict:
    """In-process Detector with SQLite state: the store is filled with `prefill` (the first
    --warm-days of the stream) and copied to `server_db` for the HTTP runs; then
    score_batch over `history` and `score` one call at a time over `timed` (the goal:
    p99 <= 1 ms). As in `fraudseq serve`: one torch thread, startup objects frozen out of
    the garbage collector."""
    import sqlite3

    import torch

    from fraudseq.serving import Detector

    torch.set_num_threads(1)
    out: dict = {}
    alone_db = state_dir / "alone.db"
    floor_db = state_dir / "floor.db"
    with Detector.load(model_dir, f"sqlite:///{alone_db}", clock="data") as detector:
        detector.explain = reasons
        if prefill:
            rate = batch_rate(detector, prefill)
            out["prefill"] = {"transactions": len(prefill), "tx_per_s": round(rate)}
            with sqlite3.connect(alone_db) as source, sqlite3.connect(server_db) as target:
                source.backup(target)  # the server starts from the same state
            print(
                f"detector alone, SQLite state: filled with {len(prefill):,} transactions "
                f"(score_batch, batches of 1000): {rate:,.0f} transactions/s"
            )
        with sqlite3.connect(alone_db) as source, sqlite3.connect(floor_db) as target:
            source.backup(target)  # for store_alone: the state before the calls replayed
        recording = detector.store = RecordingStore(detector.store)
        rate = batch_rate(detector, history)
        out["score_batch_tx_per_s"] = round(rate)
        print(
            f"detector alone, SQLite state: score_batch over the next {len(history):,} "
            f"transactions (batches of 1000): {rate:,.0f} transactions/s"
        )
        gc.collect()
        gc.freeze()
        wall: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        for tx in timed:
            c0, t0 = time.thread_time(), time.perf_counter()
            result = detector.score(tx)
            wall[result["alert"]].append(time.perf_counter() - t0)
            cpu[result["alert"]].append(time.thread_time() - c0)
        out["score"] = percentiles(wall[True] + wall[False])
        out["score_no_alert"] = percentiles(wall[False])
        out["score_alert_with_reasons"] = percentiles(wall[True])
        # The scoring thread's own CPU time per call: what the code costs, without the time
        # the machine's other work held the CPU (the wall-time goal still includes that).
        out["score_cpu"] = percentiles(cpu[True] + cpu[False])
        out["score_no_alert_cpu"] = percentiles(cpu[False])
        names = {
            "score": "all",
            "score_no_alert": "no alert",
            "score_alert_with_reasons": f"alerts (reasons: {reasons})",
            "score_cpu": "all, thread CPU time",
            "score_no_alert_cpu": "no alert, thread CPU time",
        }
        for key, name in names.items():
            r = out[key]
            if r["n"]:
                print(
                    f"  Detector.score, {name}: p50 {r['p50_ms']:.3f} ms, p90 {r['p90_ms']:.3f}"
                    f" ms, p99 {r['p99_ms']:.3f} ms, max {r['max_ms']:.2f} ms (n={r['n']:,})"
                )
        detector.store = recording.store
        out["network_alone"] = network_alone(detector.model, len(history), len(timed))
    out["store_alone"] = store_alone(floor_db, recording.calls)
    return out


class RecordingStore:
    """A state store passed through, keeping each transact / transact_batch call's
    arguments and the update its compute returned: `store_alone` replays them on a copy of
    the store with the compute already done (costs a call and an append per score)."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[tuple[str, tuple, object]] = []

    def transact(self, *args):
        update = self.store.transact(*args)
        self.calls.append(("transact", args[:-1], update))
        return update

    def transact_batch(self, *args):
        update = self.store.transact_batch(*args)
        self.calls.append(("transact_batch", args[:-1], update))
        return update

    def __getattr__(self, name):
        return getattr(self.store, name)


def store_alone(db: Path, calls: list[tuple[str, tuple, object]]) -> dict:
    """The SQLite store's own share: the run's transact_batch calls (the score_batch
    replay) then its transact calls (the timed scores) replayed in order on a copy of the
    store as it was before them, each compute replaced by the update it returned. Each
    call still reads the records, the account states and the counterparty buckets and
    writes and commits the same rows; only features, the model and parsing are gone. The
    first call of each kind warms the fresh connection and is not timed (unless it is the
    only one), and batches count at their median time per transaction: a stall (a
    checkpoint, other work on the machine) cannot inflate this floor."""
    from fraudseq.serving.stores.sqlite import SQLiteStore

    store = SQLiteStore(db)
    timed: dict[str, list[tuple[int, float]]] = {"transact_batch": [], "transact": []}
    try:
        for kind, args, update in calls:
            n = len(args[0]) if kind == "transact_batch" else 1  # tx ids, or one
            started = time.perf_counter()
            getattr(store, kind)(*args, lambda snapshot, update=update: update)
            timed[kind].append((n, time.perf_counter() - started))
    finally:
        store.close()
    batches = timed["transact_batch"][1:] or timed["transact_batch"]  # --batches 1
    per_tx = float(np.median([s / n for n, s in batches]))
    out = {
        "batch_transactions": sum(n for n, _ in batches),
        "batch_tx_per_s": round(1 / per_tx),
        "batch_us_per_tx": round(1e6 * per_tx, 1),
        "single": percentiles([s for _, s in timed["transact"][1:] or timed["transact"]]),
    }
    print(
        f"  the SQLite store alone (the same reads, writes and commits, compute done): "
        f"batches (median) {out['batch_tx_per_s']:,} transactions/s "
        f"({out['batch_us_per_tx']} us each);"
        f" one score p50 {out['single']['p50_ms']:.3f} ms, p99 {out['single']['p99_ms']:.3f} ms"
    )
    return out


def batch_floor(report: dict) -> dict:
    """What the batch endpoint could reach if features, parsing and the detector's Python
    cost nothing: per transaction, the HTTP layer alone + the network alone + the SQLite
    store alone, each measured above in this run (parts that cannot overlap: one request
    at a time, on one core)."""
    parts = {
        "http_layer_us": 1e6 / report["http_layer_alone"]["batch"]["tx_per_s"],
        "network_us": 1e6 / report["detector_alone"]["network_alone"]["batch_windows_per_s"],
        "store_us": report["detector_alone"]["store_alone"]["batch_us_per_tx"],
    }
    total = sum(parts.values())
    out = {k: round(v, 1) for k, v in parts.items()}
    out |= {"total_us": round(total, 1), "max_tx_per_s": round(1e6 / total)}
    print(
        f"batch floor: HTTP layer {out['http_layer_us']} + network {out['network_us']} + store "
        f"{out['store_us']} = {out['total_us']} us per transaction, at most "
        f"{out['max_tx_per_s']:,} transactions/s with everything else free (goal 20,000)"
    )
    return out


def batch_rate(detector, txs: list[dict]) -> float:
    """Transactions per second of `detector.score_batch` over `txs`, 1,000 at a time."""
    started = time.perf_counter()
    for i in range(0, len(txs), 1000):
        detector.score_batch(txs[i : i + 1000])
    return len(txs) / (time.perf_counter() - started)


def network_alone(model, n_batch: int, n_single: int) -> dict:
    """The reference for the two numbers above, measured in the same process: the model's
    network alone on random full-length windows, as the detector runs it (`WindowScorer`):
    forward passes over 1,000 windows at a time (the most score_batch could reach if
    nothing but the model cost anything) and one window at a time (the model's share of a
    Detector.score). Not meaningful for models without a window network (xgboost)."""
    from fraudseq.serving.window_scorer import WindowScorer, random_windows

    scorer = WindowScorer(model)
    numeric, codes, lengths = random_windows(model, np.full(1000, model.window), seed=0)
    scorer.logits(numeric, codes, lengths)  # warm up
    started = time.perf_counter()
    for _ in range(max(n_batch // 1000, 1)):
        scorer.logits(numeric, codes, lengths)
    per_second = max(n_batch // 1000, 1) * 1000 / (time.perf_counter() - started)
    seconds = []
    for i in range(n_single):
        t0 = time.perf_counter()
        scorer.logit(numeric[i % 1000], codes[i % 1000])
        seconds.append(time.perf_counter() - t0)
    one = percentiles(seconds)
    print(
        f"  the network alone (same process): {per_second:,.0f} windows/s in batches of "
        f"1,000; one window p50 {one['p50_ms']:.3f} ms, p99 {one['p99_ms']:.3f} ms"
        f" ({'ONNX Runtime' if scorer.session is not None else 'torch'})"
    )
    return {
        "batch_windows_per_s": round(per_second),
        "one_window": one,
        "runtime": "onnxruntime" if scorer.session is not None else "torch",
    }


def store_check(state_db: Path, sent: list[dict]) -> dict:
    """Every transaction sent has its record in the SQLite store, and each account's state
    holds exactly the events recorded as inserted (a late arrival is inserted in time order;
    one more than a day late is recorded but not inserted: counted separately)."""
    try:
        from fraudseq.serving.live_features import AccountState
        from fraudseq.serving.stores import open_store

        store = open_store(f"sqlite:///{state_db}")
    except (ImportError, fraudseq.FraudseqError) as err:
        print(f"  store check: cannot open the store ({err})")
        return {"error": str(err)}
    try:
        lost, out_of_order = 0, 0
        inserted: Counter = Counter()
        for tx in sent:
            record = store.record(tx["tx_id"])
            if record is None:
                lost += 1
            elif record.get("inserted", True):
                inserted[tx["card_id"]] += 1
            else:
                out_of_order += 1
        accounts = {tx["card_id"] for tx in sent}
        wrong = 0
        for account in accounts:
            blob = store.account(account)
            stored = 0 if blob is None else AccountState.from_bytes(blob).n
            wrong += stored != inserted[account]
    finally:
        store.close()
    print(
        f"  store check: {len(sent):,} transactions, {lost} without a record; {len(accounts):,} "
        f"accounts, {wrong} whose stored event count differs from the events inserted (both "
        f"must be 0); {out_of_order} arrived more than a day after a later one of their "
        f"account and were scored but not inserted, by design"
    )
    return {
        "transactions": len(sent),
        "without_record": lost,
        "accounts": len(accounts),
        "accounts_with_wrong_event_count": wrong,
        "out_of_order": out_of_order,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm", choices=["lstm", "gru", "xgboost"])
    parser.add_argument("--model-dir", type=Path, help="Use this simulator-schema model.")
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument(
        "--warm-days",
        type=int,
        default=33,
        help="Fill the state with this many days of the stream first (steady state: 30-day "
        "counterparty windows and full account histories); 0 starts from an empty store.",
    )
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--load-seconds", type=float, default=60.0)
    parser.add_argument("--load-rate", type=float, help="Load test rate (default --rate).")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reasons", default="alerts", choices=["alerts", "all", "none"])
    parser.add_argument("--alone", type=int, default=5000, help="In-process score() calls.")
    parser.add_argument("--skip-null", action="store_true", help="Skip the HTTP-layer run.")
    parser.add_argument("--out", type=Path, help="Results JSON (default benchmarks/results).")
    parser.add_argument("--serve-null", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_null:
        serve_null(args.serve_null)
        return
    load_rate = args.load_rate or args.rate
    machine = describe()
    print(machine)
    fast = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is not None]
    print(
        f"uvicorn speedups installed: {', '.join(fast) or 'none (pip install uvicorn[standard])'}"
    )
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.1f}' for x in load_before)}")
    report: dict = {
        "machine": machine,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "uvicorn_speedups": fast,
        "load_average_before": [round(x, 2) for x in load_before],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": str(args.model_dir) if args.model_dir else args.model,
        "reasons": args.reasons,
        "workers": args.workers,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scheduler_probe_before": scheduler_probe(),
    }

    frame = fraudseq.simulate(accounts=args.accounts, days=45, seed=1)
    with tempfile.TemporaryDirectory(prefix="fraudseq-bench-") as tmp:
        tmp = Path(tmp)
        model_dir = args.model_dir or tmp / "model"
        if args.model_dir is None:
            train(model_dir, args.model, frame[frame.ts < TRAIN_UNTIL])
        ordered = frame.sort_values("ts", kind="stable")
        stream = transactions(ordered)
        n_prefill = int(
            (ordered.ts < ordered.ts.min().normalize() + pd.Timedelta(days=args.warm_days)).sum()
        )
        prefill, stream = stream[:n_prefill], stream[n_prefill:]
        report["warm_days"] = args.warm_days
        n_batch = args.batch * args.batches
        n_latency = int(args.rate * args.seconds)
        n_load = int(load_rate * args.load_seconds)
        warmup = 300
        needed = n_batch + warmup + n_latency + n_load
        if needed > len(stream):
            raise SystemExit(f"need {needed:,} transactions, have {len(stream):,}: --accounts")
        history = stream[:n_batch]
        warm = stream[n_batch : n_batch + warmup]
        timed = stream[n_batch + warmup : n_batch + warmup + n_latency]
        load = stream[n_batch + warmup + n_latency : needed]

        alone = stream[n_batch : n_batch + args.alone]
        state_db = tmp / "state.db"
        report["detector_alone"] = detector_alone(
            model_dir, prefill, history, alone, tmp, args.reasons, state_db
        )

        if not args.skip_null:
            # 1. The HTTP layer alone (validation, JSON, middleware, metrics).
            proc, url = start_server(None, tmp / "null.db", 1)
            try:
                print("HTTP layer alone (a constant-time detector, same app):")
                _, batch_stats = batch_throughput(url, history, args.batch)
                for tx in warm:
                    httpx.post(url + "/v1/score", json=tx)
                latencies, statuses, _, elapsed = run_open_loop(url, timed, args.rate)
                single = report_latency(
                    f"  single transaction at {args.rate:.0f}/s",
                    latencies,
                    statuses,
                    elapsed,
                    args.rate,
                )
                report["http_layer_alone"] = {"batch": batch_stats, "single": single}
            finally:
                stop_server(proc)

        # 2. `fraudseq serve` with the model and SQLite state (filled like the detector's).
        proc, url = start_server(model_dir, state_db, args.workers, args.reasons)
        served: dict = {}
        report["serve"] = served
        try:
            print(
                f"fraudseq serve: {args.workers} worker(s), SQLite state, model {args.model}, "
                f"reasons for {args.reasons}:"
            )
            replies, served["batch"] = batch_throughput(url, history, args.batch)
            for tx in warm:
                httpx.post(url + "/v1/score", json=tx)
            latencies, statuses, single, elapsed = run_open_loop(url, timed, args.rate)
            replies |= single
            served["single"] = report_latency(
                f"  single transaction at {args.rate:.0f}/s",
                latencies,
                statuses,
                elapsed,
                args.rate,
            )
            latencies, statuses, single, elapsed = run_open_loop(
                url, load, load_rate, feedback_every=10
            )
            replies |= single
            errors = sum(n for s, n in statuses.items() if s not in (200, "feedback 200"))
            served["load"] = report_latency(
                f"  load test {args.load_seconds:.0f}s at {load_rate:.0f}/s",
                latencies,
                statuses,
                elapsed,
                load_rate,
            )
            served["load"]["seconds"] = args.load_seconds
            served["load"]["errors"] = errors
            print(f"  load test errors: {errors} (must be 0)")

            # No lost state: replay everything scored; the replies must be identical.
            sent = history + timed + load
            again, _ = batch_throughput(url, sent, args.batch, "replay of every id (idempotent)")
            changed = [i for i, r in replies.items() if again.get(i) != r]
            missing = len(sent) - len(replies)
            print(
                f"  state check: {len(replies):,} replies compared after replay, {len(changed)} "
                f"differ, {missing} never answered (both must be 0)"
            )
            served["replay_check"] = {
                "compared": len(replies),
                "differ": len(changed),
                "never_answered": missing,
            }
        finally:
            stop_server(proc)
        served["store_check"] = store_check(state_db, [*prefill, *history, *warm, *timed, *load])
        if "http_layer_alone" in report:
            report["batch_floor"] = batch_floor(report)
        report["scheduler_probe_after"] = scheduler_probe()
        load_after = os.getloadavg()
        report["load_average_after"] = [round(x, 2) for x in load_after]
        print(f"load average after: {' '.join(f'{x:.1f}' for x in load_after)}")
        if os.environ.get("FRAUDSEQ_BENCH_SHOW_LOG"):
            print((tmp / "server.log").read_text())
    save_results(f"serving-{args.model}", report, args.out)


if __name__ == "__main__":
    main()
