"""One line describing the machine and the code, printed (and saved) by every benchmark,
and `save_results`, which writes a benchmark's results JSON with that line and its command."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

from fraudseq.io import write_json

RESULTS = Path(__file__).parent / "results"


def describe() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{commit()}"
    )


def commit() -> str:
    """The checkout's commit, marked when its code differs from it (so a result can be
    traced); results files and docs do not count."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "commit unknown"
    # Pathspecs from the top of the repository (git runs in benchmarks/): code, not results.
    changed = git("status", "--porcelain", "--", ":(top)src", ":(top)benchmarks/*.py")
    return f"commit {head}" + (" with uncommitted code changes" if changed else "")


def save_results(name: str, results: dict, path: Path | None = None) -> Path:
    """Write `results` with the machine, the command line and the time to
    benchmarks/results/<name>.json (or `path`), through fraudseq's `write_json`."""
    path = path or RESULTS / f"{name}.json"
    record = {
        "machine": describe(),
        "command": " ".join(sys.argv),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **results,
    }
    write_json(record, path)  # atomic, strict JSON, sorted keys like the other results
    print("results:", path)
    return path
