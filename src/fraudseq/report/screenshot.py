"""Render a report in headless Chromium and check the screenshot is not blank.

Used by `benchmarks/report_screenshot.py` and `tests/test_report.py`; install Chromium with
`scripts/install-chromium.sh`. Chromium runs with networking, sync, updates and QUIC off and a
throw-away profile directory, so rendering a report never reaches the network.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name) if not name.startswith("/") else name
        if found and Path(found).exists():
            return found
    return None


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    *,
    width: int = 1200,
    height: int = 3000,
    timeout: float = 120,
) -> Path:
    """Screenshot `html_path` (the top `width` x `height` pixels) into `png_path`."""
    chromium = chromium_path()
    if chromium is None:
        raise FileNotFoundError("chromium is not installed; run scripts/install-chromium.sh")
    png_path = Path(png_path).resolve()
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="fraudseq-chromium-") as profile:
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--screenshot={png_path}",
            f"--window-size={width},{height}",
            Path(html_path).resolve().as_uri(),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if not png_path.exists():
        raise RuntimeError(
            f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
        )
    return png_path


def png_stats(png_path: str | Path) -> dict:
    """What a screenshot holds: bytes, width, height, `non_white_share` (pixels darker than
    near-white), `non_background_share` (pixels other than the most common colour: a blank or
    unstyled page is close to 0), `colour_share` (clearly coloured pixels: chart lines, bars)
    and `colours` (distinct colours)."""
    from PIL import Image

    with Image.open(png_path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    packed = (pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2]
    values, counts = np.unique(packed, return_counts=True)
    return {
        "bytes": Path(png_path).stat().st_size,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
        "non_white_share": float((pixels < 245).any(axis=-1).mean()),
        "non_background_share": float(1 - counts.max() / packed.size),
        "colour_share": float(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 60).mean()),
        "colours": int(len(values)),
    }


# What a rendered report must at least show (checked by the tests and
# benchmarks/report_screenshot.py): each statistic of `png_stats` must exceed its minimum.
RENDER_MINIMUMS = {
    "bytes": 100_000,  # a blank 1200x3000 page is ~17 kB
    "non_background_share": 0.15,  # text, cards, tables and charts over the page background
    "colour_share": 0.005,  # the charts' coloured curves and bars
    "colours": 500,
}


def render_failures(stats: dict) -> dict:
    """The statistics at or below their minimum: empty when the page looks rendered."""
    return {k: stats[k] for k, minimum in RENDER_MINIMUMS.items() if stats[k] <= minimum}
