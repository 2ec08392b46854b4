"""The second stage of a sharded run: the blocks keyed by counterparty, over the whole file.

A counterparty block reads only the buckets of its row's counterparty, from every entity
(`Block.by_counterparty`). So it runs per counterparty partition (`ShardSet`), each
holding every row of its counterparties, through the same kernel as in memory; the
features go back to the entity shards by row (`KeyedFeatures.of`), where they enter the
entity kernels as given (`FeatureEncoder.transform(frame, given)`). Memory is bounded by
a partition, as by a shard.

Results depend on the blocks and the label delay, and are kept beside the shards under a
name made of both, written whole or not at all (like the shards).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.engine.chunks import ROW
from fraudseq.engine.shards import SHARD, ShardSet
from fraudseq.errors import FraudseqError
from fraudseq.features.blocks import BLOCKS
from fraudseq.features.encoder import FeatureEncoder
from fraudseq.features.kernel import Chunk, Context, compute
from fraudseq.features.state import StateTable

#: Runs a function over items: the builtin `map` in this process, or an engine's.
Mapper = Callable[[Callable, Iterable], Iterable]


class KeyedFeatures:
    """The keyed blocks' features of every row, by entity shard (see the module docstring)."""

    def __init__(self, directory: Path | None, names: list[str]) -> None:
        self.directory, self.names = directory, names

    def of(self, shard: int, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The features of shard `shard`'s rows `rows` (file positions), in that order."""
        if self.directory is None:
            return {}
        import pyarrow.dataset as ds

        table = ds.dataset(self.directory, format="parquet").to_table(
            filter=ds.field(SHARD) == shard
        )
        found = table.to_pandas().sort_values(ROW)
        where = np.searchsorted(found[ROW].to_numpy(), rows)
        return {name: found[name].to_numpy()[where] for name in self.names}


def keyed_features(
    shards: ShardSet,
    encoder: FeatureEncoder,
    mapper: Mapper = map,
    *,
    among: np.ndarray | None = None,
) -> KeyedFeatures:
    """The features of `encoder`'s blocks keyed by counterparty, for every row of `shards`:
    computed per counterparty partition (by `mapper`), or found from an earlier run.
    `among`: a mask over the file's rows (by `ROW`): the features of these rows as if the
    file held only them (the encoder's training rows, which `fit` sees as their own frame)."""
    schema = shards.schema
    crossing = [b for b in encoder.blocks if any(n.kind == "exposure" for n in BLOCKS[b].needs)]
    if crossing and schema.counterparty:
        raise FraudseqError(
            f"feature block {crossing[0]!r} reads other entities' histories through the "
            "counterparties they share, which neither an entity shard nor a counterparty "
            "partition holds: sharded runs (--work-dir, --engine ray) do not support it. "
            "Fix: run without --work-dir and --engine ray, or train without that block."
        )
    blocks = [name for name in encoder.blocks if BLOCKS[name].by_counterparty]
    shape = (schema.categorical, bool(schema.counterparty))
    names = [n for b in blocks for n in BLOCKS[b].names(*shape)]
    if not names:
        return KeyedFeatures(None, [])
    delay = encoder.delay_buckets
    name = f"keyed-{'-'.join(blocks)}-{delay}"
    packed = None
    if among is not None:
        packed = np.packbits(np.asarray(among, dtype=bool))
        name += f"-among-{hashlib.sha256(packed.tobytes()).hexdigest()[:16]}"
    directory = shards.directory / name
    if not directory.is_dir():
        partial = directory.with_name(directory.name + f".partial-{os.getpid()}")
        try:
            partial.mkdir()
            tasks = [(shards, i, tuple(blocks), delay, packed, partial) for i in range(len(shards))]
            list(mapper(_partition_features, tasks))
            os.replace(partial, directory)  # a concurrent run may have won: same content
        except OSError:
            if not directory.is_dir():
                raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return KeyedFeatures(directory, names)


def _partition_features(task) -> int:
    """Counterparty partition i's keyed features into `out`, sorted by shard and row."""
    shards, i, blocks, delay, among, out = task
    schema = shards.schema
    part = shards.counterparty_partition(i)
    if among is not None:
        rows = part[ROW].to_numpy()
        part = part[np.unpackbits(among, count=shards.rows).astype(bool)[rows]]
    n = len(part)
    label = part[schema.label].to_numpy(np.float64) if schema.label in part.columns else None
    chunk = Chunk(
        entity=np.zeros(n, dtype=np.int64),
        time_ns=part[schema.time].to_numpy(dtype="datetime64[ns]").view(np.int64),
        amount=np.zeros(n),
        categorical=[],
        counterparty=pd.factorize(part[schema.counterparty])[0].astype(np.int64),
        label=label,
    )
    context = Context(StateTable.empty(1, 0), chunk, (), delay)
    raw = compute([BLOCKS[b] for b in blocks], context)
    result = pd.DataFrame({ROW: part[ROW], SHARD: part[SHARD], **raw})
    result = result.sort_values([SHARD, ROW], kind="stable")
    result.to_parquet(out / f"part-{i:05d}.parquet", index=False, row_group_size=65_536)
    return n
