"""Common points of compromise (`fraudseq.compromise`, `fraudseq compromise`, the report's
section): exact counts on a hand-built frame, the simulator's skimmed merchants on top,
labels after --until unused, clear errors, atomic JSON that never replaces the input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from fraudseq.compromise import COLUMNS, rank_counterparties
from fraudseq.errors import FraudseqError
from fraudseq.schema import Schema, load_transactions
from fraudseq.simulate import simulate
from test_cli import run

SCHEMA = Schema.simulator()


def tiny() -> pd.DataFrame:
    """Visits at M1-M3 in January 2026; every fraud at M9 (a place where stolen data is used,
    which must not count as a visit):

    - A visits M1 on 01-02, fraud 01-10            -> later fraud for M1 (8 days)
    - B visits M1 01-03 and M2 01-04, fraud 01-20  -> later fraud for M1 (17 d) and M2 (16 d)
    - C visits M1 01-05, no fraud                  -> visitor of M1
    - D visits M2 01-06, fraud 02-03 (after until) -> visitor of M2; its label is not known
    - E fraud 01-01 12:00, visits M1 01-07         -> already compromised: not a visit
    - F visits M3 2025-12-20 (before from) and 01-08, fraud 01-30 -> later fraud for M3 (22 d)
    """
    rows = [
        ("A", "2026-01-02", "M1", 0),
        ("A", "2026-01-10", "M9", 1),
        ("B", "2026-01-03", "M1", 0),
        ("B", "2026-01-04", "M2", 0),
        ("B", "2026-01-20", "M9", 1),
        ("C", "2026-01-05", "M1", 0),
        ("D", "2026-01-06", "M2", 0),
        ("D", "2026-02-03", "M9", 1),
        ("E", "2026-01-01 12:00", "M9", 1),
        ("E", "2026-01-07", "M1", 0),
        ("F", "2025-12-20", "M3", 0),
        ("F", "2026-01-08", "M3", 0),
        ("F", "2026-01-30", "M9", 1),
    ]
    frame = pd.DataFrame(rows, columns=["card_id", "ts", "merchant_id", "is_fraud"])
    return frame.assign(
        tx_id=[f"T{i:03d}" for i in range(len(frame))],
        ts=pd.to_datetime(frame["ts"], format="ISO8601"),
        amount=10.0,
        mcc="5411",
        country="US",
        channel="pos",
        device_id="D1",
        fraud_type=np.where(frame["is_fraud"] == 1, "skimmer", "none"),
    )


def ranked(frame: pd.DataFrame, **options):
    options = {"start": "2026-01-01", "end": "2026-02-01", **options}
    return rank_counterparties(load_transactions(frame, SCHEMA), SCHEMA, **options)


def test_tiny_frame_exact_counts_lift_and_interval():
    result = ranked(tiny())
    table = result.table.set_index("counterparty")
    assert list(result.table.columns) == [*COLUMNS, "scenario"]
    assert set(table.index) == {"M1", "M2", "M3"}  # M9 has frauds only: no visits
    assert table["visitors"].to_dict() == {"M1": 3, "M2": 2, "M3": 1}
    assert table["later_fraud"].to_dict() == {"M1": 2, "M2": 1, "M3": 1}
    assert (result.visitors, result.later_fraud) == (6, 4)
    base = 4 / 6
    assert result.base_rate == pytest.approx(base)
    assert table.loc["M1", "share"] == pytest.approx(2 / 3)
    assert table.loc["M1", "lift"] == pytest.approx((2 / 3) / base)
    # Exact (Clopper-Pearson) intervals, simultaneous over the 3 counterparties.
    alpha = 0.05 / 3
    assert table.loc["M3", "share_low"] == pytest.approx(alpha / 2)  # 1 of 1: (alpha/2)^(1/n)
    assert table.loc["M3", "share_high"] == 1.0
    assert table.loc["M1", "share_low"] == pytest.approx(beta.ppf(alpha / 2, 2, 2))
    assert table.loc["M1", "share_high"] == pytest.approx(beta.ppf(1 - alpha / 2, 3, 1))
    assert table.loc["M2", "share_low"] == pytest.approx(beta.ppf(alpha / 2, 1, 2))
    for name in ("low", "high"):
        np.testing.assert_allclose(table[f"lift_{name}"], table[f"share_{name}"] / base)
    # Ranked by the lift's lower bound.
    assert list(result.table["counterparty"]) == list(
        table["lift_low"].sort_values(ascending=False).index
    )
    assert list(result.table["rank"]) == [1, 2, 3]
    # Suspected window and days to fraud of M1: A's and B's visits, 8 and 17 days before.
    assert table.loc["M1", "first_visit"] == pd.Timestamp("2026-01-02")
    assert table.loc["M1", "last_visit"] == pd.Timestamp("2026-01-03")
    assert table.loc["M1", "median_days_to_fraud"] == pytest.approx(12.5)
    assert table.loc["M1", "scenario"] == "skimmer (2)"


def test_window_days_limits_later_fraud():
    table = ranked(tiny(), window_days=10).table.set_index("counterparty")
    assert table["later_fraud"].to_dict() == {"M1": 1, "M2": 0, "M3": 0}
    assert pd.isna(table.loc["M2", "first_visit"])
    assert table.loc["M2", "lift_low"] == 0.0


def test_labels_after_until_are_not_used():
    frame = simulate(accounts=400, days=40, seed=2, scenarios=("skimmer",))
    until = pd.Timestamp("2026-01-28")
    before = ranked(frame, start="2026-01-10", end=until)
    changed = frame.copy()
    late = changed["ts"] >= until
    rng = np.random.default_rng(0)
    changed.loc[late, "is_fraud"] = rng.integers(0, 2, late.sum())
    after = ranked(changed, start="2026-01-10", end=until)
    pd.testing.assert_frame_equal(before.table, after.table)
    assert before.base_rate == after.base_rate
    # while a frame that knows them ranks differently
    assert not ranked(frame, start="2026-01-10", end=None).table.equals(before.table)


def test_two_of_two_does_not_outrank_forty_of_two_hundred():
    """A small counterparty reaching 2 of 2 by chance stays below a large one with 40 of 200,
    with a base rate of 10% over many counterparties."""
    rows, card = [], 0
    spec = [("BIG", 200, 40), ("SMALL", 2, 2)] + [(f"N{i}", 20, 2) for i in range(100)]
    for merchant, visitors, frauds in spec:
        for j in range(visitors):
            rows.append((f"C{card}", "2026-01-02", merchant, 0))
            if j < frauds:
                rows.append((f"C{card}", "2026-01-09", "FRAUD", 1))
            card += 1
    frame = pd.DataFrame(rows, columns=["card_id", "ts", "merchant_id", "is_fraud"])
    frame = frame.assign(
        tx_id=[f"T{i}" for i in range(len(frame))],
        ts=pd.to_datetime(frame["ts"], format="ISO8601"),
        amount=1.0,
        mcc="5411",
        country="US",
        channel="pos",
        device_id="D",
        fraud_type="none",
    )
    table = ranked(frame).table
    assert list(table["counterparty"][:2]) == ["BIG", "SMALL"]


def known_points_of_compromise(frame: pd.DataFrame) -> tuple[set, set]:
    """The simulator's skimmed merchants, and the compromised merchants of the default
    scenario (those that added fraudulent charges on cards that had shopped there)."""
    skimmed = {m["merchant_id"] for m in frame.attrs["skimmed_merchants"]}
    genuine = frame[frame["is_fraud"] == 0]
    visit = genuine.groupby(["card_id", "merchant_id"])["ts"].min().rename("visit")
    charges = frame[frame["fraud_type"] == "compromised_merchant"].join(
        visit, on=["card_id", "merchant_id"], how="inner"
    )
    return skimmed, set(charges.loc[charges["visit"] < charges["ts"], "merchant_id"])


def test_skimmed_merchants_rank_at_the_top():
    frame = simulate(accounts=2000, days=60, seed=0, scenarios=("skimmer",))
    skimmed, compromised = known_points_of_compromise(frame)
    assert len(skimmed) >= 10
    table = ranked(frame, start="2026-01-01", end="2026-03-02").table
    truth = table["counterparty"].isin(skimmed | compromised)
    assert truth.head(10).mean() >= 0.8  # precision at 10 against the known points
    assert truth.head(20).mean() >= 0.7
    # The skimmed merchants themselves: most in the top 5% of about 1,000 merchants.
    ranks = table.loc[table["counterparty"].isin(skimmed), "rank"]
    assert len(ranks) == len(skimmed)
    assert ranks.median() <= 0.05 * len(table)
    assert (table.loc[table["counterparty"].isin(skimmed), "scenario"] != "").all()
    assert table.loc[table["rank"] <= 20, "lift_low"].min() > 0


def test_errors_name_the_fix(tmp_path, monkeypatch, capsys):
    frame = load_transactions(tiny(), SCHEMA)
    no_party = Schema.from_dict({**SCHEMA.to_dict(), "counterparty": None})
    with pytest.raises(FraudseqError, match=r"no counterparty column.*counterparty = "):
        rank_counterparties(frame, no_party)
    no_label = Schema.from_dict({**SCHEMA.to_dict(), "label": None, "scenario": None})
    with pytest.raises(FraudseqError, match=r"no label column.*label = "):
        rank_counterparties(frame, no_label)
    with pytest.raises(FraudseqError, match="--from .* is not before --until"):
        rank_counterparties(frame, SCHEMA, start="2026-02-01", end="2026-01-01")

    data = tmp_path / "tx.csv"
    tiny().to_csv(data, index=False)
    schema = tmp_path / "schema.toml"
    text = (Path(__file__).parent.parent / "schemas" / "simulator.toml").read_text()
    schema.write_text(text.replace('counterparty = "merchant_id"', ""))
    assert run(monkeypatch, "compromise", data, "--schema", schema) == 1
    assert 'add counterparty = "COLUMN"' in capsys.readouterr().err
    unlabelled = tmp_path / "unlabelled.csv"
    tiny().drop(columns=["is_fraud"]).to_csv(unlabelled, index=False)
    assert run(monkeypatch, "compromise", unlabelled) == 1
    assert "is_fraud" in capsys.readouterr().err


def test_cli_json_is_atomic_and_never_replaces_the_input(tmp_path, monkeypatch, capsys):
    data = tmp_path / "skim.csv.gz"
    assert run(monkeypatch, "simulate", "--out", data, "--accounts", 300, "--days", 40,
               "--scenario", "skimmer", "--seed", 4) == 0  # fmt: skip
    out = tmp_path / "suspects.json"
    assert run(monkeypatch, "compromise", data, "--from", "2026-01-05", "--until",
               "2026-02-05", "--top", 5, "--json", out) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "common points of compromise by merchant_id" in printed
    assert "not known" in printed  # the labels note
    result = json.loads(out.read_text())
    assert result["parameters"]["until"] == "2026-02-05T00:00:00"
    assert "not known" in result["parameters"]["labels"]
    assert len(result["suspects"]) == 5
    assert [s["rank"] for s in result["suspects"]] == [1, 2, 3, 4, 5]
    assert 0 < result["base_rate"] < 1

    before = data.read_bytes()
    assert run(monkeypatch, "compromise", data, "--json", tmp_path / "." / data.name) == 1
    assert "is the transactions file itself" in capsys.readouterr().err
    assert data.read_bytes() == before

    # A write that fails half-way leaves the previous file whole and no temporary file.
    previous = out.read_bytes()
    real = Path.write_text

    def half_then_fail(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_fail)
    assert run(monkeypatch, "compromise", data, "--json", out) == 1
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skim.csv.gz", "suspects.json"]


def test_report_has_the_section_on_skimmer_data(trained):
    from fraudseq.report import build_model_report

    frame = simulate(accounts=600, days=40, seed=7, scenarios=("skimmer",))
    document = build_model_report(trained, frame, start="2026-01-20", top=0, n_resamples=10)
    assert "<h2>Common points of compromise</h2>" in document
    assert "skimmer (" in document  # the ground-truth column names the typology


def test_report_section_absent_without_counterparty(trained, small_frame):
    from fraudseq.report.data import score_period
    from fraudseq.report.html import _compromise_section

    scored = score_period(trained, small_frame, start="2026-01-31")
    assert "Common points of compromise" in _compromise_section(scored)
    scored.schema = Schema.from_dict({**SCHEMA.to_dict(), "counterparty": None})
    assert _compromise_section(scored) == ""
    scored.frame = scored.frame.drop(columns=["merchant_id"])  # data without the column
    scored.schema = SCHEMA
    assert _compromise_section(scored) == ""
