"""The feature blocks, each declared once (`fraudseq.features.declaration.Block`)."""

from __future__ import annotations

from fraudseq.features.blocks import (
    amount_history,
    counterparty,
    event,
    exposure,
    new_values,
    novelty,
    recency,
    velocity,
)
from fraudseq.features.declaration import Block

#: By name, in the order their features are computed.
BLOCKS: dict[str, Block] = {
    module.BLOCK.name: module.BLOCK
    for module in (
        event, recency, amount_history, novelty, velocity, counterparty, new_values, exposure,
    )
}  # fmt: skip
