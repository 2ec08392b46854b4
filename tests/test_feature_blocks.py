"""Feature blocks against slow pure-Python references, plus causality (leakage) properties.

Random tables are unsorted, with many time ties; each block's kernel runs over them from an
empty state, sorted the way the FeatureEncoder does (entity_order + group_starts), and rows
are found again by id.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from fraudseq.features import segments
from fraudseq.features.blocks import BLOCKS as FEATURE_BLOCKS
from fraudseq.features.constants import NS_PER_DAY, NS_PER_SECOND, label_delay_buckets
from fraudseq.features.kernel import Chunk, Context
from fraudseq.features.state import StateTable
from fraudseq.windows import entity_order, group_starts

HOUR = 3_600 * NS_PER_SECOND
EPOCH = 1_767_225_600 * NS_PER_SECOND  # 2026-01-01T00:00:00Z
CATEGORICALS = ("mcc", "country", "device")
NEW_BLOCKS = ("amount_history", "novelty", "velocity", "counterparty_risk", "new_values_24h")
ENTITY_ONLY_BLOCKS = (
    "event", "recency", "amount_history", "novelty", "velocity", "new_values_24h",
)  # fmt: skip


# -- random tables and SortedFrames ---------------------------------------------------------


def random_table(seed: int, n: int = 300, entities: int = 20, counterparties: int = 15):
    rng = np.random.default_rng(seed)
    # Whole half-hours over 60 days, drawn from a coarse grid so equal timestamps are common.
    days = rng.integers(0, 60, n)
    slots = rng.choice([0, 1, 2, 20, 21, 47], n)
    label = rng.choice([0.0, 1.0, np.nan], n, p=[0.6, 0.25, 0.15])
    counterparty = rng.integers(0, counterparties, n)
    counterparty[rng.random(n) < 0.05] = -1  # missing counterparty
    return {
        "id": rng.permutation(n),
        "entity": rng.integers(0, entities, n),
        "time": EPOCH + days * NS_PER_DAY + slots * (HOUR // 2),
        "amount": np.round(rng.lognormal(3, 1.5, n) * rng.choice([1, 1, 1, -1], n), 2),
        "cat": {c: rng.integers(-1, k, n) for c, k in zip(CATEGORICALS, (3, 6, 12), strict=True)},
        "counterparty": counterparty,
        "label": label,
    }


def copy_table(table):
    out = {k: v.copy() for k, v in table.items() if k != "cat"}
    out["cat"] = {c: v.copy() for c, v in table["cat"].items()}
    return out


def build(table, delay_ns: int = 7 * NS_PER_DAY, *, labels: bool = True, cp: bool = True):
    """(kernel Context from an empty state, sorted position of each row) from an unsorted
    table."""
    order = entity_order(table["entity"], table["time"])
    starts = group_starts(table["entity"][order])
    entity = np.cumsum(starts == np.arange(len(starts))) - 1
    chunk = Chunk(
        entity=entity,
        time_ns=table["time"][order],
        amount=table["amount"][order],
        categorical=[v[order] for v in table["cat"].values()],
        counterparty=table["counterparty"][order] if cp else None,
        label=table["label"][order] if labels else None,
    )
    entities = int(entity[-1]) + 1 if len(entity) else 0
    state = StateTable.empty(entities, len(table["cat"]))
    frame = Context(state, chunk, tuple(table["cat"]), label_delay_buckets(delay_ns))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    return frame, position


def run(block: str, frame: Context) -> dict[str, np.ndarray]:
    return FEATURE_BLOCKS[block].kernel(frame)


def features_by_id(table, blocks, **kwargs) -> dict[int, dict[str, float]]:
    frame, position = build(table, **kwargs)
    out = {}
    for name in blocks:
        out.update(run(name, frame))
    return {
        int(row_id): {k: float(v[position[r]]) for k, v in out.items()}
        for r, row_id in enumerate(table["id"])
    }


# -- pure-Python references (unsorted table, row index = file order) -----------------------


def slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x) if x else 0.0


def previous_rows(table, r):
    """The same entity's earlier rows: earlier time, or equal time and earlier in the file."""
    t, e = table["time"], table["entity"]
    rows = [j for j in range(len(t)) if e[j] == e[r] and (t[j], j) < (t[r], r)]
    return sorted(rows, key=lambda j: (t[j], j))


