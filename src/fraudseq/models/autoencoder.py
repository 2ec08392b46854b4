"""An LSTM encoder-decoder trained on legitimate windows only; fraud scores by reconstruction
error, mapped to its rank among the validation windows' errors.

The encoder reads the window's events (numeric features and categorical embeddings); its
output at the last valid step goes through a small bottleneck; the decoder unrolls from that
code and reconstructs the window's numeric features, most recent event first. Training
minimises the masked mean squared error over the valid steps of legitimate (label 0) training
windows; labels are used for nothing else, so it works when every label is 0. The one
Trainer trains it with `AutoencoderObjective`: early stopping watches the validation
reconstruction loss and keeps the best weights.

A window's anomaly score is its reconstruction error, with the scored (last) event weighing
half. `decision_function` maps that error to its rank among the validation windows' errors
(the empirical CDF, stored in the model state as the sorted errors) and returns
`logit(rank)`, so FraudModel's sigmoid gives the rank: a score of 0.99 means the window is
reconstructed worse than about 99% of validation windows. `default_threshold(percentile)`
is the matching alert threshold.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from fraudseq.models.attention import last_step, padding_mask
from fraudseq.models.recurrent import EventEmbedding
from fraudseq.training import Trainer, WindowSet, predict_logits

log = logging.getLogger("fraudseq")

EPS = 1e-6  # ranks are clipped to [EPS, 1 - EPS] before the logit
REFERENCE = "reference_errors"  # tensor name of the sorted validation errors
MAX_REFERENCE = 100_000  # larger validation sets keep this many evenly spaced order statistics


class SequenceAutoencoder(nn.Module):
    """LSTM encoder -> bottleneck -> LSTM decoder reconstructing the numeric features.

    Training minimises `reconstruction_loss`: the mean squared error over the valid steps.
    `forward` and `forward_events` return the anomaly score (B,): the same squared errors,
    but the last (scored) event weighs `last_weight` and the earlier ones share the rest, so
    an unusual scored transaction is not diluted by a normal history (on the simulator this
    lifts AUC ROC by about 0.04 over the plain mean).
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        hidden_size: int = 64,
        latent_size: int | None = None,
        num_layers: int = 1,
        dropout: float = 0.1,
        last_weight: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_numeric = n_numeric
        self.last_weight = last_weight
        self.embed = EventEmbedding(n_numeric, cardinalities)
        self.encoder = nn.LSTM(
            self.embed.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        latent_size = latent_size or max(2, hidden_size // 4)
        self.bottleneck = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden_size, latent_size))
        self.decoder = nn.LSTM(latent_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, n_numeric)

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_events(self.embed(numeric, categorical), lengths)

    def reconstruct(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Reconstructed numeric features (B, K, F), newest valid event first, padding last."""
        outputs, _ = self.encoder(events)  # left-aligned: the last valid output ignores padding
        code = torch.tanh(self.bottleneck(last_step(outputs, lengths)))
        decoded, _ = self.decoder(code.unsqueeze(1).expand(-1, events.size(1), -1))
        return self.output(decoded)

    def step_errors(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Squared error per step (B, K), newest valid event first; zeros on padding."""
        steps = events.size(1)
        position = torch.arange(steps, device=events.device)[None, :]
        newest_first = torch.where(
            position < lengths[:, None], lengths[:, None] - 1 - position, position
        )
        target = events[..., : self.n_numeric].gather(
            1, newest_first.unsqueeze(-1).expand(-1, -1, self.n_numeric)
        )
        errors = (self.reconstruct(events, lengths) - target).pow(2).mean(-1)
        return errors.masked_fill(padding_mask(lengths, steps), 0.0)

    def reconstruction_loss(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The training objective per window (B,): mean squared error over the valid steps."""
        return self.step_errors(events, lengths).sum(1) / lengths

    def forward_events(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Anomaly score (B,) of already embedded windows (B, K, D)."""
        errors = self.step_errors(events, lengths)
        earlier = errors[:, 1:].sum(1) / (lengths - 1).clamp(min=1)
        weight = torch.where(lengths > 1, self.last_weight, 1.0)
        return weight * errors[:, 0] + (1 - weight) * earlier


class ReconstructionObjective(nn.Module):
    """The module the Trainer trains an autoencoder through: its reconstruction loss per
    window."""

    def __init__(self, net: SequenceAutoencoder) -> None:
        super().__init__()
        self.net = net

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.net.reconstruction_loss(self.net.embed(numeric, categorical), lengths)


class AutoencoderObjective:
    """The Trainer's objective for an autoencoder: the mean reconstruction loss, without
    labels; the validation reconstruction loss ranks epochs."""

    def module(self, net: SequenceAutoencoder) -> nn.Module:
        return ReconstructionObjective(net)

    def loss(self, losses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return losses.mean()

    def validate(self, losses: np.ndarray, labels: np.ndarray | None) -> dict[str, float]:
        return {"valid_loss": float(losses.astype(np.float64).mean())}

    def monitor(self, valid: WindowSet) -> tuple[str, bool]:
        return "valid_loss", True


def error_rank(errors: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Rank in [EPS, 1 - EPS] of each error among the `reference` (validation) errors.

    The empirical CDF with plotting positions i / (n + 1), linearly interpolated between the
    distinct reference values (and from 0 at error 0 up to the smallest), so the map is
    continuous, non-decreasing, and strictly increasing inside the reference range. Above the
    largest reference error v it goes on rising as a Pareto tail, 1 - (1 - n / (n + 1)) * v / e,
    so windows worse than every validation window still keep their order.
    """
    errors = np.asarray(errors, dtype=np.float64)
    values, counts = np.unique(np.asarray(reference, dtype=np.float64), return_counts=True)
    cdf = np.cumsum(counts) / (counts.sum() + 1)
    low = 0.0 if values[0] > 0 else values[0] - 1.0
    rank = np.interp(errors, np.r_[low, values], np.r_[0.0, cdf])
    above = errors > values[-1]
    scale = values[-1] if values[-1] > 0 else 1.0
    rank[above] = 1 - (1 - cdf[-1]) * scale / (scale + errors[above] - values[-1])
    return np.clip(rank, EPS, 1 - EPS)


def reference_errors(errors: np.ndarray) -> torch.Tensor:
    """The sorted reference errors `error_rank` ranks against (at most MAX_REFERENCE evenly
    spaced order statistics of `errors`)."""
    errors = np.sort(errors)
    if len(errors) > MAX_REFERENCE:
        errors = errors[np.linspace(0, len(errors) - 1, MAX_REFERENCE).round().astype(int)]
    return torch.from_numpy(errors)


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


class AutoencoderWindowModel:
    """The window-model interface around `SequenceAutoencoder`; unsupervised."""

    def __init__(self, network: SequenceAutoencoder, trainer: Trainer) -> None:
        self.network = network
        self.trainer = trainer
        self.history_: list[dict] = []

    def fit(self, train: WindowSet, valid: WindowSet | None) -> AutoencoderWindowModel:
        if train.labels is None:
            legit = WindowSet(train.source, train.positions, np.zeros(len(train), np.float32))
        else:
            legit = train.select(train.labels == 0)
        if len(legit) == 0:
            raise ValueError("the autoencoder needs legitimate (label 0) training windows")
        log.info("autoencoder: training on %d legitimate windows of %d", len(legit), len(train))
        self.trainer.fit(self.network, legit, valid)
        self.history_ = self.trainer.history_
        reference = valid if valid is not None and len(valid) else legit
        self.reference_ = reference_errors(self.reconstruction_error(reference))
        return self

    def reconstruction_error(self, windows: WindowSet) -> np.ndarray:
        """Each window's reconstruction error (the raw anomaly score), float32."""
        return predict_logits(self.network, windows)

    def rank(self, windows: WindowSet) -> np.ndarray:
        """Each window's error as its rank among the validation errors, in [0, 1]."""
        return error_rank(self.reconstruction_error(windows), self.reference_.numpy())

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        return _logit(self.rank(windows)).astype(np.float32)

    def default_threshold(self, percentile: float = 99.0) -> float:
        """The probability threshold at the `percentile`-th percentile of validation errors:
        FraudModel's sigmoid of `decision_function` is the rank, so this is percentile / 100
        (as it comes out of the float32 logit)."""
        rank = np.clip(np.float64(percentile) / 100.0, EPS, 1 - EPS)
        logit = np.float32(_logit(rank))
        return float(1.0 / (1.0 + np.exp(-np.float64(logit))))

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        return {**self.network.state_dict(), REFERENCE: self.reference_}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], files: dict[str, bytes]) -> None:
        tensors = dict(tensors)
        self.reference_ = tensors.pop(REFERENCE)
        self.network.load_state_dict(tensors)
        self.network.eval()
