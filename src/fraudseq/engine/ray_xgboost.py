"""XGBoost trained through its distributed path on Ray, over the engine's encoded shards.

`fit_xgboost_ray` is `FraudModel._fit_windows` for the xgboost family with W Ray workers:
each worker builds the `QuantileDMatrix` of its own shards' windows (a contiguous run of
the training set's pieces, balanced by windows) from the encoded .npy files, which must be
on a path every worker sees, and the workers train one booster through XGBoost's
collective (`xgboost.collective`, coordinated by a `RabitTracker` in this process): the
quantile sketch and every round's gradient histograms are all-reduced. The parameters,
early stopping and trees kept are `BoostedWindowModel`'s (`BoostedWindowModel.train`);
rank 0 returns the booster in XGBoost's native format and it is set where the
single-process path sets it (`model.model_.booster_`).

The validation windows all go to rank 0 (the others evaluate an empty matrix): XGBoost's
distributed AUC-PR is the mean of the workers' own AUC-PRs, weighted by whether they have
positives and negatives, so with one evaluating worker early stopping sees the AP of the
whole validation set, as in one process.

With one worker, the single-process booster. With several, not its trees: XGBoost's row
subsample (0.8) draws by a worker's local row index, and the histogram cuts come from
sketches merged over workers (with the single-process cuts and no subsample, the scores
were measured equal); see docs/scale.md ("XGBoost on Ray") for the numbers.
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import xgboost as xgb

from fraudseq.engine.run import ray_session, worker_failed
from fraudseq.engine.training import EncodedShards, ShardedWindowSet
from fraudseq.errors import FraudseqError
from fraudseq.models.boosted import MAX_BIN, BoostedWindowModel, summary_matrix, validates

log = logging.getLogger("fraudseq")


def fit_xgboost_ray(
    model, train: ShardedWindowSet, valid: ShardedWindowSet, *, workers: int = 2
) -> None:
    """Train `model`'s (a `FraudModel` of the xgboost family) booster on these windows with
    `workers` Ray workers, each on its own shards (see the module docstring). Runs on the
    Ray initialised in this process, else on a local instance started for the call."""
    if model.model != "xgboost":
        raise FraudseqError(f"XGBoost on Ray trains the xgboost family, not {model.model!r}")
    if workers < 1:
        raise FraudseqError(f"workers must be at least 1, got {workers}")
    window_model: BoostedWindowModel = model._new_window_model(train, valid)
    params = {**window_model._params(train.labels), "nthread": 1}  # one CPU a worker
    parts = _split(train.pieces, workers)
    validate = validates(valid)
    shards = train.shards
    tasks = [
        (rank, window_model, params, shards.directory, shards.window, pieces, validate)
        for rank, pieces in enumerate(parts)
    ]
    valid_pieces = valid.pieces if validate else []
    with ray_session(workers=len(parts)) as ray:
        booster, history = _run(ray, tasks, valid_pieces)
    window_model.booster_, window_model.history_ = booster, history
    model.history_ = history
    log.info("xgboost on Ray: %d workers, %d trees kept", len(parts), booster.num_boosted_rounds())


def _split(pieces: list, workers: int) -> list[list]:
    """The pieces in contiguous runs, one a worker (at most one a piece), of about equal
    numbers of windows: rank 0 the first, so the ranks in order hold the set's order."""
    if not pieces:
        raise FraudseqError("no training windows to train XGBoost on")
    n = min(workers, len(pieces))
    ends = np.cumsum([len(positions) for _, positions, _ in pieces])
    k = np.arange(1, n)
    cuts = np.searchsorted(ends, ends[-1] * k / n) + 1
    # strictly increasing, so that each worker has a piece: cut k within [k, len - (n - k)]
    cuts = k + np.minimum(np.maximum.accumulate(np.maximum(cuts - k, 0)), len(pieces) - n)
    bounds = [0, *cuts.tolist(), len(pieces)]
    return [pieces[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _run(ray, tasks: list, valid_pieces: list) -> tuple[xgb.Booster, list[dict]]:
    """The tasks as Ray workers of one XGBoost collective; rank 0's booster and history."""
    n = len(tasks)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < n:
        raise FraudseqError(f"XGBoost on Ray needs {n} CPUs at once; the cluster has {cpus:g}")
    tracker = xgb.tracker.RabitTracker(
        n_workers=n, host_ip=ray.util.get_node_ip_address(), sortby="task"
    )
    tracker.start()
    args = tracker.worker_args()
    remote = ray.remote(num_cpus=1, max_retries=0)(_train_part)
    refs = [remote.remote((*task, args, valid_pieces if task[0] == 0 else [])) for task in tasks]
    pending = list(refs)
    try:
        while pending:  # the first failure stops every worker (the others would wait on it)
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)
    except ray.exceptions.RayError as err:
        failure = worker_failed(ray, err, refs)
        with contextlib.suppress(xgb.core.XGBoostError):  # its lost connections, not the cause
            tracker.free()
        raise failure from err
    raw, history = ray.get(refs[0])
    tracker.wait_for()
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    return booster, history


def _train_part(task) -> tuple[bytes | None, list[dict]]:
    """One worker: the QuantileDMatrix of its shards' windows (and rank 0 the validation
    windows'), trained on in the collective; rank 0 returns the booster's native bytes."""
    rank, window_model, params, directory, window, pieces, validate, args, valid_pieces = task
    shards = EncodedShards(directory, window)
    with xgb.collective.CommunicatorContext(**args, dmlc_task_id=f"{rank:06d}"):
        dtrain = summary_matrix(ShardedWindowSet(shards, pieces))
        dvalid = None
        if validate and rank == 0:
            dvalid = summary_matrix(ShardedWindowSet(shards, valid_pieces), ref=dtrain)
        elif validate:  # no validation rows: contributes nothing to the global AUC-PR
            empty = np.zeros((0, dtrain.num_col()), np.float32)
            dvalid = xgb.QuantileDMatrix(empty, label=empty[:, 0], ref=dtrain, max_bin=MAX_BIN)
        window_model.train(params, dtrain, dvalid)
    raw = bytes(window_model.booster_.save_raw("ubj")) if rank == 0 else None
    return raw, window_model.history_
