"""A torch network trained by the one Trainer, behind the window-model interface."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fraudseq.training import Trainer, WindowSet, predict_logits


class NeuralWindowModel:
    """Wraps a module returning logits; its state is the module's tensors."""

    def __init__(self, network: nn.Module, trainer: Trainer) -> None:
        self.network = network
        self.trainer = trainer
        self.history_: list[dict] = []

    def fit(self, train: WindowSet, valid: WindowSet | None) -> NeuralWindowModel:
        self.trainer.fit(self.network, train, valid)
        self.history_ = self.trainer.history_
        return self

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        return predict_logits(self.network, windows)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        return self.network.state_dict(), {}

    def load_state(self, tensors: dict[str, torch.Tensor], files: dict[str, bytes]) -> None:
        self.network.load_state_dict(tensors)
        self.network.eval()