def ref_amount_history(table, r):
    la = [slog(float(a)) for a in table["amount"]]
    prev = [la[j] for j in previous_rows(table, r)]
    x = la[r]
    last = prev[-10:]
    if len(last) >= 2:
        mean = sum(last) / len(last)
        std = math.sqrt(sum((v - mean) ** 2 for v in last) / len(last))
        zscore = (x - mean) / (std + 0.1)
    else:
        zscore = 0.0
    median = statistics.median(last) if last else 0.0
    mad = statistics.median([abs(v - median) for v in last]) if last else 0.0
    return {
        "amount_to_mean": x - sum(prev) / len(prev) if prev else 0.0,
        "amount_zscore": zscore,
        "amount_to_max": x - max(prev) if prev else 0.0,
        "amount_to_median": x - median if last else 0.0,
        "amount_robust_zscore": (x - median) / (mad + 0.1) if len(last) >= 2 else 0.0,
        "n_previous": math.log1p(len(prev)),
    }


def ref_novelty_flags(table, r):
    prev = previous_rows(table, r)
    return {
        f"new_{c}": float(all(codes[j] != codes[r] for j in prev))
        for c, codes in table["cat"].items()
    }


def ref_novelty(table, r):
    out = ref_novelty_flags(table, r)
    window = ([*previous_rows(table, r), r])[-16:]
    out["new_values_in_window"] = float(
        sum(sum(ref_novelty_flags(table, j).values()) for j in window)
    )
    return out


def ref_new_values_24h(table, r):
    """Values of every column the entity first used in (t - 24 h, t], the row's own too."""
    t = table["time"]
    rows = [*previous_rows(table, r), r]
    count = 0
    for codes in table["cat"].values():
        firsts = {}
        for j in rows:  # in the entity's order: the first row with each value
            firsts.setdefault(codes[j], t[j])
        count += sum(1 for first in firsts.values() if first > t[r] - NS_PER_DAY)
    return {"new_values_24h": float(count)}


def ref_velocity(table, r):
    t = table["time"]
    out = {}
    for name, width in (("1h", HOUR), ("1d", NS_PER_DAY), ("7d", 7 * NS_PER_DAY)):
        rows = [j for j in previous_rows(table, r) if t[r] - width < t[j] <= t[r]]
        out[f"count_{name}"] = math.log1p(len(rows))
        if name != "1h":
            out[f"amount_{name}"] = slog(sum(float(table["amount"][j]) for j in rows))
    return out


