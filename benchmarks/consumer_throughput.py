"""Throughput of `fraudseq consume` with 1 and 2 consumer processes on one Redis Stream.

    .venv/bin/python benchmarks/consumer_throughput.py [--model lstm|xgboost] [--accounts 1500]
        [--days 3] [--batch 100] [--reasons alerts|all|none] [--partitions 1]
        [--model-dir DIR] [--out FILE]

A model is trained on 30 simulated days (or --model-dir is used); then a stream of
--accounts x --days simulated transactions is scored twice, each time from empty state
(its own stream, group and state prefix on the Redis of scripts/redis-server.sh): by 1
consumer, then by 2. The consumers start on the empty stream; once all have joined the
group, every transaction is written in one pipeline, and each consumer exits once the
stream is drained (--max-idle-s). With --partitions P > 1 the stream is P partition
streams (`?partitions=P`), each transaction written to its account's partition with
`fraudseq.serving.consumer.produce`, and each partition is read by one consumer at a time
(leases), so the consumers never share an account. Throughput = transactions / (the last
acknowledgement of any consumer - the first entry read by any), from the consumers' own
reports, so model loading is left out; the wall time including it is reported too, and so
is the throughput per CPU second the consumers used (what they would reach with the cores
to themselves; Redis's CPU is not in it), and the batch commits redone because the other
consumer changed one of the batch's accounts meanwhile (work done twice). Each run checks
that every transaction id is in the output stream exactly once.

Consumers, Redis and this script share the machine: with 2 cores, 2 consumers compete
with Redis and with each other, and any other work on the machine. The load average
before and after each run is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402
from serving import train  # noqa: E402  (the serving benchmark's small models)

import fraudseq  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def redis_url() -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "redis-server.sh")],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def payloads(accounts: int, days: int) -> tuple[list[str], str]:
    """The stream's transactions as JSON (time order), and a clock past the last one."""
    frame = fraudseq.simulate(accounts=accounts, days=days, seed=2, start="2026-02-01")
    frame = frame.drop(columns=["is_fraud", "fraud_type"])
    frame["ts"] = frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    texts = [json.dumps(tx) for tx in frame.to_dict("records")]
    return texts, frame["ts"].max()


def run(
    args, url: str, model_dir: Path, texts: list[str], clock: str, consumers: int, schema
) -> dict:
    import redis

    tag = uuid.uuid4().hex[:8]
    from fraudseq.serving.consumer import partition_stream, produce

    stream, prefix = f"bench-{tag}:in", f"bench-{tag}:"
    streams = [partition_stream(stream, p, args.partitions) for p in range(args.partitions)]
    client = redis.Redis.from_url(url)
    for name in streams:
        client.xgroup_create(name, "bench", "0", mkstream=True)
    stream_url = f"{url}?stream={stream}&prefix={prefix}&partitions={args.partitions}"
    command = [
        sys.executable, "-m", "fraudseq", "consume", str(model_dir), "--stream", stream_url,
        "--group", "bench", "--batch", str(args.batch), "--reasons", args.reasons,
        "--clock", clock, "--max-idle-s", "15",  # > the others' startup on an empty stream
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    redis_cpu_before = redis_cpu(client)
    started = time.perf_counter()
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    procs = [subprocess.Popen(command, **pipes) for _ in range(consumers)]
    try:
        for proc in procs:  # each has loaded the model and joined: its first log line
            for line in proc.stderr:
                if " of group bench:" in line:
                    break
            else:
                raise SystemExit(f"a consumer exited early: {proc.communicate()[1][-2000:]}")
        time.sleep(0.5)  # its first XREADGROUP
        produce(client, stream, texts, schema, partitions=args.partitions)
        reports = []
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"consumer failed: {stderr[-2000:]}")
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    wall = time.perf_counter() - started
    redis_cpu_seconds = redis_cpu(client) - redis_cpu_before
    ids = [f[b"transaction_id"] for _, f in client.xrange(f"{stream}:results", "-", "+")]
    assert len(ids) == len(set(ids)) == len(texts), (len(ids), len(set(ids)), len(texts))
    assert all(client.xpending(name, "bench")["pending"] == 0 for name in streams)
    client.delete(stream, f"{stream}:results")
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))  # partitions, leases too
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])
    client.close()
    first = min(r["first_entry_at"] for r in reports)
    last = max(r["last_ack_at"] for r in reports)
    result = {
        "consumers": consumers,
        "partitions": args.partitions,
        "transactions": len(texts),
        "cpu_seconds_per_1000_transactions": round(
            1000 * sum(r["cpu_seconds"] for r in reports) / len(texts), 3
        ),
        "seconds": round(last - first, 3),
        "transactions_per_s": round(len(texts) / (last - first), 1),
        # Per CPU second of the consumers: what they would do with the cores to themselves.
        "transactions_per_cpu_s": round(len(texts) / sum(r["cpu_seconds"] for r in reports), 1),
        "wall_seconds_with_startup": round(wall, 3),
        # The Redis server's CPU (user + system) over the whole run, startup included.
        "redis_cpu_seconds": round(redis_cpu_seconds, 3),
        "per_consumer": [
            {k: r[k] for k in ("read", "scored", "written", "store_conflicts")}
            | {k: r[k] for k in ("partitions_taken", "leases_lost") if k in r}
            | {"seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}
            for r in reports
        ],
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"{consumers} consumer(s), {args.partitions} partition(s): "
        f"{result['transactions_per_s']:.0f} transactions/s "
        f"({len(texts)} in {result['seconds']:.1f}s; {wall:.1f}s with startup; "
        f"{sum(r['store_conflicts'] for r in reports)} batch commits redone; "
        f"{result['transactions_per_cpu_s']:.0f} per consumer CPU second; "
        f"Redis {redis_cpu_seconds:.1f} CPU s), "
        f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lstm", choices=("lstm", "xgboost"))
    parser.add_argument("--model-dir", type=Path, help="Use this simulator-schema model.")
    parser.add_argument("--accounts", type=int, default=1500)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--reasons", default="alerts", choices=("alerts", "all", "none"))
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    machine = describe()
    print(machine)
    print(f"load average at start: {os.getloadavg()}")
    url = redis_url()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            model_dir = Path(tmp) / "model"
            train(model_dir, args.model, fraudseq.simulate(accounts=500, days=30, seed=0))
        texts, clock = payloads(args.accounts, args.days)
        print(f"{len(texts)} transactions, {args.accounts} accounts over {args.days} days")
        schema = fraudseq.FraudModel.load(model_dir).schema_
        runs = [run(args, url, model_dir, texts, clock, k, schema) for k in (1, 2)]
    ratio = runs[1]["transactions_per_s"] / runs[0]["transactions_per_s"]
    print(f"2 consumers / 1 consumer: {ratio:.2f}x")
    report = {
        "model": args.model if args.model_dir is None else str(args.model_dir),
        "batch": args.batch,
        "partitions": args.partitions,
        "reasons": args.reasons,
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "ratio_2_to_1": round(ratio, 3),
    }
    suffix = f"-p{args.partitions}" if args.partitions > 1 else ""
    save_results(f"consumer_throughput-{args.model}{suffix}", report, args.out)


if __name__ == "__main__":
    main()
