"""Tests for the transaction simulator: schema, determinism, scenarios and look-alikes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from fraudseq.simulate import FRAUD_TYPES, OPT_IN_SCENARIOS, SIMULATOR_COLUMNS, simulate

STRING_COLUMNS = (
    "tx_id",
    "card_id",
    "mcc",
    "country",
    "channel",
    "device_id",
    "merchant_id",
    "fraud_type",
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate(accounts=500, days=45, seed=0)


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return simulate(accounts=2000, days=30, seed=1)


def _first_seen(df: pd.DataFrame, column: str) -> pd.Series:
    """True where the card uses this value of `column` for the first time (frame is time-sorted)."""
    return ~df.duplicated(["card_id", column])


def test_columns_and_dtypes(frame: pd.DataFrame) -> None:
    assert tuple(frame.columns) == SIMULATOR_COLUMNS
    assert frame.index.equals(pd.RangeIndex(len(frame)))
    assert frame["ts"].dtype == np.dtype("datetime64[ns]")
    assert frame["amount"].dtype == np.float64
    assert frame["is_fraud"].dtype == np.int64
    for column in STRING_COLUMNS:
        assert pd.api.types.is_string_dtype(frame[column]), column


def test_value_formats(frame: pd.DataFrame) -> None:
    assert frame["tx_id"].str.fullmatch(r"T\d{8}").all()
    assert frame["card_id"].str.fullmatch(r"C\d{6}").all()
    assert frame["merchant_id"].str.fullmatch(r"M\d{5}").all()
    assert frame["device_id"].str.fullmatch(r"D\d{7}").all()
    assert frame["mcc"].str.fullmatch(r"\d{4}").all()
    assert frame["country"].str.fullmatch(r"[A-Z]{2}").all()
    assert set(frame["channel"]) <= {"pos", "online", "atm", "contactless"}
    assert frame["mcc"].nunique() >= 15


def test_sorted_unique_ids_and_time_range(frame: pd.DataFrame) -> None:
    assert frame["tx_id"].is_unique
    assert frame["ts"].is_monotonic_increasing
    resorted = frame.sort_values(["ts", "tx_id"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(resorted, frame)
    start = pd.Timestamp("2026-01-01")
    assert frame["ts"].min() >= start
    assert frame["ts"].max() < start + pd.Timedelta(days=45)
    assert (frame["ts"].astype("int64") % 1_000_000_000 == 0).all()  # whole seconds


def test_amounts_positive_with_two_decimals(frame: pd.DataFrame) -> None:
    cents = frame["amount"].to_numpy() * 100
    assert (frame["amount"] > 0).all()
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)


def test_same_seed_same_frame_and_different_seed_differs() -> None:
    first = simulate(accounts=200, days=20, seed=3)
    pd.testing.assert_frame_equal(first, simulate(accounts=200, days=20, seed=3))
    other = simulate(accounts=200, days=20, seed=4)
    assert len(other) != len(first) or not other.equals(first)


def test_start_is_honoured_and_tiny_sizes_work() -> None:
    tiny = simulate(accounts=50, days=10, seed=0, start="2025-03-01")
    assert tuple(tiny.columns) == SIMULATOR_COLUMNS
    assert len(tiny) > 0
    assert tiny["ts"].min() >= pd.Timestamp("2025-03-01")
    assert tiny["ts"].max() < pd.Timestamp("2025-03-11")
    assert tuple(simulate(accounts=1, days=1, seed=0).columns) == SIMULATOR_COLUMNS


def test_rejects_empty_simulation() -> None:
    with pytest.raises(ValueError, match="accounts"):
        simulate(accounts=0, days=10)


def test_fraud_share_and_every_type_present(frame: pd.DataFrame) -> None:
    assert 0.004 < frame["is_fraud"].mean() < 0.02
    counts = frame["fraud_type"].value_counts()
    for fraud_type in FRAUD_TYPES:
        assert counts.get(fraud_type, 0) >= 5, fraud_type


def test_labels_consistent(frame: pd.DataFrame) -> None:
    assert set(frame["fraud_type"]) <= {"none", *FRAUD_TYPES}
    assert ((frame["is_fraud"] == 1) == (frame["fraud_type"] != "none")).all()
    assert set(frame["is_fraud"]) == {0, 1}


def test_fraud_is_interleaved_with_genuine_activity(frame: pd.DataFrame) -> None:
    fraud = frame[frame["is_fraud"] == 1]
    window = fraud.groupby("card_id")["ts"].agg(["min", "max"])
    genuine = frame[frame["is_fraud"] == 0].join(window, on="card_id", how="inner")
    before = (genuine["ts"] < genuine["min"]).groupby(genuine["card_id"]).any()
    after = (genuine["ts"] > genuine["max"]).groupby(genuine["card_id"]).any()
    assert before.mean() > 0.8
    assert after.mean() > 0.5


def test_card_testing_tiny_charges_precede_a_larger_purchase(frame: pd.DataFrame) -> None:
    testing = frame[frame["fraud_type"] == "card_testing"]
    assert (testing["channel"] == "online").all()
    checked = 0
    for _, rows in testing.groupby("card_id"):
        tiny, large = rows[rows["amount"] <= 3.0], rows[rows["amount"] > 3.0]
        assert len(tiny) >= 2
        assert rows["ts"].iloc[0] == tiny["ts"].min()  # the burst opens with tiny charges
        assert tiny["ts"].max() - tiny["ts"].min() < pd.Timedelta(hours=1)
        if len(large):  # a purchase can fall after the end of the period
            assert tiny["ts"].max() <= large["ts"].min()
            assert large["ts"].min() - tiny["ts"].max() < pd.Timedelta(hours=3)
            checked += 1
    assert checked >= 5


def test_account_takeover_uses_a_device_new_to_the_card(frame: pd.DataFrame) -> None:
    takeover = frame[frame["fraud_type"] == "account_takeover"]
    starts = takeover.groupby("card_id")["ts"].min()
    for card, start in starts.items():
        earlier = frame[(frame["card_id"] == card) & (frame["ts"] < start)]
        devices = set(takeover.loc[takeover["card_id"] == card, "device_id"])
        assert len(devices) == 1
        assert devices.isdisjoint(earlier["device_id"])
    # and it bursts: consecutive takeover charges are minutes, not days, apart
    gaps = takeover.groupby("card_id")["ts"].diff().dropna()
    assert gaps.median() < pd.Timedelta(hours=1)


def test_escalation_amounts_climb_at_one_merchant(frame: pd.DataFrame) -> None:
    escalation = frame[frame["fraud_type"] == "escalation"]
    for _, rows in escalation.groupby("card_id"):
        assert rows["amount"].is_monotonic_increasing
        assert rows["amount"].is_unique
        assert rows["merchant_id"].nunique() == 1
    ratios = escalation.groupby("card_id")["amount"].apply(lambda a: a.iloc[-1] / a.iloc[0])
    assert (ratios[escalation.groupby("card_id").size() >= 3] >= 2).all()


def test_compromised_merchants_reach_several_cards(large: pd.DataFrame) -> None:
    compromised = large[large["fraud_type"] == "compromised_merchant"]
    genuine = large[large["is_fraud"] == 0]
    visits = genuine.groupby(["card_id", "merchant_id"])["ts"].min().rename("visit")
    # Charges added by the merchant land on cards that had genuinely shopped there earlier
    # (a cloned card may rarely be used where the card shops later, hence "most").
    added = compromised.join(visits, on=["card_id", "merchant_id"], how="inner")
    assert len(added) > 0
    assert (added["visit"] < added["ts"]).mean() > 0.9
    assert added.groupby("merchant_id")["card_id"].nunique().max() >= 2
    # Cloned cards are used at places the card had never visited.
    assert (len(compromised) - len(added)) > 0


def test_genuine_look_alikes_exist(frame: pd.DataFrame) -> None:
    genuine = frame["is_fraud"] == 0
    not_first = frame.duplicated("card_id")
    assert (genuine & (frame["amount"] <= 3.0)).sum() > 500
    assert (genuine & (frame["amount"] <= 3.0) & (frame["channel"] == "online")).sum() > 50
    assert (genuine & not_first & _first_seen(frame, "country")).sum() > 20
    assert (genuine & not_first & _first_seen(frame, "device_id")).sum() > 20
    big = frame["amount"] > 5 * frame.groupby("card_id")["amount"].transform("median")
    assert (genuine & big).sum() > 50


def test_no_single_column_separates_fraud(large: pd.DataFrame) -> None:
    y = large["is_fraud"].to_numpy()
    amount_auc = roc_auc_score(y, large["amount"])
    assert max(amount_auc, 1 - amount_auc) < 0.9
    hour = large["ts"].dt.hour.rename("hour")
    for column in (large["mcc"], large["country"], large["channel"], hour):
        # In-sample fraud rate per value is the best any one-column rule can do.
        rate = large["is_fraud"].groupby(column).transform("mean")
        assert roc_auc_score(y, rate) < 0.9, column.name
    novel_device = _first_seen(large, "device_id").astype(int)
    assert roc_auc_score(y, novel_device) < 0.8


def test_history_makes_fraud_separable(large: pd.DataFrame) -> None:
    """The same model gets far better once it sees features relative to the card's past."""
    df = large
    y = df["is_fraud"].to_numpy()
    log_amount = np.log(df["amount"])
    raw = pd.DataFrame(
        {
            "log_amount": log_amount,
            "hour": df["ts"].dt.hour,
            **{c: df[c].astype("category").cat.codes for c in ("mcc", "country", "channel")},
        }
    )
    seconds = df["ts"].astype("int64") // 1_000_000_000
    history = raw.assign(
        new_device=_first_seen(df, "device_id").astype(int),
        new_country=_first_seen(df, "country").astype(int),
        new_merchant=_first_seen(df, "merchant_id").astype(int),
        vs_previous=(log_amount - log_amount.groupby(df["card_id"]).shift()).fillna(0),
        since_previous=np.log1p(seconds.groupby(df["card_id"]).diff().fillna(1e7)),
        n_before=df.groupby("card_id", sort=False).cumcount(),
    )
    train = (df["ts"] < df["ts"].quantile(0.6)).to_numpy()
    scores = {}
    for name, features in (("raw", raw), ("history", history)):
        model = HistGradientBoostingClassifier(max_iter=100, random_state=0)
        model.fit(features[train], y[train])
        p = model.predict_proba(features[~train])[:, 1]
        scores[name] = (roc_auc_score(y[~train], p), average_precision_score(y[~train], p))
    assert scores["history"][0] > scores["raw"][0] + 0.03
    assert scores["history"][1] > 1.5 * scores["raw"][1]


