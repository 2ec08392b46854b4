"""Speed of the feature blocks on random data of production shape.

    .venv/bin/python benchmarks/features_speed.py [--rows 1750000] [--repeat 3]

Builds an entity-sorted chunk of random transactions (1.75M rows, 5,000 entities, 10,000
counterparties, 183 days, ~0.8% labels 1 and some unknown, 2 categoricals), then times each
block's kernel from an empty state, as training runs it (best of --repeat runs, each on a
fresh kernel context, so shared arrays are built inside the first block that needs them)
and the total. Goal: total <= ~8 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from fraudseq.features.blocks import BLOCKS
from fraudseq.features.constants import NS_PER_DAY, NS_PER_SECOND, label_delay_buckets
from fraudseq.features.kernel import Chunk, Context
from fraudseq.features.state import StateTable
from fraudseq.windows import entity_order, group_starts

EPOCH_NS = 1_767_225_600 * NS_PER_SECOND  # 2026-01-01T00:00:00Z


def random_frame(
    rows: int, entities: int, counterparties: int, days: int, seed: int = 0
) -> tuple[Chunk, int]:
    """The chunk and its number of entities."""
    rng = np.random.default_rng(seed)
    # Skewed activity per entity and counterparty, second-resolution times (so some ties).
    entity = rng.choice(entities, rows, p=_zipf_weights(entities, 0.6, rng))
    counterparty = rng.choice(counterparties, rows, p=_zipf_weights(counterparties, 1.0, rng))
    time_ns = EPOCH_NS + rng.integers(0, days * 86_400, rows) * NS_PER_SECOND
    amount = np.round(rng.lognormal(3.5, 1.2, rows), 2)
    amount[rng.random(rows) < 0.01] *= -1  # refunds
    label = (rng.random(rows) < 0.008).astype(np.float64)
    label[rng.random(rows) < 0.02] = np.nan  # unknown labels
    categorical = {
        "mcc": rng.choice(300, rows, p=_zipf_weights(300, 1.1, rng)),
        "country": rng.choice(60, rows, p=_zipf_weights(60, 1.5, rng)),
    }
    order = entity_order(entity, time_ns)
    starts = group_starts(entity[order])
    dense = np.cumsum(starts == np.arange(rows)) - 1
    chunk = Chunk(
        entity=dense,
        time_ns=time_ns[order],
        amount=amount[order],
        categorical=[v[order] for v in categorical.values()],
        counterparty=counterparty[order],
        label=label[order],
    )
    return chunk, int(dense[-1]) + 1


def _zipf_weights(k: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1) ** exponent
    rng.shuffle(weights)
    return weights / weights.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_750_000)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--counterparties", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {np.__version__}, Python {platform.python_version()}"
    )

    started = time.perf_counter()
    chunk, entities = random_frame(args.rows, args.entities, args.counterparties, args.days)
    state = StateTable.empty(entities, len(chunk.categorical))
    delay = label_delay_buckets(7 * NS_PER_DAY)
    print(
        f"random chunk: {args.rows:,} rows, {args.entities:,} entities, "
        f"{args.counterparties:,} counterparties, {args.days} days "
        f"({time.perf_counter() - started:.2f}s to build)"
    )

    total = 0.0
    for name, block in BLOCKS.items():
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            out = block.kernel(Context(state, chunk, ("mcc", "country"), delay))
            best = min(best, time.perf_counter() - started)
        assert all(v.dtype == np.float64 and v.shape == (args.rows,) for v in out.values())
        total += best
        print(f"  {name:<18} {best:6.2f}s  ({len(out)} features)")
    verdict = "ok" if total <= 8.0 else "SLOWER THAN GOAL"
    print(f"  {'total':<18} {total:6.2f}s  (goal <= 8 s: {verdict})")


if __name__ == "__main__":
    main()
