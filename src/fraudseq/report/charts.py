"""Report charts: matplotlib figures rendered off-screen (Agg) to base64 PNG data URIs.

Figures are built with `matplotlib.figure.Figure` directly, never pyplot, so no global state
or GUI backend is involved and charts can be drawn from any thread.
"""

from __future__ import annotations

import base64
import io

import numpy as np

FRAUD = "#c0392b"
LEGIT = "#2c6fbb"
ACCENT = "#7d3c98"
GREY = "#8a94a0"
DPI = 110
MAX_POINTS = 2000


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, color="#e3e7ee", linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def to_data_uri(fig) -> str:
    """PNG bytes of `fig` as a `data:` URI (the Agg canvas is used for PNG output)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thin(*arrays: np.ndarray, points: int = MAX_POINTS) -> list[np.ndarray]:
    """Keep at most `points` evenly spaced entries (plus the last) of curve arrays."""
    n = len(arrays[0])
    if n <= points:
        return list(arrays)
    keep = np.unique(np.r_[np.linspace(0, n - 1, points).astype(int), n - 1])
    return [a[keep] for a in arrays]


def pr_roc(y: np.ndarray, score: np.ndarray, threshold: float) -> str:
    """Precision-recall and ROC curves side by side, the operating point marked."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig, (pr, roc) = _figure(10, 4.0, 2)
    precision, recall, _ = precision_recall_curve(y, score)
    recall, precision = _thin(recall[::-1], precision[::-1])
    # AP's rectangles: the precision at recall r_n holds on (r_n-1, r_n].
    pr.plot(recall, precision, color=ACCENT, linewidth=2, drawstyle="steps-pre")
    base_rate = float(np.mean(y))
    pr.axhline(base_rate, color=GREY, linestyle=":", label=f"no skill ({base_rate:.2%})")
    alert = score >= threshold
    tp = np.sum(alert & (y == 1))
    op_precision = tp / max(alert.sum(), 1)
    op_recall = tp / max(np.sum(y == 1), 1)
    pr.plot([op_recall], [op_precision], "o", color=FRAUD, markersize=8, label="threshold")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    pr.set_title("Precision-recall", loc="left", fontweight="bold")
    pr.legend(loc="lower left", frameon=False)

    fpr, tpr, _ = roc_curve(y, score)
    fpr, tpr = _thin(fpr, tpr)
    roc.plot(fpr, tpr, color=ACCENT, linewidth=2)
    roc.plot([0, 1], [0, 1], color=GREY, linestyle=":", label="no skill")
    op_fpr = np.sum(alert & (y == 0)) / max(np.sum(y == 0), 1)
    roc.plot([op_fpr], [op_recall], "o", color=FRAUD, markersize=8, label="threshold")
    roc.axvline(0.01, color=GREY, linestyle="--", linewidth=1, label="1% FPR")
    roc.set(xlabel="false positive rate", ylabel="true positive rate (recall)")
    roc.set(xlim=(0, 1), ylim=(0, 1.02))
    roc.set_title("ROC", loc="left", fontweight="bold")
    roc.legend(loc="lower right", frameon=False)
    return to_data_uri(fig)


def score_distributions(y: np.ndarray, score: np.ndarray, threshold: float) -> str:
    """Histograms of the fraud probability for legitimate and fraudulent transactions
    (each normalised to its own class, log scale), with the threshold."""
    fig, (ax,) = _figure(10, 3.4)
    bins = np.linspace(0, 1, 51)
    for label, color, name in ((0, LEGIT, "legitimate"), (1, FRAUD, "fraud")):
        values = score[y == label]
        if len(values) == 0:
            continue
        weights = np.full(len(values), 1.0 / len(values))
        ax.hist(
            values,
            bins=bins,
            weights=weights,
            color=color,
            alpha=0.55,
            label=f"{name} (n={len(values):,})",
            histtype="stepfilled",
            edgecolor=color,
        )
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
    right = threshold > 0.5  # label on the side of the line with more room
    ax.annotate(
        f"threshold {threshold:.3f}",
        (threshold, 1),
        xycoords=("data", "axes fraction"),
        xytext=(-4 if right else 4, -12),
        textcoords="offset points",
        ha="right" if right else "left",
    )
    ax.set_yscale("log")
    ax.set(xlabel="fraud probability", ylabel="share of the class", xlim=(0, 1))
    ax.set_title("Score distribution by class", loc="left", fontweight="bold")
    fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return to_data_uri(fig)


