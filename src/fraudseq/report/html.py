"""The model report: ONE self-contained HTML file (inline CSS, PNG charts as data URIs, no
scripts, no network) describing a fitted FraudModel on a labelled period.

Sections: summary card (model, data period, headline metrics with bootstrap intervals),
precision-recall and ROC curves, score distributions by class, the alerting trade-off by
threshold (precision, recall, money recall, cost), the confusion matrix at the model's
threshold, the training curves stored in the model, recall per fraud scenario (when the
schema names one), the common points of compromise (when the data has a counterparty and
labels: `fraudseq.compromise`) and the top alerts with their windows and occlusion attributions (and
attention weights for models that have them). Everything is generic over FraudModel: any
family with the window-model interface renders.
"""

from __future__ import annotations

import html
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

import fraudseq
from fraudseq import metrics
from fraudseq.io import atomic_path
from fraudseq.report import charts
from fraudseq.report.costs import Costs, report_costs
from fraudseq.report.data import ScoredPeriod, score_period

log = logging.getLogger("fraudseq")

STYLE = """
*{box-sizing:border-box}
body{font-family:"DejaVu Sans",system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;
background:#eef1f5;color:#1d2733;font-size:14px;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:1.5rem 1.5rem 3rem}
h1{font-size:1.55rem;margin:.2rem 0}h2{font-size:1.15rem;margin:0 0 .6rem}
h3{font-size:1rem;margin:1rem 0 .4rem}
section{background:#fff;border:1px solid #d9dee7;border-radius:10px;padding:1rem 1.2rem;
margin:1rem 0}
.sub{color:#5b6573;margin:0 0 .5rem}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1rem}
.facts{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem}
.facts dt{color:#5b6573}.facts dd{margin:0}
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:.6rem;margin-top:.9rem}
.tile{background:#f6f8fb;border:1px solid #e0e5ec;border-radius:8px;padding:.55rem .7rem}
.tile .k{color:#5b6573;font-size:.8rem}.tile .v{font-size:1.35rem;font-weight:600}
.tile .ci{color:#5b6573;font-size:.78rem}
table{border-collapse:collapse;margin:.4rem 0;font-size:.85rem}
td,th{padding:.22rem .45rem;border:1px solid #e0e5ec;vertical-align:middle}
th{background:#f3f5f9;text-align:left;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.current td{background:#fff4e5;font-weight:600}
img{max-width:100%;display:block;margin:.3rem 0}
.muted{color:#66707c;font-size:.85rem}
.cm td{width:9rem;text-align:right;font-size:1rem}
.bar{display:flex;align-items:center;gap:.3rem;min-width:6.5rem}
.bar .track{flex:1;height:.7rem;background:#f0f2f6;position:relative;border-radius:2px}
.bar .fill{position:absolute;top:0;bottom:0}
.bar .pos{background:#c0392b;left:50%}.bar .neg{background:#2c6fbb;right:50%}
.bar .att{background:#7d3c98;left:0}
.bar span{width:3.2rem;text-align:right;font-variant-numeric:tabular-nums;font-size:.8rem}
.alert{border-top:1px solid #e0e5ec;padding-top:.6rem;margin-top:.8rem}
.tag{display:inline-block;padding:0 .45rem;border-radius:9px;font-size:.78rem;
background:#e8ecf2;margin-left:.3rem}
.tag.fraud{background:#f6d5d1;color:#922b21}.tag.legit{background:#d6e4f5;color:#1f4e89}
.reasons{margin:.3rem 0 .2rem 1.1rem;padding:0}
details summary{cursor:pointer;color:#3b4b63}
.scroll{overflow-x:auto}
table.window{font-size:.78rem}table.window td{white-space:nowrap}
table.window td,table.window th{padding:.2rem .35rem}
td.fraud{color:#922b21;font-weight:600}td.legit{color:#66707c}
"""


# -- small HTML helpers -------------------------------------------------------------------------


