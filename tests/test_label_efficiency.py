"""benchmarks/label_efficiency.py (issue 22, part 5): the label blanking, the goals, and a
`--quick` run of the arms that need no pretrained encoder."""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import label_efficiency as le  # noqa: E402

from conftest import TRAIN_UNTIL  # noqa: E402
from fraudseq.schema import Schema, load_transactions  # noqa: E402

UNTIL = pd.Timestamp(TRAIN_UNTIL) - pd.Timedelta(days=7)  # validation's start


@pytest.fixture(scope="module")
def frame(small_frame) -> pd.DataFrame:
    return load_transactions(small_frame, Schema.simulator(), require_label=True)


def blank(frame, fraction, seed=0):
    return le.blank_labels(frame, Schema.simulator(), fraction, until=UNTIL, seed=seed)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.25, 1.0])
def test_the_kept_accounts_are_the_fraction_and_only_they_keep_training_labels(frame, fraction):
    before = (frame["ts"] < UNTIL).to_numpy()
    accounts = frame.loc[before, "card_id"].unique()
    blanked, kept = blank(frame, fraction)
    assert len(kept) == max(1, round(fraction * len(accounts)))
    assert len(set(kept)) == len(kept) and set(kept) <= set(accounts)
    labels, true = blanked["is_fraud"].to_numpy(), frame["is_fraud"].to_numpy()
    mine = frame["card_id"].isin(kept).to_numpy()
    # a blanked account's every training row is empty; a kept one's are all there
    assert np.isnan(labels[before & ~mine]).all()
    np.testing.assert_array_equal(labels[before & mine], true[before & mine])
    # validation and test labels are never emptied
    np.testing.assert_array_equal(labels[~before], true[~before])
    # only the labels change, and the input is left as it was
    pd.testing.assert_frame_equal(blanked.drop(columns="is_fraud"), frame.drop(columns="is_fraud"))
    assert frame["is_fraud"].notna().all()


def test_the_draw_is_reproducible_by_seed_and_nested_across_fractions(frame):
    first, again = blank(frame, 0.1, seed=3), blank(frame, 0.1, seed=3)
    pd.testing.assert_frame_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert set(blank(frame, 0.1, seed=4)[1]) != set(first[1])
    # row order does not matter: the same accounts from a shuffled frame
    shuffled = frame.sample(frac=1, random_state=0)
    assert set(blank(shuffled, 0.1, seed=3)[1]) == set(first[1])
    kept = [set(blank(frame, f, seed=3)[1]) for f in (0.01, 0.05, 0.1, 0.25, 1.0)]
    assert all(small <= large for small, large in zip(kept, kept[1:], strict=False))


def test_a_fraction_outside_0_1_is_refused(frame):
    for fraction in (0, -0.1, 1.5):
        with pytest.raises(ValueError, match="must be in"):
            blank(frame, fraction)


def test_the_goals_from_a_summary():
    summary = {
        "xgboost": {"0.1": {"average_precision": 0.60}, "1": {"average_precision": 0.80}},
        "lstm-pretrained": {"0.1": {"average_precision": 0.73}},
        "transformer-pretrained": {"0.1": {"average_precision": 0.70}},
        "ensemble": {"1": {"average_precision": 0.81}},
        "ensemble-pretrained": {"1": {"average_precision": 0.805}},
    }
    goals = le.goals(summary)
    share = goals["best_pretrained_at_10pct"]
    assert share["best_pretrained"] == ("lstm-pretrained", 0.73)
    assert share["best_with_every_label"] == ("ensemble", 0.81)
    assert share["met"] is True  # 0.73 >= 0.9 x 0.81 = 0.729
    assert goals["pretrained_beats_xgboost_at_10pct"]["met"] is True  # 0.13 ahead
    assert goals["ensemble_with_pretrained_at_100pct"]["met"] is False  # 0.805 < 0.81
    missing = le.goals({"xgboost": summary["xgboost"]})
    assert {g["met"] for g in missing.values()} == {None}


@pytest.mark.slow  # 80 s for the whole file at load 1 on 2 cores: 1 pretraining, 5 trainings
def test_quick_runs_of_an_arm_from_scratch_and_a_pretrained_one_merge(tmp_path, capsys):
    """The whole script on tiny data, once for each kind of arm: XGBoost, and the LSTM
    fine-tuned from an encoder pretrained once and reused across fractions; then a later
    run of another arm under the same settings keeps the earlier runs. (The other arms go
    through the same two code paths; the suite's time keeps this to these.)"""
    out, png = tmp_path / "results.json", tmp_path / "plot.png"
    paths = ["--out", str(out), "--plot", str(png)]
    le.main(["--quick", "--arms", "xgboost,lstm-pretrained", "--fractions", "0.25,1", *paths])
    first = json.loads(out.read_text())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(first["pretraining"]) == {"lstm"}
    assert all("error" not in p and p["seconds"] > 0 for p in first["pretraining"].values())
    le.main(["--quick", "--arms", "transformer", "--fractions", "1", *paths])
    results = json.loads(out.read_text())
    assert results["settings"] == first["settings"]
    assert set(results["summary"]) == {"xgboost", "lstm-pretrained", "transformer"}
    for arm in ("xgboost", "lstm-pretrained"):
        assert set(results["summary"][arm]) == {"0.25", "1"}
    assert set(results["summary"]["transformer"]) == {"1"}
    for run in results["runs"]:
        assert "error" not in run, run
        assert 0 < run["average_precision"] <= 1 and 0.5 < run["auc_roc"] <= 1
        assert run["kept_entities"] == (300 if run["fraction"] == 1 else 75)
        assert 0 < run["kept_frauds"] < run["kept_labels"]
    assert results["n_fraud"] > 0 and results["load_average"]["start"]
    goals = results["goals"]
    assert goals["best_pretrained_at_10pct"]["best_with_every_label"][0] in results["summary"]
    assert goals["ensemble_with_pretrained_at_100pct"]["met"] is None  # not run
    printed = capsys.readouterr().out
    assert "| Arm | 25% labels | 100% labels |" in printed and "not evaluated" in printed


def test_runs_merge_under_the_same_settings_whatever_the_pretraining_epochs():
    settings = {"dataset": "simulator", "epochs": 10, "pretrain_epochs": None, "n_rows": 5}
    assert le.same_settings(settings, {**settings, "pretrain_epochs": 3})
    assert not le.same_settings(settings, {**settings, "epochs": 5})
    assert not le.same_settings(None, settings)
