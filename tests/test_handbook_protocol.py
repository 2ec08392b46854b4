"""benchmarks/handbook_protocol.py: the handbook's four folds (dates), its known-card removal
anchored at each fold's training week, the bound per fold, and the tables it prints. Tiny
synthetic frames only; the real run is `make bench-handbook`."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import handbook_protocol as hp  # noqa: E402

from fraudseq.schema import Schema, load_transactions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DAY = pd.Timedelta(days=1)


def _d(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def test_the_four_folds_are_the_handbooks():
    plan = hp.folds("2018-04-01", "2018-09-30 23:59")
    assert [(f.train_from, f.test_from, f.test_until) for f in plan] == [
        (_d("2018-08-15"), _d("2018-08-29"), _d("2018-09-05")),
        (_d("2018-08-08"), _d("2018-08-22"), _d("2018-08-29")),
        (_d("2018-08-01"), _d("2018-08-15"), _d("2018-08-22")),
        (_d("2018-07-25"), _d("2018-08-08"), _d("2018-08-15")),
    ]
    for f in plan:  # 7 training days, validation the 7 days before, 7 delay days
        assert f.train_until - f.train_from == 7 * DAY
        assert (f.valid_from, f.valid_until) == (f.train_from - 7 * DAY, f.train_from)
        assert f.test_from - f.train_until == 7 * DAY
    assert [hp.span(f.test_from, f.test_until) for f in plan] == [
        "08-29..09-04",
        "08-22..08-28",
        "08-15..08-21",
        "08-08..08-14",
    ]
    # The tuning folds (--start 2018-07-18) test before the first headline test day.
    tuning = hp.folds("2018-04-01", "2018-09-30 23:59", "2018-07-18")
    assert tuning[0].test_until == plan[-1].test_from


def _frame(rows) -> pd.DataFrame:
    """Handbook-shaped transactions from (customer, time, fraud, scenario, terminal)."""
    table = pd.DataFrame(
        rows, columns=["CUSTOMER_ID", "TX_DATETIME", "TX_FRAUD", "TX_FRAUD_SCENARIO", "TERMINAL_ID"]
    )
    table.insert(0, "TRANSACTION_ID", np.arange(len(table)))
    table["TX_AMOUNT"] = 10.0
    return load_transactions(table, Schema.from_toml(ROOT / "schemas/handbook.toml"))


@pytest.fixture
def frame():
    return _frame(
        [
            ("a", "2018-07-25 10:00", 1, 1, "t1"),  # fraud in fold 3's training week
            ("a", "2018-08-08 10:00", 0, 0, "t1"),
            ("a", "2018-08-16 10:00", 0, 0, "t1"),
            ("b", "2018-08-01 09:00", 1, 3, "t2"),  # fraud in fold 3's delay week
            ("b", "2018-08-08 11:00", 1, 3, "t2"),  # 08-01 > 08-08 - 8 days: kept
            ("b", "2018-08-09 11:00", 0, 0, "t2"),  # 08-01 <= 08-09 - 8 days: known
            ("c", "2018-07-24 12:00", 1, 1, "t3"),  # before fold 3's training week
            ("c", "2018-08-10 12:00", 0, 0, "t3"),
            ("d", "2018-08-12 13:00", 1, 2, "t4"),  # its own test-day fraud: kept
            ("e", "2018-07-20 08:00", 1, 2, "t5"),  # t5 compromised (scenario 2) ...
            ("f", "2018-08-14 08:00", 1, 2, "t5"),  # ... 25 days later: revealable
            ("g", "2018-08-13 08:00", 1, 2, "t6"),  # t6's first fraud: not revealable
            ("h", "2018-08-13 09:00", 0, 0, "t6"),
            ("b", "2018-08-15 10:00", 0, 0, "t2"),  # fold 2's test week
        ]
    )


def _kept(frame, fold) -> list[tuple[str, str]]:
    test = hp.fold_test_set(frame, Schema.from_toml(ROOT / "schemas/handbook.toml"), fold)
    days = test["TX_DATETIME"].dt.strftime("%m-%d")
    return list(zip(test["CUSTOMER_ID"], days, strict=True))


def test_known_cards_are_removed_per_test_day_from_the_folds_training_week(frame):
    plan = {f.index: f for f in hp.folds("2018-04-01", "2018-09-30")}
    assert _kept(frame, plan[3]) == [
        ("b", "08-08"),
        ("c", "08-10"),
        ("d", "08-12"),
        ("g", "08-13"),
        ("h", "08-13"),
        ("f", "08-14"),
    ]
    # Fold 2 trains from 08-01: a's 07-25 fraud no longer counts, b's 08-01 one does.
    assert _kept(frame, plan[2]) == [("a", "08-16")]


def test_the_bound_counts_only_frauds_older_labels_can_reveal(frame):
    schema = Schema.from_toml(ROOT / "schemas/handbook.toml")
    fold = hp.folds("2018-04-01", "2018-09-30")[3]
    bound = hp.fold_bound(frame, schema, fold)
    # Test frauds: b (scenario 3), d (t4's first), f (t5 compromised 25 days before), g (t6's
    # first); d and g are the first days of a compromise, which no old label shows.
    assert (bound["n_test"], bound["n_fraud"], bound["revealable_frauds"]) == (6, 4, 2)
    # Each day holds fewer than 100 cards, so CP@100 is the day's fraud cards / 100.
    assert bound["cp_at_100_perfect_ranking"] == pytest.approx(4 / 100 / 5)
    assert bound["revealable_cp_at_100"] == pytest.approx(2 / 100 / 5)
    # Revealable frauds first, the rest tied: b and f above c and h, d and g tied with them.
    assert bound["revealable_auc_roc"] == pytest.approx(6 / 8)
    assert bound["revealable_average_precision"] == pytest.approx(0.5 + 0.5 * 4 / 6)


def test_the_tables_come_from_the_results():
    folds = [
        {
            "index": i,
            "train_from": f"2018-08-{15 - 7 * i:02d}",
            "train_until": f"2018-08-{22 - 7 * i:02d}",
            "test_from": "2018-08-08",
            "test_until": "2018-08-15",
            "n_test": 58_000,
            "n_fraud": 400,
            "auc_roc": 0.88 + i / 100,
            "average_precision": 0.72,
            "cp_at_100": 0.30,
            "revealable_frauds": 300,
            "revealable_auc_roc": 0.9,
            "revealable_average_precision": 0.75,
            "revealable_cp_at_100": 0.31,
            "cp_gap_to_bound": 0.01,
        }
        for i in range(2)
    ]
    summary = hp.summarise(folds)
    assert summary["mean"]["auc_roc"] == pytest.approx(0.885)
    assert summary["std"]["auc_roc"] == pytest.approx(0.005)
    results = {"folds": folds, "overrides": {}, **summary, "goals": hp.goals(summary)}
    assert results["goals"] == {
        "auc_roc >= 0.89": False,
        "average_precision >= 0.74": False,
        "cp_at_100 within 0.003 of the bound": False,
    }
    text = hp.report(results)
    assert "| Handbook: XGBoost (published) | 0.869 | 0.687 | 0.303 |" in text
    assert "| **0.885** ± 0.005 | **0.720** ± 0.000 | **0.300** ± 0.000 |" in text
    assert (
        "| 1 | 08-08..08-14 | 08-08..08-14 | 58,000 | 400 (300) | 0.890 (0.900) | "
        "0.720 (0.750) | 0.300 (0.310) | +0.010 |"
    ) in text
    assert "| 0.900 ± 0.000 | 0.750 ± 0.000 | 0.310 ± 0.000 |" in text  # what labels allow
