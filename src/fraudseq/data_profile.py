"""A profile of a transactions file before anyone trains on it (`fraudseq check`).

:func:`profile_transactions` takes the canonical frame of
:func:`~fraudseq.schema.load_transactions` and measures what decides whether sequence models
can work on it: rows, time span, entities and their history lengths, fraud rate and label
coverage, categorical cardinalities and missing shares. :func:`profile_warnings` turns the
numbers into warnings that each say what to do. Everything is vectorised: a 1.75M-row file
profiles in well under a second once loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fraudseq.choices import LABEL_DELAY_DAYS, VALID_DAYS
from fraudseq.schema import MISSING_CATEGORY, Schema

__all__ = [
    "LABEL_DELAY_DAYS",
    "MIN_FRAUDS",
    "VALID_DAYS",
    "ColumnProfile",
    "DataProfile",
    "profile_transactions",
    "profile_warnings",
]

#: Fewer frauds than this make AP, recall and threshold choices noisy.
MIN_FRAUDS = 30
#: A categorical column with at least this share of distinct values per row is an id.
ID_LIKE_SHARE = 0.9
#: ... judged only with at least this many rows.
ID_LIKE_MIN_ROWS = 20
#: Warn when more than this share of the entities have a single transaction.
SINGLE_SHARE = 0.5

_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class ColumnProfile:
    """One categorical/counterparty or numeric column."""

    column: str
    role: str  # "categorical", "counterparty", "categorical+counterparty" or "numeric"
    missing_share: float
    distinct: int | None = None  # categorical: distinct values, missing not counted


@dataclass
class DataProfile:
    """What `fraudseq check` reports; :meth:`to_dict` is its --json output."""

    source: str
    rows: int
    time_column: str
    first: str
    last: str
    span_days: float
    entity: list[str]  # the entity's columns; empty: one stream
    entities: int
    history_median: float
    history_p90: float
    history_max: int
    single_share: float  # share of entities with one transaction
    label: str | None
    labelled: int  # rows with a known label
    label_coverage: float | None
    frauds: int | None
    fraud_rate: float | None  # among labelled rows
    frauds_per_week: float | None
    valid_days: float
    label_delay_days: float
    valid_frauds: int | None  # frauds in the last valid_days (train's default validation)
    columns: list[ColumnProfile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def one_stream(self) -> bool:
        return not self.entity

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["one_stream"] = self.one_stream
        return out


def profile_transactions(
    frame: pd.DataFrame,
    schema: Schema,
    *,
    source: str = "<DataFrame>",
    valid_days: float = VALID_DAYS,
    label_delay_days: float = LABEL_DELAY_DAYS,
) -> DataProfile:
    """Profile a canonical frame (from :func:`load_transactions`, with or without labels),
    warnings included. `valid_days` and `label_delay_days` are the training settings the
    span is judged against."""
    n = len(frame)
    times = frame[schema.time]
    first, last = times.min(), times.max()
    span_days = float((last - first) / _DAY) if n else 0.0

    # History length per entity: rows per distinct key (codes + bincount, no groupby).
    codes, uniques = pd.factorize(frame[schema.entity_column], sort=False)
    counts = np.bincount(codes, minlength=len(uniques)) if n else np.zeros(0, dtype=np.int64)
    median, p90 = (
        (float(np.median(counts)), float(np.percentile(counts, 90))) if len(counts) else (0, 0)
    )

    label = schema.label if schema.label in frame.columns else None
    labelled, coverage, frauds, rate, per_week, valid_frauds = 0, None, None, None, None, None
    if label is not None:
        values = frame[label].to_numpy(dtype=np.float64)
        known = ~np.isnan(values)
        labelled = int(known.sum())
        coverage = labelled / n if n else None
        is_fraud = values == 1.0
        frauds = int(is_fraud.sum())
        rate = frauds / labelled if labelled else None
        per_week = frauds / span_days * 7 if span_days > 0 else None
        valid_from = last - pd.Timedelta(days=valid_days)
        valid_frauds = int((is_fraud & (times >= valid_from).to_numpy()).sum())

    columns: list[ColumnProfile] = []
    nominal = list(dict.fromkeys([*schema.categorical, schema.counterparty]))
    for c in nominal:
        if c is None or c not in frame.columns:
            continue
        roles = ["categorical"] if c in schema.categorical else []
        if c == schema.counterparty:
            roles.append("counterparty")
        missing = (frame[c] == MISSING_CATEGORY).to_numpy(dtype=bool, na_value=True)
        distinct = int(frame[c][~missing].nunique()) if n else 0
        columns.append(
            ColumnProfile(c, "+".join(roles), float(missing.mean()) if n else 0.0, distinct)
        )
    for c in schema.numeric:
        if c in frame.columns:
            missing_share = (
                float(np.isnan(frame[c].to_numpy(dtype=np.float64)).mean()) if n else 0.0
            )
            columns.append(ColumnProfile(c, "numeric", missing_share))

    profile = DataProfile(
        source=source,
        rows=n,
        time_column=schema.time,
        first=str(first),
        last=str(last),
        span_days=span_days,
        entity=list(schema.entity_parts),
        entities=len(uniques),
        history_median=median,
        history_p90=p90,
        history_max=int(counts.max()) if len(counts) else 0,
        single_share=float((counts == 1).mean()) if len(counts) else 0.0,
        label=label,
        labelled=labelled,
        label_coverage=coverage,
        frauds=frauds,
        fraud_rate=rate,
        frauds_per_week=per_week,
        valid_days=float(valid_days),
        label_delay_days=float(label_delay_days),
        valid_frauds=valid_frauds,
        columns=columns,
    )
    profile.warnings = profile_warnings(profile)
    return profile


def _days(value: float) -> str:
    return f"{value:g}"


def profile_warnings(p: DataProfile) -> list[str]:
    """What to fix before training, each warning with its fix."""
    out: list[str] = []
    entity = " + ".join(p.entity)

    # Sequences: most entities with one transaction give windows of one event.
    if not p.one_stream and p.single_share > SINGLE_SHARE:
        out.append(
            f"{p.single_share:.0%} of the {p.entities:,} entities ({entity}) have a single "
            f"transaction (median {p.history_median:g} per entity), so sequence features "
            "will be weak: most windows hold one event. Fix: consider a coarser entity (a "
            "customer or account rather than a card or session), a composite key (entity = "
            '["card1", "addr1"]), or no entity (leave it out: the file is then one stream '
            "in time order)."
        )

    # Span: training needs validation + label delay + some training data.
    needed = p.valid_days + p.label_delay_days
    settings = (
        f"--valid-days {_days(p.valid_days)} + label delay {_days(p.label_delay_days)} = "
        f"{_days(needed)} days"
    )
    if p.span_days < needed:
        out.append(
            f"the data spans {p.span_days:.1f} days, {needed - p.span_days:.1f} days short of "
            f"what training needs before any training data: {settings}, plus the training "
            "period itself. Fix: pass a smaller --valid-days N (and --label-delay-days N) to "
            "train, or bring a longer export."
        )
    elif p.span_days < needed + p.valid_days:
        # Training shorter than validation: the model learns from less than it is judged on.
        out.append(
            f"the data spans {p.span_days:.1f} days: after {settings}, only "
            f"{p.span_days - needed:.1f} days are left to train on, less than the "
            f"{_days(p.valid_days)}-day validation period. Fix: bring a longer export, or pass "
            "a smaller --valid-days N to train."
        )

    # Labels.
    if p.label is None:
        out.append(
            "no label column: this file can be scored, but not trained on or evaluated. Fix: "
            'add label = "<your 0/1 fraud column>" to the schema\'s [columns] if the data '
            "has one."
        )
    elif p.labelled == 0:
        out.append(
            f"column {p.label!r} has no known label on any row: nothing to train or evaluate "
            "on. Fix: fill in the labels (1 = fraud, 0 = legitimate)."
        )
    else:
        if p.labelled < p.rows:
            missing = p.rows - p.labelled
            out.append(
                f"{missing:,} of {p.rows:,} rows ({missing / p.rows:.1%}) have no label in "
                f"{p.label!r}: train takes them as not known (history, never a training "
                "target) and evaluate refuses them. Fix: evaluate a period whose labels are "
                "known, or fill them in."
            )
        if p.frauds == 0:
            out.append(
                f"no fraud at all among the {p.labelled:,} labelled rows: a model cannot learn "
                "fraud (only --model autoencoder trains without it) and AP, AUC ROC and recall "
                "are undefined. Fix: check that 1 marks fraud in "
                f"{p.label!r}, or bring an export with fraud."
            )
        elif p.frauds is not None and p.frauds < MIN_FRAUDS:
            out.append(
                f"only {p.frauds} frauds: evaluation will be noisy (a single fraud moves "
                f"recall by {1 / p.frauds:.0%}), and validation gets only a share of them. "
                f"Fix: bring a longer export or more fraud (at least {MIN_FRAUDS}) before "
                "comparing models."
            )
        if p.frauds and p.valid_frauds == 0 and p.span_days >= needed:
            out.append(
                f"no fraud in the last {_days(p.valid_days)} days (train's default validation "
                "period): train would stop, as its threshold is chosen on validation fraud. "
                "Fix: pass --train-until before the last fraud, or another --valid-days."
            )

    # Columns.
    for c in p.columns:
        if c.role == "numeric":
            if c.missing_share >= 1.0:
                out.append(
                    f"numeric column {c.column!r} is empty (missing on every row). Fix: remove "
                    "it from numeric."
                )
            continue
        present = round(p.rows * (1 - c.missing_share))
        if present == 0:
            out.append(
                f"{c.role} column {c.column!r} is empty (missing on every row). Fix: remove "
                "it from the schema."
            )
        elif c.distinct is not None and present >= ID_LIKE_MIN_ROWS:
            if c.distinct >= ID_LIKE_SHARE * present:
                fix = (
                    "remove it from categorical"
                    if "categorical" in c.role
                    else "point counterparty at a merchant or terminal column, or leave it out"
                )
                out.append(
                    f"{c.role} column {c.column!r} has {c.distinct:,} distinct values in "
                    f"{present:,} rows: nearly one per row, so it is an id, not a category, "
                    f"and the model learns nothing from it. Fix: {fix}."
                )
            elif c.distinct <= 1:
                out.append(
                    f"{c.role} column {c.column!r} holds a single value: it cannot tell "
                    f"transactions apart. Fix: remove it from the schema."
                )
    return out
