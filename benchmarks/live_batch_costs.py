"""Where a live batch's time goes next to the offline path's, per transaction, in one run.

    .venv/bin/python benchmarks/live_batch_costs.py --model-dir DIR [--accounts 3000]
        [--days 45] [--batch 1000] [--detail] [--out FILE]

The data and calls of benchmarks/live_batch_vs_offline.py (memory store, reasons off, one
torch thread). Wraps, without changing them, the stages both paths share - the feature
kernel (`kernel.compute`) and the model's forward pass - and the live path's own: request
parsing (`parse_batch`), the state codec (`decode_states`, `encode_states`), the memory
store's decoded states (`StatePool.read`, `write`, where it exists), the state update
(`kernel.advance`); everything else in `Detector.score_batch` is "other" (records,
results, store reads and writes, the window gather). Times are the thread's CPU time (one
torch thread runs on it), the offline figure the median of three runs made before the
replay and after each of its first two thirds. Reports microseconds per transaction of
each stage in both paths, so the share of the live batch that the 50% goal leaves to
anything but the shared stages can be read off. `--detail` also reports, apart (they
overlap the stages and "other"), each feature block's kernel, the novelty flags
(`Context.fresh`), the memory store's reads and writes (accounts, records, counterparty
buckets, compactions) and the batch's categorical look-ups, for the replay alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

import fraudseq  # noqa: E402
import fraudseq.features.encoder as encoder_module  # noqa: E402
import fraudseq.features.state as state_module  # noqa: E402
import fraudseq.serving.batch as batch_module  # noqa: E402
import fraudseq.serving.detector as detector_module  # noqa: E402
from fraudseq.serving import Detector  # noqa: E402
from fraudseq.serving.window_scorer import WindowScorer  # noqa: E402

#: Thread CPU seconds per stage (torch runs on the calling thread: CPU time barely moves
#: with the machine's load, where wall-clock time does).
SPENT: dict[str, float] = defaultdict(float)
#: With --detail: thread CPU seconds of parts of the stages above and of "other" (they
#: overlap the stages, so they are reported apart and not subtracted from "other").
DETAIL: dict[str, float] = defaultdict(float)


def timed(name: str, function, spent: dict = SPENT):
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started

    return wrapper


def time_details(detector) -> None:
    """Wrap the parts `--detail` reports (where they exist in the checkout measured): each
    feature block's kernel, the novelty context's fresh flags, the memory store's reads and
    writes, the batch's categorical look-ups and counterparty codes."""
    import functools

    import fraudseq.features.kernel as kernel_module
    from fraudseq.serving.stores import memory, state_pool

    for block in detector.live.blocks:  # frozen dataclasses: set around __setattr__
        object.__setattr__(block, "kernel", timed(f"kernel: {block.name}", block.kernel, DETAIL))
    fresh = kernel_module.Context.fresh
    wrapped = functools.cached_property(timed("kernel: Context.fresh", fresh.func, DETAIL))
    wrapped.__set_name__(kernel_module.Context, "fresh")
    kernel_module.Context.fresh = wrapped
    parts = [
        (memory.MemoryStore, ("_read_accounts", "_write_accounts", "_write_records", "purge")),
        (state_pool.StatePool, ("_compact",)),
        (getattr(batch_module, "ValueTable", None), ("lookup",)),
    ]
    try:
        from fraudseq.serving.stores.bucket_columns import BucketColumns
    except ImportError:
        pass
    else:
        parts.append((BucketColumns, ("read", "add")))
    for owner, names in parts:
        for name in names:
            if owner is not None and hasattr(owner, name):
                label = f"{owner.__name__}.{name}"
                setattr(owner, name, timed(label, getattr(owner, name), DETAIL))
    for name in ("_counterparty_codes", "distinct_hashes", "_id_bytes"):
        if hasattr(batch_module, name):
            setattr(batch_module, name, timed(f"batch.{name}", getattr(batch_module, name), DETAIL))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--accounts", type=int, default=3000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--detail", action="store_true", help="also time parts of the stages (see DETAIL)"
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print(describe())
    frame = fraudseq.simulate(accounts=args.accounts, days=args.days, seed=1)
    model = fraudseq.FraudModel.load(args.model_dir)
    n = len(frame)
    for module in (encoder_module, batch_module):
        module.compute = timed("kernel", module.compute)
    batch_module.advance = timed("state update (advance)", batch_module.advance)
    detector_module.parse_batch = timed("parse", detector_module.parse_batch)
    detector_module.decode_states = timed("state decode", detector_module.decode_states)
    # The codec's encoder: called by the Detector (before the memory store held decoded
    # states) or, on demand, by the stores that keep bytes (`AccountStates`).
    if hasattr(detector_module, "encode_states"):
        detector_module.encode_states = timed("state encode", detector_module.encode_states)
    state_module.encode_states = timed("state encode", state_module.encode_states)
    try:  # the memory store's decoded states (absent before)
        from fraudseq.serving.stores.state_pool import StatePool
    except ImportError:
        pass
    else:
        # `read` goes through `read_slots` where that exists (the memory store calls it)
        if hasattr(StatePool, "read_slots"):
            StatePool.read_slots = timed("state pool read", StatePool.read_slots)
        else:
            StatePool.read = timed("state pool read", StatePool.read)
        StatePool.write = timed("state pool write", StatePool.write)
    WindowScorer.logits = timed("model", WindowScorer.logits)
    network = type(model.model_)
    network.decision_function = timed("model", network.decision_function)

    loaded = fraudseq.load_transactions(frame).drop(columns=["is_fraud", "fraud_type"])
    loaded["ts"] = loaded["ts"].map(lambda t: t.isoformat())
    txs = loaded.to_dict("records")
    starts = list(range(0, len(txs), args.batch))
    offline_runs, live, live_total = [], defaultdict(float), 0.0
    live_detail: dict[str, float] = defaultdict(float)
    with Detector.load(args.model_dir, "memory", clock="data") as detector:
        detector.explain = "none"
        if args.detail:
            time_details(detector)
        for part in range(3):  # offline, a third of the replay, ..., offline at the end
            SPENT.clear()
            started = time.thread_time()
            model.score(frame)
            offline_runs.append((time.thread_time() - started, dict(SPENT)))
            SPENT.clear()
            detail_before = dict(DETAIL)
            started = time.thread_time()
            for start in starts[part * len(starts) // 3 : (part + 1) * len(starts) // 3]:
                detector.score_batch(txs[start : start + args.batch])
            live_total += time.thread_time() - started
            for name, spent in SPENT.items():
                live[name] += spent
            for name, spent in DETAIL.items():  # the replay's part only
                live_detail[name] += spent - detail_before.get(name, 0.0)
    offline_total, offline = sorted(offline_runs, key=lambda run: run[0])[1]  # the median

    def per_tx(spent: dict, total: float) -> dict:
        out = {name: round(1e6 * s / n, 2) for name, s in sorted(spent.items())}
        out["other"] = round(1e6 * (total - sum(spent.values())) / n, 2)
        out["total"] = round(1e6 * total / n, 2)
        return out

    results = {
        "clock": "thread CPU time",
        "offline_runs_cpu_s": [round(total, 3) for total, _ in offline_runs],
        "transactions": n,
        "batch": args.batch,
        "offline_us_per_tx": per_tx(offline, offline_total),
        "live_batch_memory_us_per_tx": per_tx(live, live_total),
        "memory_to_offline": round(offline_total / live_total, 3),
    }
    if args.detail:
        results["live_detail_us_per_tx"] = {
            name: round(1e6 * spent / n, 2) for name, spent in sorted(live_detail.items())
        }
    shared = sum(live.get(k, 0.0) for k in ("kernel", "model")) * 1e6 / n
    results["live_shared_stages_us_per_tx"] = round(shared, 2)
    results["goal_live_us_per_tx"] = round(2e6 * offline_total / n, 2)
    for key, value in results.items():
        print(f"{key}: {value}")
    save_results("live_batch_costs", results, args.out)


if __name__ == "__main__":
    main()