def _esc(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _cell(value, digits: int = 4) -> str:
    numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{_esc(_fmt(value, digits))}</td>"


def _table(header: list[str], rows: list[list], digits: int = 4, classes: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{classes}"><tr>{head}</tr>{body}</table></div>'


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{_esc(alt)}">' if uri else ""


def _bar(value: float, scale: float, kind: str = "signed") -> str:
    """An inline CSS bar: signed attributions grow right (red) or left (blue) from the middle;
    attention grows from the left."""
    if value is None or not np.isfinite(value):
        return "<td></td>"
    if kind == "attention":
        width = 100 * min(1.0, value / scale) if scale > 0 else 0
        fill = f'<div class="fill att" style="width:{width:.1f}%"></div>'
        text = f"{value:.3f}"
    else:
        width = 50 * min(1.0, abs(value) / scale) if scale > 0 else 0
        side = "pos" if value >= 0 else "neg"
        fill = f'<div class="fill {side}" style="width:{width:.1f}%"></div>'
        text = f"{value:+.3f}"
    return f'<td><div class="bar"><div class="track">{fill}</div><span>{text}</span></div></td>'


def _interval(ci: dict | None) -> str:
    if not ci or not np.isfinite(ci.get("low", np.nan)):
        return ""
    return f"{ci['level']:.0%} CI {ci['low']:.3f}–{ci['high']:.3f}"


def _tile(name: str, value, note: str = "", digits: int = 3) -> str:
    return (
        f'<div class="tile"><div class="k">{_esc(name)}</div>'
        f'<div class="v">{_esc(_fmt(value, digits))}</div><div class="ci">{_esc(note)}</div></div>'
    )


def _facts(items: dict) -> str:
    body = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(_fmt(v))}</dd>" for k, v in items.items())
    return f'<dl class="facts">{body}</dl>'


# -- the report ---------------------------------------------------------------------------------


def build_model_report(
    model,
    data,
    *,
    start=None,
    end=None,
    model_dir: str | Path | None = None,
    title: str | None = None,
    top: int = 5,
    n_resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
    cost_fp: float | None = None,
    cost_fn: float | None = None,
    cost_by_amount: bool | None = None,
    comparison: dict[str, dict] | None = None,
    notes: dict[str, str] | None = None,
    scored: ScoredPeriod | None = None,
) -> str:
    """The report's HTML for fitted `model` on labelled `data` in [start, end).

    `comparison` maps other models' names to `FraudModel.evaluate` results on the same period
    (shown in a small table); `notes` adds lines to the summary card. Costs left at None
    come from the model's `cost:FN,FP[,amount]` threshold strategy, else the package defaults
    (see `report_costs`); the report says which. `scored`: the period already scored
    (`fraudseq.engine.report.sharded_period` gives it shard by shard, in bounded memory),
    else `data` is loaded and scored here.
    """
    started = time.perf_counter()
    if scored is None:
        scored = score_period(model, data, start=start, end=end)
    y, score = scored.labels, scored.score
    if len(y) == 0:
        raise fraudseq.FraudseqError("no transactions to report on; check --from/--until")
    threshold = float(model.threshold_)
    amount = scored.amount
    costs = report_costs(model, cost_fn=cost_fn, cost_fp=cost_fp, by_amount=cost_by_amount)
    summary = metrics.summary(y, score, threshold)
    summary["money_recall"] = metrics.money_recall(y, score, amount, threshold)
    summary["cost"] = costs.at(y, score, amount, threshold)
    summary["cp_at_100"] = metrics.card_precision_at_k(scored.entity, scored.day, y, score, 100)
    intervals = metrics.bootstrap_ci(y, score, n_resamples=n_resamples, level=level, seed=seed)
    curve = costs.curve(y, score, amount)

    family = getattr(model, "model", type(model).__name__)
    title = title or f"fraudseq report: {family} model"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body><main>",
        f"<h1>{_esc(title)}</h1>",
        f"<p class='sub'>Generated {pd.Timestamp.now().strftime('%Y-%m-%d %H:%M')} by fraudseq "
        f"{_esc(fraudseq.__version__)}. Self-contained: no scripts, no network.</p>",
        _summary_section(model, data, scored, summary, intervals, model_dir, costs, notes),
    ]
    if comparison:
        parts.append(_comparison_section(comparison))
    parts += [
        _section(
            "Ranking quality",
            _img(charts.pr_roc(y, score, threshold), "precision-recall and ROC curves")
            + "<p class='muted'>The dot is the model's alert threshold. AP is the area under "
            "the precision-recall curve; at fraud rates under 1% it says more than AUC ROC.</p>"
            if 0 < y.sum() < len(y)
            else "<p class='muted'>The period has one class only: no curves.</p>",
        ),
        _section(
            "Score distributions",
            _img(charts.score_distributions(y, score, threshold), "score distributions"),
        ),
        _threshold_section(y, score, amount, curve, threshold, costs),
        _confusion_section(summary),
        _training_section(model),
    ]
    if scored.scenario is not None:
        parts.append(_scenario_section(y, score, threshold, scored.scenario, amount))
    parts.append(_compromise_section(scored))
    parts.append(_alerts_section(model, scored, top))
    parts.append(
        f"<p class='muted'>Report built in {time.perf_counter() - started:.1f} s.</p>"
        "</main></body></html>"
    )
    return "\n".join(parts)


