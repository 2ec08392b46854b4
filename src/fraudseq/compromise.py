"""Common points of compromise: counterparties whose visitors later turned fraudulent.

Card data stolen at one merchant (a skimmer, a breached web shop) is used elsewhere days
later, in purchases that look ordinary for the card, so no per-account model sees it. The
clue is across accounts: the cards that visited merchant M in a period have since had far
more fraud than the cards that visited anywhere else. This is the fraud team's "common point
of purchase" analysis, vectorised (`fraudseq compromise`, and a section of the report).

Definitions, over the transactions of [start, end):

- **visit**: a transaction of an entity at a counterparty that is not a known fraud itself
  (a fraud at M is where stolen data is *used*, not where it was stolen), made before the
  entity's first known fraud (a card already compromised cannot be compromised at M);
- **visitors** of M: the distinct entities with a visit at M;
- **later-fraud visitors**: those whose first known fraud follows a visit at M within
  `window_days` (strictly after the visit) and falls before `end`. Labels of transactions at
  or after `end` are not known: a fraud after `end` does not count, which is why the last
  `window_days` before `end` under-count;
- **base rate**: later-fraud visitors over visitors, pooled over every (entity,
  counterparty) pair of the period, i.e. the share expected of a counterparty unrelated to
  any compromise; **lift** = a counterparty's share / the base rate;
- **interval**: exact (Clopper-Pearson) binomial interval of the share, simultaneous over
  the counterparties with visitors (Bonferroni: each at 1 - (1 - level) / m), divided by the
  base rate for the lift. Counterparties are ranked by the lift's lower bound, so that 2
  later-fraud visitors of 2 do not outrank 40 of 200: among thousands of counterparties, a
  few small ones reach 2 of 2 by chance;
- **suspected window**: the first and last visit, among the visits followed by a fraud
  within `window_days`, at that counterparty.

With a scenario column (ground truth), `scenario` says which scenario most of the
later-fraud visitors' first frauds had, and how many: to read a ranking, never an input.
Use a period of a week or a few: over months, most regular visitors of any place have some
fraud within `window_days` of one of their visits, and the base rate approaches the share of
entities with any fraud.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.schema import Schema
from fraudseq.splits import parse_time

DAY_NS = 86_400 * 10**9
COLUMNS = (
    "rank",
    "counterparty",
    "visitors",
    "later_fraud",
    "share",
    "share_low",
    "share_high",
    "lift",
    "lift_low",
    "lift_high",
    "first_visit",
    "last_visit",
    "median_days_to_fraud",
)
LABELS_NOTE = (
    "labels of transactions at or after `until` are not known and are not used; a visitor "
    "whose fraud comes later is counted as genuine, so the last window_days before `until` "
    "under-count"
)


@dataclass
class CompromiseResult:
    """The ranked counterparties (`table`, one row per counterparty with a visit; columns
    `COLUMNS`, and `scenario` when the data has one) and the numbers the ranking is
    relative to."""

    table: pd.DataFrame
    base_rate: float
    visitors: int  # (entity, counterparty) pairs with a visit
    later_fraud: int  # of which followed by a fraud within the window
    parameters: dict

    def top(self, n: int) -> pd.DataFrame:
        return self.table.head(n)

    def to_dict(self, top: int | None = None) -> dict:
        """JSON-ready: the parameters, base rate, totals and the `top` ranked rows (all by
        default); times as ISO text, undefined numbers as None."""
        rows = self.table if top is None else self.table.head(top)
        suspects = rows.astype(object).where(rows.notna(), None).to_dict("records")
        for row in suspects:
            for key in ("first_visit", "last_visit"):
                if row[key] is not None:
                    row[key] = pd.Timestamp(row[key]).isoformat()
        return {
            "parameters": self.parameters,
            "base_rate": self.base_rate,
            "visitor_pairs": self.visitors,
            "later_fraud_pairs": self.later_fraud,
            "counterparties": len(self.table),
            "suspects": suspects,
        }


def check_schema(schema: Schema, columns) -> None:
    """Raise, naming the fix, unless the schema has a counterparty and a label in `columns`."""
    if schema.counterparty is None:
        raise FraudseqError(
            "the schema names no counterparty column, so there is nothing to rank: add "
            'counterparty = "COLUMN" (the merchant or terminal) under [columns]'
        )
    if schema.label is None:
        raise FraudseqError(
            "the schema names no label column: the analysis needs known frauds; add "
            'label = "COLUMN" (0/1) under [columns]'
        )
    for role, name in (("counterparty", schema.counterparty), ("label", schema.label)):
        if name not in columns:
            raise FraudseqError(f"the data has no {role} column {name!r} (the schema's {role})")


def rank_counterparties(
    frame: pd.DataFrame,
    schema: Schema,
    *,
    start=None,
    end=None,
    window_days: float = 30.0,
    level: float = 0.95,
) -> CompromiseResult:
    """Rank the counterparties of `frame` (a `load_transactions` frame) by evidence of being
    a common point of compromise in [start, end); see the module docstring.

    Rows at or after `end` are ignored entirely (their labels are not known then); rows
    before `start` are history: a fraud there marks the entity as already compromised.
    """
    from scipy.stats import beta

    check_schema(schema, frame.columns)
    if not window_days > 0:
        raise FraudseqError(f"window_days must be > 0, got {window_days}")
    if not 0 < level < 1:
        raise FraudseqError(f"level must be between 0 and 1, got {level}")
    start, end = parse_time(start, "--from"), parse_time(end, "--until")
    if start is not None and end is not None and start >= end:
        raise FraudseqError(f"--from {start} is not before --until {end}")
    times = frame[schema.time].to_numpy("datetime64[ns]").astype(np.int64)
    known = np.ones(times.size, dtype=bool) if end is None else times < end.value
    entity, _ = pd.factorize(frame[schema.entity_column].to_numpy()[known])
    party, parties = pd.factorize(frame[schema.counterparty].to_numpy()[known])
    t = times[known]
    fraud = pd.to_numeric(frame[schema.label], errors="coerce").to_numpy()[known] == 1

    # Each entity's first known fraud (int64 max: none).
    first_fraud = np.full(entity.max() + 1 if entity.size else 0, np.iinfo(np.int64).max)
    earliest = pd.Series(t[fraud]).groupby(entity[fraud]).min()
    first_fraud[earliest.index.to_numpy()] = earliest.to_numpy()
    first_kind = _first_fraud_scenario(frame, schema, known, entity, fraud, t, first_fraud)

    visit = ~fraud & (t < first_fraud[entity])
    if start is not None:
        visit &= t >= start.value
    entity, party, t = entity[visit], party[visit], t[visit]
    gap = first_fraud[entity] - t  # > 0 for every visit
    followed = gap <= window_days * DAY_NS

    stride = max(int(first_fraud.size), 1)  # pair code: counterparty * stride + entity
    pair = party.astype(np.int64) * stride + entity
    visitors = np.bincount(np.unique(pair) // stride, minlength=parties.size)
    # Later-fraud pairs, each by its last visit before the fraud (the shortest gap).
    per_pair = pd.Series(gap[followed]).groupby(pair[followed], sort=False).min()
    later_party = per_pair.index.to_numpy() // stride
    later = np.bincount(later_party, minlength=parties.size)
    days = pd.Series(per_pair.to_numpy() / DAY_NS).groupby(later_party).median()
    days_to_fraud = days.reindex(range(parties.size)).to_numpy()
    visited = pd.Series(t[followed].astype("datetime64[ns]"))
    window = visited.groupby(party[followed]).agg(["min", "max"]).reindex(range(parties.size))
    scenario = None
    if first_kind is not None and parties.size:  # ground truth to read the ranking by
        kind = first_kind[per_pair.index.to_numpy() % stride]
        counts = pd.crosstab(later_party, kind)
        text = counts.idxmax(axis=1).astype(str) + " (" + counts.max(axis=1).astype(str) + ")"
        scenario = text.reindex(range(parties.size)).fillna("").to_numpy()

    seen = visitors > 0
    n_visits, n_later = int(visitors.sum()), int(later.sum())
    base = n_later / n_visits if n_visits else float("nan")
    m = max(int(seen.sum()), 1)
    alpha = (1 - level) / m
    k, n = later.astype(float), visitors.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
        lift = share / base if base > 0 else np.full(share.size, np.nan)
        lift_low = low / base if base > 0 else np.full(share.size, np.nan)
        lift_high = high / base if base > 0 else np.full(share.size, np.nan)
    table = pd.DataFrame(
        {
            "counterparty": pd.array(parties, dtype="str"),
            "visitors": visitors.astype(np.int64),
            "later_fraud": later.astype(np.int64),
            "share": share,
            "share_low": low,
            "share_high": high,
            "lift": lift,
            "lift_low": lift_low,
            "lift_high": lift_high,
            "first_visit": window["min"].to_numpy(),
            "last_visit": window["max"].to_numpy(),
            "median_days_to_fraud": days_to_fraud,
        }
    )
    if scenario is not None:
        table["scenario"] = pd.array(scenario, dtype="str")
    table = table[seen]
    table = table.sort_values(
        ["lift_low", "later_fraud", "visitors", "counterparty"],
        ascending=[False, False, False, True],
        kind="stable",
        na_position="last",
    ).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    parameters = {
        "from": None if start is None else start.isoformat(),
        "until": None if end is None else end.isoformat(),
        "window_days": window_days,
        "level": level,
        "counterparty": schema.counterparty,
        "entity": schema.entity_column,
        "interval": (
            f"exact (Clopper-Pearson) binomial interval of the share, simultaneous at "
            f"{level:g} over {m} counterparties (Bonferroni); lift = share / base rate"
        ),
        "visits": "genuine transactions (not known fraud) made before the entity's first "
        "known fraud",
        "labels": LABELS_NOTE,
    }
    columns = [*COLUMNS, "scenario"] if scenario is not None else list(COLUMNS)
    return CompromiseResult(table[columns], base, n_visits, n_later, parameters)


def _first_fraud_scenario(frame, schema, known, entity, fraud, t, first_fraud):
    """Each entity's scenario at its first known fraud (None without a scenario column)."""
    if schema.scenario is None or schema.scenario not in frame.columns:
        return None
    values = frame[schema.scenario].astype(str).to_numpy()[known]
    first = fraud & (t == first_fraud[entity])
    kind = np.full(first_fraud.size, "", dtype=object)
    kind[entity[first]] = values[first]
    return kind
