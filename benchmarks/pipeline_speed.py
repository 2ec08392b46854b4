"""Speed of the skeleton's data path, as ratios against references measured in the same run.

    .venv/bin/python benchmarks/pipeline_speed.py [--rows 1000000]

1. Encoding + windows for ~1M simulated transactions (goal <= 10 s).
2. Training throughput of the Trainer against raw torch forward+backward on pre-built
   tensors of the same shapes, same model and batch size (goal >= 70%).
3. End-to-end batch scoring (`fraudseq score`: read CSV, encode, window, predict, write CSV)
   in transactions per second (goal >= 100k/s).

Results are saved to benchmarks/results/pipeline_speed.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe, save_results  # noqa: E402

from fraudseq.features import FeatureEncoder  # noqa: E402
from fraudseq.fraud_model import FraudModel  # noqa: E402
from fraudseq.models import RecurrentClassifier  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402
from fraudseq.simulate import simulate  # noqa: E402
from fraudseq.training import Trainer, WindowSet, WindowSource  # noqa: E402
from fraudseq.windows import window_index  # noqa: E402


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def encoding_and_windows(frame, schema):
    encoder, fit_s = timed(lambda: FeatureEncoder(schema).fit(frame))
    encoded, transform_s = timed(lambda: encoder.transform(frame))
    positions = np.arange(len(encoded))
    (_, _), window_s = timed(lambda: window_index(positions, encoded.starts, 16, len(encoded)))
    print(
        f"encoding fit {fit_s:.2f}s + transform {transform_s:.2f}s + windows (all {len(frame):,} "
        f"x 16) {window_s:.2f}s = {fit_s + transform_s + window_s:.2f}s  (goal <= 10 s)"
    )
    seconds = {"fit": fit_s, "transform": transform_s, "windows": window_s}
    return encoder, encoded, {**seconds, "total": sum(seconds.values())}


def training_throughput(encoder, encoded, labels, n_windows: int, batch_size: int):
    source = WindowSource(encoded, 16)
    rng = np.random.default_rng(0)
    positions = rng.choice(len(encoded), size=n_windows, replace=False)
    train = WindowSet(source, positions, labels[encoded.order][positions].astype(np.float32))
    torch.manual_seed(0)
    net = RecurrentClassifier(encoder.n_numeric, encoder.cardinalities, cell="lstm")
    trainer = Trainer(epochs=1, batch_size=batch_size, progress=False)
    _, trainer_s = timed(lambda: trainer.fit(net, train, None))

    # Reference: the same model and step on tensors already in memory (no gathering).
    numeric, categorical, lengths = source.batch(positions[:batch_size])
    target = torch.from_numpy(train.labels[:batch_size])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    net.train()

    def raw_steps():
        for _ in range(n_windows // batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(numeric, categorical, lengths), target).backward()
            optimizer.step()

    _, raw_s = timed(raw_steps)
    trainer_rate = n_windows / trainer_s
    raw_rate = (n_windows // batch_size) * batch_size / raw_s
    print(
        f"training: Trainer {trainer_rate:,.0f} windows/s, raw torch fwd+bwd {raw_rate:,.0f} "
        f"windows/s -> {100 * trainer_rate / raw_rate:.0f}% (goal >= 70%)"
    )
    return {
        "trainer_windows_per_s": trainer_rate,
        "raw_torch_windows_per_s": raw_rate,
        "ratio": trainer_rate / raw_rate,
    }


def scoring_throughput(frame, schema, workdir: Path):
    data = workdir / "tx.csv"
    frame.to_csv(data, index=False)
    # A small model is enough to time scoring: one epoch on the first quarter of the data,
    # its last 2 days for validation.
    model = FraudModel("lstm", epochs=1, progress=False).fit(
        frame.iloc[: len(frame) // 4], schema, valid_days=2
    )
    model.save(workdir / "model")
    command = [
        sys.executable,
        "-m",
        "fraudseq",
        "score",
        str(workdir / "model"),
        str(data),
        "--out",
        str(workdir / "scores.csv"),
    ]
    _, seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    print(
        f"scoring end to end (CLI, read CSV -> write CSV, process start included): "
        f"{len(frame):,} in {seconds:.2f}s = {len(frame) / seconds:,.0f} tx/s (goal >= 100k/s)"
    )
    _, in_process = timed(lambda: model.score(frame))
    print(f"scoring in process (DataFrame in, DataFrame out): {len(frame) / in_process:,.0f} tx/s")
    return {
        "cli_tx_per_s": len(frame) / seconds,
        "cli_seconds": seconds,
        "in_process_tx_per_s": len(frame) / in_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=20000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--train-windows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    print("machine:", describe())
    schema = Schema.simulator()
    frame = load_transactions(simulate(accounts=args.accounts, days=args.days, seed=0), schema)
    print(f"data: {len(frame):,} simulated transactions")
    encoder, encoded, encoding = encoding_and_windows(frame, schema)
    labels = frame[schema.label].to_numpy()
    training = training_throughput(encoder, encoded, labels, args.train_windows, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        scoring = scoring_throughput(frame, schema, Path(tmp))
    save_results(
        "pipeline_speed",
        {
            "args": vars(args),
            "transactions": len(frame),
            "encoding_and_windows_seconds": encoding,
            "training": training,
            "scoring": scoring,
        },
    )


if __name__ == "__main__":
    main()
