"""Recurrent classifiers with attention over the window, returning logits.

- `AttentionLSTMClassifier` (`lstm-attention`): an LSTM (unidirectional by default), then
  multi-head attention from the last valid step over every valid step of the window, a
  residual connection and layer norm, and a head on that step plus the last event's features.
- `BiLSTMAttentionClassifier` (`bilstm-attention`): a packed bidirectional LSTM, learned
  query/key/value projections with masked scaled dot-product attention, the attention output
  concatenated with the LSTM output, a second (unidirectional) LSTM and a head on the last
  valid step.

Windows are left-aligned, so padding steps come after step `length - 1`. Both networks mask
padding as attention keys, and the bidirectional LSTM is packed so its backward direction
starts at the last valid step: padding content never changes a logit. Looking both ways
inside the window is allowed because the window ends at the scored transaction.

Both networks take `forward_events(events, lengths, return_attention=True)` to return
`(logits, weights)`, where `weights` (B, K) is the last valid step's attention over the
window (averaged over heads): it sums to 1 over the valid steps and is 0 on padding.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fraudseq.models.neural import NeuralWindowModel
from fraudseq.models.recurrent import EventEmbedding, classifier_head
from fraudseq.training import WindowSet


def padding_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, K) bool mask, True on padding steps (at or after each window's length)."""
    return torch.arange(steps, device=lengths.device)[None, :] >= lengths[:, None]


def last_step(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, D) values at each window's last valid step, from (B, K, D)."""
    last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, values.size(-1))
    return values.gather(1, last).squeeze(1)


def run_packed(rnn: nn.LSTM, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run `rnn` over the valid steps only; outputs on padding steps are zeros."""
    packed = pack_padded_sequence(events, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, _ = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=events.size(1))
    return outputs


def _heads(width: int, wanted: int) -> int:
    """The largest head count <= `wanted` that divides `width`."""
    return next(h for h in range(max(1, min(wanted, width)), 0, -1) if width % h == 0)


class AttentionLSTMClassifier(nn.Module):
    """LSTM -> multi-head attention of the last valid step over the window -> residual +
    layer norm -> head (with the last event's own features as a skip connection).

    Only the last step's attention output reaches the head, so only its query is computed:
    the same numbers as full self-attention followed by picking the last step, K times cheaper.
    """

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
        bidirectional: bool = False,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.embed = EventEmbedding(n_numeric, cardinalities)
        self.bidirectional = bidirectional
        self.rnn = nn.LSTM(
            self.embed.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        width = hidden_size * (2 if bidirectional else 1)
        self.attention = nn.MultiheadAttention(
            width, _heads(width, heads), dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(width)
        self.head = classifier_head(width + self.embed.out_dim, hidden_size, dropout)

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_events(self.embed(numeric, categorical), lengths)

    def forward_events(
        self, events: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False
    ):
        """Logits (B,) from embedded windows (B, K, D); with `return_attention`, also the
        last step's attention weights (B, K) averaged over heads."""
        if self.bidirectional:  # the backward direction must start at the last valid step
            outputs = run_packed(self.rnn, events, lengths)
        else:  # left-aligned: outputs on valid steps never see the padding after them
            outputs, _ = self.rnn(events)
        query = last_step(outputs, lengths).unsqueeze(1)
        attended, weights = self.attention(
            query,
            outputs,
            outputs,
            key_padding_mask=padding_mask(lengths, events.size(1)),
            need_weights=return_attention,
            average_attn_weights=True,
        )
        context = self.norm(query + attended).squeeze(1)
        logits = self.head(torch.cat([context, last_step(events, lengths)], dim=-1)).squeeze(-1)
        return (logits, weights.squeeze(1)) if return_attention else logits


class BiLSTMAttentionClassifier(nn.Module):
    """Packed BiLSTM -> masked scaled dot-product attention (learned Q/K/V) -> [LSTM output,
    attention output] -> LSTM -> head on the last valid step (plus the last event)."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = EventEmbedding(n_numeric, cardinalities)
        self.encoder = nn.LSTM(
            self.embed.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=True,
        )
        width = 2 * hidden_size
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.LSTM(2 * width, hidden_size, batch_first=True)
        self.head = classifier_head(hidden_size + self.embed.out_dim, hidden_size, dropout)

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_events(self.embed(numeric, categorical), lengths)

    def forward_events(
        self, events: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False
    ):
        """Logits (B,) from embedded windows (B, K, D); with `return_attention`, also the
        last valid step's attention weights (B, K)."""
        encoded = run_packed(self.encoder, events, lengths)  # zeros on padding
        q, k, v = self.query(encoded), self.key(encoded), self.value(encoded)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1))
        mask = padding_mask(lengths, events.size(1))
        weights = scores.masked_fill(mask[:, None, :], float("-inf")).softmax(dim=-1)
        attended = self.dropout(weights) @ v
        # Unidirectional over left-aligned windows: the last valid output ignores the padding.
        outputs, _ = self.decoder(self.dropout(torch.cat([encoded, attended], dim=-1)))
        last = torch.cat([last_step(outputs, lengths), last_step(events, lengths)], dim=-1)
        logits = self.head(last).squeeze(-1)
        if not return_attention:
            return logits
        return logits, last_step(weights, lengths)


ATTENTION_NETWORKS = {
    "lstm-attention": AttentionLSTMClassifier,
    "bilstm-attention": BiLSTMAttentionClassifier,
}


class AttentionWindowModel(NeuralWindowModel):
    """A `NeuralWindowModel` that can also report where each window's last step looked."""

    @torch.inference_mode()
    def attention(self, windows: WindowSet, batch_size: int = 4096) -> np.ndarray:
        """Attention weights (N, K) of each window's last valid step over its steps (oldest
        first, zeros on padding), in the order of `windows.positions`."""
        self.network.eval()
        source = windows.source
        out = np.zeros((len(windows), source.window), dtype=np.float32)
        for start in range(0, len(windows), batch_size):
            numeric, categorical, lengths = source.batch(
                windows.positions[start : start + batch_size]
            )
            events = self.network.embed(numeric, categorical)
            _, weights = self.network.forward_events(events, lengths, return_attention=True)
            out[start : start + len(lengths)] = weights.numpy()
        return out