# ---------------------------------------------------------------- opt-in typologies (issue 23)

DEFAULT_SHA256 = "8aa3331e5ce35374f17a385675eafcfe4f9cdfa19ab1affb145623c674601845"


@pytest.fixture(scope="module")
def typologies() -> pd.DataFrame:
    return simulate(accounts=2000, days=60, seed=0, scenarios=OPT_IN_SCENARIOS)


def _share_seen(rows: pd.DataFrame, earlier: pd.DataFrame, column: str) -> float:
    """The share of `rows` whose card has the same `column` value somewhere in `earlier`."""
    seen = earlier[["card_id", column]].drop_duplicates()
    hit = rows[["card_id", column]].merge(seen, how="left", indicator=True)
    return float((hit["_merge"] == "both").mean())


def test_default_frame_is_unchanged_by_the_opt_in_typologies() -> None:
    """simulate(accounts=200, days=30, seed=1) as CSV, hashed before the typologies existed:
    the README's and the benchmarks' numbers were measured on the default frame."""
    for frame in (
        simulate(accounts=200, days=30, seed=1),
        simulate(accounts=200, days=30, seed=1, scenarios=()),
    ):
        digest = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        assert digest == DEFAULT_SHA256
        assert "skimmed_merchants" not in frame.attrs


def test_each_typology_appears_with_its_name(typologies: pd.DataFrame) -> None:
    counts = typologies["fraud_type"].value_counts()
    for name in (*FRAUD_TYPES, *OPT_IN_SCENARIOS):
        assert counts.get(name, 0) >= 50, name
    assert set(typologies["fraud_type"]) <= {"none", *FRAUD_TYPES, *OPT_IN_SCENARIOS}
    assert ((typologies["is_fraud"] == 1) == (typologies["fraud_type"] != "none")).all()
    assert typologies["tx_id"].is_unique and typologies["ts"].is_monotonic_increasing
    only = simulate(accounts=500, days=45, seed=0, scenarios=["skimmer"])
    assert "new_scheme" not in set(only["fraud_type"]) and "skimmer" in set(only["fraud_type"])


