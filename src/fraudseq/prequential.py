"""Prequential (time-aware) validation, as in the Fraud Detection Handbook.

Each fold trains a fresh model on `train_days` days, leaves a `delay_days` gap (labels of those
days are not known yet when the test period starts), and tests on the next `test_days` days.
The folds are the same scheme shifted back in time by `test_days` days each::

    fold 0 (latest):   [ train T ][ delay D ][ test E ]
    fold 1:      [ train T ][ delay D ][ test E ]
    fold 2: ...  shifted back by E days per fold

Anchoring: `start` is the first training day of fold 0, the latest fold (the handbook's
`start_date_training`); fold i starts `i * test_days` days earlier. Without `start`, fold 0's
test period ends where the data's last day ends, so the latest fold tests on the most recent
days. The folds' test periods are disjoint and adjacent; training periods overlap.

Every fold trains `FraudModel(family, **same hyperparameters)` with the same seed:

- training windows are the transactions in the fold's training period; earlier transactions
  are history only, and nothing at or after the test period's end is read when fitting;
- validation (early stopping and the alert threshold) uses the `valid_days` days just before
  the training period (default: as many days as the training period, like the handbook's
  validation fold); when the data does not reach back that far, the last `valid_days` days of
  the training period are used instead (default then: 2 days, or 1 for shorter periods);
- the test period is scored with all earlier transactions as history.

Known compromised cards (the handbook's rule, `drop_known_frauds`): a test transaction is
dropped when its entity had a fraud on a day from the training period's first day up to the
test transaction's day minus (delay + 1) days, i.e. a fraud whose label is already known.

A fold whose training period (outside its validation period) holds no fraud is an error,
raised before any fold is trained and naming every such fold with its dates: a model that
learns from labels (every family but the autoencoder) learns nothing there and scores every
test transaction alike (AUC 0.5). So is a fold whose validation period holds no fraud when
the threshold strategy needs fraud (all but percentile and budget). Skipping such folds would
silently change what the mean and standard deviation are over, so the user moves the folds
instead (fewer --folds, a later --start or more --train-days).

Per fold: AUC ROC, average precision and card precision@100 (daily, as the handbook); the
summary is their mean and (population, ddof=0, as scikit-learn's grid search reports)
standard deviation over folds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from fraudseq import metrics
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel, data_range
from fraudseq.models import learns_from_fraud
from fraudseq.report.data import score_period
from fraudseq.schema import Schema, load_transactions
from fraudseq.splits import in_period, parse_time
from fraudseq.thresholds import needs_fraud

log = logging.getLogger("fraudseq")

FOLD_METRICS = ("auc_roc", "average_precision", "cp_at_100")
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Fold:
    """One prequential fold's periods, each half-open [from, until)."""

    index: int
    train_from: pd.Timestamp
    train_until: pd.Timestamp
    valid_from: pd.Timestamp
    valid_until: pd.Timestamp
    test_from: pd.Timestamp
    test_until: pd.Timestamp

    def train_rows(self, times: pd.Series) -> np.ndarray:
        """Mask of the training rows: the training period less the validation period (the
        latter is inside it when the data does not reach back far enough)."""
        valid = in_period(times, self.valid_from, self.valid_until)
        return in_period(times, self.train_from, self.train_until) & ~valid

    def describe(self) -> dict[str, str]:
        return {
            k: (str(v.date()) if isinstance(v, pd.Timestamp) else v)
            for k, v in asdict(self).items()
        }


