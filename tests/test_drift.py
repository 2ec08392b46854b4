"""Drift: the measures, `fraudseq monitor` on simulated data with an injected shift, and the
service's score drift gauges.

The shift (after 2026-02-15): amounts x3 for 20% of the cards, and a new country mix (every
later transaction's country drawn uniformly from the countries of the file, where the
simulator's are mostly the card's home country). The simulator has a `country` column, so
the country mix is shifted there.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from scipy.stats import wasserstein_distance
from typer.testing import CliRunner

from fraudseq import drift
from fraudseq.cli import app
from fraudseq.errors import FraudseqError
from fraudseq.fraud_model import FraudModel
from fraudseq.schema import Schema
from fraudseq.serving.http.app import create_app
from fraudseq.simulate import simulate

SHIFT = "2026-02-15"
CURRENT = {"start": SHIFT, "end": "2026-02-22"}
#: Features computed from the amount or the country (new_values_in_window counts values new
#: to the account in every categorical column, the country among them); every other feature
#: is bit for bit the same with and without the shift.
SHIFTED_INPUTS = ("amount", "country")


def derived_from_shift(name: str) -> bool:
    return any(part in name for part in SHIFTED_INPUTS) or name == "new_values_in_window"


def shifted(frame: pd.DataFrame, after: str = SHIFT, seed: int = 0) -> pd.DataFrame:
    """`frame` with amounts x3 for 20% of the cards and a uniform country mix after `after`."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    later = (out.ts >= after).to_numpy()
    cards = np.sort(out.card_id.unique())
    chosen = rng.choice(cards, size=len(cards) // 5, replace=False)
    tripled = later & out.card_id.isin(chosen).to_numpy()
    out.loc[tripled, "amount"] = out.loc[tripled, "amount"] * 3
    out.loc[later, "country"] = rng.choice(np.sort(out.country.unique()), size=later.sum())
    return out


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate(accounts=300, days=60, seed=7)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, frame):
    path = tmp_path_factory.mktemp("drift") / "model"
    FraudModel("xgboost", n_estimators=20).fit(frame, train_until="2026-02-08").save(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return FraudModel.load(model_dir)


@pytest.fixture(scope="module")
def results(model, frame):
    return {
        "control": drift.monitor(model, frame, **CURRENT),
        "shifted": drift.monitor(model, shifted(frame), **CURRENT),
    }


# -- the measures --------------------------------------------------------------------------
def test_psi_of_quantile_bins():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=10_000)
    ref = drift.NumericReference.of(reference)
    assert len(ref.edges) == 9 and np.allclose(ref.shares, 0.1)
    assert drift.psi(ref.shares, drift.bin_shares(reference, ref.edges)) == 0
    # a shift of half a std: PSI about 0.25 (the textbook value for d = 0.5 is 0.25)
    moved = drift.psi(ref.shares, drift.bin_shares(reference + 0.5, ref.edges))
    assert 0.2 < moved < 0.3
    # an empty bin counts as PSI_EPSILON, so PSI stays finite
    assert math.isfinite(drift.psi(ref.shares, drift.bin_shares(reference + 100, ref.edges)))


def test_a_binary_feature_keeps_its_two_values_apart():
    # 5% ones: every decile is 0, the bins are (-inf, 0] and (0, inf)
    reference = (np.arange(1000) % 20 == 0).astype(float)
    ref = drift.NumericReference.of(reference)
    assert ref.edges.tolist() == [0.0] and ref.shares.tolist() == [0.95, 0.05]
    more = (np.arange(1000) % 5 == 0).astype(float)
    assert drift.bin_shares(more, ref.edges).tolist() == [0.8, 0.2]


