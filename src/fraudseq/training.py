"""The one training loop: batches of windows, an objective's loss, then callbacks such as early
stopping (by default on validation AP for classifiers)."""

from __future__ import annotations

import copy
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from fraudseq.features import EncodedFrame
from fraudseq.losses import make_loss
from fraudseq.metrics import average_precision
from fraudseq.sampling import check_sampling, epoch_indices
from fraudseq.windows import window_index

log = logging.getLogger("fraudseq")


class WindowSource:
    """Encoded rows as tensors with one padding row appended, for window gathering."""

    def __init__(self, encoded: EncodedFrame, window: int) -> None:
        n, n_cat = len(encoded), encoded.categorical.shape[1]
        self.window = window
        self.pad_index = n
        numeric = np.vstack([encoded.numeric, np.zeros((1, encoded.numeric.shape[1]), np.float32)])
        categorical = np.vstack([encoded.categorical, np.zeros((1, n_cat), np.int64)])
        self.numeric = torch.from_numpy(numeric)
        self.categorical = torch.from_numpy(categorical)
        self.starts = encoded.starts
        self.encoded = encoded

    def positions_of(self, rows: np.ndarray) -> np.ndarray:
        """Sorted positions of frame rows, i.e. where their windows end."""
        return self.encoded.positions_of(rows)

    def index(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Row index (B, K) and lengths (B,) of the windows ending at sorted `positions`."""
        index, lengths = window_index(positions, self.starts, self.window, self.pad_index)
        return torch.from_numpy(index), torch.from_numpy(lengths)

    def batch(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Numeric (B, K, F), categorical (B, K, C) and lengths (B,) of those windows."""
        index, lengths = self.index(positions)
        return self.numeric[index], self.categorical[index], lengths


@dataclass
class WindowSet:
    """Windows to train or score on: the sorted positions of their last events, and labels."""

    source: WindowSource
    positions: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def parts(self, rng: np.random.Generator | None = None) -> Iterator[WindowSet]:
        """The windows as parts small enough to hold in memory, each a WindowSet: this one.
        A set of windows on disk (`fraudseq.engine.training.ShardedWindowSet`) yields one
        part per shard, in an order `rng` shuffles (fixed without it). Whatever trains or
        predicts on any set of windows goes through this."""
        yield self

    def select(self, mask: np.ndarray) -> WindowSet:
        """The windows `mask` (a boolean mask over this set's windows, or a slice) picks."""
        labels = None if self.labels is None else self.labels[mask]
        return WindowSet(self.source, self.positions[mask], labels)


class Objective(Protocol):
    """What a model kind minimises: the part of training that differs between kinds, so
    that every kind shares the one loop in `Trainer.fit`."""

    def module(self, net: nn.Module) -> nn.Module:
        """The module trained and validated: its outputs on windows go into `loss` (a batch)
        and `validate` (every validation window); `net` itself or a wrapper around it."""

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean training loss of one batch."""

    def validate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """An epoch's validation values, from the module's outputs on every validation window."""

    def monitor(self, valid: WindowSet) -> tuple[str, bool]:
        """The validation value early stopping watches by default, and whether lower is better."""


@dataclass
class ClassifierObjective:
    """A classifier's objective: `loss_fn` (BCE or focal) on logits; validation AP."""

    loss_fn: nn.Module

    def module(self, net: nn.Module) -> nn.Module:
        return net

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(logits, labels)

    def validate(self, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        target = torch.from_numpy(labels.astype(np.float32))
        return {
            "valid_loss": float(self.loss_fn(torch.from_numpy(logits), target)),
            "valid_ap": average_precision(labels, logits),
        }

    def monitor(self, valid: WindowSet) -> tuple[str, bool]:
        # AP is NaN without a positive validation window; the loss still ranks epochs.
        return ("valid_ap", False) if valid.labels.sum() > 0 else ("valid_loss", True)


class Replicas:
    """How many processes train one model, and this one's part: here, one process that
    takes every window of every batch. A data-parallel subclass
    (`fraudseq.engine.ray_train.DataParallel`) gives each of several processes its slice
    of each batch of the same sequence, so that `Trainer.fit` is one loop either way."""

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module the training steps run (validation runs the module itself)."""
        return module

    def share(self, picked: np.ndarray) -> tuple[np.ndarray, int]:
        """This process's windows of a batch `picked` and how many of them count (a process
        left without any runs one window with weight 0, so that every process steps)."""
        return picked, len(picked)

    def weight(self, mine: int, batch: int) -> float:
        """The factor on the mean loss of `mine` of a batch's `batch` windows that makes the
        processes' averaged gradient the whole batch's."""
        return 1.0

    def total(self, loss_sum: float, count: int) -> tuple[float, int]:
        """An epoch's summed loss and window count over every process."""
        return loss_sum, count

    def agree(self, stop: bool) -> bool:
        """One decision for every process (the first process's)."""
        return stop


class Callback:
    """Hooks into `Trainer.fit`; override the ones needed."""

    def on_train_begin(self, net: nn.Module) -> None:
        """Before the first epoch."""

    def on_epoch_end(self, net: nn.Module, record: dict) -> bool:
        """After each epoch, with its history record (which a callback may add values to);
        True stops training."""
        return False

    def on_train_end(self, net: nn.Module) -> None:
        """After the last epoch, also when a callback stopped training."""


@dataclass
class EarlyStopping(Callback):
    """Stop once the record's `monitor` value has not improved for `patience` epochs, and
    end with the weights of the best epoch loaded (the initial ones if every value was NaN)."""

    monitor: str = "valid_loss"
    patience: int = 3
    lower_is_better: bool = True

    def on_train_begin(self, net: nn.Module) -> None:
        self.best_ = np.inf if self.lower_is_better else -np.inf
        self.best_state_ = copy.deepcopy(net.state_dict())
        self.stale_ = 0

    def on_epoch_end(self, net: nn.Module, record: dict) -> bool:
        if self.monitor not in record:
            raise KeyError(f"early stopping monitors {self.monitor!r}, not in {list(record)}")
        value = record[self.monitor]
        if (value < self.best_) if self.lower_is_better else (value > self.best_):
            self.best_, self.best_state_, self.stale_ = value, copy.deepcopy(net.state_dict()), 0
            return False
        self.stale_ += 1
        if self.stale_ < self.patience:
            return False
        log.info("early stopping: no %s improvement in %d epochs", self.monitor, self.stale_)
        return True

    def on_train_end(self, net: nn.Module) -> None:
        net.load_state_dict(self.best_state_)


def padded_windows(
    numeric: np.ndarray, codes: np.ndarray, lengths: np.ndarray, window: int
) -> WindowSet:
    """A WindowSet of explicit windows: numeric (B, L, F) and codes (B, L, C), left-aligned
    and padded (L <= window), with their lengths (B,). Rows past a length are left out."""
    lengths = np.asarray(lengths, dtype=np.int64)
    valid = np.arange(numeric.shape[1])[None, :] < lengths[:, None]
    rows_numeric, rows_codes = numeric[valid], codes[valid]  # windows one after another
    window_starts = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=window_starts[1:])
    encoded = EncodedFrame(
        np.ascontiguousarray(rows_numeric, dtype=np.float32),
        np.ascontiguousarray(rows_codes, dtype=np.int64),
        np.arange(len(rows_numeric), dtype=np.int64),
        np.repeat(window_starts, lengths),
    )
    return WindowSet(WindowSource(encoded, window), window_starts + lengths - 1)