def prequential_folds(
    data_start: pd.Timestamp,
    data_end: pd.Timestamp,
    *,
    folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    start=None,
    valid_days: int | None = None,
) -> list[Fold]:
    """The folds' periods, fold 0 the latest. `data_start`/`data_end` are the first and last
    transaction times; periods are whole days.

    >>> f = prequential_folds(pd.Timestamp("2018-04-01"), pd.Timestamp("2018-09-30 23:59"),
    ...                       folds=2, start="2018-07-25")
    >>> [(x.train_from.date().isoformat(), x.test_from.date().isoformat()) for x in f]
    [('2018-07-25', '2018-08-08'), ('2018-07-18', '2018-08-01')]
    """
    if min(folds, train_days, test_days) < 1 or delay_days < 0:
        raise FraudseqError(
            "prequential validation needs --folds, --train-days and --test-days of at least 1 "
            "and --delay-days of at least 0"
        )
    first_day = pd.Timestamp(data_start).normalize()
    if start is None:
        end_day = pd.Timestamp(data_end).normalize() + DAY
        anchor = end_day - (train_days + delay_days + test_days) * DAY
    else:
        anchor = parse_time(start, "--start").normalize()
    out = []
    for i in range(folds):
        train_from = anchor - i * test_days * DAY
        train_until = train_from + train_days * DAY
        test_from = train_until + delay_days * DAY
        before = train_days if valid_days is None else valid_days
        if train_from - before * DAY >= first_day:
            valid_from, valid_until = train_from - before * DAY, train_from
        else:  # not enough history before: the last days of the training period
            inside = valid_days if valid_days is not None else (2 if train_days > 4 else 1)
            if inside >= train_days:
                raise FraudseqError(
                    f"fold {i}: no room for {inside} validation day(s) before or inside the "
                    f"{train_days}-day training period starting {train_from.date()}; use fewer "
                    "--folds, a later --start or more --train-days"
                )
            valid_from, valid_until = train_until - inside * DAY, train_until
        if train_from < first_day:
            raise FraudseqError(
                f"fold {i} would train from {train_from.date()}, before the data starts "
                f"({first_day.date()}); use fewer --folds, fewer --train-days or a later --start"
            )
        out.append(
            Fold(
                i,
                train_from,
                train_until,
                valid_from,
                valid_until,
                test_from,
                test_from + test_days * DAY,
            )
        )
    return out


def check_fold_fraud(
    plan: list[Fold], times: pd.Series, labels: np.ndarray, *, train: bool, valid: bool
) -> None:
    """Raise naming every fold without fraud where it is needed: in its training rows
    (`train`: the model learns from labels) or in its validation period (`valid`: the
    threshold strategy needs fraud), and how to move the folds."""
    lacking = []
    for fold in plan:
        where = [
            name
            for name, needed, rows in (
                ("training", train, fold.train_rows(times)),
                ("validation", valid, in_period(times, fold.valid_from, fold.valid_until)),
            )
            if needed and not labels[rows].any()
        ]
        if where:
            lacking.append((fold.describe(), " or ".join(where)))
    if not lacking:
        return
    listed = "; ".join(
        f"fold {f['index']} has none in its {where} period (train [{f['train_from']}, "
        f"{f['train_until']}), validation [{f['valid_from']}, {f['valid_until']}), test "
        f"[{f['test_from']}, {f['test_until']}))"
        for f, where in lacking
    )
    raise FraudseqError(
        f"no fraud where the model needs it in {len(lacking)} of {len(plan)} folds: {listed}. "
        f"Without training fraud a model that learns from labels scores every test "
        f"transaction alike; without validation fraud the threshold cannot be chosen "
        f"({data_range(times, labels)}); use fewer --folds, a later --start or more "
        "--train-days"
    )


def known_fraud_mask(
    frame: pd.DataFrame,
    schema: Schema,
    rows: np.ndarray,
    train_from,
    delay_days: float,
) -> np.ndarray:
    """True for the `rows` of `frame` whose entity is a known compromised card.

    The handbook's rule: an entity is known on test day t once it had a fraud on some day in
    [first training day, t - (delay_days + 1) days]; those labels are known by day t.
    """
    day = frame[schema.time].dt.normalize()
    fraud = (frame[schema.label].to_numpy() == 1) & (day >= parse_time(train_from).normalize())
    first_fraud_day = day[fraud].groupby(frame[schema.entity_column][fraud]).min()
    known_since = frame[schema.entity_column].iloc[rows].map(first_fraud_day)
    cutoff = day.iloc[rows] - pd.Timedelta(days=delay_days + 1)
    return (known_since <= cutoff).fillna(False).to_numpy(dtype=bool)