def write_model_report(path: str | Path, model, data, **options) -> Path:
    """Write the report for `model` on `data` atomically to `path` and return the path.

    Options are those of `build_model_report` (start, end, top, n_resamples, ...)."""
    document = build_model_report(model, data, **options)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return path


# -- sections -----------------------------------------------------------------------------------


def _section(title: str, body: str) -> str:
    return f"<section><h2>{_esc(title)}</h2>{body}</section>"


def _data_name(data) -> str:
    return "DataFrame" if isinstance(data, pd.DataFrame) else str(data)


def _summary_section(
    model, data, scored: ScoredPeriod, summary, intervals, model_dir, costs: Costs, notes
) -> str:
    schema = model.schema_
    params = model.get_params() if hasattr(model, "get_params") else {}
    period = getattr(model, "training_period_", {}) or {}
    model_facts = {
        "family": getattr(model, "model", "?"),
        "window": f"{getattr(model, 'window', '?')} events",
        "threshold": f"{model.threshold_:.4f} (chosen on validation)",
        "trained on": _period_text(period.get("train_from"), period.get("train_until")),
        "validation": (
            _period_text(period.get("valid_from"), period["valid_end"])
            if period.get("valid_end")
            else _period_text(period.get("valid_from"), period.get("valid_until"), True)
        ),
        "training windows": period.get("n_train"),
    }
    if model_dir is not None:
        model_facts["model directory"] = str(model_dir)
    times = scored.time
    n_fraud = int(summary["n_fraud"])
    data_facts = {
        "data": _data_name(data),
        "period": _period_text(scored.start, scored.end),
        "first / last": f"{_fmt(times.min())} / {_fmt(times.max())}",
        "transactions": (
            f"{len(scored):,} ({len(np.unique(scored.entity)):,} {schema.entity_column})"
        ),
        "fraud": f"{n_fraud:,} ({n_fraud / max(len(scored), 1):.2%})",
        "earlier history": f"{scored.history:,} transactions",
    }
    if notes:
        data_facts.update(notes)
    tiles = "".join(
        [
            _tile(
                "Average precision",
                summary["average_precision"],
                _interval(intervals["average_precision"]),
            ),
            _tile("AUC ROC", summary["auc_roc"], _interval(intervals["auc_roc"])),
            _tile("Recall at 1% FPR", summary["recall_at_1pct_fpr"]),
            _tile("Card precision@100", summary["cp_at_100"], "daily, handbook definition"),
            _tile("Precision at threshold", summary["precision"]),
            _tile("Recall at threshold", summary["recall"]),
            _tile("Money recall at threshold", summary["money_recall"], "share of fraud amount"),
            _tile("Cost at threshold", summary["cost"], f"{costs.note} ({costs.source})", 0),
        ]
    )
    hyper = _table(["hyperparameter", "value"], [[k, _fmt(v)] for k, v in params.items()])
    n_boot = intervals["average_precision"]["n_resamples"]
    return _section(
        "Summary",
        f"<div class='grid'><div><h3>Model</h3>{_facts(model_facts)}</div>"
        f"<div><h3>Data</h3>{_facts(data_facts)}</div></div>"
        f"<div class='tiles'>{tiles}</div>"
        f"<p class='muted'>Intervals: percentile bootstrap over {n_boot} resamples of the "
        "transactions. Accuracy is not shown: at this fraud rate it is meaningless.</p>"
        f"<details><summary>All hyperparameters</summary>{hyper}</details>",
    )


def _period_text(start, end, closed: bool = False) -> str:
    """A period as text; an open bound reads "data start"/"data end"."""
    if start is None and end is None:
        return "all data" if not closed else "–"
    if start is None:
        return f"before {_fmt(pd.Timestamp(end))}"
    if end is None:
        return f"from {_fmt(pd.Timestamp(start))}"
    return f"[{_fmt(pd.Timestamp(start))}, {_fmt(pd.Timestamp(end))}{']' if closed else ')'}"


