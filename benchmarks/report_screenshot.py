"""Render an HTML report in headless Chromium and check the screenshot is not blank.

    .venv/bin/python benchmarks/report_screenshot.py                      # simulate, train, report
    .venv/bin/python benchmarks/report_screenshot.py --html demo_output/report.html

Without --html it simulates a small data set, trains a small LSTM, writes the report to
--out-dir and screenshots it. Prints the screenshot's statistics and exits 1 when the page
looks blank or unstyled. Needs Chromium (scripts/install-chromium.sh).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from fraudseq.fraud_model import FraudModel
from fraudseq.report import write_model_report
from fraudseq.report.screenshot import chromium_path, png_stats, render_failures, screenshot
from fraudseq.simulate import simulate


def build_report(out_dir: Path, seed: int) -> Path:
    frame = simulate(accounts=400, days=40, seed=seed)
    model = FraudModel("lstm", epochs=3, hidden_size=32, seed=seed, progress=False)
    model.fit(frame, train_until="2026-01-31", valid_days=7)
    return write_model_report(
        out_dir / "report.html",
        model,
        frame,
        start="2026-01-31",
        title="fraudseq report screenshot check",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--html", type=Path, help="An existing report to screenshot.")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/screenshot"))
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if chromium_path() is None:
        sys.exit("chromium is not installed; run scripts/install-chromium.sh as root")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    html = args.html or build_report(args.out_dir, args.seed)
    started = time.perf_counter()
    png = screenshot(html, args.out_dir / "report.png", width=args.width, height=args.height)
    stats = png_stats(png)
    stats["render_seconds"] = round(time.perf_counter() - started, 2)
    failed = render_failures(stats)
    print(f"report: {Path(html).resolve()}\nscreenshot: {png}")
    print(json.dumps(stats, indent=2))
    print("screenshot check:", "FAILED " + json.dumps(failed) if failed else "passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
