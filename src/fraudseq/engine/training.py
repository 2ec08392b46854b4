"""Training on a file's shards (`fraudseq train --work-dir`), in memory bounded by a shard.

`fit_sharded` does what `FraudModel.fit` does over the whole file, in passes over the
shards (`ShardSet`), holding one shard at a time:

1. every row's time and label (16 bytes a row): the training and validation periods, by
   the same `_split` as in memory (a row whose label is empty is history, never a target);
2. the keyed features of the encoder's training rows (the rows `fit` sees in memory, as
   their own frame): their counterparty features are those of these rows alone;
3. the encoder fitted shard by shard (`FeatureEncoder.fit_parts`): the same means,
   scales, ranges and vocabularies as in memory, to rounding;
4. each shard encoded with the whole file's keyed features (the features of the whole
   file, as `engine.scoring` scores) and written once as .npy files under a temporary
   directory of the work directory, with its training and validation windows as positions
   in it. Encoding is most of the cost of a pass, so it is done once rather than each
   epoch; the files take about 4 bytes per numeric and 8 per categorical feature a row.

The window model then trains on `ShardedWindowSet`s, which yield one shard's windows at a
time (`WindowSet.parts`): torch families through the one `Trainer` loop (shard order
shuffled each epoch, windows shuffled within a shard, samplers per shard), XGBoost through
a `QuantileDMatrix` fed shard by shard. The threshold is chosen on the validation rows'
labels and probabilities gathered shard by shard, in the whole file's row order.

The passes over shards (2 and 4) are tasks given to the run's mapper (`engine.run`): this
process, or Ray tasks with `engine="ray"`, where a torch family then trains on Ray Train
(`engine.ray_train`) from the encoded shards in the shared work directory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.engine.chunks import ROW, file_order
from fraudseq.engine.keyed import keyed_features
from fraudseq.engine.run import sharded_run
from fraudseq.engine.shards import ShardSet
from fraudseq.features import EncodedFrame
from fraudseq.fraud_model import _ONE_NS, FraudModel, _sigmoid, calibration_period
from fraudseq.schema import UNKNOWN_LABELS
from fraudseq.splits import parse_time
from fraudseq.training import WindowSet, WindowSource

log = logging.getLogger("fraudseq")

ARRAYS = ("numeric", "categorical", "order", "starts")


def fit_sharded(
    model: FraudModel,
    data,
    schema,
    work_dir,
    *,
    shards: int | None = None,
    train_from=None,
    train_until=None,
    valid_days: float = 7,
    valid_period: tuple | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    ray_workers: int = 2,
) -> FraudModel:
    """`model.fit(data, ...)` through shards under `work_dir` (a temporary directory if
    None; see the module docstring). With `engine="ray"`, the feature passes run as Ray
    tasks and the window model trains on `ray_workers` Ray Train workers
    (`engine.ray_train`), on the cluster at `ray_address` or a local Ray instance."""
    if engine == "ray":
        from fraudseq.engine.ray_train import ray_trainer

        ray_trainer(model.model)  # fails before any work for a family Ray cannot train
    run = sharded_run(
        data,
        schema,
        work_dir=work_dir,
        shards=shards,
        engine=engine,
        ray_address=ray_address,
        ray_workers=ray_workers,
        require_label=UNKNOWN_LABELS,
    )
    with run as (shard_set, mapper):
        periods = (train_from, train_until, valid_days, valid_period)
        workers = None if engine == "local" else ray_workers
        return _fit_shards(model, shard_set, mapper, periods, workers)


def _fit_shards(model: FraudModel, shard_set: ShardSet, mapper, periods, ray_workers):
    train_from, train_until, valid_days, valid_period = periods
    s = shard_set.schema
    model.schema_ = s
    # 1. the periods
    times, labels, sizes, file_rows = [], [], [], []
    for i in range(len(shard_set)):
        part = shard_set.frame(i, columns=[s.label])
        times.append(part[s.time])
        labels.append(part[s.label].to_numpy())
        sizes.append(len(part))
        file_rows.append(part[ROW].to_numpy())
    times = pd.concat(times, ignore_index=True)
    file_rows = np.concatenate(file_rows)
    labels = np.concatenate(labels)
    until = parse_time(train_until, "--train-until") or times.max() + _ONE_NS
    train_rows, valid_rows, end, in_valid = model._periods(
        times, labels, train_from, until, valid_days, valid_period
    )
    keep = (times < end).to_numpy()
    fit_rows = keep & (times < until).to_numpy() & ~in_valid
    calibrate_rows = valid_rows if valid_rows.any() else train_rows
    valid_times = times[valid_rows]
    del times, labels
    rows = _ShardRows(np.r_[0, np.cumsum(sizes)], keep)
    end_ns = pd.Timestamp(end).value
    # 2. and 3. the encoder
    encoder = model._new_encoder()
    among = np.zeros(shard_set.rows, dtype=bool)
    among[file_rows[fit_rows]] = True
    del file_rows
    fit_keyed = keyed_features(shard_set, encoder, mapper, among=among)
    model.encoder_ = encoder.fit_parts(_fit_parts(shard_set, end_ns, rows, fit_rows, fit_keyed))
    # 4. the windows
    directory = Path(tempfile.mkdtemp(prefix="train-", dir=shard_set.directory.parent))
    try:
        encoded = EncodedShards(directory, model.window)
        train = ShardedWindowSet(encoded)
        valid = ShardedWindowSet(encoded)
        keyed = keyed_features(shard_set, model.encoder_, mapper)
        masks = (train_rows, valid_rows, calibrate_rows)
        tasks = [
            (shard_set, i, end_ns, model.encoder_, keyed, encoded, [rows.of(m, i) for m in masks])
            for i in range(len(shard_set))
        ]
        calibration, features = [], []  # the calibration rows and their encoded features
        for i, (train_windows, valid_windows, picked, at) in enumerate(
            mapper(_encode_shard, tasks)
        ):
            train.add(i, *train_windows)
            valid.add(i, *valid_windows)
            calibration.append(picked)
            features.append(at)
        if ray_workers is None:
            model._fit_windows(train, valid)
        else:
            from fraudseq.engine.ray_train import fit_on_ray

            fit_on_ray(model, train, valid, workers=ray_workers, storage=directory / "ray-train")
        # without validation (--valid-days 0) the threshold can only be chosen in-sample
        windows, period = (valid, len(valid)) if len(valid) else (train, 0)
        _calibrate(
            model,
            windows,
            pd.concat(calibration),
            calibration_period(period),
            tuple(np.concatenate(part) for part in zip(*features, strict=True)),
        )
        model._set_training_period(train_from, until, valid_times, len(train), len(valid))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return model


def _encode_shard(task):
    """Shard i encoded (with its keyed features) and written to `encoded`: the positions
    and labels of the windows ending at the rows of each of the first two masks (training,
    validation), and the calibration rows (the third) with their encoded (numeric,
    categorical) features, for `_calibrate`."""
    shard_set, i, end_ns, encoder, keyed, encoded, masks = task
    s = shard_set.schema
    frame = shard_set.frame(i, until_ns=end_ns)
    shard = encoder.transform(frame, keyed.of(i, frame[ROW].to_numpy()))
    encoded.write(i, shard)
    label = frame[s.label].to_numpy()
    windows = [_windows(shard, np.flatnonzero(mask), label) for mask in masks[:2]]
    picked = np.flatnonzero(masks[2])
    calibration = frame[[s.time, ROW, s.amount, s.label]].iloc[picked]
    at = shard.positions_of(picked)
    return *windows, calibration, (shard.numeric[at], shard.categorical[at])


def _windows(encoded: EncodedFrame, picked: np.ndarray, labels: np.ndarray):
    """The positions of the windows ending at rows `picked` of `encoded`, and their labels."""
    return encoded.positions_of(picked), labels[picked].astype(np.float32)


@dataclass
class _ShardRows:
    """Masks over the rows of every shard (shard after shard, each in its time order) cut
    to one shard's rows before the end of the data."""

    bounds: np.ndarray
    keep: np.ndarray

    def of(self, mask: np.ndarray, i: int) -> np.ndarray:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return mask[lo:hi][self.keep[lo:hi]]


