"""Losses on logits: weighted binary cross-entropy and focal loss."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fraudseq.choices import LOSSES


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017) on logits: down-weights easy, confidently-right windows.

    `alpha` weights positives (1 - alpha weights negatives); `gamma` = 0 with alpha = 0.5
    is half the usual cross-entropy.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        p_true = torch.exp(-ce)
        weight = self.alpha * target + (1 - self.alpha) * (1 - target)
        return (weight * (1 - p_true) ** self.gamma * ce).mean()


def make_loss(name: str, pos_weight: torch.Tensor | None, alpha: float, gamma: float) -> nn.Module:
    """`bce` (with optional positive-class weight) or `focal`."""
    if name == "bce":
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    if name == "focal":
        return FocalLoss(alpha, gamma)
    raise ValueError(f"unknown loss {name!r}; choose {' or '.join(LOSSES)}")
