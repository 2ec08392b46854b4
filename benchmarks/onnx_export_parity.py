"""`fraudseq export`'s parity check, per family with a window network: the largest
|ONNX Runtime logit - torch logit| on one random window of every length 1..16.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/onnx_export_parity.py

Trains each family (2 epochs, hidden size 32) on simulate(accounts=300, days=40, seed=7)
before 2026-01-31, exports it to a temporary directory and prints the difference that
export measured and stored in inputs.json (docs/production.md shows a run).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import fraudseq
from fraudseq.export import export_model

FAMILIES = ("lstm", "gru", "rnn", "lstm-attention", "bilstm-attention")


def main() -> None:
    frame = fraudseq.simulate(accounts=300, days=40, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            start = time.perf_counter()
            model = fraudseq.FraudModel(
                family, epochs=2, hidden_size=32, window=16, seed=0, progress=False
            ).fit(frame, train_until="2026-01-31")
            described = export_model(model, Path(tmp) / family, source=family)
            difference = described["parity"]["max_abs_logit_difference"]
            seconds = time.perf_counter() - start
            print(f"{family:17s} max |onnx - torch| logit {difference:.2g}  ({seconds:.1f} s)")


if __name__ == "__main__":
    main()