def _fit_parts(shard_set: ShardSet, end_ns: int, rows: _ShardRows, fit_rows, keyed):
    """Each shard's training rows for the encoder, with their keyed features."""
    for i in range(len(shard_set)):
        frame = shard_set.frame(i, until_ns=end_ns)
        frame = frame[rows.of(fit_rows, i)].reset_index(drop=True)
        yield frame, keyed.of(i, frame[ROW].to_numpy())


def _calibrate(
    model: FraudModel, windows: ShardedWindowSet, rows: pd.DataFrame, period: str, features
) -> None:
    """`FraudModel._calibrate` on these windows, whose rows (time, ROW, amount, label, in
    the windows' order) are put in the whole file's order, as in memory; `features`: their
    encoded (numeric, categorical) features, in any order (for the drift reference)."""
    s = model.schema_
    probability = _sigmoid(model.model_.decision_function(windows))
    order = file_order(rows, s.time)
    rows = rows.iloc[order]
    model._choose_thresholds(
        windows.labels[order],
        probability[order],
        rows[s.amount].to_numpy(),
        rows[s.time].reset_index(drop=True),
        period,
        features,
    )


class EncodedShards:
    """Each shard's encoded rows as .npy files under `directory`, written once and read
    back one shard at a time (the last one read is kept)."""

    def __init__(self, directory: Path, window: int) -> None:
        self.directory, self.window = Path(directory), window
        self._loaded: tuple[int, WindowSource] | None = None

    def __getstate__(self) -> dict:
        """What a Ray worker is sent: the directory, not the shard last read."""
        return {**self.__dict__, "_loaded": None}

    def write(self, i: int, encoded: EncodedFrame) -> None:
        for name in ARRAYS:
            np.save(self.directory / f"{i:05d}-{name}.npy", getattr(encoded, name))

    def source(self, i: int) -> WindowSource:
        if self._loaded is None or self._loaded[0] != i:
            self._loaded = None  # the previous shard's arrays go before the next are read
            arrays = [
                np.load(self.directory / f"{i:05d}-{name}.npy", allow_pickle=False)
                for name in ARRAYS
            ]
            self._loaded = (i, WindowSource(EncodedFrame(*arrays), self.window))
        return self._loaded[1]