@dataclass
class Trainer:
    """Adam on an `Objective`'s loss, one line per epoch, then `callbacks`. By default the
    objective is a classifier's weighted BCE or focal loss on logits, and the callbacks are
    early stopping with `patience` on the objective's validation value (a classifier's AP),
    or on the training loss without validation windows; given `callbacks` replace that
    (`[]` trains every epoch). Samplers reshape each epoch's training windows only."""

    epochs: int = 10
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    class_weight: str | float = "auto"
    loss: str = "bce"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    oversample: float | None = None
    fraud_ratio: float | None = None
    seed: int = 0
    progress: bool | None = None
    objective: Objective | None = None
    callbacks: list[Callback] | None = None
    replicas: Replicas = field(default_factory=Replicas)
    history_: list[dict] = field(default_factory=list, init=False)

    @classmethod
    def from_params(cls, params: dict, seed: int, objective: Objective | None = None) -> Trainer:
        """A Trainer from a FraudModel's hyperparameters (it takes the ones it knows)."""
        given = {"seed", "objective", "callbacks", "replicas"}
        names = {f.name for f in fields(cls) if f.init} - given
        known = {k: v for k, v in params.items() if k in names}
        return cls(seed=seed, objective=objective, **known)

    def fit(self, net: nn.Module, train: WindowSet, valid: WindowSet | None) -> nn.Module:
        """Train `net` in place and return it as the callbacks leave it (by default with the
        best epoch's weights loaded)."""
        check_sampling(self.oversample, self.fraud_ratio)
        valid = valid if valid is not None and len(valid) else None
        objective = self.objective or self._classifier_objective(train.labels)
        callbacks = self._callbacks(objective, valid)
        model = objective.module(net)
        trained = self.replicas.wrap(model)
        optimizer = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        for callback in callbacks:
            callback.on_train_begin(net)
        self.history_ = []
        for epoch in range(1, self.epochs + 1):
            record = self._epoch((trained, model), objective, optimizer, train, valid, epoch)
            self.history_.append(record)
            log.info(_epoch_line(record, self.epochs))
            # Every callback sees every epoch, even after one of them asked to stop.
            if self.replicas.agree(any([c.on_epoch_end(net, record) for c in callbacks])):
                break
        for callback in callbacks:
            callback.on_train_end(net)
        return net

    def _epoch(self, modules, objective, optimizer, train, valid, epoch) -> dict:
        """One epoch's training steps (on `modules`' first, the one wrapped by `replicas`)
        and validation (on the second): its history record."""
        started = time.perf_counter()
        trained, model = modules
        train_loss = self._train_epoch(trained, train, objective.loss, optimizer, epoch)
        record = {"epoch": epoch, "train_loss": train_loss}
        if valid is not None:
            outputs = predict_logits(model, valid, self.batch_size * 4)
            record.update(objective.validate(outputs, valid.labels))
        record["seconds"] = round(time.perf_counter() - started, 2)
        return record

    def _classifier_objective(self, labels: np.ndarray) -> ClassifierObjective:
        sampled = labels[self._epoch_indices(labels, 1)]
        pos_weight = self._pos_weight(sampled)
        return ClassifierObjective(
            make_loss(self.loss, pos_weight, self.focal_alpha, self.focal_gamma)
        )

    def _callbacks(self, objective: Objective, valid: WindowSet | None) -> list[Callback]:
        """`callbacks`, or by default early stopping on the objective's validation value."""
        if self.callbacks is not None:
            return self.callbacks
        monitor, lower_is_better = (
            ("train_loss", True) if valid is None else objective.monitor(valid)
        )
        return [EarlyStopping(monitor, self.patience, lower_is_better)]

    def _pos_weight(self, labels: np.ndarray) -> torch.Tensor | None:
        if self.class_weight in ("none", None, 1, 1.0) or labels.sum() == 0:
            return None
        if self.class_weight == "auto":
            positives = max(int(labels.sum()), 1)
            # sqrt of the class ratio: full balancing over-weights a few noisy positives.
            return torch.tensor(float(np.sqrt((len(labels) - positives) / positives)))
        return torch.tensor(float(self.class_weight))

    def _epoch_indices(self, labels: np.ndarray, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        return epoch_indices(labels, rng, oversample=self.oversample, fraud_ratio=self.fraud_ratio)

    def _train_epoch(self, net, train, loss_fn, optimizer, epoch) -> float:
        """One pass over the training windows in `batches`, each process (`replicas`) taking
        its share of every batch: the mean training loss over the epoch's windows."""
        net.train()
        total, count = 0.0, 0
        with _progress(
            self.progress, f"epoch {epoch}", _batches(train, self.batch_size)
        ) as advance:
            for part, labels, picked in self.batches(train, epoch):
                mine, counted = self.replicas.share(picked)
                numeric, categorical, lengths = part.source.batch(part.positions[mine])
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(numeric, categorical, lengths), labels[mine])
                (loss * self.replicas.weight(counted, len(picked))).backward()
                optimizer.step()
                total += loss.item() * counted
                count += counted
                advance()
        total, count = self.replicas.total(total, count)
        return total / max(count, 1)

    def batches(self, train, epoch: int) -> Iterator[tuple[WindowSet, torch.Tensor, np.ndarray]]:
        """An epoch's batches: (part, its labels, the batch's indices into the part), part by
        part (a set in memory is one part), the parts in an order shuffled per epoch, each
        part's windows drawn by the sampler and shuffled. One generator seeded by (seed,
        epoch) draws every part's windows in turn, so one part gives the same batches as the
        windows in memory, and every process of a data-parallel run the same batches."""
        rng = np.random.default_rng([self.seed, epoch])
        order = np.random.default_rng([self.seed, epoch, 1])
        for part in train.parts(order):
            labels = torch.from_numpy(part.labels.astype(np.float32))
            permutation = epoch_indices(
                part.labels, rng, oversample=self.oversample, fraud_ratio=self.fraud_ratio
            )
            for start in range(0, len(permutation), self.batch_size):
                yield part, labels, permutation[start : start + self.batch_size]