def _comparison_section(comparison: dict[str, dict]) -> str:
    keys = [
        ("average_precision", "AP"),
        ("auc_roc", "AUC ROC"),
        ("recall_at_1pct_fpr", "recall @1% FPR"),
        ("precision", "precision @thr"),
        ("recall", "recall @thr"),
        ("f1", "F1 @thr"),
    ]
    rows = [[name] + [r.get(k, float("nan")) for k, _ in keys] for name, r in comparison.items()]
    return _section(
        "Compared models (same period)", _table(["model"] + [label for _, label in keys], rows)
    )


def _threshold_section(y, score, amount, curve: dict, threshold: float, costs: Costs) -> str:
    lowest_cost = float(curve["threshold"][int(np.argmin(curve["cost"]))])
    rows = [
        _operating_point(name, t, y, score, amount, costs)
        for name, t in (("model threshold", threshold), ("lowest cost", lowest_cost))
    ]
    table = _table(
        ["operating point", "threshold", "alerts", "precision", "recall", "money recall", "cost"],
        rows,
    )
    kind = "each missed fraud costs its amount times" if costs.by_amount else "costs per event"
    return _section(
        "Threshold trade-off",
        _img(charts.threshold_curves(curve, threshold, costs.note), "threshold curves")
        + table
        + f"<p class='muted'>Cost = false alerts × review cost + missed frauds × fraud cost "
        f"({_esc(kind)}: {_esc(costs.note)}; {_esc(costs.source)}). Alerts are transactions "
        "with score ≥ threshold.</p>",
    )


def _operating_point(name, threshold, y, score, amount, costs: Costs) -> list:
    """A trade-off table row at `threshold` itself, counted as the summary card and confusion
    matrix count it: the curve holds the lowest score at or above a threshold instead, and
    precision 1 where nothing is alerted (the summary says 0)."""
    counts = metrics.confusion(y, score, threshold)
    rates = metrics.precision_recall_f1(counts)
    return [
        name,
        threshold,
        counts["tp"] + counts["fp"],
        rates["precision"],
        rates["recall"],
        metrics.money_recall(y, score, amount, threshold),
        _round_cost(costs.at(y, score, amount, threshold)),
    ]


def _confusion_section(summary: dict) -> str:
    c = summary["confusion"]
    table = _table(
        ["", "alerted (score ≥ threshold)", "not alerted"],
        [["fraud", c["tp"], c["fn"]], ["legitimate", c["fp"], c["tn"]]],
        classes="cm",
    )
    text = (
        f"Threshold {summary['threshold']:.4f}: precision {summary['precision']:.3f}, "
        f"recall {summary['recall']:.3f}, F1 {summary['f1']:.3f}."
    )
    return _section("Confusion matrix at the threshold", table + f"<p class='muted'>{text}</p>")


def _training_section(model) -> str:
    history = [h for h in (getattr(model, "history_", None) or []) if isinstance(h, dict)]
    uri = charts.training_curves(history)
    parts = [_img(uri, "training curves")] if uri else []
    members = next((h["members"] for h in history if isinstance(h.get("members"), list)), None)
    if members:  # an ensemble: its members' own curves and weights
        parts.append(_img(charts.member_curves(members), "ensemble member curves"))
        parts.append(
            _table(
                ["member", "validation AP", "weight"],
                [[m.get("name"), m.get("valid_ap"), m.get("weight")] for m in members],
            )
        )
    if not history:
        return _section("Training curves", "<p class='muted'>No training history stored.</p>")
    keys = ("epoch", "train_loss", "valid_loss", "valid_ap", "seconds")
    keys = [k for k in keys if any(k in h for h in history)]
    rows = [[h.get(k) for k in keys] for h in history]
    if parts:
        parts.append(
            f"<details><summary>Per-epoch values ({len(history)} rows)</summary>"
            f"{_table(keys, rows)}</details>"
        )
    else:  # a single epoch: the values themselves
        parts.append(_table(keys, rows))
    return _section("Training curves", "".join(parts))


def _scenario_section(y, score, threshold, scenario, amount) -> str:
    per = metrics.recall_by_scenario(y, score, threshold, scenario, amount)
    order = sorted(per, key=lambda k: (per[k]["n_fraud"] == 0, k))
    rows = [
        [
            name,
            per[name]["n"],
            per[name]["n_fraud"],
            per[name]["caught"],
            per[name]["recall"],
            per[name].get("money_recall", float("nan")),
            per[name]["alert_rate"],
            per[name]["mean_score"],
        ]
        for name in order
    ]
    return _section(
        "Recall by scenario",
        _table(
            [
                "scenario",
                "transactions",
                "fraud",
                "caught",
                "recall",
                "money recall",
                "alert rate",
                "mean score",
            ],
            rows,
        )
        + "<p class='muted'>At the model's threshold. The scenario column is ground truth and "
        "never a feature; values without fraud show how often legitimate look-alikes alert.</p>",
    )