@dataclass
class ShardedWindowSet:
    """Windows in several shards' encoded rows on disk: per shard, the positions of their
    last events and their labels. `parts(rng)` yields one shard's windows at a time as a
    `WindowSet` (see `WindowSet.parts`); `positions` and `labels` are every shard's, one
    shard after another, the order of every output on the set."""

    shards: EncodedShards
    pieces: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)

    def add(self, i: int, positions: np.ndarray, labels: np.ndarray) -> None:
        """Windows of shard i: the positions of their last events, and their labels."""
        if len(positions):
            self.pieces.append((i, positions, labels))

    def __len__(self) -> int:
        return sum(len(p) for _, p, _ in self.pieces)

    @property
    def labels(self) -> np.ndarray:
        if not self.pieces:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([labels for _, _, labels in self.pieces])

    def parts(self, rng: np.random.Generator | None = None):
        order = range(len(self.pieces))
        if rng is not None and len(self.pieces) > 1:
            order = rng.permutation(len(self.pieces))
        for k in order:
            i, positions, labels = self.pieces[k]
            yield WindowSet(self.shards.source(i), positions, labels)

    def select(self, mask: np.ndarray) -> ShardedWindowSet:
        chosen = ShardedWindowSet(self.shards)
        start = 0
        for i, positions, labels in self.pieces:
            part = mask[start : start + len(positions)]
            start += len(positions)
            if part.any():
                chosen.pieces.append((i, positions[part], labels[part]))
        return chosen
