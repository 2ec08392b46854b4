"""Recurrent sequence classifiers (LSTM, GRU, Elman RNN) that return logits."""

from __future__ import annotations

import torch
from torch import nn

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def embedding_dim(cardinality: int) -> int:
    """A common rule of thumb: grow slowly with the vocabulary, capped at 16."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


class EventEmbedding(nn.Module):
    """Concatenate numeric features with embeddings of each categorical column."""

    def __init__(self, n_numeric: int, cardinalities: list[int]) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, embedding_dim(size), padding_idx=0) for size in cardinalities
        )
        self.out_dim = n_numeric + sum(e.embedding_dim for e in self.embeddings)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric] + [emb(categorical[..., j]) for j, emb in enumerate(self.embeddings)]
        return torch.cat(parts, dim=-1)


def classifier_head(in_features: int, hidden_size: int, dropout: float) -> nn.Sequential:
    """The head every window network ends with: a hidden layer over the sequence summary
    and the last event's own features, then the logit."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_size),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, 1),
    )


class RecurrentClassifier(nn.Module):
    """Embeddings, a recurrent layer over the window, and a head on the last valid step.

    Windows are left-aligned, so the output at step `length - 1` depends on the valid
    events only. The head also sees the current event's own features directly (a skip
    connection), which spares the recurrent state from carrying them.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = EventEmbedding(n_numeric, cardinalities)
        self.rnn = CELLS[cell](
            self.embed.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = classifier_head(hidden_size + self.embed.out_dim, hidden_size, dropout)

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_events(self.embed(numeric, categorical), lengths)

    def states(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The encoder's output (B, K, hidden_size) at every step of embedded windows: what
        the head reads at the last valid step, and what pretraining (`fraudseq.pretraining`)
        predicts masked events from. The encoder is every module but `head`."""
        return self.rnn(events)[0]

    def forward_events(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits from already embedded windows (B, K, D); scoring embeds each event once
        instead of once per window it appears in."""
        outputs = self.states(events, lengths)
        last = (lengths - 1).view(-1, 1, 1)
        last_output = outputs.gather(1, last.expand(-1, 1, outputs.size(-1))).squeeze(1)
        last_event = events.gather(1, last.expand(-1, 1, events.size(-1))).squeeze(1)
        return self.head(torch.cat([last_output, last_event], dim=-1)).squeeze(-1)
