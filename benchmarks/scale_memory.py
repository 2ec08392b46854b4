"""Peak memory and wall time of the CLI at growing data sizes: in memory against sharded.

    .venv/bin/python benchmarks/scale_memory.py [--sizes 4,16,40] [--data-dir DIR]
        [--memory-up-to 4] [--steps train,score,evaluate,report] [--train-trees 50]
        [--ray-nodes N] [--out FILE]

Builds simulated Parquet files of about 4M, 16M and 40M transactions (`--data-dir`, kept
for later runs): pieces of `fraudseq.simulate(accounts=20000, days=120)`, about 3.98M rows
each, with their own seeds, card and transaction ids (the file is not in time order
across pieces: the sharded path sorts each shard). An XGBoost model is trained once on a
small simulated file (2,000 cards, 120 days). Each step then runs as its own `fraudseq`
process, and its peak resident memory (the kernel's maximum RSS of the child) and wall
time are recorded:
- `train` (XGBoost on the whole file, the default 7 validation days, at most
  `--train-trees` rounds, 50 by default: the same bound at every size keeps the times
  comparable), `score`, `evaluate` and `report` (default `--top 5`, 200 bootstrap resamples)
  with `--work-dir` (fresh, so sharding is included) at every size;
- the same in memory up to `--memory-up-to` millions (about 1.7 KB per transaction).
The issue-19 goals: peak RSS at 40M under 8 GB; the 40M wall time at most 12x the 4M one.

With `--ray-nodes N` every step also runs with `--engine ray` (and `--work-dir`): on a
local Ray instance started by the command (mode `ray-local`, every CPU of the machine),
and on a Ray cluster of N nodes of 1 CPU each, started once for the run by
scripts/ray-cluster.sh as separate `ray start` processes and stopped at the end
(`ray-cluster-N`, `--ray-address`). Their peak RSS is the command's process only, not the
Ray workers'.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

PIECE = {"accounts": 20_000, "days": 120}
OUTPUTS = {
    "train": "trained",
    "score": "scores.parquet",
    "evaluate": "metrics.json",
    "report": "report.html",
}


def build_file(path: Path, millions: int) -> int:
    """A Parquet file of pieces of about 3.98M simulated rows (whole pieces, at least
    `millions` M rows in total); its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import fraudseq

    if path.exists():
        return pq.ParquetFile(path).metadata.num_rows
    tmp = path.with_suffix(".tmp")
    rows, writer, seed = 0, None, 0
    while rows < millions * 1_000_000 * 0.99:
        frame = fraudseq.simulate(**PIECE, seed=seed)
        for column in ("tx_id", "card_id"):
            frame[column] = f"p{seed}-" + frame[column].astype(str)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
        rows, seed = rows + len(frame), seed + 1
    writer.close()
    os.replace(tmp, path)
    return rows


def step_command(
    cli: list[str], step: str, model: Path, data: Path, out: Path, trees: int
) -> list[str]:
    """The CLI command of one step on `data`, writing `out`."""
    if step == "train":
        return [*cli, "train", str(data), "--model", "xgboost", "--n-estimators", str(trees),
                "--out", str(out)]  # fmt: skip
    tail = ["--json", str(out)] if step == "evaluate" else ["--out", str(out)]
    return [*cli, step, str(model), str(data), "--from", "2026-04-01", *tail]


CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ray-cluster.sh"


@contextlib.contextmanager
def ray_cluster(nodes: int):
    """A Ray cluster of `nodes` nodes (1 CPU each) from scripts/ray-cluster.sh, for the
    block: its address and the environment a client needs (the cluster's token)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = Path(tempfile.mkdtemp(prefix="fq-ray-"))  # short: Ray's socket paths
    env = {**os.environ, "RAY": str(Path(sys.executable).parent / "ray")}
    script = ["bash", str(CLUSTER_SCRIPT)]
    where = ["--port", str(port), "--dir", str(directory)]
    try:
        started = subprocess.run([*script, "start", "--nodes", str(nodes), *where], env=env,
                                 capture_output=True, text=True)  # fmt: skip
        if started.returncode != 0:
            raise SystemExit(f"ray-cluster.sh start failed:\n{started.stderr[-2000:]}")
        token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(directory / "auth_token")}
        yield f"127.0.0.1:{port}", {**env, **token}
    finally:
        subprocess.run([*script, "stop", *where], env=env, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def run(command: list[str], env: dict | None = None) -> dict:
    """Run a command as a child; its wall seconds and peak RSS (GB)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{child.stderr.read().decode()[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,40", help="Millions of transactions.")
    parser.add_argument("--data-dir", type=Path, default=Path("bench_data/scale"))
    parser.add_argument("--memory-up-to", type=int, default=4)
    parser.add_argument("--steps", default="train,score,evaluate,report")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--train-trees", type=int, default=50, help="train's --n-estimators.")
    parser.add_argument(
        "--ray-nodes", type=int, default=0, help="Also on local Ray and a cluster of N nodes."
    )
    args = parser.parse_args()
    print(describe())
    with ray_cluster(args.ray_nodes) if args.ray_nodes else contextlib.nullcontext() as cluster:
        measure(args, cluster)


def measure(args, cluster: tuple[str, dict] | None) -> None:
    """Every step at every size in every mode; the results saved."""
    args.data_dir.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "fraudseq"]
    model = args.data_dir / "model"
    if not model.exists():  # the model's quality is not measured here: a small one will do
        small = args.data_dir / "train.parquet"
        if not small.exists():
            import fraudseq

            fraudseq.simulate(accounts=2_000, days=120, seed=99).to_parquet(small, index=False)
        run([*cli, "train", str(small), "--model", "xgboost", "--out", str(model),
             "--train-until", "2026-04-01"])  # fmt: skip
    results = []
    for millions in (int(s) for s in args.sizes.split(",")):
        data = args.data_dir / f"tx-{millions}M.parquet"
        rows = build_file(data, millions)
        for step in args.steps.split(","):
            out = args.data_dir / OUTPUTS[step]
            command = step_command(cli, step, model, data, out, args.train_trees)
            modes = ["sharded"] + (["memory"] if millions <= args.memory_up_to else [])
            modes += ["ray-local", f"ray-cluster-{args.ray_nodes}"] if cluster else []
            for mode in modes:
                work = args.data_dir / "work"
                shutil.rmtree(work, ignore_errors=True)
                extra = ["--work-dir", str(work)] if mode != "memory" else []
                extra += ["--engine", "ray"] if mode.startswith("ray") else []
                on_cluster = mode.startswith("ray-cluster")
                extra += ["--ray-address", cluster[0]] if on_cluster else []
                shutil.rmtree(args.data_dir / OUTPUTS["train"], ignore_errors=True)
                measured = run(command + extra, cluster[1] if on_cluster else None)
                shutil.rmtree(work, ignore_errors=True)
                record = {"step": step, "mode": mode, "rows": rows, **measured}
                record["rows_per_s"] = round(rows / measured["seconds"])
                record["load_average"] = os.getloadavg()[0]
                print(record, flush=True)
                results.append(record)
    sharded = {(r["step"], r["rows"]): r["seconds"] for r in results if r["mode"] == "sharded"}
    ratios = {}
    for step in args.steps.split(","):
        sizes = sorted(rows for s, rows in sharded if s == step)
        if len(sizes) > 1:
            ratios[step] = round(sharded[step, sizes[-1]] / sharded[step, sizes[0]], 2)
    save_results("scale_memory", {"runs": results, "largest_to_smallest_wall": ratios}, args.out)


if __name__ == "__main__":
    main()
