"""An event-sequence transformer (`transformer`) that returns logits.

A window's events (oldest first, left-aligned, zero padded after `length`) go through:

- **field embeddings per event**: each categorical column has its own embedding table and
  each numeric feature its own column of the input projection (`EventEmbedding`, shared
  with the recurrent families, then a linear map to `d_model`);
- **time-aware positions**: the time from each event to the scored (last) event,
  `log(1 + seconds)`, through a Time2Vec encoding (one linear and `d_model - 1` periodic
  components, learned), plus a learned embedding of the number of steps back from the
  scored event. The seconds come from the window's own rows: the `recency` block's
  `log_gap_seconds` (the gap from each event to the one before it, scaled by the encoder)
  is unscaled, and the gaps of the events after event i, up to the scored one, are summed.
  They all lie inside the window and end at the scored event, so nothing later is read.
  Without the `recency` block the time part is 0 and only the step positions remain;
- `layers` pre-norm transformer blocks with **causal** self-attention (an event attends to
  itself and earlier events) that also masks **padding** keys; padded inputs are zeroed
  before the first block, so neither their features nor their codes reach a valid step;
- **last-token pooling**: the head reads the scored event's output (with its own
  features as a skip connection, as the recurrent families' heads do).

`EventSequenceEncoder` (embedding, time and positions, blocks, final norm) is a module of
its own, `TransformerClassifier.encoder`, so that a pretrained encoder's weights (the
`encoder.` keys of a state dict) can fill it; the classifier adds only the head.

`forward_events(events, lengths, return_attention=True)` also returns the scored event's
attention over the window in the last block, averaged over heads (B, K): it sums to 1 over
the valid steps and is 0 on padding. An explanation's occlusion replaces an event's whole
row, its gap too, so the times of the events before it move with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fraudseq.models.attention import _heads, last_step, padding_mask
from fraudseq.models.recurrent import EventEmbedding, classifier_head

#: The encoded feature the gaps between events are read from (the `recency` block's).
GAP_FEATURE = "log_gap_seconds"
#: Largest unscaled log1p(gap in seconds) read; e**50 s is far beyond any clipped gap.
MAX_LOG_GAP = 50.0


def gap_scaling(encoder) -> tuple[int, float, float] | None:
    """(column, mean, scale) of `GAP_FEATURE` among a fitted FeatureEncoder's numeric
    features, from which a window's gaps are unscaled; None without the recency block."""
    names = list(encoder.numeric_names_)
    if GAP_FEATURE not in names:
        return None
    i = names.index(GAP_FEATURE)
    return i, float(encoder.means_[i]), float(encoder.scales_[i])


class TimeToScored(nn.Module):
    """log(1 + seconds from each event to the window's last valid event) (B, K), from the
    scaled gap column of the embedded events; 0 on the last event and on padding."""

    def __init__(self, gap: tuple[int, float, float] | None, window: int) -> None:
        super().__init__()
        self.column = None if gap is None else int(gap[0])
        mean, scale = (0.0, 1.0) if gap is None else (float(gap[1]), float(gap[2]))
        # Derived from the encoder at build time, not weights: not saved in the state dict.
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)
        # later[j, i] = 1 when step j comes after step i: elapsed_i = sum_j gap_j later[j, i]
        later = torch.triu(torch.ones(window, window), diagonal=1).T
        self.register_buffer("later", later, persistent=False)

    def forward(self, events: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if self.column is None:
            return torch.zeros(valid.shape, dtype=events.dtype, device=events.device)
        log_gap = events[..., self.column] * self.scale + self.mean
        seconds = torch.exp(log_gap.clamp(0.0, MAX_LOG_GAP)) - 1.0
        seconds = torch.where(valid, seconds, torch.zeros_like(seconds))
        steps = valid.size(1)
        # sums of non-negative terms: no cancellation for recent events after an old one
        elapsed = seconds @ self.later[:steps, :steps]
        return torch.log(1.0 + elapsed)


class Time2Vec(nn.Module):
    """[w0 t + b0, sin(w t + b)] of a scalar time t: one linear and `dim - 1` periodic
    components, all learned (Kazemi et al., 2019)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(1, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        z = self.linear(t.unsqueeze(-1))
        return torch.cat([z[..., :1], torch.sin(z[..., 1:])], dim=-1)


class TransformerBlock(nn.Module):
    """Pre-norm block: masked multi-head self-attention, then a feed-forward layer, each
    with a residual connection."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, 2 * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * d_model, d_model),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor):
        """(outputs (B, K, D), attention weights (B, heads, K, K)); `allowed` (B, K, K) is
        True where query step i may attend to key step j."""
        b, k, d = x.shape
        h = self.heads
        q, key, v = self.qkv(self.attention_norm(x)).view(b, k, 3, h, d // h).permute(2, 0, 3, 1, 4)
        scores = q @ key.transpose(-1, -2) / math.sqrt(d // h)
        weights = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1)
        attended = (self.dropout(weights) @ v).transpose(1, 2).reshape(b, k, d)
        x = x + self.dropout(self.out(attended))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x))), weights