def _batches(windows, batch_size: int) -> int:
    """Batches of an epoch, for the progress bar: exact for windows in memory without a
    sampler, else about (the sampler changes the count)."""
    return -(-len(windows) // batch_size)


@torch.inference_mode()
def predict_logits(net: nn.Module, windows, batch_size: int = 4096) -> np.ndarray:
    """Logits for every window, in the order of `windows.positions` (of a set on disk: its
    parts in their fixed order).

    Networks with `embed` and `forward_events` get every event embedded once, then windows
    gathered from the embeddings: the same numbers, without re-embedding each event K times.
    """
    net.eval()
    outputs = [_part_logits(net, part, batch_size) for part in windows.parts()]
    return np.concatenate(outputs) if outputs else np.empty(0, dtype=np.float32)


def _part_logits(net: nn.Module, windows: WindowSet, batch_size: int) -> np.ndarray:
    source = windows.source
    events = None
    if hasattr(net, "forward_events") and len(windows) > len(source.numeric) // source.window:
        events = net.embed(source.numeric, source.categorical)
    out = np.empty(len(windows), dtype=np.float32)
    for start in range(0, len(windows), batch_size):
        positions = windows.positions[start : start + batch_size]
        if events is None:
            logits = net(*source.batch(positions))
        else:
            index, lengths = source.index(positions)
            logits = net.forward_events(events[index], lengths)
        out[start : start + len(positions)] = logits.numpy()
    return out


_LOG_NAMES = {"train_loss": "loss", "valid_ap": "valid_AP"}  # the names the epoch line shows


def _epoch_line(record: dict, epochs: int) -> str:
    values = [
        f"{_LOG_NAMES.get(name, name)} {value:.4f}"
        for name, value in record.items()
        if name not in ("epoch", "seconds")
    ]
    return "  ".join([f"epoch {record['epoch']}/{epochs}", *values, f"{record['seconds']:.1f}s"])


class _progress:
    """A rich progress bar on a terminal; nothing otherwise (the epoch line is logged)."""

    def __init__(self, enabled: bool | None, description: str, total: int) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.description, self.total = description, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), transient=True
        )
        self.bar.start()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.stop()
