"""Tiny seeded files shaped like the public fraud data sets, for tests of every command.

Each function returns a DataFrame with the data set's exact public column names (in its
order) and plausibly typed values: a few hundred rows, several entities, a few frauds spread
over the whole period. :data:`SCHEMAS` holds each shape's example schema from schemas/ (what a user
starts from; ``--suggest-schema`` is tested against the same roles), and :data:`SHAPES` maps a
shape's name to its function. Write a shape with :func:`write_shape` (CSV by default; the
Sparkov file keeps its unnamed index column as pandas' ``to_csv`` writes it).

- ``ulb``: ULB credit card (Kaggle "creditcardfraud"): ``Time`` is seconds since the first
  transaction over two days, PCA components V1..V28, no card or id column (one stream).
- ``paysim``: PaySim mobile money: ``step`` is whole hours; ``nameOrig`` is nearly unique per
  row, as in the real data (most entities have one transaction).
- ``ieee_cis``: IEEE-CIS transactions (a realistic subset of its 394 columns):
  ``TransactionDT`` counts seconds from 86400; ``addr1`` is often missing.
- ``sparkov``: the Sparkov simulator's fraudTrain.csv: ``Unnamed: 0`` is the saved row index;
  ``trans_num`` is unique per row (``duplicate_ids=True`` repeats some across customers).
- ``handbook``: the Fraud Detection Handbook's simulated data.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

ULB_COLUMNS = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]
PAYSIM_COLUMNS = [
    "step",
    "type",
    "amount",
    "nameOrig",
    "oldbalanceOrg",
    "newbalanceOrig",
    "nameDest",
    "oldbalanceDest",
    "newbalanceDest",
    "isFraud",
    "isFlaggedFraud",
]
IEEE_CIS_COLUMNS = [
    "TransactionID",
    "isFraud",
    "TransactionDT",
    "TransactionAmt",
    "ProductCD",
    *(f"card{i}" for i in range(1, 7)),
    "addr1",
    "addr2",
    "dist1",
    "dist2",
    "P_emaildomain",
    "R_emaildomain",
    "C1",
    "C2",
    "C13",
    "D1",
    "D4",
    "D15",
    "M1",
    "M2",
    "M4",
    "M6",
]
SPARKOV_COLUMNS = [
    "Unnamed: 0",
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "first",
    "last",
    "gender",
    "street",
    "city",
    "state",
    "zip",
    "lat",
    "long",
    "city_pop",
    "job",
    "dob",
    "trans_num",
    "unix_time",
    "merch_lat",
    "merch_long",
    "is_fraud",
]
HANDBOOK_COLUMNS = [
    "TRANSACTION_ID",
    "TX_DATETIME",
    "CUSTOMER_ID",
    "TERMINAL_ID",
    "TX_AMOUNT",
    "TX_TIME_SECONDS",
    "TX_TIME_DAYS",
    "TX_FRAUD",
    "TX_FRAUD_SCENARIO",
]


def _frauds(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """0/1 labels with `count` frauds spread evenly over the rows (time order), jittered."""
    label = np.zeros(n, dtype=np.int64)
    slots = np.linspace(0, n, count, endpoint=False).astype(int)
    width = max(n // count, 1)
    label[np.minimum(slots + rng.integers(0, width, size=count), n - 1)] = 1
    return label


def ulb(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """ULB credit card: Time (seconds, float, from 0 over two days), V1..V28, Amount, Class."""
    rng = np.random.default_rng(seed)
    time = np.sort(rng.integers(0, 172_792, size=n)).astype(np.float64)
    time[0] = 0.0
    label = _frauds(rng, n, 8)
    data = {"Time": time}
    v = rng.normal(size=(n, 28)) * np.linspace(1.9, 0.3, 28)
    v[label == 1, :3] -= 4.0  # fraud sits apart on the first components, as in the data
    data.update({f"V{i + 1}": v[:, i] for i in range(28)})
    data["Amount"] = np.round(rng.lognormal(3.0, 1.3, size=n), 2)
    data["Class"] = label
    return pd.DataFrame(data, columns=ULB_COLUMNS)


def paysim(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """PaySim: step in whole hours (1..720), nameOrig nearly unique per row (as in the
    real data), nameDest repeated; fraud only in TRANSFER and CASH_OUT."""
    rng = np.random.default_rng(seed)
    step = np.sort(rng.integers(1, 721, size=n))
    types = rng.choice(
        ["CASH_OUT", "PAYMENT", "CASH_IN", "TRANSFER", "DEBIT"],
        size=n,
        p=[0.35, 0.34, 0.22, 0.08, 0.01],
    )
    label = _frauds(rng, n, 10)
    types[label == 1] = rng.choice(["TRANSFER", "CASH_OUT"], size=int(label.sum()))
    amount = np.round(rng.lognormal(11.0, 1.2, size=n), 2)
    origins = rng.choice(n * 20, size=n, replace=True) + 1_000_000_000
    destinations = rng.choice(60, size=n) + 500_000_000
    old_org = np.round(rng.lognormal(10.0, 2.0, size=n), 2) * (rng.random(n) < 0.7)
    new_org = np.maximum(old_org - amount, 0.0)
    old_dest = np.round(rng.lognormal(12.0, 1.5, size=n), 2) * (rng.random(n) < 0.8)
    frame = pd.DataFrame(
        {
            "step": step,
            "type": types,
            "amount": amount,
            "nameOrig": [f"C{o}" for o in origins],
            "oldbalanceOrg": old_org,
            "newbalanceOrig": np.round(new_org, 2),
            "nameDest": [
                ("M" if t == "PAYMENT" else "C") + str(d)
                for t, d in zip(types, destinations, strict=True)
            ],
            "oldbalanceDest": old_dest,
            "newbalanceDest": np.round(old_dest + amount * (types != "PAYMENT"), 2),
            "isFraud": label,
            "isFlaggedFraud": ((label == 1) & (types == "TRANSFER") & (amount > 200_000)).astype(
                np.int64
            ),
        }
    )
    return frame[PAYSIM_COLUMNS]


def ieee_cis(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """IEEE-CIS transactions: TransactionDT seconds from 86400 over ~30 days, 25 cards
    (card1 with its per-card attributes), addr1 missing on ~30% of rows, sparse dist/D."""
    rng = np.random.default_rng(seed)
    dt = np.sort(86_400 + rng.integers(0, 30 * 86_400, size=n))
    dt[0] = 86_400
    cards = 25
    card1 = rng.choice(np.arange(1_000, 18_400), size=cards, replace=False)
    card2 = np.where(rng.random(cards) < 0.9, rng.integers(100, 600, size=cards), np.nan)
    card3 = rng.choice([150.0, 185.0, 144.0], size=cards, p=[0.88, 0.1, 0.02])
    card4 = rng.choice(["visa", "mastercard", "american express", "discover"], size=cards)
    card5 = rng.choice([226.0, 224.0, 166.0, 102.0, 117.0, 138.0], size=cards)
    card6 = rng.choice(["debit", "credit"], size=cards, p=[0.75, 0.25])
    addr1 = rng.choice([299.0, 325.0, 204.0, 264.0, 330.0, 315.0], size=cards)
    which = rng.integers(0, cards, size=n)
    no_address = rng.random(n) < 0.3
    product = rng.choice(["W", "C", "R", "H", "S"], size=n, p=[0.74, 0.12, 0.06, 0.06, 0.02])
    label = _frauds(rng, n, 12)
    emails = ["gmail.com", "yahoo.com", "hotmail.com", "anonymous.com", "aol.com"]
    frame = pd.DataFrame(
        {
            "TransactionID": 2_987_000 + np.arange(n),
            "isFraud": label,
            "TransactionDT": dt,
            "TransactionAmt": np.round(rng.lognormal(4.2, 1.0, size=n), 3),
            "ProductCD": product,
            "card1": card1[which],
            "card2": card2[which],
            "card3": card3[which],
            "card4": card4[which],
            "card5": card5[which],
            "card6": card6[which],
            "addr1": np.where(no_address, np.nan, addr1[which]),
            "addr2": np.where(no_address, np.nan, 87.0),
            "dist1": np.where(rng.random(n) < 0.6, np.nan, rng.integers(0, 800, size=n)),
            "dist2": np.where(rng.random(n) < 0.9, np.nan, rng.integers(0, 2000, size=n)),
            "P_emaildomain": np.where(rng.random(n) < 0.15, None, rng.choice(emails, size=n)),
            "R_emaildomain": np.where(rng.random(n) < 0.75, None, rng.choice(emails, size=n)),
            "C1": rng.integers(1, 5, size=n).astype(np.float64),
            "C2": rng.integers(1, 5, size=n).astype(np.float64),
            "C13": rng.integers(1, 40, size=n).astype(np.float64),
            "D1": np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 500, size=n)),
            "D4": np.where(rng.random(n) < 0.3, np.nan, rng.integers(0, 600, size=n)),
            "D15": np.where(rng.random(n) < 0.15, np.nan, rng.integers(0, 600, size=n)),
            "M1": np.where(rng.random(n) < 0.45, None, "T"),
            "M2": np.where(rng.random(n) < 0.45, None, rng.choice(["T", "F"], size=n)),
            "M4": np.where(rng.random(n) < 0.45, None, rng.choice(["M0", "M1", "M2"], size=n)),
            "M6": np.where(rng.random(n) < 0.3, None, rng.choice(["T", "F"], size=n)),
        }
    )
    return frame[IEEE_CIS_COLUMNS]


def sparkov(n: int = 400, seed: int = 0, *, duplicate_ids: bool = False) -> pd.DataFrame:
    """Sparkov fraudTrain.csv: 12 cards with their holders' details, 40 merchants, times
    over 60 days from 2019-01-01; trans_num unique per row unless `duplicate_ids`, which
    repeats some of them across customers (a file glued from two exports)."""
    rng = np.random.default_rng(seed)
    cards = 12
    cc = rng.integers(10**15, 10**16 - 1, size=cards, dtype=np.int64)
    cc[:2] = rng.integers(10**14, 10**15 - 1, size=2)  # Amex numbers have 15 digits
    first = rng.choice(["Jennifer", "Michael", "Ashley", "Christopher", "Sarah", "James"], cards)
    last = rng.choice(["Banks", "Gill", "Sanchez", "White", "Garcia", "Williams"], cards)
    gender = rng.choice(["F", "M"], cards)
    street = [f"{rng.integers(1, 9999)} {s}" for s in rng.choice(["Oak St", "Elm Ave"], cards)]
    city = rng.choice(["Moravian Falls", "Orient", "Malad City", "Boulder", "Doe Hill"], cards)
    state = rng.choice(["NC", "WA", "ID", "MT", "VA"], cards)
    zip_code = rng.integers(10_000, 99_999, size=cards)
    lat = np.round(rng.uniform(25, 48, size=cards), 4)
    lon = np.round(rng.uniform(-122, -70, size=cards), 4)
    city_pop = rng.integers(100, 2_000_000, size=cards)
    job = rng.choice(["Psychologist, counselling", "Special educational needs teacher"], cards)
    dob = pd.to_datetime("1950-01-01") + pd.to_timedelta(rng.integers(0, 18_000, cards), "D")
    merchants = [f"fraud_{name} {i}" for i, name in enumerate(rng.choice(["Rippin", "Kub"], 40))]
    categories = ["misc_net", "grocery_pos", "entertainment", "gas_transport", "shopping_pos"]

    which = rng.integers(0, cards, size=n)
    seconds = np.sort(rng.integers(0, 60 * 86_400, size=n))
    times = pd.Timestamp("2019-01-01") + pd.to_timedelta(seconds, "s")
    label = _frauds(rng, n, 10)
    trans_num = np.array(
        [f"{rng.integers(0, 2**63):016x}{rng.integers(0, 2**63):016x}" for _ in range(n)]
    )
    if duplicate_ids:
        # the second half repeats ids of the first half, on other customers' transactions
        trans_num[n // 2 : n // 2 + 20] = trans_num[:20]
    frame = pd.DataFrame(
        {
            "Unnamed: 0": np.arange(n),
            "trans_date_trans_time": times.strftime("%Y-%m-%d %H:%M:%S"),
            "cc_num": cc[which],
            "merchant": rng.choice(merchants, size=n),
            "category": rng.choice(categories, size=n),
            "amt": np.round(rng.lognormal(3.5, 1.1, size=n), 2),
            "first": first[which],
            "last": last[which],
            "gender": gender[which],
            "street": np.array(street)[which],
            "city": city[which],
            "state": state[which],
            "zip": zip_code[which],
            "lat": lat[which],
            "long": lon[which],
            "city_pop": city_pop[which],
            "job": job[which],
            "dob": dob[which].strftime("%Y-%m-%d"),
            "trans_num": trans_num,
            # The published unix_time runs ~7 years behind the dates; kept that way.
            "unix_time": 1_325_376_000 + seconds,
            "merch_lat": np.round(lat[which] + rng.uniform(-1, 1, size=n), 6),
            "merch_long": np.round(lon[which] + rng.uniform(-1, 1, size=n), 6),
            "is_fraud": label,
        }
    )
    return frame[SPARKOV_COLUMNS]


def handbook(n: int = 400, seed: int = 0, days: int = 30) -> pd.DataFrame:
    """The Fraud Detection Handbook's simulated data: 20 customers, 50 terminals, from
    2018-04-01 over `days` days; scenario 1 (amount over 220) and 3 (compromised customer)."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, size=n))
    amount = np.round(rng.gamma(2.0, 25.0, size=n), 2)
    label = _frauds(rng, n, 10)
    scenario = np.where(label == 1, 3, 0)
    over = np.flatnonzero(label)[::3]  # a third of the frauds: scenario 1, amount over 220
    amount[over] = 220 + np.round(rng.uniform(1, 80, size=len(over)), 2)
    scenario[over] = 1
    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n),
            "TX_DATETIME": (pd.Timestamp("2018-04-01") + pd.to_timedelta(seconds, "s")).strftime(
                "%Y-%m-%d %H:%M:%S"
            ),
            "CUSTOMER_ID": rng.integers(0, 20, size=n),
            "TERMINAL_ID": rng.integers(0, 50, size=n),
            "TX_AMOUNT": amount,
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86_400,
            "TX_FRAUD": label,
            "TX_FRAUD_SCENARIO": scenario,
        }
    )
    return frame[HANDBOOK_COLUMNS]


SHAPES = {
    "ulb": ulb,
    "paysim": paysim,
    "ieee_cis": ieee_cis,
    "sparkov": sparkov,
    "handbook": handbook,
}


def write_shape(name: str, path: str | Path, **kwargs) -> Path:
    """Write shape `name` to `path` (.csv, .csv.gz or .parquet) and return the path."""
    frame = SHAPES[name](**kwargs)
    path = Path(path)
    if path.name.endswith((".parquet", ".pq")):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


#: The example schema of each shape, from the repository's schemas/ folder (what the
#: README tells a user of that data set to start from).
SCHEMA_FILES = {
    "ulb": "ulb_creditcard.toml",
    "paysim": "paysim.toml",
    "ieee_cis": "ieee_cis.toml",
    "sparkov": "sparkov.toml",
    "handbook": "handbook.toml",
}
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
SCHEMAS = {name: (SCHEMAS_DIR / file).read_text() for name, file in SCHEMA_FILES.items()}


def without_keys(schema: str, *keys: str) -> str:
    """Schema text with the lines that set `keys` in [columns] removed."""
    pattern = re.compile(rf"^(?:{'|'.join(map(re.escape, keys))})\s*=.*\n", re.MULTILINE)
    return pattern.sub("", schema)
