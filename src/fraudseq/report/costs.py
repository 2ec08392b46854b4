"""The alerting costs a report prices its operating points with, and where they come from.

A model whose threshold was chosen by `cost:FN,FP[,amount]` was tuned for those costs, so the
report prices alerts the same way unless told otherwise; pricing them at the package defaults
instead would make the model's own threshold look worse than another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fraudseq import metrics
from fraudseq.thresholds import parse_strategy


@dataclass(frozen=True)
class Costs:
    """A missed fraud costs `fn` (times its amount when `by_amount`), a false alert `fp`;
    `source` says where these values come from."""

    fn: float
    fp: float
    by_amount: bool
    source: str

    @property
    def note(self) -> str:
        per_amount = " × amount" if self.by_amount else ""
        return f"missed fraud = {self.fn:g}{per_amount}, alert = {self.fp:g}"

    def at(self, y: np.ndarray, score: np.ndarray, amount: np.ndarray, threshold: float) -> float:
        """The cost of alerting at `score >= threshold`."""
        return metrics.cost_at_threshold(
            y,
            score,
            threshold,
            cost_fp=self.fp,
            cost_fn=self.fn,
            amount=amount if self.by_amount else None,
        )

    def curve(self, y: np.ndarray, score: np.ndarray, amount: np.ndarray) -> dict:
        """`metrics.threshold_curve` priced with these costs."""
        return metrics.threshold_curve(
            y, score, amount=amount, cost_fp=self.fp, cost_fn=self.fn, cost_by_amount=self.by_amount
        )


def model_cost_strategy(model) -> str | None:
    """The model's threshold strategy when it is `cost:...`, else the first stored cost
    strategy (model.json's threshold "all"), else None."""
    stored = [getattr(model, "threshold", None), *(getattr(model, "thresholds_", None) or {})]
    return next(
        (s for s in stored if isinstance(s, str) and s.partition(":")[0].strip() == "cost"), None
    )


def report_costs(
    model,
    *,
    cost_fn: float | None = None,
    cost_fp: float | None = None,
    by_amount: bool | None = None,
) -> Costs:
    """Each cost as given; those not given (None) from the model's cost strategy, or the
    package defaults (`metrics.COST_FN`, `metrics.COST_FP`, per event) without one."""
    strategy = model_cost_strategy(model)
    if strategy is None:
        base = (metrics.COST_FN, metrics.COST_FP, False)
        source = "package defaults (the model's threshold strategy sets no costs)"
    else:
        _, values, weighted = parse_strategy(strategy)
        base = (*values, weighted)
        source = f"from the model's threshold strategy {strategy}"
    given = (cost_fn, cost_fp, by_amount)
    if all(v is not None for v in given):
        source = "set for this report"
    elif any(v is not None for v in given):
        source = f"partly set for this report, the rest {source}"
    fn, fp, weighted = (b if v is None else v for v, b in zip(given, base, strict=True))
    return Costs(float(fn), float(fp), bool(weighted), source)