class EventSequenceEncoder(nn.Module):
    """Events -> contextual states (B, K, d_model): field embeddings, time-aware positions
    and causal, padding-masked transformer blocks (see the module docstring). The part a
    pretrained encoder fills."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        window: int,
        gap: tuple[int, float, float] | None = None,
        d_model: int = 32,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = EventEmbedding(n_numeric, cardinalities)
        self.project = nn.Linear(self.embed.out_dim, d_model)
        self.time_to_scored = TimeToScored(gap, window)
        self.time = Time2Vec(d_model)
        self.steps_back = nn.Embedding(window, d_model)
        self.input_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        heads = _heads(d_model, heads)
        self.blocks = nn.ModuleList(
            TransformerBlock(d_model, heads, dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward_events(self, events: torch.Tensor, lengths: torch.Tensor):
        """(states (B, K, d_model), the last block's attention weights (B, heads, K, K))
        from embedded windows (B, K, embed.out_dim); `layers` >= 1. States on padding are
        defined but never read by a valid step."""
        steps = events.size(1)
        padding = padding_mask(lengths, steps)
        valid = ~padding
        index = torch.arange(steps, device=events.device)
        back = (lengths[:, None] - 1 - index[None, :]).clamp(min=0)
        x = self.project(events) + self.time(self.time_to_scored(events, valid))
        x = self.dropout(self.input_norm(x + self.steps_back(back)))
        x = x.masked_fill(padding[..., None], 0.0)  # whatever padding held (NaN too)
        causal = index[None, :] <= index[:, None]  # (K, K): key j at or before query i
        allowed = causal[None] & valid[:, None, :]  # key 0 is always allowed: no empty row
        for block in self.blocks:
            x, weights = block(x, allowed)
        return self.norm(x), weights


class TransformerClassifier(nn.Module):
    """`EventSequenceEncoder` -> the scored (last valid) event's state, with that event's
    own features -> head -> logit."""

    def __init__(
        self,
        n_numeric: int,
        cardinalities: list[int],
        *,
        hidden_size: int = 32,
        dropout: float = 0.1,
        **encoder,
    ) -> None:
        """`hidden_size` is the encoder's d_model; `encoder` holds the rest of its
        arguments (window, gap, layers, heads)."""
        super().__init__()
        self.encoder = EventSequenceEncoder(
            n_numeric, cardinalities, d_model=hidden_size, dropout=dropout, **encoder
        )
        self.head = classifier_head(hidden_size + self.embed.out_dim, hidden_size, dropout)

    @property
    def embed(self) -> EventEmbedding:
        """The per-event embedding (what `predict_logits` applies to every row once)."""
        return self.encoder.embed

    def forward(
        self, numeric: torch.Tensor, categorical: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return self.forward_events(self.embed(numeric, categorical), lengths)

    def states(self, events: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The encoder's states (B, K, hidden_size) of embedded windows (as
        `RecurrentClassifier.states`: what pretraining predicts masked events from)."""
        return self.encoder.forward_events(events, lengths)[0]

    def forward_events(
        self, events: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False
    ):
        """Logits (B,) from embedded windows (B, K, D); with `return_attention`, also the
        scored event's attention weights over the window (B, K) in the last block,
        averaged over heads."""
        states, weights = self.encoder.forward_events(events, lengths)
        features = torch.cat([last_step(states, lengths), last_step(events, lengths)], dim=-1)
        logits = self.head(features).squeeze(-1)
        if not return_attention:
            return logits
        return logits, last_step(weights.mean(dim=1), lengths)
