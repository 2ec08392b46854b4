"""First-seen flags per categorical column, and their count over the last 16 events.

new_<c>: 1.0 if the row's value of c never occurred in the entity's previous transactions
(so 1.0 on its first transaction), else 0.0; a missing value is a value of its own.
new_values_in_window: the sum of all new_<c> flags over the entity's last 16 transactions,
the current one included. No categorical columns: no features.
"""

from __future__ import annotations

from fraudseq.features.constants import NOVELTY_WINDOW
from fraudseq.features.declaration import Block, StateNeed
from fraudseq.features.kernel import novelty_window_totals


def _names(categorical, has_counterparty) -> list[str]:
    if not categorical:
        return []
    return [*(f"new_{c}" for c in categorical), "new_values_in_window"]


def _kernel(ctx) -> dict:
    columns = ctx.columns
    if not columns:
        return {}
    out = {f"new_{c}": new * 1.0 for c, new in zip(columns, ctx.fresh, strict=True)}
    out["new_values_in_window"] = novelty_window_totals(ctx).astype(float)
    return out


def _scalar(p) -> dict:
    if not p.columns:
        return {}
    out = {f"new_{column}": float(new) for column, new in zip(p.columns, p.new, strict=True)}
    recent = p.account.new_totals[-(NOVELTY_WINDOW - 1) :]
    out["new_values_in_window"] = float(sum(recent) + sum(p.new))
    return out


BLOCK = Block(
    name="novelty",
    names=_names,
    kernel=_kernel,
    scalar=_scalar,
    needs=(StateNeed("novelty"),),
)
