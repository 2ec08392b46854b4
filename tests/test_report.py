"""The HTML report: one self-contained file, every section, generic over model families, and
a real render in headless Chromium."""

import base64
import copy
import html
import re
from types import SimpleNamespace

import numpy as np
import pytest

from fraudseq import metrics
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.models import MODELS
from fraudseq.report import build_model_report, write_model_report
from fraudseq.report.costs import report_costs
from fraudseq.report.data import score_period
from fraudseq.report.screenshot import chromium_path, png_stats, render_failures, screenshot
from fraudseq.simulate import simulate
from test_cli import run

TRAIN_UNTIL = "2026-01-31"  # as in conftest.py
SECTIONS = (
    "Summary",
    "Ranking quality",
    "Score distributions",
    "Threshold trade-off",
    "Confusion matrix at the threshold",
    "Training curves",
    "Recall by scenario",
    "alerts, explained",
)


@pytest.fixture(scope="module")
def report_html(trained, small_csv, tmp_path_factory):
    """The report of the trained LSTM, written by `fraudseq report` from a saved model."""
    folder = tmp_path_factory.mktemp("report")
    trained.save(folder / "model")
    out = folder / "report.html"
    with pytest.MonkeyPatch.context() as monkeypatch:
        code = run(
            monkeypatch,
            "report",
            folder / "model",
            small_csv,
            "--from",
            TRAIN_UNTIL,
            "--out",
            out,
            "--top",
            3,
            "--resamples",
            50,
        )
    assert code == 0
    return out


def test_report_is_one_self_contained_file(report_html):
    text = report_html.read_text(encoding="utf-8")
    assert [p.name for p in report_html.parent.iterdir() if p.name.startswith(".")] == []
    for title in SECTIONS:
        assert title in text, title
    assert "<script" not in text.lower()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//|file:)", text)
    assert "http://" not in text and "https://" not in text
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 4  # PR/ROC, score distributions, threshold, training curves
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "95% CI" in text  # bootstrap intervals on the headline metrics
    assert text.count("The account's window") == 3
    assert "card_testing" in text  # the per-scenario table


def test_report_renders_in_headless_chromium(report_html, tmp_path):
    if chromium_path() is None:
        pytest.skip("chromium is not installed (run scripts/install-chromium.sh as root)")
    stats = png_stats(screenshot(report_html, tmp_path / "report.png"))
    assert (stats["width"], stats["height"]) == (1200, 3000)
    assert render_failures(stats) == {}, stats  # text, cards, tables, coloured charts


def test_failed_report_keeps_the_existing_file(trained, small_frame, tmp_path):
    path = tmp_path / "report.html"
    path.write_text("old")
    with pytest.raises(FraudseqError):
        write_model_report(path, trained, small_frame, start="2030-01-01")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


@pytest.fixture(scope="module")
def tiny_frame():
    return simulate(accounts=120, days=30, seed=2)


# "lstm" is covered by the fixture above: every other family renders too.
FAMILIES = [m for m in MODELS if m != "lstm"]


@pytest.mark.parametrize("family", FAMILIES)
def test_report_renders_for_other_families(family, tiny_frame):
    model = FraudModel(
        family, epochs=1, hidden_size=8, n_estimators=40, seed=0, progress=False
    ).fit(tiny_frame, train_until="2026-01-24", valid_days=5)
    text = build_model_report(model, tiny_frame, start="2026-01-24", top=2, n_resamples=20)
    for title in SECTIONS:
        assert title in text, (family, title)
    assert text.count("The account's window") == 2
    if family.endswith("attention") or family == "transformer":
        assert "<th>attention</th>" in text and "not an attribution" in text
    else:
        assert "has no attention weights" in text
    if family == "ensemble":
        assert "ensemble member curves" in text


# -- the costs the report prices alerts with ---------------------------------------------------


def _model_with(threshold=None, stored=()):
    """Just what `report_costs` reads of a model: its strategy and stored strategies."""
    return SimpleNamespace(threshold=threshold, thresholds_=dict.fromkeys(stored, 0.5))