def test_distances_are_evidently_s():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 2, 5000), rng.normal(1, 2, 4000)
    expected = wasserstein_distance(a, b) / np.std(a)
    assert drift.normed_wasserstein(a, b, float(np.std(a))) == pytest.approx(expected)
    assert drift.normed_wasserstein(np.zeros(5), np.ones(5), 0.0) == pytest.approx(1000)
    assert drift.jensen_shannon(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0
    assert drift.jensen_shannon(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(
        math.sqrt(math.log(2))
    )


def test_thresholds_are_checked():
    with pytest.raises(FraudseqError, match="--psi-threshold"):
        drift.Thresholds(psi=0.3, psi_significant=0.25)
    with pytest.raises(FraudseqError, match="--alert-rate-ratio"):
        drift.Thresholds(alert_rate_ratio=1)
    t = drift.Thresholds()
    assert drift.rate_verdict(0.02, 0.01, t)["drifted"]
    assert drift.rate_verdict(0.004, 0.01, t)["drifted"]
    assert not drift.rate_verdict(0.015, 0.01, t)["drifted"]
    assert drift.rate_verdict(0.01, 0.0, t)["ratio"] == math.inf


# -- monitor ----------------------------------------------------------------------------------
def by_name(result: dict) -> dict[str, dict]:
    return {e["name"]: e for e in result["features"]}


def test_the_shift_flags_exactly_the_shifted_features(results):
    control, shift = by_name(results["control"]), by_name(results["shifted"])
    # Features the shift does not touch are the same numbers either way.
    for name, e in control.items():
        if not derived_from_shift(name):
            assert shift[name] == e, name
    newly = {n for n in shift if shift[n]["drifted"] and not control[n]["drifted"]}
    amounts = {"amount", "log_amount", "amount_7d", "amount_to_mean"}
    assert newly == amounts | {"country", "new_country"}
    # Between the validation week and a later one, without any shift, what drifts is what
    # grows with the file (n_previous, the 30-day merchant counts) and the fraud labels the
    # counterparty features see; none of it comes from amounts or countries but
    # new_values_in_window (new values of any column, fewer as histories grow).
    assert {n for n, e in control.items() if e["drifted"]} == {
        "n_previous",
        "cp_count_30d",
        "cp_risk_1d",
        "cp_first_fraud_days",
        "cp_last_fraud_days",
        "new_values_in_window",
    }
    for name in ("country", "new_country", "new_values_in_window"):
        assert shift[name]["psi"] > 0.25, name  # significant
    # the score moves with the shift, and not without it
    assert results["shifted"]["score"]["drifted"] and not results["control"]["score"]["drifted"]


def test_the_report_shape_and_order(results, model):
    result = results["shifted"]
    assert set(result) >= {"reference", "current", "thresholds", "features", "score"}
    assert result["reference"]["source"] == "the model's validation period"
    assert result["reference"]["from"] == model.training_period_["valid_from"]
    assert result["current"]["from"] == "2026-02-15 00:00:00" and result["current"]["n"] > 3000
    names = [e["name"] for e in result["features"]]
    assert set(names) == set(model.encoder_.numeric_names_) | set(model.schema_.categorical)
    severities = [e["severity"] for e in result["features"]]
    assert severities == sorted(severities, reverse=True)  # worst first
    for e in [*result["features"], result["score"]]:
        assert {"name", "psi", "drifted", "distance", "distance_kind", "psi_level"} <= set(e)
        assert isinstance(e["drifted"], bool)
        kind = drift.JENSEN_SHANNON if e["kind"] == "categorical" else drift.WASSERSTEIN
        assert e["distance_kind"] == kind
    rate = result["alert_rate"]
    assert rate["expected"] == pytest.approx(model.reference_["alert_rate"])
    assert rate["expected_from"] == "validation" and rate["n"] == result["current"]["n"]


def test_an_empty_period_names_its_range(model, frame):
    with pytest.raises(FraudseqError, match=r"no transactions in \[2027-01-01 00:00:00, None\)"):
        drift.monitor(model, frame, start="2027-01-01")
    with pytest.raises(FraudseqError, match=r"\[2025-01-01 00:00:00, 2025-02-01.*--reference-from"):
        drift.monitor(
            model, frame, **CURRENT, reference_start="2025-01-01", reference_end="2025-02-01"
        )


def test_monitor_command_writes_json_and_html(model_dir, frame, tmp_path):
    data = tmp_path / "tx.csv"
    shifted(frame).to_csv(data, index=False)
    out_json, out_html = tmp_path / "out" / "drift.json", tmp_path / "drift.html"
    args = ["monitor", str(model_dir), str(data), "--from", SHIFT, "--until", CURRENT["end"]]
    result = CliRunner().invoke(app, [*args, "--json", str(out_json), "--out", str(out_html)])
    assert result.exit_code == 0, result.output
    assert "new_country" in result.output and "DRIFT" in result.output
    assert "alert rate" in result.output
    written = json.loads(out_json.read_text())
    assert written["features"][0]["name"] == "new_country" and written["features"][0]["drifted"]
    assert written["score"]["name"] == "score"
    page = out_html.read_text()
    assert page.startswith("<!doctype html>") and "new_country" in page and "<script" not in page
    assert not list(tmp_path.glob("**/.*.tmp"))  # written atomically


def test_monitor_never_writes_over_its_inputs(model_dir, frame, tmp_path):
    data = tmp_path / "tx.csv"
    frame.head(10).to_csv(data, index=False)
    before = data.read_bytes()
    runner = CliRunner()
    result = runner.invoke(app, ["monitor", str(model_dir), str(data), "--json", str(data)])
    assert isinstance(result.exception, FraudseqError)
    assert "the transactions file itself" in str(result.exception)
    assert data.read_bytes() == before
    inside = model_dir / "drift.json"
    result = runner.invoke(app, ["monitor", str(model_dir), str(data), "--json", str(inside)])
    assert "inside the model directory" in str(result.exception) and not inside.exists()
    result = runner.invoke(app, ["monitor", str(model_dir), str(data), "--out", "d.json"])
    assert "--out d.json writes the HTML page" in str(result.exception)
    result = runner.invoke(app, ["monitor", str(tmp_path / "nope"), str(data)])
    assert result.exit_code != 0 and "nope" in str(result.exception)


# -- the model's stored reference ---------------------------------------------------------------
def test_training_stores_the_reference(model_dir, model):
    stored = json.loads((model_dir / "model.json").read_text())["reference"]
    assert stored == model.reference_
    assert set(stored["features"]["numeric"]) == set(model.encoder_.numeric_names_)
    assert set(stored["features"]["categorical"]) == set(model.schema_.categorical)
    score = drift.score_reference(model)
    assert len(score.edges) <= 9 and score.shares.sum() == pytest.approx(1)
    assert len(score.values) == drift.STORED_QUANTILES and score.n == 3894
    assert 0 < stored["alert_rate"] < 0.05


def test_the_stored_reference_gives_the_data_s_psi(model, frame, results):
    """Without the reference period in the file: what training stored of the validation
    period. The same PSI; the distances from 200 stored quantiles, close to the exact ones."""
    current = shifted(frame)
    current = current[current.ts >= "2026-02-10"]  # the validation period is not in it
    with pytest.raises(FraudseqError, match="--reference-from/--reference-until"):
        drift.monitor(model, current, **CURRENT)
    result = drift.monitor(model, current, **CURRENT, stored=True)
    assert result["reference"]["source"] == "stored in the model: the model's validation period"
    assert result["reference"]["n"] == 3894
    exact = by_name(results["shifted"])
    # the history before 2026-02-10 is missing, so compare the features that need none
    for name in ("country", "mcc", "channel", "amount", "log_amount", "hour_sin", "dow_cos"):
        got, want = by_name(result)[name], exact[name]
        assert got["psi"] == pytest.approx(want["psi"], abs=1e-12), name
        assert got["distance"] == pytest.approx(want["distance"], abs=0.01), name
        assert got["drifted"] == want["drifted"], name
    with pytest.raises(FraudseqError, match="takes no --reference-from"):
        drift.monitor(model, frame, stored=True, reference_start="2026-02-01")


def test_a_model_saved_before_the_reference_loads(model_dir):
    from fraudseq.artifacts import load_model_dir

    config, tensors, files = load_model_dir(model_dir)
    del config["reference"]
    old = FraudModel._from_config(model_dir, config, tensors, files)
    assert old.reference_ is None and drift.score_reference(old) is None
    with pytest.raises(FraudseqError, match="stores no feature reference"):
        drift.stored_reference(old)
    # the expected alert rate then comes from the validation confusion counts
    new = FraudModel.load(model_dir)
    assert drift.expected_alert_rate(old)[0] == pytest.approx(new.reference_["alert_rate"])


# -- the service's gauges -----------------------------------------------------------------------
def gauge(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def live(model_dir, data: pd.DataFrame) -> dict[str, float]:
    """Serve the model, send `data` from 2026-02-01 through 2026-02-22 in batches (the week
    before the shift builds the accounts' state), and read the drift gauges: the window
    holds the last 1,500 scores, all after the shift."""
    schema = Schema.simulator()
    rows = data[(data.ts >= "2026-02-01") & (data.ts < CURRENT["end"])]
    columns = ["tx_id", "card_id", "amount", *schema.categorical]
    txs = rows[columns].assign(ts=rows.ts.dt.strftime("%Y-%m-%dT%H:%M:%S")).to_dict("records")
    app_ = create_app(
        model_dir=model_dir, detector_options={"clock": "data"}, drift_window=1500, drift_every=100
    )
    with TestClient(app_) as client:
        for i in range(0, len(txs), 1000):
            reply = client.post("/v1/score/batch", json={"transactions": txs[i : i + 1000]})
            assert reply.status_code == 200, reply.text
        text = client.get("/metrics").text
    names = ("score_psi", "score_wasserstein", "alert_rate", "alert_rate_expected")
    return {n: gauge(text, f"fraudseq_{n}") for n in names} | {
        "window": gauge(text, "fraudseq_drift_window_scores")
    }


def test_service_gauges_move_under_shifted_traffic(model_dir, model, frame):
    control, shift = live(model_dir, frame), live(model_dir, shifted(frame))
    assert control["window"] == shift["window"] == 1500
    assert control["alert_rate_expected"] == pytest.approx(model.reference_["alert_rate"])
    assert control["score_psi"] < 0.1 <= shift["score_psi"]
    assert shift["score_wasserstein"] > control["score_wasserstein"]
    assert 0 <= control["alert_rate"] <= 1


def test_gauges_without_a_reference_report_the_alert_rate_only():
    from prometheus_client import CollectorRegistry

    from fraudseq.serving.http.metrics import ScoreDriftGauges

    gauges = ScoreDriftGauges(CollectorRegistry(), window=4, every=2)
    gauges.set_model(None)
    gauges.observe([0.1, 0.9, 0.2], [False, True, False])
    assert gauges.alert_rate._value.get() == pytest.approx(1 / 3)
    assert math.isnan(gauges.psi._value.get()) and math.isnan(gauges.expected._value.get())
    gauges.observe([0.95, 0.99, 0.97], [True, True, True])  # the window keeps the last 4
    assert gauges.size._value.get() == 4 and gauges.alert_rate._value.get() == 0.75
    # a call that answered a retry is left out; a call of new scores (repeats once) is kept
    gauges = ScoreDriftGauges(CollectorRegistry(), window=4, every=10)
    replies = [{"transaction_id": "a", "fraud_probability": 0.5, "alert": False}] * 2
    gauges.observe_call(replies, {"scored": 0})
    gauges.observe_call([*replies, {"transaction_id": "b"}], {"scored": 1})
    assert gauges._filled == 0
    gauges.observe_call(replies, {"scored": 1})
    assert gauges._filled == 1 and gauges._scores[0] == 0.5
