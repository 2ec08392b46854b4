"""`fraudseq export-history`: what a state store's history log holds, with the labels that
`/v1/feedback` sent, as a file `fraudseq train` reads with the model's schema.

Account states are bounded summaries (running totals, the last events, counterparty
buckets): the transactions cannot be rebuilt from them. So a Detector also writes every new
transaction, as received and canonicalised (`fraudseq.transaction.history_json`), to the
store's history log, in the same atomic unit as the state, and prunes it by the clock to
its retention (`Detector.history_buckets`; see `fraudseq.serving.stores.base`).

The file has the schema's source columns (the id, the entity's columns, time, amount, the
categorical, numeric and counterparty columns), the schema's label column and
``label_time``: when the label arrived (UTC), empty when none did. Training targets only
rows with a 0/1 label, and feedback usually reports the frauds and analysts' decisions
only, so transactions without a label are handled by `unlabelled`:

- ``mature`` (default): a transaction older than the newest one exported minus the model's
  label delay, with no label, is taken as legitimate (0: no report arrived within the
  delay; its ``label_time`` stays empty, which tells it from a label received); a newer one
  is left out (its label may still come). Only the newest label-delay's transactions are
  left out, so no kept transaction's window loses an earlier event;
- ``drop``: every transaction without a label is left out;
- ``keep``: every transaction is written, an unknown label empty (`train` takes it as not
  known: history, never a training target).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.io import write_table
from fraudseq.schema import Schema, entity_key_parts
from fraudseq.serving.stores.base import HISTORY_META, sqlite_path
from fraudseq.transaction import history_frame

log = logging.getLogger("fraudseq")

UNLABELLED = ("mature", "drop", "keep")
LABEL_TIME = "label_time"
_NS_PER_DAY = 86_400 * 10**9


@dataclass
class ExportSummary:
    """What `export_history` wrote: `rows` transactions to `path`, of which `labelled`
    with a label received and `assumed_legitimate` taken as 0 (``mature``); `left_out`
    transactions without a label were not written; `labels_without_transaction` labels
    name a transaction the log no longer (or never) held."""

    path: Path
    rows: int
    labelled: int
    assumed_legitimate: int
    left_out: int
    labels_without_transaction: int


def stored_settings(meta: dict[str, str]) -> dict | None:
    """The schema document and label delay a Detector stored, or None."""
    text = meta.get(HISTORY_META)
    return json.loads(text) if text else None


def history_table(
    history,
    schema: Schema,
    *,
    label_delay_days: float,
    unlabelled: str = "mature",
) -> tuple[pd.DataFrame, dict]:
    """The file's frame of a store's `History` (see the module docstring), and its counts.
    Raises FraudseqError when the log holds no transaction or `unlabelled` is unknown."""
    if unlabelled not in UNLABELLED:
        raise FraudseqError(
            f"unlabelled must be one of {', '.join(UNLABELLED)}, got {unlabelled!r}"
        )
    frame = history_frame(history.entries, schema)
    if not len(frame):
        raise FraudseqError(
            "the state store's history log holds no transactions: it is written while "
            "`fraudseq serve` (or a Detector) scores, unless --history-days 0 turned it off, "
            "and pruned past its retention"
        )
    ids = frame[schema.id_column]
    # An id scored again after its record expired (TTL) is logged twice: keep the last.
    frame = frame[~ids.duplicated(keep="last").to_numpy()]
    order = np.argsort(frame[schema.time].to_numpy(), kind="stable")
    frame = frame.take(order).reset_index(drop=True)
    ids = frame[schema.id_column].astype(object)
    labels = ids.map(pd.Series(history.labels, dtype="float64")).to_numpy(dtype=np.float64)
    arrived = ids.map(pd.Series(history.label_times, dtype="float64")).to_numpy(np.float64)
    known = ~np.isnan(labels)
    received = int(known.sum())
    times = frame[schema.time].to_numpy().view(np.int64)
    keep = np.ones(len(frame), dtype=bool)
    assumed = np.zeros(len(frame), dtype=bool)
    if unlabelled == "mature":
        cutoff = times.max() - int(label_delay_days * _NS_PER_DAY)
        assumed = ~known & (times < cutoff)
        labels = np.where(assumed, 0.0, labels)
        keep = known | assumed
    elif unlabelled == "drop":
        keep = known
    label_column = schema.label or "label"
    frame[label_column] = labels if unlabelled == "keep" else np.nan_to_num(labels)
    if unlabelled != "keep":
        frame[label_column] = frame[label_column].astype(np.int8)
    seconds = np.where(np.isnan(arrived), np.nan, arrived)
    frame[LABEL_TIME] = pd.to_datetime(seconds, unit="s", utc=True).tz_localize(None)
    frame = frame[keep].reset_index(drop=True)
    counts = {
        "labelled": received,
        "assumed_legitimate": int(assumed.sum()),
        "left_out": int((~keep).sum()),
        "labels_without_transaction": len(set(history.labels) - set(ids)),
    }
    return _file_columns(frame, schema, label_column), counts


def _file_columns(frame: pd.DataFrame, schema: Schema, label_column: str) -> pd.DataFrame:
    """The canonical frame in the columns a file with `schema` has: a composite entity
    split back into its columns, no ``stream`` column for one stream, a numeric time in the
    [time] table's unit since its origin; the label and ``label_time`` after the amount."""
    out = {}
    parts = schema.entity_parts
    for column in frame.columns:
        if column == schema.entity_column and len(parts) != 1:
            if parts:  # a composite key: its parts, split once per distinct entity
                codes, uniques = pd.factorize(frame[column])
                split = np.array([entity_key_parts(key) for key in uniques], dtype=object)
                split = split.reshape(len(uniques), len(parts))
                for j, part in enumerate(parts):
                    out[part] = pd.Series(split[codes, j], dtype="str")
            continue  # one stream: no entity column in the file
        if column == schema.time and schema.time_unit is not None:
            origin = pd.Timestamp(schema.time_origin).as_unit("ns").value
            unit = pd.Timedelta(1, unit=schema.time_unit).value
            out[column] = (frame[column].to_numpy().view(np.int64) - origin) / unit
            continue
        out[column] = frame[column]
    columns = list(out)
    after = columns.index(schema.amount) + 1
    order = [c for c in columns if c not in (label_column, LABEL_TIME)]
    order[after:after] = [label_column, LABEL_TIME]
    return pd.DataFrame({c: out[c] for c in order})


