"""What a feature block declares: its features, the per-entity state it needs, its kernel.

A block is declared once and runs in every context through its vectorised `kernel`
(training from an empty state, chunks with carried state, live batches over stored states,
one live transaction as a batch of one). Its `scalar` form is the one-transaction fast path
of live scoring; `tests/test_feature_kernels.py` holds it to the kernel for every block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class StateNeed:
    """Per-entity state a block reads (fields of `fraudseq.features.state`).

    `events`: the latest `last` events' times and amounts and every event within `span_ns`
    of the latest (at most VELOCITY_CAP). `novelty`: the seen values with their first-seen
    times, and the new-value totals of the latest NOVELTY_WINDOW - 1 events. `aggregates`:
    count, last time, running sum and max of log-amounts. `counterparty`: the hour buckets
    of the row's counterparty (a state under its own key)."""

    kind: str  # "aggregates" | "events" | "novelty" | "counterparty"
    last: int = 0
    span_ns: int = 0


@dataclass(frozen=True)
class Block:
    """A feature block: `names(categorical, has_counterparty)` lists its features in order;
    `kernel(context)` computes them for a chunk (`fraudseq.features.kernel.Context`);
    `scalar(point)` for one transaction (`fraudseq.features.kernel.Point`). `history`:
    whether its values depend on the entity's earlier events (a late insertion recomputes
    them in later rows)."""

    name: str
    names: Callable[[tuple[str, ...], bool], list[str]]
    kernel: Callable
    scalar: Callable
    needs: tuple[StateNeed, ...] = ()
    history: bool = True

    @property
    def by_counterparty(self) -> bool:
        """Whether it reads only its row's counterparty state: then it can run keyed by
        counterparty over a whole file, apart from the entities (`fraudseq.engine.keyed`)."""
        return bool(self.needs) and all(need.kind == "counterparty" for need in self.needs)

    def applies(self, categorical: tuple[str, ...], has_counterparty: bool) -> bool:
        """Whether the block yields any feature for data of this shape."""
        return bool(self.names(categorical, has_counterparty))