def _compromise_section(scored: ScoredPeriod, top: int = 10) -> str:
    """The counterparties whose visitors in the period later turned fraudulent
    (`fraudseq.compromise`), when the data has a counterparty and labels; else nothing.

    Over the period's (scored) rows alone, which a sharded period holds too, so that both
    give the same section."""
    from fraudseq.compromise import rank_counterparties

    schema = scored.schema
    names = (schema.entity_column, schema.counterparty, schema.label, schema.scenario)
    columns = {name: scored.column(name) for name in dict.fromkeys(names) if name}
    if columns.get(schema.counterparty) is None or columns.get(schema.label) is None:
        return ""
    frame = pd.DataFrame({k: v for k, v in columns.items() if v is not None})
    frame[schema.time] = scored.time.to_numpy()
    result = rank_counterparties(frame, schema)
    suspects = result.top(top)
    suspects = suspects[suspects["later_fraud"] > 0]
    if suspects.empty:
        return _section(
            "Common points of compromise",
            "<p class='muted'>No visitor of any counterparty in the period had a later fraud.</p>",
        )
    truth = "scenario" in suspects.columns
    header = [
        "rank",
        schema.counterparty,
        "visitors",
        "later fraud",
        "share",
        "lift",
        "lift low",
        "lift high",
        "first suspect visit",
        "last suspect visit",
        "median days to fraud",
    ] + (["first frauds' scenario (truth)"] if truth else [])
    rows = [
        [
            int(r.rank),
            r.counterparty,
            int(r.visitors),
            int(r.later_fraud),
            float(r.share),
            float(r.lift),
            float(r.lift_low),
            float(r.lift_high),
            pd.Timestamp(r.first_visit),
            pd.Timestamp(r.last_visit),
            float(r.median_days_to_fraud),
        ]
        + ([r.scenario] if truth else [])
        for r in suspects.itertuples(index=False)
    ]
    p = result.parameters
    return _section(
        "Common points of compromise",
        f"<p class='sub'>Counterparties whose visitors in the period had a known fraud in "
        f"it within {p['window_days']:g} days after the visit, against the base rate: "
        f"{result.base_rate:.2%} of {result.visitors:,} (visitor, {_esc(schema.counterparty)}) "
        "pairs. Data stolen at a common point is used elsewhere, where no single account's "
        "history shows it.</p>"
        + _table(header, rows, digits=3)
        + f"<p class='muted'>Ranked by the lift's lower bound: {_esc(p['interval'])}. Visits: "
        f"{_esc(p['visits'])}. Labels: the report's period is labelled; {_esc(p['labels'])}. "
        "`fraudseq compromise` gives the whole ranking for any period.</p>",
    )


def _alerts_section(model, scored: ScoredPeriod, top: int) -> str:
    from fraudseq.explain import BASELINE, explain_rows

    if top <= 0:
        return ""
    picked = np.argsort(-scored.score, kind="stable")[:top]
    try:
        frame, encoded, rows = scored.explained(model, picked)
        explanations = explain_rows(model, frame, encoded, rows)
    except Exception as err:  # a report must render even if a new family cannot be explained
        log.warning("explanations unavailable: %s", err)
        return _section("Top alerts", f"<p class='muted'>Explanations unavailable: {_esc(err)}</p>")
    body = [
        f"<p class='muted'>The {len(rows)} highest-scored transactions of the period. "
        "<b>Attribution</b> (log-odds) is the score change when the event (or feature) is "
        f"occluded: {_esc(BASELINE)}. Red pushes towards fraud, blue away. "
        + (
            "<b>Attention</b> is where the network looked from the scored event; it is not an "
            "attribution.</p>"
            if any(e.attention is not None for e in explanations)
            else "This model family has no attention weights.</p>"
        )
    ]
    for rank, explanation in enumerate(explanations, 1):
        body.append(_alert_block(model, rank, explanation))
    return _section(f"Top {len(rows)} alerts, explained", "".join(body))


