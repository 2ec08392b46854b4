"""Where the shards of a run are processed: this process, or a Ray cluster.

An engine is a `Mapper`: it runs a module-level function over task tuples and returns the
results in order. Locally that is the builtin `map`; on Ray, one task per item
(`ray_mapper`). The first pass (reading the file into shards) runs in this process either
way, so the work directory must be one the Ray workers see at the same path: any path on
one machine, a shared file system (NFS, a mounted bucket) on a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from fraudseq.engine.keyed import Mapper
from fraudseq.engine.shards import ShardSet
from fraudseq.errors import FraudseqError

log = logging.getLogger("fraudseq")

ENGINES = ("local", "ray")
CONNECT_SECONDS = 10  # to reach a cluster's address before Ray's own (unbounded) retries


@contextlib.contextmanager
def sharded_run(
    data,
    schema,
    *,
    work_dir: Path | None,
    shards: int | None = None,
    engine: str = "local",
    ray_address: str | None = None,
    ray_workers: int | None = None,
    require_label: bool | str = False,
) -> Iterator[tuple[ShardSet, Mapper]]:
    """The shards of `data` (under `work_dir`, else a temporary directory removed at the
    end) and the engine's mapper, for the length of the block. A local Ray instance gets
    every CPU, and at least `ray_workers` (the Ray Train workers of `fraudseq train`). Ray
    is joined (or started) before the shards are built: a cluster that cannot be reached
    fails the command before any work."""
    if engine not in ENGINES:
        raise FraudseqError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    with contextlib.ExitStack() as stack:
        cpus = None if ray_workers is None else max(ray_workers, os.cpu_count() or 1)
        mapper = map if engine == "local" else stack.enter_context(ray_mapper(ray_address, cpus))
        if work_dir is None:
            work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fraudseq-")))
        work_dir = Path(work_dir).absolute()  # the path Ray workers are given
        built = ShardSet.build(data, schema, work_dir, shards=shards, require_label=require_label)
        yield built, mapper


@contextlib.contextmanager
def ray_mapper(address: str | None = None, workers: int | None = None) -> Iterator[Mapper]:
    """A mapper running each item as a Ray task: on the cluster at `address`, else on a
    local Ray instance (`workers` CPUs, default all) started and stopped with the block.
    A failed task fails the whole map with the worker's error."""
    with ray_session(address, workers) as ray:
        yield lambda function, items: _ray_map(ray, function, items)


@contextlib.contextmanager
def ray_session(address: str | None = None, workers: int | None = None):
    """The `ray` module, initialised for the block: the Ray already initialised in this
    process, else one started (on the cluster at `address`, else a local instance of
    `workers` CPUs) and stopped with the block."""
    try:
        import ray
    except ImportError:
        raise FraudseqError("--engine ray needs Ray: pip install 'fraudseq[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if address:
            reachable(address)
        options = {"address": address} if address else {"num_cpus": workers}
        ray.init(**options, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def reachable(address: str, timeout: float = CONNECT_SECONDS) -> None:
    """A FraudseqError naming `address` (a Ray address: host:port, or ray://host:port) if
    nothing accepts a connection there within `timeout` seconds: `ray.init` would retry
    for minutes without a word. `auto` and addresses without a port are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        timed_out = isinstance(err, TimeoutError)
        reason = f"no answer in {timeout:g} s" if timed_out else err.strerror or str(err)
        raise FraudseqError(
            f"no Ray cluster at --ray-address {address} ({reason}): "
            "start one there (ray start --head --port PORT) or give the address of its head "
            "node; without --ray-address a local Ray instance starts with the command"
        ) from None


def _ray_map(ray, function: Callable, items: Iterable) -> list:
    remote = ray.remote(num_cpus=1, max_retries=0)(_on_node)
    refs = [remote.remote(function, item) for item in items]
    try:
        done = ray.get(refs)
    except ray.exceptions.RayError as err:
        raise worker_failed(ray, err, refs) from err
    nodes = {node for node, _ in done}
    name = getattr(function, "__name__", "a function")
    log.info("ran %d Ray tasks (%s) on %d nodes", len(done), name, len(nodes))
    return [result for _, result in done]


def _on_node(function: Callable, item):
    """`function(item)` in a Ray task, with the id of the node it ran on."""
    import ray

    return ray.get_runtime_context().get_node_id(), function(item)


def worker_failed(ray, err, refs) -> FraudseqError:
    """The error of a failed Ray task (`err`), after cancelling the other tasks (`refs`)."""
    for ref in refs:
        ray.cancel(ref, force=True)
    cause = getattr(err, "cause", None) or err
    return FraudseqError(f"a Ray worker failed: {type(cause).__name__}: {cause}")
