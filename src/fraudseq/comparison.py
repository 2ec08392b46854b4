"""Train several model families on one split and compare them on the held-out period."""

from __future__ import annotations

import logging
import time

import numpy as np
from rich.table import Table

from fraudseq import metrics
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import Schema, load_transactions
from fraudseq.splits import parse_time

log = logging.getLogger("fraudseq")
#: Below this many test frauds, compare warns that its metrics are noisy.
FEW_FRAUDS = 30


def compare_models(
    data,
    schema: Schema,
    models: list[str],
    *,
    train_from=None,
    train_until=None,
    valid_days: float = 7,
    epochs: int = 10,
    seed: int = 0,
    **params,
) -> list[dict]:
    """One row per model: held-out ranking metrics, training time, scoring throughput.

    Training uses [train_from, train_until) as `fraudseq train` does; the held-out period is
    everything from `train_until` on, scored with earlier transactions as history.
    """
    if train_until is None:
        raise FraudseqError("compare needs --train-until: the data after it is the test period")
    frame = load_transactions(data, schema, require_label=True)
    test = frame[(frame[schema.time] >= parse_time(train_until)).to_numpy()]
    if test.empty:
        raise FraudseqError(f"no transactions on or after --train-until {train_until} to test on")
    n_fraud = int(test[schema.label].sum())
    if n_fraud == 0:  # before training: AP and AUC ROC would be undefined for every model
        raise FraudseqError(
            f"no fraud among the {len(test):,} transactions on or after --train-until "
            f"{train_until}, so the ranking metrics are undefined; choose an earlier --train-until"
        )
    if n_fraud < FEW_FRAUDS:
        log.warning(
            "only %d frauds in the test period: the metrics will vary a lot between runs", n_fraud
        )
    rows = []
    for name in dict.fromkeys(models):  # a family named twice is trained once
        model = FraudModel(name, epochs=epochs, seed=seed, **params)
        started = time.perf_counter()
        model.fit(
            frame, schema, train_from=train_from, train_until=train_until, valid_days=valid_days
        )
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        scores = model.score(frame, start=train_until)
        score_seconds = time.perf_counter() - started
        y = test[schema.label].to_numpy()
        p = scores["score"].to_numpy()
        rows.append(
            {
                "model": name,
                "average_precision": metrics.average_precision(y, p),
                "auc_roc": metrics.auc_roc(y, p),
                "recall_at_1pct_fpr": metrics.recall_at_fpr(y, p, 0.01),
                "cp_at_100": metrics.card_precision_at_k(
                    test[schema.entity_column].to_numpy(),
                    test[schema.time].dt.normalize().to_numpy(),
                    y,
                    p,
                    100,
                ),
                "train_seconds": train_seconds,
                "scored_per_second": len(test) / score_seconds,
                "n_test": int(len(y)),
                "n_fraud": int(np.sum(y)),
            }
        )
    return rows


def comparison_table(rows: list[dict]) -> Table:
    size = f" on {rows[0]['n_test']:,} transactions ({rows[0]['n_fraud']:,} fraud)" if rows else ""
    table = Table(title=f"held-out comparison{size} (ranking metrics first)")
    columns = [
        ("model", "model", "{}"),
        ("AP", "average_precision", "{:.4f}"),
        ("AUC ROC", "auc_roc", "{:.4f}"),
        ("recall@1%FPR", "recall_at_1pct_fpr", "{:.4f}"),
        ("CP@100", "cp_at_100", "{:.4f}"),
        ("train s", "train_seconds", "{:.1f}"),
        ("scored/s", "scored_per_second", "{:,.0f}"),
    ]
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title == "model" else "right")
    for row in rows:
        table.add_row(*(fmt.format(row[key]) for _, key, fmt in columns))
    return table