def test_typologies_are_seeded() -> None:
    args = {"accounts": 300, "days": 40, "seed": 5, "scenarios": OPT_IN_SCENARIOS}
    first, again = simulate(**args), simulate(**args)
    pd.testing.assert_frame_equal(first, again)
    assert first.attrs == again.attrs
    assert not first.equals(simulate(**{**args, "seed": 6}))


def test_new_scheme_starts_at_its_date_and_is_novel_for_everyone() -> None:
    frame = simulate(
        accounts=1000, days=60, seed=3, scenarios=("new_scheme",), new_scheme_start="2026-02-10"
    )
    scheme = frame[frame["fraud_type"] == "new_scheme"]
    assert len(scheme) >= 20
    assert (scheme["ts"] >= pd.Timestamp("2026-02-10")).all()
    # Its category never occurs before the start, in anyone's history; afterwards a few
    # legitimate first-time buyers use it too (look-alikes, not a giveaway).
    category = frame["mcc"].isin(scheme["mcc"].unique())
    assert not (category & (frame["ts"] < pd.Timestamp("2026-02-10"))).any()
    assert ((frame["is_fraud"] == 0) & category).sum() > 0
    assert (scheme["channel"] == "online").all()
    # The victim's own device (no new-device giveaway) and its home country.
    earlier = frame[frame["fraud_type"] != "new_scheme"]
    assert _share_seen(scheme, earlier, "device_id") > 0.9
    # default start: 70% into the period
    default = simulate(accounts=1000, days=60, seed=3, scenarios=("new_scheme",))
    first = default.loc[default["fraud_type"] == "new_scheme", "ts"].min()
    assert first >= pd.Timestamp("2026-01-01") + pd.Timedelta(days=42)