def threshold_curves(curve: dict, threshold: float, cost_note: str) -> str:
    """Precision, recall, money recall and cost against the alert threshold."""
    fig, (ax,) = _figure(10, 3.8)
    t = curve["threshold"][1:]  # skip the "no alert" entry at +inf
    keys = [
        ("precision", "precision", ACCENT),
        ("recall", "recall", FRAUD),
        ("money_recall", "money recall (fraud amount caught)", "#d68910"),
    ]
    keys = [k for k in keys if k[0] in curve]
    t, cost, *series = _thin(t, curve["cost"][1:], *(curve[k][1:] for k, _, _ in keys))
    for (_, name, color), values in zip(keys, series, strict=True):
        ax.plot(t, values, color=color, linewidth=2, label=name)
    ax.set(xlabel="alert threshold (fraud probability)", ylabel="rate", xlim=(0, 1))
    ax.set_ylim(0, 1.02)
    cost_ax = ax.twinx()
    cost_ax.plot(t, cost, color="black", linewidth=1.5, linestyle="-.", label=f"cost ({cost_note})")
    cost_ax.set_ylabel("cost")
    cost_ax.spines["top"].set_visible(False)
    best = int(np.argmin(curve["cost"]))
    best_t = float(curve["threshold"][best])
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1.2)
    ax.annotate(
        f"chosen {threshold:.3f}",
        (threshold, 0.97),
        xycoords=("data", "axes fraction"),
        xytext=(4, 0),
        textcoords="offset points",
    )
    if np.isfinite(best_t):
        ax.axvline(best_t, color=GREY, linestyle=":", linewidth=1.2)
        ax.annotate(
            f"min cost {best_t:.3f}",
            (best_t, 0.88),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            color="#555",
        )
    handles = ax.get_legend_handles_labels()
    cost_handles = cost_ax.get_legend_handles_labels()
    fig.legend(
        handles[0] + cost_handles[0],
        handles[1] + cost_handles[1],
        loc="outside lower center",
        ncols=4,
        frameon=False,
    )
    ax.set_title("Alerting trade-off by threshold", loc="left", fontweight="bold")
    return to_data_uri(fig)


def training_curves(history: list[dict]) -> str | None:
    """Loss and validation AP per epoch (boosting round for tree models); None for fewer
    than two epochs (nothing to draw a curve through)."""
    if len(history) < 2:
        return None
    losses = [k for k in ("train_loss", "valid_loss") if any(k in h for h in history)]
    has_ap = any("valid_ap" in h for h in history)
    panels = int(bool(losses)) + int(has_ap)
    if panels == 0:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(10 if panels == 2 else 6, 3.2, panels)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
    axis = iter(axes)
    unit = "epoch" if losses else "boosting round"
    if losses:
        ax = next(axis)
        for key, color in zip(losses, (LEGIT, FRAUD), strict=False):
            values = [h.get(key, np.nan) for h in history]
            ax.plot(epochs, values, marker="o", markersize=3, color=color, label=key)
        ax.set(xlabel=unit, ylabel="loss")
        ax.set_title("Loss", loc="left", fontweight="bold")
        ax.legend(frameon=False)
    if has_ap:
        ax = next(axis)
        values = [h.get("valid_ap", np.nan) for h in history]
        markers = "o" if len(history) < 60 else None
        ax.plot(epochs, values, marker=markers, markersize=3, color=ACCENT)
        best = int(np.nanargmax(values))
        ax.plot([epochs[best]], [values[best]], "o", color=FRAUD, markersize=8, label="best")
        ax.set(xlabel=unit, ylabel="average precision")
        ax.set_title("Validation AP", loc="left", fontweight="bold")
        ax.legend(frameon=False)
    return to_data_uri(fig)


def member_curves(members: list[dict]) -> str | None:
    """Validation AP per epoch (or boosting round) of each member of an ensemble."""
    curves = [
        (m.get("name", f"member {i}"), [h.get("valid_ap", np.nan) for h in m.get("history", [])])
        for i, m in enumerate(members)
    ]
    curves = [(name, values) for name, values in curves if values]
    if not curves:
        return None
    fig, (ax,) = _figure(10, 3.2)
    for name, values in curves:
        steps = np.arange(1, len(values) + 1)
        marker = "o" if len(values) < 30 else None
        ax.plot(steps, values, linewidth=1.8, marker=marker, markersize=4, label=name)
    ax.set(xlabel="epoch / boosting round", ylabel="validation AP")
    ax.set_xscale("log" if max(len(v) for _, v in curves) > 50 else "linear")
    ax.set_title("Ensemble members: validation AP", loc="left", fontweight="bold")
    ax.legend(frameon=False)
    return to_data_uri(fig)