def _alert_block(model, rank: int, e) -> str:
    from fraudseq.explain import top_reasons

    schema = model.schema_
    tags = f"<span class='tag'>score {e.score:.3f}</span>"
    tags += (
        "<span class='tag'>alert</span>" if e.alert else "<span class='tag'>below threshold</span>"
    )
    if e.label is not None:
        cls, text = ("fraud", "fraud") if e.label else ("legit", "legitimate")
        if e.label and e.scenario not in (None, "none", "0"):
            text += f": {e.scenario}"
        tags += f"<span class='tag {cls}'>{_esc(text)}</span>"
    head = (
        f"<h3>#{rank} {_esc(e.transaction_id)} · {_esc(schema.entity_column)} {_esc(e.entity)} · "
        f"{_esc(_fmt(e.time))}{tags}</h3>"
    )
    reasons = top_reasons(e, 3)
    reason_html = (
        "<ul class='reasons'>"
        + "".join(
            f"<li>{_esc(r['description'])} "
            f"<span class='muted'>({r['attribution']:+.3f})</span></li>"
            for r in reasons
        )
        + "</ul>"
        if reasons
        else "<p class='muted'>No single event or feature pushes the score up on its own.</p>"
    )
    window = e.window
    shown = [c for c in schema.categorical if c in window.columns]
    has_truth = schema.label is not None and schema.label in window.columns
    has_attention = "attention" in window.columns
    header = ["step", "time", "gap", schema.amount, *shown]
    header += ["fraud?"] if has_truth else []
    header += ["attribution"] + (["attention"] if has_attention else [])
    earlier = window.loc[~window["current"], "attribution"].abs()
    # Bars are scaled to the earlier events (what drove the score); the scored event's own
    # bar may saturate, its value is printed beside it.
    scale = max(float(earlier.max()) if len(earlier) else 0.0, 0.05)
    # Attention bars: full at the window's peak, half for a uniform weight (1/length).
    att_scale = (
        max(float(np.nanmax(window["attention"])), 2 / len(window)) if has_attention else 1.0
    )
    gaps = window["event_time"].diff()
    lines = []
    n = len(window)
    for i in range(n):
        row = window.iloc[i]
        cells = [
            f"<td class='num'>{'now' if row['current'] else i - n + 1}</td>",
            f"<td>{_esc(pd.Timestamp(row['event_time']).strftime('%m-%d %H:%M'))}</td>",
            f"<td class='num'>{_esc(_gap(gaps.iloc[i]))}</td>",
            _cell(float(row["event_amount"]), 2),
            *(_cell(row[c]) for c in shown),
        ]
        if has_truth:
            truth = _truth(row, schema)
            css = "legit" if truth == "legit" else "fraud"
            cells.append(f"<td class='{css}'>{_esc(truth)}</td>")
        cells.append(_bar(float(row["attribution"]), scale))
        if has_attention:
            cells.append(_bar(float(row["attention"]), att_scale, "attention"))
        css = " class='current'" if row["current"] else ""
        lines.append(f"<tr{css}>{''.join(cells)}</tr>")
    head_row = "".join(f"<th>{_esc(h)}</th>" for h in header)
    window_table = (
        f"<div class='scroll'><table class='window'><tr>{head_row}</tr>{''.join(lines)}"
        "</table></div>"
    )
    features = e.features.head(6)
    f_scale = float(np.abs(features["attribution"]).max()) if len(features) else 1.0
    f_rows = "".join(
        f"<tr><td>{_esc(r.feature)}</td>{_cell(r.value)}{_bar(float(r.attribution), f_scale)}</tr>"
        for r in features.itertuples()
    )
    feature_table = (
        "<table><tr><th>current-event feature</th><th>value</th><th>attribution</th></tr>"
        f"{f_rows}</table>"
    )
    return (
        f"<div class='alert'>{head}<b>Top reasons</b>{reason_html}"
        f"<h3>The account's window (oldest first)</h3>{window_table}"
        f"<h3>Features of the scored transaction with the largest effect</h3>{feature_table}</div>"
    )


def _round_cost(cost: float) -> float | int:
    return int(round(cost)) if float(cost).is_integer() else round(cost, 2)


def _truth(row, schema) -> str:
    if int(row[schema.label]) == 0:
        return "legit"
    scenario = schema.scenario
    if scenario and scenario in row.index and str(row[scenario]) not in ("none", "0", "<NA>"):
        return str(row[scenario])  # the fraud scenario's name
    return "fraud"


def _gap(delta) -> str:
    if delta is None or pd.isna(delta):
        return ""
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
