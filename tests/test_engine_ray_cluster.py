"""`--engine ray --ray-address` against an existing Ray cluster of 2 nodes, started as a user
starts one: `scripts/ray-cluster.sh` runs `ray start --head` and `ray start --address` as
separate processes on this machine, 1 CPU each. Scores and a DDP-trained model equal the
single-process ones, the tasks and the Ray Train workers run on both nodes, and the cluster
is still up after each command (a command stops only a Ray it started). The test's teardown
stops the cluster, also when a test fails. An address where no cluster answers fails the
command within a bounded time, naming the address, with no output written.

The commands run as subprocesses, as a user runs them: each joins the cluster as a driver
of its own with the cluster's token (`client.env`), which Ray reads once per process; and
an in-process command would reuse a Ray that an earlier test module initialised.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fraudseq
from conftest import TRAIN_UNTIL
from fraudseq.engine.run import reachable
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from test_engine_ray_train import same_as_local_training

pytest.importorskip("ray", reason="Ray is not installed (pip install 'fraudseq[ray]')")

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ray-cluster.sh"
SOURCE = Path(fraudseq.__file__).resolve().parent.parent  # the fraudseq the nodes import
SCORE_TOLERANCE = 1e-6  # as tests/test_engine_ray.py holds the local Ray's scores
UNREACHABLE_SECONDS = 120  # measured 23-45 s at load 8-10 (importing torch and Ray); it was >10 min


def checkout_env() -> dict:
    """This environment, with the fraudseq under test first on the path (for the command
    and for the cluster's nodes, whose Ray workers import it)."""
    paths = [str(SOURCE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A cluster started by scripts/ray-cluster.sh; `env` is a client's environment."""

    def __init__(self, nodes: int) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # short: Ray's socket paths under it must fit in 107 bytes
        self.directory = Path(tempfile.mkdtemp(prefix="fq-ray-"))
        self.env = {**checkout_env(), "RAY": str(Path(sys.executable).parent / "ray")}
        started = self.script("start", "--nodes", nodes, timeout=600)
        assert started.returncode == 0, started.stderr[-3000:]
        assert started.stdout.strip().splitlines()[-1] == self.address
        self.pids = [int(p) for p in (self.directory / "pids").read_text().split()]
        self.env |= {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.directory / "auth_token"),
        }

    def script(self, action: str, *args, timeout: float = 180) -> subprocess.CompletedProcess:
        command = ["bash", str(SCRIPT), action, "--port", str(self.port), "--dir"]
        return subprocess.run(
            [*command, str(self.directory), *map(str, args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def nodes(self) -> int:
        return int(self.script("status").stdout.strip())

    def stop(self) -> None:
        stopped = self.script("stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stderr
        for pid in self.pids:  # no process of any node is left
            with pytest.raises(ProcessLookupError):
                os.killpg(pid, 0)


@pytest.fixture(scope="module")
def cluster():
    started = None
    try:
        started = Cluster(nodes=2)
        yield started
    finally:
        if started is not None:
            started.stop()
        # else the script stopped what it had started before it failed


def fraudseq_command(env: dict, *args, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fraudseq", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ran_on(stderr: str, what: str) -> set[int]:
    """The node counts the command logged for its Ray tasks running `what`."""
    return {int(k) for k in re.findall(rf"ran \d+ Ray tasks \({what}\) on (\d+) nodes", stderr)}


@pytest.mark.slow  # measured: cluster start 10-24 s (140 s at load 12), the command 12-47 s
def test_score_on_a_two_node_cluster_equals_the_single_process_run(cluster, tmp_path, tiny_xgboost):
    model_dir, frame = tiny_xgboost
    data = tmp_path / "tx.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "scores.csv"
    args = ["score", model_dir, data, "--out", out, "--shards", 4]
    done = fraudseq_command(cluster.env, *args, "--engine", "ray", "--ray-address", cluster.address)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ran_on(done.stderr, "_score_part") == {2}, done.stderr  # both nodes scored
    got = pd.read_csv(out)
    expected = FraudModel.load(model_dir).score(data)
    assert got["transaction_id"].tolist() == expected["transaction_id"].tolist()
    np.testing.assert_allclose(got["score"], expected["score"], atol=SCORE_TOLERANCE, rtol=0)
    assert cluster.nodes() == 2  # the command left the cluster running


@pytest.mark.slow  # measured 40-88 s at load 2-9: Ray Train's start, and training twice
def test_ddp_training_on_a_two_node_cluster_is_the_single_process_model(
    cluster, tmp_path, small_csv
):
    """One Ray Train worker on each node (1 CPU each, 2 workers), dropout 0: the local
    Trainer's model on the same 2 shards, to float rounding (docs/scale.md)."""
    out = tmp_path / "model"
    done = fraudseq_command(
        cluster.env,
        "train", small_csv, "--out", out, "--model", "lstm", "--epochs", 2,
        "--hidden-size", 8, "--dropout", 0, "--train-until", TRAIN_UNTIL, "--shards", 2,
        "--engine", "ray", "--ray-address", cluster.address, "--ray-workers", 2,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "trained on 2 Ray Train workers on 2 nodes" in done.stderr, done.stderr[-3000:]
    same_as_local_training(FraudModel.load(out), small_csv, tmp_path / "w")  # to 1e-5
    assert cluster.nodes() == 2


def test_an_address_without_a_cluster_fails_fast_naming_it(tmp_path, tiny_xgboost):
    model_dir, frame = tiny_xgboost
    data = tmp_path / "tx.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "scores.csv"
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    began = time.monotonic()
    done = fraudseq_command(
        checkout_env(), "score", model_dir, data, "--out", out, "--engine", "ray",
        "--ray-address", address, "--work-dir", tmp_path / "w", timeout=UNREACHABLE_SECONDS,
    )  # fmt: skip
    assert time.monotonic() - began < UNREACHABLE_SECONDS
    assert done.returncode == 1
    assert f"no Ray cluster at --ray-address {address} (Connection refused)" in done.stderr
    assert not out.exists()
    assert not list(tmp_path.glob("w/shards-*"))  # failed before the shards were built


def test_reachable_names_the_address_and_leaves_others_to_ray():
    port = free_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(FraudseqError, match=re.escape(f"--ray-address {address} (")):
            reachable(address)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        reachable(f"127.0.0.1:{listening.getsockname()[1]}")  # something answers: Ray's turn
    reachable("auto")