def ref_counterparty(table, r, delay_ns):
    t, cp, label = table["time"], table["counterparty"], table["label"]
    hour = NS_PER_DAY // 24
    delay = math.ceil(delay_ns / hour)
    bucket = [int(v) // hour for v in t]
    out = {}
    for w in (1, 7, 30):
        rows = []
        if cp[r] >= 0:
            rows = [
                j
                for j in range(len(t))
                if cp[j] == cp[r] and bucket[r] - delay - 24 * w <= bucket[j] < bucket[r] - delay
            ]
        # The point of the delay: every label used is strictly older than t - delay.
        assert all(t[j] < t[r] - delay_ns for j in rows)
        frauds = sum(1 for j in rows if label[j] == 1.0)
        out[f"cp_count_{w}d"] = math.log1p(len(rows))
        out[f"cp_risk_{w}d"] = frauds / len(rows) if rows else 0.0
        if w == 30:  # the age of the known fraud in the longest window, in days
            fraud_buckets = [bucket[j] for j in rows if label[j] == 1.0]
            out["cp_first_fraud_days"] = (
                (bucket[r] - min(fraud_buckets)) / 24 if fraud_buckets else 0.0
            )
            out["cp_last_fraud_days"] = (
                (bucket[r] - max(fraud_buckets)) / 24 if fraud_buckets else 0.0
            )
    return out


def check_against(table, block, reference, **kwargs):
    got = features_by_id(table, [block], **kwargs)
    for r, row_id in enumerate(table["id"]):
        expected = reference(table, r)
        assert set(got[int(row_id)]) == set(expected)
        for name, value in expected.items():
            assert got[int(row_id)][name] == pytest.approx(value, abs=1e-9), (name, r)


# -- blocks against references -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_amount_history_matches_reference(seed):
    check_against(random_table(seed), "amount_history", ref_amount_history)


def test_median_features_ignore_an_attacks_inflated_amounts():
    """After one inflated amount, an ordinary amount still reads as ordinary against the
    median, while the max (and the mean-based z-score) have moved."""
    n = 12
    table = {
        "id": np.arange(n),
        "entity": np.zeros(n, dtype=np.int64),
        "time": EPOCH + np.arange(n) * HOUR,
        "amount": np.array([20.0] * 9 + [5000.0, 20.0, 20.0]),
        "label": np.zeros(n),
        "cat": {},
        "counterparty": np.zeros(n, dtype=np.int64),
    }
    last = features_by_id(table, ["amount_history"])[n - 1]
    assert last["amount_to_median"] == pytest.approx(0.0)
    assert last["amount_robust_zscore"] == pytest.approx(0.0)
    assert last["amount_to_max"] < -5


@pytest.mark.parametrize("seed", range(3))
def test_novelty_matches_reference(seed):
    check_against(random_table(seed), "novelty", ref_novelty)


@pytest.mark.parametrize("seed", range(3))
def test_new_values_24h_matches_reference(seed):
    table = random_table(seed)
    table["time"][::3] -= rng_minutes(seed, len(table["time"][::3]))  # sub-day gaps
    check_against(table, "new_values_24h", ref_new_values_24h)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("budget", [64, 0])  # 0: amounts summed by prefix-sum differences
def test_velocity_matches_reference(seed, budget, monkeypatch):
    monkeypatch.setattr(segments, "WINDOW_SUM_BUDGET_PER_ROW", budget)
    table = random_table(seed)
    # Also exercise sub-slot gaps: some rows exactly 1 hour / 1 day after another one.
    table["time"][::7] += HOUR // 2
    check_against(table, "velocity", ref_velocity)


@pytest.mark.parametrize("seed", range(3))
def test_velocity_matches_reference_with_time_ranks(seed, monkeypatch):
    """The keys of time ranks (a file too long for keys of times) give the same features."""
    from fraudseq.features.blocks import velocity

    monkeypatch.setattr(velocity, "KEY_LIMIT", 0)
    table = random_table(seed)
    table["time"][::7] += HOUR // 2
    check_against(table, "velocity", ref_velocity)


@pytest.mark.parametrize("seed", range(5))
def test_counterparty_key_order_sorts_with_a_sorted_or_unsorted_head(seed):
    from fraudseq.features.blocks.counterparty import _key_order

    rng = np.random.default_rng(seed)
    key = rng.integers(0, 50, 300)
    for stored, head_sorted in [(0, False), (1, True), (200, True), (200, False), (300, True)]:
        keys = key.copy()
        if head_sorted:
            keys[:stored] = np.sort(keys[:stored])
        order = _key_order(keys, stored)
        assert sorted(order.tolist()) == list(range(len(keys)))
        assert (np.diff(keys[order]) >= 0).all()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delay_ns", [7 * NS_PER_DAY, 0, 3 * NS_PER_DAY // 2, NS_PER_DAY + 1])
def test_counterparty_risk_matches_reference(seed, delay_ns):
    table = random_table(seed)
    table["time"][::5] += rng_minutes(seed, len(table["time"][::5]))
    check_against(
        table,
        "counterparty_risk",
        lambda tab, r: ref_counterparty(tab, r, delay_ns),
        delay_ns=delay_ns,
    )


def rng_minutes(seed, size):
    return np.random.default_rng(seed + 100).integers(0, 24 * 60, size) * 60 * NS_PER_SECOND


def test_label_delay_buckets_round_up_to_the_hour():
    hour = NS_PER_DAY // 24
    assert label_delay_buckets(7 * NS_PER_DAY) == 7 * 24
    assert label_delay_buckets(7 * NS_PER_DAY + 1) == 7 * 24 + 1
    assert label_delay_buckets(3 * hour // 2) == 2
    assert label_delay_buckets(0) == 0


def test_first_transaction_is_new_everywhere():
    table = random_table(0)
    frame, _ = build(table)
    out = run("novelty", frame)
    first = frame.rank == 0
    for c in CATEGORICALS:
        assert (out[f"new_{c}"][first] == 1.0).all()
    assert (out["new_values_in_window"][first] == len(CATEGORICALS)).all()


def test_counterparty_without_labels_has_zero_risk():
    table = random_table(1)
    frame, _ = build(table, labels=False)
    out = run("counterparty_risk", frame)
    assert all((out[f"cp_risk_{w}d"] == 0).all() for w in (1, 7, 30))
    assert out["cp_count_30d"].max() > 0
    frame, _ = build(table, cp=False)
    assert run("counterparty_risk", frame) == {}


def test_counterparty_delay_boundary():
    """A label exactly `delay` old is not used; day bucketing is conservative beyond that."""
    delay = 7 * NS_PER_DAY
    t0 = EPOCH + 10 * NS_PER_DAY  # midnight
    late = EPOCH + 10 * NS_PER_DAY + NS_PER_DAY - 60 * NS_PER_SECOND  # 23:59 the same day
    cases = [  # (labelled transaction time, scoring time, labelled transaction counted?)
        (t0, t0 + delay, False),  # exactly delay old: not usable
        (t0, t0 + delay + 1, False),  # usable in principle, but in day(t) - 7: conservative
        (late, late + delay + 120 * NS_PER_SECOND, True),  # next day: day(t) - 8, counted
        (t0, t0 + delay + NS_PER_DAY, True),
    ]
    for old, now, counted in cases:
        table = {
            "id": np.array([0, 1]),
            "entity": np.array([0, 1]),
            "time": np.array([old, now]),
            "amount": np.array([10.0, 10.0]),
            "cat": {},
            "counterparty": np.array([3, 3]),
            "label": np.array([1.0, np.nan]),
        }
        got = features_by_id(table, ["counterparty_risk"], delay_ns=delay)[1]
        assert got["cp_risk_1d"] == (1.0 if counted else 0.0)
        assert got["cp_count_1d"] == pytest.approx(math.log1p(1 if counted else 0))


# -- causality -----------------------------------------------------------------------------


def perturb(table, r, rng, *, other_entities_anytime: bool):
    """Change everything a feature of row r must not depend on (row r's id is kept)."""
    out = copy_table(table)
    n = len(out["time"])
    t, e = table["time"], table["entity"]
    t_r = t[r]
    delay = 7 * NS_PER_DAY
    later_same = np.array([e[j] == e[r] and (t[j], j) > (t_r, r) for j in range(n)])
    other = e != e[r]
    # (a) later transactions of the same entity: amount, later time, codes, counterparty.
    k = int(later_same.sum())
    out["amount"][later_same] = rng.lognormal(3, 2, k)
    out["time"][later_same] += rng.integers(0, 3, k) * NS_PER_DAY + rng.integers(0, 5, k) * HOUR
    for codes in out["cat"].values():
        codes[later_same] = rng.integers(-1, 50, k)
    out["counterparty"][later_same] = rng.integers(-1, 15, k)
    # (b) other entities. Counterparty statistics legitimately use other entities' old
    # transactions, so unless only entity-local blocks are checked, only their fields that
    # counterparty statistics ignore change, plus everything of their rows newer than t - delay.
    k = int(other.sum())
    out["amount"][other] = rng.lognormal(3, 2, k)
    for codes in out["cat"].values():
        codes[other] = rng.integers(-1, 50, k)
    if other_entities_anytime:
        out["time"][other] = EPOCH + rng.integers(0, 80 * 48, k) * (HOUR // 2)
        out["counterparty"][other] = rng.integers(-1, 15, k)
        out["label"][other] = rng.choice([0.0, 1.0, np.nan], k)
    else:
        recent = other & (t >= t_r - delay)
        k = int(recent.sum())
        out["time"][recent] += rng.integers(0, 3, k) * NS_PER_DAY
        out["counterparty"][recent] = rng.integers(-1, 15, k)
    # (c) labels of every transaction not strictly older than t - delay (the row's own too).
    fresh = t >= t_r - delay
    out["label"][fresh] = rng.choice([0.0, 1.0, np.nan], int(fresh.sum()))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("anytime", [False, True])
def test_no_leakage(seed, anytime):
    table = random_table(seed)
    blocks = ENTITY_ONLY_BLOCKS if anytime else tuple(FEATURE_BLOCKS)
    base = features_by_id(table, blocks)
    rng = np.random.default_rng(1000 + seed)
    for r in rng.choice(len(table["time"]), size=12, replace=False):
        changed = perturb(table, r, rng, other_entities_anytime=anytime)
        row_id = int(table["id"][r])
        got = features_by_id(changed, blocks)[row_id]
        for name, value in base[row_id].items():
            # Tolerance only for float rounding of prefix sums over other entities.
            assert got[name] == pytest.approx(value, abs=1e-9), (name, r)


def test_old_labels_and_counterparty_history_do_change_counterparty_features():
    table = random_table(5)
    base = features_by_id(table, ["counterparty_risk"])
    t, cp, day = table["time"], table["counterparty"], table["time"] // NS_PER_DAY
    checked = 0
    for r in range(len(t)):
        if cp[r] < 0:
            continue
        window = np.flatnonzero((cp == cp[r]) & (day >= day[r] - 37) & (day < day[r] - 7))
        if len(window) == 0:
            continue
        changed = copy_table(table)
        changed["label"][window] = np.where(table["label"][window] == 1.0, 0.0, 1.0)
        got = features_by_id(changed, ["counterparty_risk"])[int(table["id"][r])]
        assert got["cp_risk_30d"] != base[int(table["id"][r])]["cp_risk_30d"]
        checked += 1
        if checked == 10:
            break
    assert checked == 10


# -- output shape and finiteness -----------------------------------------------------------


@pytest.mark.parametrize("labels", [True, False])
@pytest.mark.parametrize("cp", [True, False])
def test_outputs_are_finite_float64_one_per_row(labels, cp):
    table = random_table(9)
    frame, _ = build(table, labels=labels, cp=cp)
    n = len(frame)
    for name in FEATURE_BLOCKS:
        for feature, values in run(name, frame).items():
            assert values.dtype == np.float64, feature
            assert values.shape == (n,), feature
            assert np.isfinite(values).all(), feature


@pytest.mark.parametrize("n", [0, 1])
def test_tiny_frames(n):
    table = random_table(2)
    table = {k: v[:n] for k, v in table.items() if k != "cat"} | {
        "cat": {c: v[:n] for c, v in table["cat"].items()}
    }
    frame, _ = build(table)
    for name in NEW_BLOCKS:
        for feature, values in run(name, frame).items():
            assert values.shape == (n,), feature
            assert np.isfinite(values).all(), feature


def test_no_categoricals_gives_no_novelty_features():
    table = random_table(3)
    table["cat"] = {}
    frame, _ = build(table)
    assert run("novelty", frame) == {}


def test_feature_encoder_runs_all_blocks(small_frame):
    from fraudseq.features import FeatureEncoder
    from fraudseq.schema import Schema

    encoder = FeatureEncoder(Schema.simulator(), blocks=tuple(FEATURE_BLOCKS)).fit(small_frame)
    encoded = encoder.transform(small_frame)
    assert encoded.numeric.shape == (len(small_frame), encoder.n_numeric)
    assert np.isfinite(encoded.numeric).all()
    assert {"amount_zscore", "new_mcc", "count_1h", "cp_risk_7d"} <= set(encoder.numeric_names_)
