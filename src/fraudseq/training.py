"""The one training loop: batches of windows, weighted BCE on logits, early stopping on AP."""

from __future__ import annotations

import copy
import logging
import sys
import time
from dataclasses import dataclass, field, fields

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
    """Adam on weighted BCE or focal loss (on logits), one line per epoch, best weights by
    validation AP. Samplers reshape each epoch's training windows only."""

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
    history_: list[dict] = field(default_factory=list, init=False)

    @classmethod
    def from_params(cls, params: dict, seed: int) -> Trainer:
        """A Trainer from a FraudModel's hyperparameters (it takes the ones it knows)."""
        names = {f.name for f in fields(cls) if f.init} - {"seed"}
        return cls(seed=seed, **{k: v for k, v in params.items() if k in names})

    def fit(self, net: nn.Module, train: WindowSet, valid: WindowSet | None) -> nn.Module:
        """Train `net` in place and return it with the best validation weights loaded."""
        check_sampling(self.oversample, self.fraud_ratio)
        labels = torch.from_numpy(train.labels.astype(np.float32))
        sampled = train.labels[self._epoch_indices(train.labels, 1)]
        loss_fn = make_loss(
            self.loss, self._pos_weight(sampled), self.focal_alpha, self.focal_gamma
        )
        optimizer = torch.optim.Adam(
            net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        best_score, best_state, stale = -np.inf, copy.deepcopy(net.state_dict()), 0
        self.history_ = []
        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            train_loss = self._train_epoch(net, train, labels, loss_fn, optimizer, epoch)
            record = {"epoch": epoch, "train_loss": train_loss}
            if valid is not None and len(valid):
                scores = predict_logits(net, valid, self.batch_size * 4)
                record["valid_loss"] = float(
                    loss_fn(
                        torch.from_numpy(scores), torch.from_numpy(valid.labels.astype(np.float32))
                    )
                )
                record["valid_ap"] = average_precision(valid.labels, scores)
            record["seconds"] = round(time.perf_counter() - started, 2)
            self.history_.append(record)
            log.info(_epoch_line(record, self.epochs))
            monitor = record.get("valid_ap", np.nan)
            if not np.isfinite(monitor):
                monitor = -record.get("valid_loss", train_loss)
            if monitor > best_score:
                best_score, best_state, stale = monitor, copy.deepcopy(net.state_dict()), 0
            else:
                stale += 1
                if stale >= self.patience:
                    log.info("early stopping: no validation improvement in %d epochs", stale)
                    break
        net.load_state_dict(best_state)
        return net

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

    def _train_epoch(self, net, train, labels, loss_fn, optimizer, epoch) -> float:
        net.train()
        permutation = self._epoch_indices(train.labels, epoch)
        batches = range(0, len(permutation), self.batch_size)
        total, count = 0.0, 0
        with _progress(self.progress, f"epoch {epoch}", len(batches)) as advance:
            for start in batches:
                picked = permutation[start : start + self.batch_size]
                numeric, categorical, lengths = train.source.batch(train.positions[picked])
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(numeric, categorical, lengths), labels[picked])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(picked)
                count += len(picked)
                advance()
        return total / max(count, 1)


@torch.inference_mode()
def predict_logits(net: nn.Module, windows: WindowSet, batch_size: int = 4096) -> np.ndarray:
    """Logits for every window, in the order of `windows.positions`.

    Networks with `embed` and `forward_events` get every event embedded once, then windows
    gathered from the embeddings: the same numbers, without re-embedding each event K times.
    """
    net.eval()
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


def _epoch_line(record: dict, epochs: int) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['train_loss']:.4f}"]
    if "valid_ap" in record:
        parts += [f"valid_loss {record['valid_loss']:.4f}", f"valid_AP {record['valid_ap']:.4f}"]
    parts.append(f"{record['seconds']:.1f}s")
    return "  ".join(parts)


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
