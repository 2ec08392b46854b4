"""The compromise-exposure block (features/blocks/exposure.py) against a slow pure-Python
reference written from its docstring's definitions, on random tables (test_feature_blocks'),
some with entities visiting more counterparties than the list keeps; a hand-made common
point of compromise; and its opt-in wiring (encoder, chunks, the paths it does not have).

Chunks with carried state = the whole, and no leakage (later rows, labels newer than the
delay), are held for every block by test_feature_kernels and test_feature_blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fraudseq.features.blocks.exposure import (
    EXPOSURE_PRIOR,
    HORIZON_DAYS,
    VISIT_CAP,
    WINDOW_DAYS,
)
from fraudseq.features.constants import NS_PER_DAY
from test_feature_blocks import EPOCH, HOUR, check_against, features_by_id, random_table

# -- the reference ------------------------------------------------------------------------


def _order(table):
    """Rows in entity order (entity, time, file row)."""
    e, t = table["entity"], table["time"]
    return sorted(range(len(t)), key=lambda j: (e[j], t[j], j))


def _visits(table):
    """Per entity, its visits in order: (row, counterparty, day), first row of each."""
    cp, t, e = table["counterparty"], table["time"], table["entity"]
    out: dict[int, list[tuple[int, int, int]]] = {}
    seen = set()
    for j in _order(table):
        day = int(t[j]) // HOUR // 24
        key = (int(e[j]), int(cp[j]), day)
        if cp[j] < 0 or key in seen:
            continue
        seen.add(key)
        out.setdefault(int(e[j]), []).append((j, int(cp[j]), day))
    return out


def _list_before(table, visits, r):
    """The entity's list before row r: latest VISIT_CAP visits of earlier rows, within H."""
    e, t = table["entity"], table["time"]
    day = int(t[r]) // HOUR // 24
    earlier = [v for v in visits.get(int(e[r]), []) if (t[v[0]], v[0]) < (t[r], r)]
    return [v for v in earlier[-VISIT_CAP:] if v[2] >= day - HORIZON_DAYS]