def test_report_costs_default_to_the_model_cost_strategy():
    costs = report_costs(_model_with("cost:200,5", ["cost:200,5", "best-f1"]))
    assert (costs.fn, costs.fp, costs.by_amount) == (200, 5, False)
    assert "cost:200,5" in costs.source
    weighted = report_costs(_model_with("cost:1,25,amount"))
    assert (weighted.fn, weighted.fp, weighted.by_amount) == (1, 25, True)
    assert weighted.note == "missed fraud = 1 × amount, alert = 25"
    # a stored cost strategy counts when the model's own strategy sets no costs
    stored = report_costs(_model_with(None, ["best-f1", "recall:0.8", "cost:50,2"]))
    assert (stored.fn, stored.fp) == (50, 2) and "cost:50,2" in stored.source


def test_report_costs_given_win_and_defaults_say_so():
    model = _model_with("cost:200,5")
    partly = report_costs(model, cost_fp=2)
    assert (partly.fn, partly.fp) == (200, 2) and partly.source.startswith("partly set")
    given = report_costs(model, cost_fn=10, cost_fp=1, by_amount=False)
    assert (given.fn, given.fp, given.source) == (10, 1, "set for this report")
    default = report_costs(_model_with("best-f1", ["best-f1", "precision:0.8"]))
    assert (default.fn, default.fp) == (metrics.COST_FN, metrics.COST_FP)
    assert default.source.startswith("package defaults")


def _plain(document: str) -> str:
    """A report's visible text, images and tags dropped, on one line."""
    document = re.sub(r"<img[^>]*>", "", document)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", document)).split())


def test_report_prices_alerts_with_the_model_cost_strategy(trained, small_frame):
    model = copy.copy(trained).rethreshold(small_frame, "cost:200,5")
    text = _plain(build_model_report(model, small_frame, start=TRAIN_UNTIL, top=0, n_resamples=10))
    y, score = _labels_and_scores(model, small_frame)
    expected = metrics.cost_at_threshold(y, score, model.threshold_, cost_fn=200, cost_fp=5)
    assert (
        f"Cost at threshold {expected:.0f} missed fraud = 200, alert = 5 "
        "(from the model's threshold strategy cost:200,5)" in text
    )
    assert "missed fraud = 10" not in text


def _labels_and_scores(model, frame):
    scored = score_period(model, frame, start=TRAIN_UNTIL)
    return scored.labels, scored.score


def _trade_off_row(text: str, name: str) -> list[str]:
    """threshold, alerts, precision, recall of a trade-off table row, as shown."""
    return re.search(rf"{name} (\S+) (\S+) (\S+) (\S+)", text).groups()


@pytest.mark.parametrize("where", ["between two scores", "above every score"])
def test_trade_off_row_is_the_model_threshold(trained, small_frame, where):
    y, score = _labels_and_scores(trained, small_frame)
    top = np.unique(score)[-20:]  # the widest gap between high scores shows in 4 digits
    gap = int(np.argmax(np.diff(top)))
    model = copy.copy(trained)
    model.threshold_ = (
        float((top[gap] + top[gap + 1]) / 2) if where == "between two scores" else top[-1] + 0.01
    )
    text = _plain(build_model_report(model, small_frame, start=TRAIN_UNTIL, top=0, n_resamples=10))
    counts = metrics.confusion(y, score, model.threshold_)
    rates = metrics.precision_recall_f1(counts)
    assert _trade_off_row(text, "model threshold") == (
        f"{model.threshold_:.4f}",
        str(counts["tp"] + counts["fp"]),
        f"{rates['precision']:.4f}",
        f"{rates['recall']:.4f}",
    )
    # the confusion matrix's line says the same, to its 3 digits
    assert (
        f"Threshold {model.threshold_:.4f}: precision {rates['precision']:.3f}, "
        f"recall {rates['recall']:.3f}" in text
    )
    if where == "above every score":  # no alerts: precision 0, as the summary card says
        assert counts["tp"] + counts["fp"] == 0 and rates["precision"] == 0
        assert "Precision at threshold 0.000" in text