def fold_metrics(scored) -> dict:
    """AUC ROC, AP and daily card precision@100 of a ScoredPeriod (already filtered)."""
    y = scored.labels
    return {
        "auc_roc": metrics.auc_roc(y, scored.score),
        "average_precision": metrics.average_precision(y, scored.score),
        "cp_at_100": metrics.card_precision_at_k(scored.entity, scored.day, y, scored.score, 100),
        "n_test": int(len(y)),
        "n_fraud": int(y.sum()),
    }


def prequential(
    family: str,
    params: dict,
    data,
    schema: Schema,
    *,
    folds: int = 4,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
    start=None,
    valid_days: int | None = None,
    drop_known_frauds: bool = True,
) -> dict:
    """Run prequential validation of model family `family` with hyperparameters `params`
    (`FraudModel.get_params()`; the seed is among them) on labelled `data`.

    Returns `{"settings", "folds": [per-fold periods and metrics], "mean", "std"}`. Raises
    FraudseqError before training when a fold has no fraud to train on (see the module's
    docstring).
    """
    frame = load_transactions(data, schema, require_label=True)
    times = frame[schema.time]
    plan = prequential_folds(
        times.min(),
        times.max(),
        folds=folds,
        train_days=train_days,
        delay_days=delay_days,
        test_days=test_days,
        start=start,
        valid_days=valid_days,
    )
    check_fold_fraud(
        plan,
        times,
        frame[schema.label].to_numpy(),
        train=learns_from_fraud(family, params.get("members")),
        valid=needs_fraud(FraudModel.from_params(family, params).threshold_strategy()),
    )
    results = []
    for fold in plan:
        started = time.perf_counter()
        log.info(
            "fold %d: train [%s, %s), validation [%s, %s), test [%s, %s)",
            fold.index,
            *(d.date() for d in (fold.train_from, fold.train_until, fold.valid_from)),
            *(d.date() for d in (fold.valid_until, fold.test_from, fold.test_until)),
        )
        model = FraudModel.from_params(family, params)
        model.fit(
            frame,
            schema,
            train_from=fold.train_from,
            train_until=fold.train_until,
            valid_period=(fold.valid_from, fold.valid_until),
        )
        scored = score_period(model, frame, start=fold.test_from, end=fold.test_until, loaded=True)
        n_all = len(scored)
        dropped = 0
        if drop_known_frauds:
            known = known_fraud_mask(scored.frame, schema, scored.rows, fold.train_from, delay_days)
            dropped = int(known.sum())
            scored = scored.subset(~known)
        result = {
            **fold.describe(),
            **fold_metrics(scored),
            "n_dropped_known": dropped,
            "n_scored": n_all,
            "seconds": round(time.perf_counter() - started, 1),
        }
        log.info(
            "fold %d: AUC ROC %.4f  AP %.4f  CP@100 %.4f  (%d transactions, %d fraud, %d known "
            "dropped)",
            fold.index,
            result["auc_roc"],
            result["average_precision"],
            result["cp_at_100"],
            result["n_test"],
            result["n_fraud"],
            dropped,
        )
        results.append(result)
    summary = {key: [r[key] for r in results if not math.isnan(r[key])] for key in FOLD_METRICS}
    return {
        "settings": {
            "model": family,
            "folds": folds,
            "train_days": train_days,
            "delay_days": delay_days,
            "test_days": test_days,
            "start": str(plan[0].train_from.date()),
            "valid_days": valid_days,
            "drop_known_frauds": drop_known_frauds,
            "seed": params.get("seed"),
        },
        "folds": results,
        "mean": {k: float(np.mean(v)) if v else float("nan") for k, v in summary.items()},
        "std": {k: float(np.std(v)) if v else float("nan") for k, v in summary.items()},
    }


def prequential_for_model(model, data, **options) -> dict:
    """Prequential validation with the family, hyperparameters and schema of a fitted (or
    loaded) FraudModel; each fold trains a fresh copy."""
    return prequential(model.model, model.get_params(), data, model.schema_, **options)
