"""Shared fixtures: small seeded simulator data, written once per test session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest

from fraudseq.simulate import simulate

SMALL = {"accounts": 300, "days": 40, "seed": 7}
TRAIN_UNTIL = "2026-01-31"  # simulate() starts on 2026-01-01
REDIS_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "redis-server.sh"


@pytest.fixture(scope="session")
def small_frame() -> pd.DataFrame:
    return simulate(**SMALL)


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory, small_frame) -> str:
    path = tmp_path_factory.mktemp("data") / "tx.csv"
    small_frame.to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="session")
def trained(small_frame):
    from fraudseq.fraud_model import FraudModel

    model = FraudModel("lstm", epochs=2, hidden_size=16, seed=3, progress=False)
    return model.fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)


@pytest.fixture(scope="session")
def tiny_xgboost(tmp_path_factory):
    """A small saved XGBoost model on the simulator's schema, trained once per session (per
    xdist worker) for the serving tests that need a real Detector: (model_dir, frame)."""
    import fraudseq

    frame = fraudseq.simulate(accounts=120, days=30, seed=5)
    model_dir = tmp_path_factory.mktemp("tiny_xgboost") / "model"
    model = fraudseq.FraudModel("xgboost", n_estimators=10)
    model.fit(frame, train_until="2026-01-24").save(model_dir)
    return model_dir, frame


@pytest.fixture(scope="session")
def served_xgboost(tmp_path_factory):
    """The saved XGBoost model (200 simulated accounts, 20 trees) that test_api and
    test_serve_cli serve, trained once per session (per xdist worker): (model_dir, frame)."""
    import fraudseq

    frame = fraudseq.simulate(accounts=200, days=30)
    model_dir = tmp_path_factory.mktemp("served_xgboost") / "model"
    model = fraudseq.FraudModel("xgboost", n_estimators=20)
    model.fit(frame, train_until="2026-01-24").save(model_dir)
    return model_dir, frame


@pytest.fixture(scope="session")
def tiny_lstm_dir(tmp_path_factory, small_frame):
    """test_state.make_model_dir's tiny LSTM, trained once per session (per xdist worker) for
    the serving modules that score with it (state, detector, batch, event time, redis)."""
    from test_state import make_model_dir

    return make_model_dir(small_frame, tmp_path_factory.mktemp("tiny_lstm") / "model")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Live scoring runs one torch thread (as `fraudseq serve` does); serving test modules
    use this with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL printed by scripts/redis-server.sh, which installs redis-server if needed and
    starts it on 127.0.0.1:6399 (or $REDIS_PORT). Skipped only if the script cannot."""
    pytest.importorskip("redis", reason="redis-py is not installed (pip install 'redis>=5')")
    try:
        done = subprocess.run(
            ["bash", str(REDIS_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"scripts/redis-server.sh could not run: {err}")
    if done.returncode != 0:
        pytest.skip(
            f"scripts/redis-server.sh could not install/start redis-server: "
            f"{done.stderr.strip()[-500:]}"
        )
    return done.stdout.strip().splitlines()[-1]