def export_history(
    state,
    out: str | Path,
    *,
    schema: Schema | None = None,
    label_delay_days: float | None = None,
    unlabelled: str = "mature",
) -> ExportSummary:
    """Write the transactions and labels the store `state` (a URL or a StateStore) holds
    to `out` (CSV, CSV.gz or Parquet by its name), atomically. `schema` and
    `label_delay_days` default to what the Detector that wrote the log stored; a schema
    given must be that one."""
    from fraudseq.serving.stores import open_store

    url = state if isinstance(state, str) else getattr(state, "url", "the state store")
    if isinstance(state, str) and state.strip() in ("memory", "memory://"):
        raise FraudseqError(
            "a memory state store lives only in the process that scored with it: export "
            "from a SQLite or Redis store, or pass that process's store "
            "(export_history(detector.store, ...))"
        )
    if isinstance(state, str):
        _check_sqlite_exists(state)
    store = open_store(state)
    try:
        if not hasattr(store, "history"):
            raise FraudseqError(f"{url}: this state store keeps no history log")
        history = store.history()
    finally:
        if isinstance(state, str):
            store.close()
    stored = stored_settings(history.meta)
    if stored is not None:
        their = Schema.from_document(stored["schema"], source=f"{url} (meta)")
        if schema is not None and schema.to_document() != their.to_document():
            raise FraudseqError(
                f"{url}: its history was logged with the schema {their.to_document()}, not "
                f"the one given ({schema.to_document()}). Fix: give the model that served "
                f"with this store, or no schema (the stored one is used)."
            )
        schema = their
        if label_delay_days is None:
            label_delay_days = float(stored["label_delay_days"])
    if schema is None:
        raise FraudseqError(
            f"{url}: holds no history log (no schema stored by a Detector). It is written "
            f"while `fraudseq serve` scores with this store; give --model or --schema only "
            f"for a store that has one."
        )
    if label_delay_days is None:
        raise FraudseqError("label_delay_days is needed: give the model that served")
    frame, counts = history_table(
        history, schema, label_delay_days=label_delay_days, unlabelled=unlabelled
    )
    write_table(frame, out)
    summary = ExportSummary(Path(out), len(frame), **counts)
    log.info(
        "%s: wrote %d transactions (%d labels received, %d taken as legitimate, %d left out)",
        out, summary.rows, summary.labelled, summary.assumed_legitimate, summary.left_out,
    )  # fmt: skip
    return summary


def _check_sqlite_exists(url: str) -> None:
    """Opening a SQLite URL creates the file: refuse one that does not exist."""
    path = sqlite_path(url.strip())
    if path and not Path(path).is_file():
        raise FraudseqError(f"{url}: no such SQLite state file ({path})")
