"""`fraudseq monitor --out`: the drift result as one self-contained HTML page in the model
report's style (its CSS and table helpers; no scripts, no network)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import fraudseq
from fraudseq.drift import PSI_BINS
from fraudseq.io import atomic_path
from fraudseq.report.html import STYLE, _esc, _facts, _section, _table


def drift_section(result: dict) -> str:
    """The drift tables: the score, the alert rate and every feature, worst first."""
    t, a = result["thresholds"], result["alert_rate"]
    header = ["feature", "kind", "PSI", "level", "distance", "distance kind", "drifted"]

    def row(e: dict) -> list:
        return [e[k] for k in ("name", "kind", "psi", "psi_level", "distance", "distance_kind")] + [
            e["drifted"]
        ]

    ref, cur = result["reference"], result["current"]
    facts = _facts(
        {
            "current period": f"{_span(cur)}: {cur['n']:,} tx",
            "reference period": f"{_span(ref)}: {ref['n']:,} tx ({ref['source']})",
            "alert rate": f"{a['rate']:.4%} ({a['alerts']:,} of {a['n']:,}) against "
            f"{a['expected']:.4%} expected ({a['expected_from']})"
            + (" — drifted" if a["drifted"] else ""),
            "drifted features": ", ".join(result["drifted_features"]) or "none",
        }
    )
    rule = (
        f"<p class='muted'>Drifted: PSI &ge; {t['psi']:g} (significant &ge; "
        f"{t['psi_significant']:g}) or distance &ge; {t['distance']:g} (Wasserstein over the "
        f"reference's std for numeric features, Jensen-Shannon distance for categorical ones); "
        f"the alert rate at {t['alert_rate_ratio']:g}&times; the expected or 1/"
        f"{t['alert_rate_ratio']:g} of it. PSI: {PSI_BINS} bins at the reference's quantiles.</p>"
    )
    return _section(
        "Drift",
        facts
        + _table(header, [row(result["score"])])
        + "<h3>Features, worst first</h3>"
        + _table(header, [row(e) for e in result["features"]])
        + rule,
    )


def write_drift_page(result: dict, path: str | Path, *, model_dir=None) -> Path:
    """Write the drift page atomically to `path`."""
    title = "fraudseq drift" + (f": {model_dir}" if model_dir is not None else "")
    document = "\n".join(
        [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body><main>",
            f"<h1>{_esc(title)}</h1>",
            f"<p class='sub'>Generated {pd.Timestamp.now().strftime('%Y-%m-%d %H:%M')} by "
            f"fraudseq {_esc(fraudseq.__version__)}. Self-contained: no scripts, no network.</p>",
            drift_section(result),
            "</main></body></html>",
        ]
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path


def _span(period: dict) -> str:
    return f"[{period['from'] or 'start'}, {period['until'] or 'end'})"
