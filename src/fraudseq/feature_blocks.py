"""Feature blocks: functions from an entity-sorted frame to named raw feature columns.

Every block is causal: the value for a transaction may depend on that transaction and the
same entity's earlier ones (and, for labels, only on labels older than the label delay).
Scaling is not done here; the FeatureEncoder fits it on training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NS_PER_SECOND = 1_000_000_000
SECONDS_PER_DAY = 86_400


@dataclass
class SortedFrame:
    """The columns a feature block needs, in entity-sorted order (entity, time, file order).

    `categorical` and `counterparty` hold integer codes of the raw values, comparable within
    this frame only. `label` is 0/1 as float, NaN where unknown (or None without a label
    column); blocks may only use a label once it is older than `label_delay_ns`.
    """

    time_ns: np.ndarray
    amount: np.ndarray
    starts: np.ndarray
    extra_numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    counterparty: np.ndarray | None = None
    label: np.ndarray | None = None
    label_delay_ns: int = 7 * SECONDS_PER_DAY * NS_PER_SECOND

    @property
    def has_previous(self) -> np.ndarray:
        return np.arange(len(self.time_ns)) > self.starts



def event_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """What the transaction alone shows: signed log-amount, cyclic time of day and week."""
    seconds = frame.time_ns // NS_PER_SECOND
    day_fraction = (seconds % SECONDS_PER_DAY) / SECONDS_PER_DAY
    week_fraction = ((seconds // SECONDS_PER_DAY + 3) % 7) / 7  # 1970-01-01 was a Thursday
    return {
        "log_amount": np.sign(frame.amount) * np.log1p(np.abs(frame.amount)),
        "hour_sin": np.sin(2 * np.pi * day_fraction),
        "hour_cos": np.cos(2 * np.pi * day_fraction),
        "dow_sin": np.sin(2 * np.pi * week_fraction),
        "dow_cos": np.cos(2 * np.pi * week_fraction),
    }


def recency_features(frame: SortedFrame) -> dict[str, np.ndarray]:
    """Time since the entity's previous transaction (0 with has_previous=0 for its first)."""
    has_prev = frame.has_previous
    gap = np.zeros(len(frame.time_ns), dtype=np.float64)
    gap[1:] = (frame.time_ns[1:] - frame.time_ns[:-1]) / NS_PER_SECOND
    gap[~has_prev] = 0.0
    return {"log_gap_seconds": np.log1p(gap), "has_previous": has_prev.astype(np.float64)}


# Blocks are computed in entity-sorted order; each may only look backwards in time.
FEATURE_BLOCKS = {"event": event_features, "recency": recency_features}
