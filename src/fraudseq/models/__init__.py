"""Model families behind one interface; `build_network` makes one by name."""

from __future__ import annotations

from torch import nn

from fraudseq.models.recurrent import CELLS, RecurrentClassifier

NETWORKS = tuple(CELLS)

__all__ = ["NETWORKS", "RecurrentClassifier", "build_network"]


def build_network(name: str, n_numeric: int, cardinalities: list[int], params: dict) -> nn.Module:
    """Build the torch module for model family `name` with hyperparameters `params`."""
    if name in CELLS:
        return RecurrentClassifier(n_numeric, cardinalities, cell=name, **params)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(NETWORKS)}")
