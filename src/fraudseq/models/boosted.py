"""Gradient-boosted trees (XGBoost) on the last event's features plus window summaries."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import xgboost as xgb

from fraudseq.training import WindowSet

log = logging.getLogger("fraudseq")
BOOSTER_FILE = "booster.ubj"
_CHUNK = 65_536
#: Histogram bins per feature: XGBoost's default for `hist` (DMatrix) and QuantileDMatrix.
MAX_BIN = 256
#: Windows per batch of the QuantileDMatrix iterator, and per window_summary step in it.
SUMMARY_BATCH = 65_536
SUMMARY_CHUNK = 16_384


def window_summary(windows: WindowSet, chunk: int = _CHUNK) -> np.ndarray:
    """Per window: the last event's numeric and categorical codes, the mean and max of each
    numeric feature over the valid steps, and the window length (`chunk` windows at a
    time: the same numbers for any `chunk`)."""
    parts = []
    for start in range(0, len(windows), chunk):
        numeric, categorical, lengths = windows.source.batch(
            windows.positions[start : start + chunk]
        )
        last = (lengths - 1).long()
        rows = torch.arange(len(lengths))
        valid = (torch.arange(numeric.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        mean = (numeric * valid).sum(1) / lengths[:, None]
        peak = numeric.masked_fill(~valid, -np.inf).amax(1)
        parts.append(
            torch.cat(
                [
                    numeric[rows, last],
                    categorical[rows, last].float(),
                    mean,
                    peak,
                    lengths[:, None].float(),
                ],
                dim=1,
            ).numpy()
        )
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class _Summaries(xgb.DataIter):
    """The window summaries and labels of a set of windows, `batch` windows of one part
    at a time: what is dense at once is one batch's summaries, whatever the part's size."""

    def __init__(self, windows, batch: int | None = None, cache_prefix: str | None = None) -> None:
        self.windows, self.batch = windows, batch or SUMMARY_BATCH
        self._batches = None
        super().__init__(cache_prefix=cache_prefix)

    def reset(self) -> None:
        self._batches = None

    def next(self, input_data) -> bool:
        if self._batches is None:
            self._batches = self._each_batch()
        batch = next(self._batches, None)
        if batch is None:
            return False
        input_data(data=window_summary(batch, chunk=SUMMARY_CHUNK), label=batch.labels)
        return True

    def _each_batch(self):
        for part in self.windows.parts():
            for start in range(0, len(part), self.batch):
                yield part.select(slice(start, start + self.batch))


def summary_matrix(
    windows, ref: xgb.DMatrix | None = None, cache: Path | None = None
) -> xgb.DMatrix:
    """The QuantileDMatrix of windows on disk (a `ShardedWindowSet`), fed a part at a time;
    binned with `ref`'s cuts when given. With a `cache` directory, XGBoost's external-memory
    form: the binned pages go to files there and are read back each round, so memory holds
    a page rather than every window's bins (2 bytes per summary feature per window, which
    at 40M transactions would not fit in 8 GB). The same sketch, so the same trees."""
    if cache is None:
        return xgb.QuantileDMatrix(_Summaries(windows), max_bin=MAX_BIN, ref=ref)
    prefix = str(Path(cache) / f"xgboost-{os.getpid()}")
    pages = _Summaries(windows, cache_prefix=prefix)
    return xgb.ExtMemQuantileDMatrix(pages, max_bin=MAX_BIN, ref=ref)


def validates(valid) -> bool:
    """Whether XGBoost early-stops on these validation windows: some, with fraud among them."""
    return valid is not None and len(valid) > 0 and valid.labels.sum() > 0


class BoostedWindowModel:
    """XGBoost with `scale_pos_weight`, early stopping on validation AP, native model file."""

    def __init__(
        self,
        *,
        n_estimators: int = 600,
        max_depth: int = 6,
        learning_rate: float = 0.05,
        early_stopping: int = 50,
        class_weight: str | float = "auto",
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.early_stopping = early_stopping
        self.class_weight = class_weight
        self.seed = seed
        self.history_: list[dict] = []

    def _params(self, labels: np.ndarray) -> dict:
        positives = max(float(labels.sum()), 1.0)
        if self.class_weight == "auto":
            weight = np.sqrt((len(labels) - positives) / positives)
        elif self.class_weight in ("none", None):
            weight = 1.0
        else:
            weight = float(self.class_weight)
        return {
            "objective": "binary:logistic",
            "eval_metric": "aucpr",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.learning_rate,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 1.0,
            "scale_pos_weight": weight,
            "seed": self.seed,
            "nthread": torch.get_num_threads(),
        }

    def fit(self, train: WindowSet, valid: WindowSet | None) -> BoostedWindowModel:
        """Train on the windows' summaries: one DMatrix for windows in memory; for windows
        on disk (a `ShardedWindowSet`), an external-memory QuantileDMatrix fed one part
        (shard) at a time, whose binned pages live in the shards' directory: never the
        summaries as one dense matrix, nor every window's bins in memory."""
        in_memory = isinstance(train, WindowSet)
        if in_memory:
            dtrain = xgb.DMatrix(window_summary(train), label=train.labels)
        else:
            dtrain = summary_matrix(train, cache=train.shards.directory)
        dvalid = None
        if validates(valid):
            if in_memory:
                dvalid = xgb.DMatrix(window_summary(valid), label=valid.labels)
            else:
                dvalid = summary_matrix(valid, ref=dtrain)
        return self.train(self._params(train.labels), dtrain, dvalid)

    def train(self, params: dict, dtrain: xgb.DMatrix, dvalid: xgb.DMatrix | None):
        """`xgb.train` on these matrices, early stopping on `dvalid`'s AP when given, keeping
        the trees up to the best round; also what each worker of a distributed run does."""
        evals, stopping = [(dtrain, "train")], None
        if dvalid is not None:
            evals.append((dvalid, "valid"))
            stopping = self.early_stopping
        record: dict = {}
        self.booster_ = xgb.train(
            params,
            dtrain,
            num_boost_round=self.n_estimators,
            evals=evals,
            early_stopping_rounds=stopping,
            evals_result=record,
            verbose_eval=False,
        )
        if stopping is not None:  # keep only the trees up to the best validation round
            self.booster_ = self.booster_[: self.booster_.best_iteration + 1]
        curve = record.get("valid", record["train"])["aucpr"]
        self.history_ = [{"epoch": i + 1, "valid_ap": float(v)} for i, v in enumerate(curve)]
        log.info(
            "xgboost: %d trees kept, best validation AP %.4f",
            self.booster_.num_boosted_rounds(),
            max(curve),
        )
        return self

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        margins = [
            self.booster_.predict(xgb.DMatrix(window_summary(part)), output_margin=True)
            for part in windows.parts()
        ]
        return np.concatenate(margins).astype(np.float32) if margins else np.zeros(0, np.float32)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        return {}, {BOOSTER_FILE: bytes(self.booster_.save_raw("ubj"))}

    def load_state(self, tensors: dict[str, torch.Tensor], files: dict[str, bytes]) -> None:
        self.booster_ = xgb.Booster()
        self.booster_.load_model(bytearray(files[BOOSTER_FILE]))