def ref_exposure(table, r, delay_ns):
    t, label, cp = table["time"], table["label"], table["counterparty"]
    delay = math.ceil(delay_ns / HOUR)
    visits = _visits(table)
    b_r = int(t[r]) // HOUR
    x = b_r - delay
    h = x // 24

    def later_fraud_known(entity, visit):
        row, _, v = visit
        for f in range(len(t)):
            if table["entity"][f] != entity or label[f] != 1.0:
                continue
            b_f = int(t[f]) // HOUR
            if not (v < b_f // 24 <= v + HORIZON_DAYS and b_f < x):
                continue
            earlier = [w for w in visits[int(entity)] if w[2] < b_f // 24]
            if visit in earlier[-VISIT_CAP:]:
                assert t[f] < t[r] - delay_ns  # only labels older than the delay
                return True
        return False

    def exposure(c):
        window = [
            (entity, v)
            for entity, vs in visits.items()
            for v in vs
            if (c is None or v[1] == c) and h - WINDOW_DAYS <= v[2] < h
        ]
        assert all(t[v[0]] < t[r] - delay_ns for _, v in window)
        return len(window), sum(later_fraud_known(entity, v) for entity, v in window)

    n0, f0 = exposure(None)  # the population: every counterparty
    p0 = f0 / n0 if n0 else 0.0

    names = ("max", "mean", "days_since_max", "visits", "visitors_max", "z_max")
    if cp is None:
        return {}
    mine = _list_before(table, visits, r)
    out = dict.fromkeys((f"exposure_{n}" for n in names), 0.0)
    out["exposure_visits"] = math.log1p(len(mine))
    if not mine:
        return out
    counts = [exposure(v[1]) for v in mine]
    values = [((f + EXPOSURE_PRIOR * p0) / (n + EXPOSURE_PRIOR), n) for n, f in counts]
    best = max(value for value, _ in values)
    out["exposure_max"] = best
    out["exposure_mean"] = sum(value for value, _ in values) / len(values)
    out["exposure_z_max"] = max((f - n * p0) / math.sqrt(n * p0 * (1 - p0) + 1) for n, f in counts)
    if best > 0:
        i = max(i for i, (value, _) in enumerate(values) if value == best)
        out["exposure_days_since_max"] = float(b_r // 24 - mine[i][2])
        out["exposure_visitors_max"] = math.log1p(values[i][1])
    return out


# -- kernel = reference ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delay_ns", [7 * NS_PER_DAY, 0, 3 * NS_PER_DAY // 2])
@pytest.mark.parametrize("dense", [True, False])  # dense day counts, or hashed queries
def test_exposure_matches_reference(seed, delay_ns, dense, monkeypatch):
    from fraudseq.features.blocks import exposure

    monkeypatch.setattr(exposure, "DENSE_CELLS", exposure.DENSE_CELLS if dense else 0)
    table = random_table(seed, n=250)
    table["time"][::5] += np.random.default_rng(seed).integers(0, 24, 50) * HOUR
    check_against(
        table, "exposure", lambda tab, r: ref_exposure(tab, r, delay_ns), delay_ns=delay_ns
    )


@pytest.mark.parametrize("seed", range(2))
def test_exposure_matches_reference_beyond_the_visit_cap(seed):
    """Few entities, many counterparties: lists overflow VISIT_CAP, and a fraud reaches only
    the visits still in its entity's list."""
    table = random_table(seed, n=400, entities=2, counterparties=120)
    table["time"] = EPOCH + np.sort(table["time"] - EPOCH) // 3  # 20 days: dense lists
    got = features_by_id(table, ["exposure"])
    assert max(v["exposure_visits"] for v in got.values()) == pytest.approx(math.log1p(VISIT_CAP))
    check_against(table, "exposure", lambda tab, r: ref_exposure(tab, r, 7 * NS_PER_DAY))


# -- a common point of compromise --------------------------------------------------------------


def _compromise_table():
    """Ten cards visit merchant 0 on day 1; five of them are used fraudulently at merchant
    1 on day 4 at 12:00. Card 10 visits merchant 0 on day 1 too, and shops at merchant 2
    on days 2, 11 (09:00 and 14:00) and 40."""
    rows = []  # (entity, day, hour, counterparty, label)
    for card in range(10):
        rows.append((card, 1, 10, 0, 0.0))
        rows.append((card, 4, 12, 1, 1.0 if card < 5 else 0.0))
    rows.append((10, 1, 11, 0, 0.0))
    for day, hour in ((2, 9), (11, 9), (11, 14), (40, 9)):
        rows.append((10, day, hour, 2, 0.0))
    e, d, hr, c, lab = (np.array(col) for col in zip(*rows, strict=True))
    n = len(rows)
    return {
        "id": np.arange(n),
        "entity": e,
        "time": EPOCH + d * NS_PER_DAY + hr * HOUR,
        "amount": np.full(n, 10.0),
        "cat": {},
        "counterparty": c,
        "label": lab,
    }


def test_a_common_point_of_compromise_raises_the_exposure_once_labels_are_known():
    table = _compromise_table()
    card10 = np.flatnonzero(table["entity"] == 10)  # day 1, 2, 11 09:00, 11 14:00, 40

    def exposure_of_card10(tab):
        got = features_by_id(tab, ["exposure"], delay_ns=7 * NS_PER_DAY)
        return [got[int(j)] for j in card10]

    first, day2, before, after, day40 = exposure_of_card10(table)
    assert first["exposure_visits"] == 0.0 and day2["exposure_visits"] == pytest.approx(
        math.log1p(1)
    )
    # The frauds (day 4 12:00) are known from day 11 13:00 on (7 days of delay).
    assert day2["exposure_max"] == 0.0 and before["exposure_max"] == 0.0
    # Then 5 of the 11 visits to merchant 0 had a later fraud, of 12 visits anywhere in
    # the window (p0 = 5/12); the riskiest visit is 10 days back; the count says 11 visits;
    # merchant 2 (1 visit in the window, no fraud) is at the prior.
    p0 = 5 / 12
    merchant0, merchant2 = (5 + 5 * p0) / (11 + 5), 5 * p0 / (1 + 5)
    assert after["exposure_max"] == pytest.approx(merchant0)
    assert after["exposure_days_since_max"] == 10
    assert after["exposure_visitors_max"] == pytest.approx(math.log1p(11))
    assert after["exposure_mean"] == pytest.approx((merchant0 + 2 * merchant2) / 3)
    assert after["exposure_z_max"] == pytest.approx(
        (5 - 11 * p0) / math.sqrt(11 * p0 * (1 - p0) + 1)
    )
    # Day 40: the visit of day 1 has left the list (older than H days).
    assert day40["exposure_max"] == 0.0
    # One more card's fraud: used once known, not before.
    table["label"][(table["entity"] == 7) & (table["counterparty"] == 1)] = 1.0
    _, _, before, after, _ = exposure_of_card10(table)
    assert before["exposure_max"] == 0.0
    assert after["exposure_max"] == pytest.approx((6 + 5 * 6 / 12) / 16)


def test_no_counterparty_or_no_labels():
    table = random_table(4)
    assert features_by_id(table, ["exposure"], cp=False)[0] == {}
    got = features_by_id(table, ["exposure"], labels=False)
    assert all(v["exposure_max"] == 0.0 for v in got.values())
    assert max(v["exposure_visits"] for v in got.values()) > 0


def test_rows_in_slices_of_pairs_give_the_same_features(monkeypatch):
    from fraudseq.features.blocks import exposure

    table = random_table(6, n=250)
    whole = features_by_id(table, ["exposure"])
    monkeypatch.setattr(exposure, "PAIRS_PER_SLICE", 7)
    assert features_by_id(table, ["exposure"]) == whole


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("dense", [True, False])
def test_chunks_with_carried_state_equal_the_whole_beyond_the_visit_cap(seed, dense, monkeypatch):
    """Lists that overflow VISIT_CAP, cut into chunks (the carried lists keep what a later
    fraud or row reads: `kept_visits`)."""
    import pandas as pd

    from fraudseq.features import FeatureEncoder
    from fraudseq.features.blocks import exposure
    from fraudseq.features.stream import FeatureStream
    from fraudseq.schema import Schema, load_transactions

    monkeypatch.setattr(exposure, "DENSE_CELLS", exposure.DENSE_CELLS if dense else 0)

    table = random_table(seed, n=600, entities=3, counterparties=150)
    table["time"] = EPOCH + (table["time"] - EPOCH) // 2
    schema = Schema.from_dict(
        {"id": "id", "entity": "card", "time": "ts", "amount": "amount", "label": "fraud",
         "categorical": [], "numeric": [], "counterparty": "shop"}
    )  # fmt: skip
    frame = pd.DataFrame(
        {
            "id": table["id"],
            "card": table["entity"].astype(str),
            "ts": pd.to_datetime(table["time"], utc=True),
            "amount": table["amount"],
            "fraud": table["label"],
            "shop": np.where(table["counterparty"] < 0, None, table["counterparty"].astype(str)),
        }
    )
    frame = load_transactions(frame.sort_values("ts", kind="stable"), schema)
    whole, sorted_frame = FeatureEncoder(schema, blocks=("exposure",))._raw_numeric(frame)
    assert whole["exposure_visits"].max() == pytest.approx(math.log1p(VISIT_CAP))
    stream = FeatureStream(schema, ("exposure",), 7)
    bounds = np.sort(np.random.default_rng(seed).choice(len(frame), 8, replace=False))
    cuts = [0, *bounds.tolist(), len(frame)]
    parts = [stream.push(frame.iloc[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    for name, values in whole.items():
        chunked = np.concatenate([part[name] for part in parts])[sorted_frame.order]
        np.testing.assert_allclose(chunked, values, rtol=1e-12, atol=1e-12, err_msg=name)
    assert len(stream.exposure.entity) <= 3 * 2 * VISIT_CAP


# -- live: the state's visits, labels in any order ------------------------------------------


def test_account_state_keeps_visits_only_for_a_model_with_the_block():
    from fraudseq.features.state import AccountState

    plain = AccountState(n=2, last_time=5, sum_log=1.0, max_log=1.0, times=[4, 5],
                         amounts=[1.0, 2.0], seen=[{7: 4}])  # fmt: skip
    blob = plain.to_bytes()
    assert AccountState.from_bytes(blob).visits is None
    with_visits = AccountState.from_bytes(blob)
    with_visits.visits = []
    assert with_visits.to_bytes() == blob + b"\0\0\0\0"  # the same bytes, then the section
    with_visits.visits = [(2**64 - 1, -3, 2**63 - 1), (5, 20, 500)]
    again = AccountState.from_bytes(with_visits.to_bytes())
    assert again.visits == with_visits.visits and again.seen == plain.seen


def test_labels_in_any_order_flag_each_visit_with_its_first_later_fraud():
    from fraudseq.features.blocks.exposure import NO_FRAUD, ExposureBook, add_fraud, add_visit

    visits: list = []
    book = ExposureBook()
    for day, cp in ((1, 10), (1, 11), (1, 10), (3, 12)):
        book.add_visit(add_visit(visits, cp, day * 24 + 5))
    assert [(c, d) for c, d, _ in visits] == [(10, 1), (11, 1), (12, 3)]
    assert all(known == NO_FRAUD for _, _, known in visits)
    book.apply(add_fraud(visits, 6 * 24))  # day 6: all three
    book.apply(add_fraud(visits, 2 * 24 + 7))  # day 2, arriving later: the day-1 visits
    assert [known for _, _, known in visits] == [2 * 24 + 7, 2 * 24 + 7, 6 * 24]
    # One later-fraud visit each, counted at its first fraud's bucket only.
    totals = book.totals(visits, 20 * 24, 0)
    assert totals.counts == {10: (1, 1), 11: (1, 1), 12: (1, 1)}
    assert totals.population == (3, 3)
    # On day 6 the day-6 fraud is not known yet (its bucket is not before the cut).
    assert book.totals(visits, 6 * 24, 0).counts == {10: (1, 1), 11: (1, 1), 12: (1, 0)}


def test_training_and_scoring_a_file_work_but_serving_and_shards_refuse_the_block(
    small_frame, small_csv, tmp_path
):
    from conftest import TRAIN_UNTIL
    from fraudseq.errors import FraudseqError
    from fraudseq.fraud_model import FraudModel
    from fraudseq.serving.detector import Detector
    from fraudseq.serving.stores import open_store

    def model():
        return FraudModel("xgboost", features=("event", "exposure"), n_estimators=5, seed=0,
                          progress=False)  # fmt: skip

    fitted = model().fit(small_frame, train_until=TRAIN_UNTIL, valid_days=7)
    assert "exposure_max" in fitted.encoder_.numeric_names_
    scores = fitted.score(small_frame, start=TRAIN_UNTIL)
    assert len(scores) and scores["score"].between(0, 1).all()
    with pytest.raises(FraudseqError, match="'exposure' is not served"):
        Detector(fitted, open_store("memory"), model_version="test")
    with pytest.raises(FraudseqError, match="sharded runs"):
        model().fit(small_csv, train_until=TRAIN_UNTIL, valid_days=7, work_dir=tmp_path / "w")


def test_train_features_option_selects_the_blocks(tmp_path, monkeypatch, capsys, small_csv):
    import json

    from test_cli import run

    out = tmp_path / "model"
    code = run(
        monkeypatch, "train", small_csv, "--out", out, "--model", "xgboost",
        "--n-estimators", 5, "--features", "event,recency,exposure",
        "--train-until", "2026-01-31",
    )  # fmt: skip
    assert code == 0
    stored = json.loads((out / "model.json").read_text())
    assert stored["params"]["features"] == ["event", "recency", "exposure"]
    code = run(
        monkeypatch, "score", out, small_csv, "--out", tmp_path / "s.csv", "--from", "2026-01-31"
    )
    assert code == 0 and len((tmp_path / "s.csv").read_text().splitlines()) > 100
    assert run(monkeypatch, "evaluate", out, small_csv, "--from", "2026-01-31") == 0
    assert "metric" in capsys.readouterr().out  # the metrics table
    code = run(
        monkeypatch, "train", small_csv, "--out", tmp_path / "m2", "--model", "xgboost",
        "--features", "event,skimming", "--train-until", "2026-01-31",
    )  # fmt: skip
    assert code != 0 and "skimming" in capsys.readouterr().err
