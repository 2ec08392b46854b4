"""Alert threshold strategies, chosen on validation scores; an alert is `score >= threshold`.

Strategies are written as text so they travel through the CLI and model.json:
`best-f1`, `cost:FN,FP` (or `cost:FN,FP,amount` to weight each missed fraud by its amount),
`recall:R`, `precision:P`, `budget:K` (K alerts per day) and `percentile:P`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fraudseq.errors import FraudseqError

STRATEGIES = (
    "best-f1",
    "cost:FN,FP[,amount]",
    "recall:R",
    "precision:P",
    "budget:K",
    "percentile:P",
)


def _curve(y: np.ndarray, score: np.ndarray, weight: np.ndarray | None = None):
    """Candidate thresholds (distinct scores, descending) with the cumulative true and false
    positives (and caught positive weight) of alerting at each."""
    order = np.argsort(-score, kind="stable")
    s, y_sorted = score[order], y[order].astype(np.float64)
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = np.cumsum(1 - y_sorted)[last_of_tie]
    caught = None if weight is None else np.cumsum(y_sorted * weight[order])[last_of_tie]
    return s[last_of_tie], tp, fp, caught


# Each kind's usage and the check its values must pass.
_FORMS = {
    "best-f1": ("best-f1 (no value)", 0, lambda v: True),
    "cost": (
        "cost:FN,FP[,amount] with FN, FP >= 0, not both 0",
        2,
        lambda v: min(v) >= 0 and max(v) > 0,
    ),
    "recall": ("recall:R with 0 < R <= 1", 1, lambda v: 0 < v[0] <= 1),
    "precision": ("precision:P with 0 < P <= 1", 1, lambda v: 0 < v[0] <= 1),
    "budget": (
        "budget:K with K a whole number >= 1 (alerts per day)",
        1,
        lambda v: v[0] >= 1 and v[0] == int(v[0]),
    ),
    "percentile": ("percentile:P with 0 <= P <= 100", 1, lambda v: 0 <= v[0] <= 100),
}


def parse_strategy(strategy: str, option: str | None = None) -> tuple[str, list[float], bool]:
    """(kind, values, weighted by amount) of a strategy, or raise naming its valid form (and
    `option`, the CLI's, which calls this before any work so a typo does not wait for it)."""
    where = f"{option}: " if option else ""
    kind, _, rest = strategy.strip().partition(":")
    if kind not in _FORMS:
        raise FraudseqError(
            f"{where}unknown threshold strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    usage, count, valid = _FORMS[kind]
    parts = [v.strip() for v in rest.split(",")] if rest else []
    weighted = kind == "cost" and len(parts) == 3 and parts[2] == "amount"
    try:
        values = [float(v) for v in (parts[:2] if weighted else parts)]
    except ValueError:
        values = []
    if len(values) != count or not np.isfinite(values).all() or not valid(values):
        raise FraudseqError(f"{where}threshold strategy {strategy!r}: expected {usage}")
    return kind, values, weighted


def needs_fraud(strategy: str) -> bool:
    """Whether `strategy` needs fraud in the data (percentile and budget rank scores only)."""
    return parse_strategy(strategy)[0] not in ("percentile", "budget")


class Choice(NamedTuple):
    """A chosen threshold and, when it is +inf (the strategy alerts on nothing), why."""

    threshold: float
    reason: str | None = None


def choose_threshold(
    strategy: str,
    y: np.ndarray,
    score: np.ndarray,
    *,
    amount: np.ndarray | None = None,
    days: float | None = None,
) -> float:
    """The threshold `strategy` picks on (y, score); `amount` and `days` (the period's length,
    possibly fractional) serve `cost:...,amount` and `budget:K`."""
    return choose(strategy, y, score, amount=amount, days=days).threshold


def choose(
    strategy: str,
    y: np.ndarray,
    score: np.ndarray,
    *,
    amount: np.ndarray | None = None,
    days: float | None = None,
    period: str = "validation",
) -> Choice:
    """`choose_threshold` with, when the threshold is +inf, why: naming `period` (where
    (y, score) come from). Only `precision:P` (P never reached) and `cost:...` (alerting on
    nothing is cheapest) can alert on nothing."""
    kind, values, weighted = parse_strategy(strategy)
    y, score = np.asarray(y), np.asarray(score, dtype=np.float64)
    if len(score) == 0:
        raise FraudseqError("cannot choose a threshold on zero scored transactions")
    if kind == "percentile":
        return Choice(float(np.percentile(score, values[0])))
    if kind == "budget":
        n_alerts = max(1, round(values[0] * (days or 1)))
        return Choice(float(np.sort(score)[::-1][min(n_alerts, len(score)) - 1]))
    if y.sum() == 0:
        return Choice(0.5)  # nothing to calibrate against
    thresholds, tp, fp, caught = _curve(y, score, amount if weighted else None)
    positives = y.sum()
    if kind == "best-f1":
        f1 = 2 * tp / (tp + fp + positives)
        return Choice(float(thresholds[int(np.argmax(f1))]))
    if kind == "cost":
        cost_fn, cost_fp = values
        missed = (np.sum(y * amount) - caught) if weighted else positives - tp
        cost = cost_fn * missed + cost_fp * fp
        # alerting on nothing is a candidate too
        none_cost = cost_fn * (np.sum(y * amount) if weighted else positives)
        best = int(np.argmin(cost))
        if none_cost < cost[best]:
            return Choice(
                float(np.inf),
                f"{strategy}: alerting on nothing was cheapest on {period}: it cost "
                f"{none_cost:,.2f} (every fraud missed), the cheapest threshold "
                f"{thresholds[best]:.4f} cost {cost[best]:,.2f} ({int(tp[best] + fp[best]):,} "
                "alerts)",
            )
        return Choice(float(thresholds[best]))
    if kind == "recall":
        reached = np.flatnonzero(tp / positives >= values[0] - 1e-12)
        return Choice(float(thresholds[reached[0]] if len(reached) else thresholds[-1]))
    (p,) = values  # precision
    precision = tp / (tp + fp)
    reached = np.flatnonzero(precision >= p - 1e-12)
    if len(reached):
        return Choice(float(thresholds[reached[-1]]))
    best = int(np.argmax(precision))
    return Choice(
        float(np.inf),
        f"{strategy} was not reached on {period}: the highest precision there was "
        f"{precision[best]:.4f} ({int(tp[best]):,} fraud in {int(tp[best] + fp[best]):,} "
        f"alerts at threshold {thresholds[best]:.4f})",
    )


def best_f1(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold that maximises F1 on (y, score)."""
    return choose_threshold("best-f1", y, score)
