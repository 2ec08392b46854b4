"""A self-contained HTML report (no scripts, no network) comparing evaluated models."""

from __future__ import annotations

import html
from pathlib import Path

from fraudseq.io import atomic_path

HEADLINE = (
    ("average_precision", "AP (PR-AUC)"),
    ("auc_roc", "AUC ROC"),
    ("recall_at_1pct_fpr", "Recall @ 1% FPR"),
    ("precision", "Precision @ thr"),
    ("recall", "Recall @ thr"),
    ("f1", "F1 @ thr"),
    ("threshold", "Threshold"),
)

STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1d2733}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .7rem;border:1px solid #dde}
th{background:#f3f5f9;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
.card{background:#f7f9fc;border:1px solid #dde;border-radius:8px;padding:1rem 1.2rem}
.muted{color:#66707c}
"""


def _cell(value) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metrics_section(results: dict[str, dict]) -> str:
    rows = [[name] + [r[key] for key, _ in HEADLINE] for name, r in results.items()]
    return _table(["model"] + [label for _, label in HEADLINE], rows)


def confusion_section(result: dict) -> str:
    c = result["confusion"]
    return _table(
        ["", "predicted fraud", "predicted legit"],
        [["actual fraud", c["tp"], c["fn"]], ["actual legit", c["fp"], c["tn"]]],
    )


def history_section(history: list[dict]) -> str:
    keys = [
        k for k in ("epoch", "train_loss", "valid_loss", "valid_ap", "seconds") if k in history[0]
    ]
    return _table(keys, [[h[k] for k in keys] for h in history])


def write_report(
    path: str | Path,
    *,
    title: str,
    summary: dict[str, str],
    results: dict[str, dict],
    main_model: str,
    history: list[dict],
) -> Path:
    """Write the report atomically and return its path."""
    main = results[main_model]
    facts = "".join(
        f"<li><b>{html.escape(k)}:</b> {html.escape(str(v))}</li>" for k, v in summary.items()
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<div class='card'><ul>{facts}</ul></div>",
        "<h2>Held-out metrics</h2>",
        metrics_section(results),
        "<p class='muted'>Ranking metrics first; accuracy is not shown because it is "
        "meaningless at this fraud rate.</p>",
        f"<h2>Confusion matrix of {html.escape(main_model)} at its threshold</h2>",
        confusion_section(main),
        f"<h2>Training curve of {html.escape(main_model)}</h2>",
        history_section(history),
        "</body></html>",
    ]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path
