"""Training a window model on Ray (`fraudseq train --engine ray`): torch families with Ray
Train's `TorchTrainer`, data-parallel (DDP on gloo, CPU).

Every worker builds the same network (the same seed, as `FraudModel._new_window_model`)
and runs the one `Trainer` loop with `DataParallel` replicas: each draws the same seeded
sequence of batches as a single process would (the same part order, the same shuffles and
samplers), takes its contiguous 1/W slice of every batch, and weighs its mean loss by
(its windows x W / the batch's), so that DDP's averaged gradient is the whole batch's.
Every worker so takes the same number of steps, validates the same model on every
validation window, and follows the first worker's early-stopping decision. With dropout 0
the model is the single process's, to float rounding; dropout draws its masks per worker
(docs/scale.md, "Training on Ray").

The windows go to the workers as positions into the encoded shards on disk
(`ShardedWindowSet`), so the work directory must be one every node sees. The first
worker's trained state comes back through Ray Train's checkpoint: a directory with
`weights.safetensors` and the history as JSON; no model object crosses the boundary.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from fraudseq.artifacts import WEIGHTS
from fraudseq.errors import FraudseqError
from fraudseq.models import build_model
from fraudseq.models.attention import ATTENTION_NETWORKS
from fraudseq.models.recurrent import CELLS
from fraudseq.training import Replicas

log = logging.getLogger("fraudseq")

TORCH_FAMILIES = (*CELLS, *ATTENTION_NETWORKS, "transformer", "autoencoder")
HISTORY = "history.json"


class DataParallel(Replicas):
    """Process `rank` of `world` in DDP: its slice of every batch (see the module docstring)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        from ray.train.torch import prepare_model

        return prepare_model(module, move_to_device=False, parallel_strategy="ddp")

    def share(self, picked: np.ndarray) -> tuple[np.ndarray, int]:
        mine = np.array_split(picked, self.world)[self.rank]
        return (mine, len(mine)) if len(mine) else (picked[:1], 0)

    def weight(self, mine: int, batch: int) -> float:
        return mine * self.world / batch

    def total(self, loss_sum: float, count: int) -> tuple[float, int]:
        both = torch.tensor([loss_sum, count], dtype=torch.float64)
        torch.distributed.all_reduce(both)
        return float(both[0]), int(both[1])

    def agree(self, stop: bool) -> bool:
        decision = torch.tensor([int(stop)])
        torch.distributed.broadcast(decision, src=0)
        return bool(decision.item())


def fit_on_ray(model, train, valid, *, workers: int, storage: Path) -> None:
    """`model._fit_windows(train, valid)` (`model` a FraudModel) on `workers` Ray workers,
    by what `ray_trainer` gives for its family; torch checkpoints under `storage`."""
    trainer = ray_trainer(model.model)
    if trainer is not fit_torch:
        return trainer(model, train, valid, workers=workers)
    window_model = model._new_window_model(train, valid)
    valid = valid if len(valid) else None
    fit_torch(
        window_model, train, valid, workers=workers, build=model.build_args(), storage=storage
    )
    model.history_ = window_model.history_


def ray_trainer(family: str):
    """What trains `family` on Ray, or a FraudseqError saying it cannot (checked before any
    work is done): `fit_torch` for the torch families; for XGBoost
    `engine.ray_xgboost.fit_xgboost_ray(model, train, valid, *, workers)` (`model` the
    FraudModel)."""
    if family in TORCH_FAMILIES:
        return fit_torch
    local = "train it with --engine local (--work-dir keeps memory bounded)"
    if family != "xgboost":
        raise FraudseqError(
            f"--engine ray trains the torch families ({', '.join(TORCH_FAMILIES)}) and "
            f"xgboost, not {family}: {local}"
        )
    from fraudseq.engine.ray_xgboost import fit_xgboost_ray

    return fit_xgboost_ray


def fit_torch(window_model, train, valid, *, workers: int, build: tuple, storage: Path) -> None:
    """Train a torch `window_model` with `TorchTrainer` on `workers` workers (checkpoints
    under `storage`) and load the first worker's trained state into it."""
    config = {"build": build, "train": train, "valid": valid}
    tensors, history = _train_on_workers(config, workers, storage)
    window_model.load_state(tensors, {})
    window_model.history_ = history


def _train_on_workers(config: dict, workers: int, storage: Path):
    """Run `_worker` on `workers` Ray Train workers: the first worker's tensors and history."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.exceptions import TrainingFailedError

    trainer = TorchTrainer(
        _worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False),
        run_config=RunConfig(
            name="fraudseq-train",
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=0),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        result = trainer.fit()
    except TrainingFailedError as err:
        raise FraudseqError(f"a Ray worker failed: {_worker_error(err)}") from err
    with result.checkpoint.as_directory() as directory:
        from safetensors.torch import load_file

        tensors = load_file(Path(directory) / WEIGHTS)
        history = json.loads((Path(directory) / HISTORY).read_text())
    log.info("trained on %d Ray Train workers on %d nodes", workers, result.metrics["nodes"])
    return tensors, history


def _worker_error(err) -> str:
    """The first failed worker's error as `Type: message`, else Ray Train's error."""
    failures = getattr(err, "worker_failures", None) or {}
    cause = failures[min(failures)] if failures else err
    cause = getattr(cause, "cause", None) or cause  # a RayTaskError wraps the worker's error
    return f"{type(cause).__name__}: {cause}"


def _worker(config: dict) -> None:
    """One Ray Train worker: build the network, train it with its share of every batch,
    and (the first worker) report the trained state as a checkpoint."""
    import ray.train
    from safetensors.torch import save_file

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    build = config["build"]
    torch.manual_seed(build[-1])  # the seed, as FraudModel._new_window_model seeds the build
    window_model = build_model(*build)
    window_model.trainer.replicas = DataParallel(rank, world)
    window_model.trainer.progress = False
    window_model.fit(config["train"], config["valid"])
    nodes = [None] * world  # the node of every worker, for the command's log
    torch.distributed.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    if rank != 0:
        ray.train.report({}, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as directory:
        tensors, _ = window_model.state()
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        save_file(tensors, f"{directory}/{WEIGHTS}")
        Path(directory, HISTORY).write_text(json.dumps(window_model.history_))
        checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({"nodes": len(set(nodes))}, checkpoint=checkpoint)