def test_skimmer_victims_visited_a_skimmed_merchant_2_to_20_days_before(
    typologies: pd.DataFrame,
) -> None:
    skimmed = pd.DataFrame(typologies.attrs["skimmed_merchants"])
    assert len(skimmed) >= 5
    skimmed["from"], skimmed["until"] = (
        pd.to_datetime(skimmed["from"]),
        pd.to_datetime(skimmed["until"]),
    )
    genuine = typologies[typologies["is_fraud"] == 0]
    visits = genuine.merge(skimmed, on="merchant_id")
    visits = visits[(visits["ts"] >= visits["from"]) & (visits["ts"] < visits["until"])]
    skim = typologies[typologies["fraud_type"] == "skimmer"]
    first_fraud = skim.groupby("card_id")["ts"].min().rename("fraud")
    joined = visits.join(first_fraud, on="card_id", how="inner")
    lag = joined["fraud"] - joined["ts"]
    ok = (lag >= pd.Timedelta(days=2)) & (lag <= pd.Timedelta(days=20))
    victims_ok = joined.loc[ok, "card_id"].unique()
    assert set(victims_ok) == set(first_fraud.index)
    # Many cards per skimmed merchant, and a large share of its visitors.
    per_merchant = joined.loc[ok].groupby("merchant_id")["card_id"].nunique()
    assert per_merchant.max() >= 10
    # The skimmed place's own transactions stay genuine (its clones are used elsewhere).
    assert not skim["merchant_id"].isin(skimmed["merchant_id"]).any()
    assert set(genuine.merge(skimmed, on="merchant_id")["mcc"]) <= {
        "5541",
        "6011",
        "5411",
        "5814",
        "5912",
        "5999",
    }


def test_skimmer_purchases_look_ordinary_for_the_card(typologies: pd.DataFrame) -> None:
    skim = typologies[typologies["fraud_type"] == "skimmer"]
    earlier = typologies[typologies["fraud_type"] != "skimmer"]
    home = earlier.groupby("card_id")["country"].agg(lambda c: c.value_counts().index[0])
    assert (skim["country"].to_numpy() == home.loc[skim["card_id"]].to_numpy()).mean() > 0.95
    assert _share_seen(skim, earlier, "device_id") > 0.95  # the card's own chip profile
    assert _share_seen(skim, earlier, "mcc") > 0.8  # a category the card uses
    level = earlier[earlier["is_fraud"] == 0].groupby("card_id")["amount"].median()
    ratio = skim["amount"].to_numpy() / level.loc[skim["card_id"]].to_numpy()
    assert 0.3 < np.median(ratio) < 3
    assert set(skim["channel"]) <= {"pos", "atm"}


def test_opt_in_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="opt-in scenarios are skimmer, new_scheme"):
        simulate(accounts=50, days=10, scenarios=("skimer",))
    with pytest.raises(ValueError, match="always simulated"):
        simulate(accounts=50, days=10, scenarios=("card_testing",))
    with pytest.raises(ValueError, match="outside the simulated period"):
        simulate(accounts=50, days=10, scenarios=("new_scheme",), new_scheme_start="2027-01-01")
    with pytest.raises(ValueError, match="new_scheme scenario is not"):
        simulate(accounts=50, days=10, new_scheme_start="2026-01-05")


def test_simulator_stays_vectorised() -> None:
    """No per-row pandas iteration in the simulator, and the typologies cost little: a large
    frame with both is simulated in seconds (generous bound for a loaded machine)."""
    source = Path(simulate.__code__.co_filename).read_text()
    for pattern in ("iterrows", "itertuples", ".apply(", ".iloc[", "for acc in", "for victim"):
        assert pattern not in source, pattern
    started = time.perf_counter()
    big = simulate(accounts=20_000, days=30, seed=0, scenarios=OPT_IN_SCENARIOS)
    assert len(big) > 500_000
    assert time.perf_counter() - started < 60
