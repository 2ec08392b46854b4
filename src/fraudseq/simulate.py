"""Seeded, vectorised simulator of card transactions with labelled fraud scenarios.

Generative story
----------------
1. **Merchants.** Every (country, category) cell holds a few physical and/or online merchants;
   a merchant fixes the transaction's `mcc` and `country`. Low indices in a cell are popular.
2. **Accounts with habits.** Each card has a home country, an amount level (log-normal across
   accounts, so "big" is relative), a transaction rate (0.2 to 8 a day), usual hours, a handful
   of usual merchants with weights (which fixes its preferred categories), a contactless habit,
   a primary device and sometimes a second one, and a propensity to travel.
3. **Genuine activity.** Poisson counts per account; every transaction is drawn from the
   account's habits. Look-alikes of fraud are part of normal life: tiny charges (coffee,
   transit, parking, apps), trips abroad (new country for a few days, usual categories),
   new phones (permanent device change), one-off big purchases and shopping at new online
   merchants.
4. **Fraud incidents**, drawn as arrays and expanded row-wise, interleaved with the genuine
   activity that goes on around them:
   - `card_testing`: a burst of tiny online charges, then one or a few large purchases;
   - `account_takeover`: a new device, often a new country, unusual categories, a burst of
     above-habit amounts;
   - `escalation`: charges at one new merchant whose amounts climb step by step;
   - `compromised_merchant`: merchants compromised for a window (as in the Fraud Detection
     Handbook's compromised terminals). The merchant itself adds fraudulent charges on the
     cards that visit it, which look like the card's normal purchases and show only in the
     merchant's (delayed) history; some visiting cards are cloned and used elsewhere days later.
5. **Opt-in typologies** (`scenarios=OPT_IN_SCENARIOS`; the default frame does not change):
   - `skimmer`: a skimmer at a few card-present places (fuel pumps, ATMs, small shops) for
     5-14 days. Half the cards that visit then are cloned and used elsewhere 2-20 days
     later, in purchases that look ordinary for the card: its home country, a category of
     its usual merchants, its usual amount level, and its own chip profile (`device_id`: a
     clone copies the card's data, so the authorisation carries the card's profile, not a
     new device). The skimmed place's own transactions stay genuine. Only the cross-account
     clue (other cards that visited M have since turned fraudulent) gives it away; the
     skimmed merchants and windows are in `frame.attrs["skimmed_merchants"]`.
   - `new_scheme`: from `new_scheme_start` (default 70% into the period) on, phones with
     remote-access malware buy crypto (`mcc` 6051, quasi-cash, at exchanges that did not
     exist before) in a burst of round amounts on the victim's own device at home. No
     transaction before the start has that category, so a model trained before it has no
     label for it; a few legitimate first-time crypto buyers appear after the start too.

`device_id` is the device fingerprint attached to an authorisation: the customer's phone or
browser (also for wallet payments in shops), the fraudster's device, or a cloned card's chip
profile. Merchant and device ids are random numbers, so an id's size says nothing about its age.

No single column gives fraud away; the account's history does (novel device + novel country +
burst, tiny-then-big, climbing amounts, a merchant with recent fraud). Every draw comes from one
`np.random.default_rng(seed)`, and there is no per-transaction or per-incident Python loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from fraudseq.splits import parse_time

SIMULATOR_COLUMNS = (
    "tx_id",
    "card_id",
    "ts",
    "amount",
    "mcc",
    "country",
    "channel",
    "device_id",
    "merchant_id",
    "is_fraud",
    "fraud_type",
)
FRAUD_TYPES = ("card_testing", "account_takeover", "escalation", "compromised_merchant")
#: Typologies added only on request (`simulate(scenarios=...)`), so that the default frame,
#: which the README's numbers were measured on, stays the same.
OPT_IN_SCENARIOS = ("skimmer", "new_scheme")

DAY = 86_400
HOUR = 3_600
CHANNELS = ("pos", "online", "atm", "contactless")
POS, ONLINE, ATM, CONTACTLESS = range(4)
GENUINE, CARD_TESTING, TAKEOVER, ESCALATION, COMPROMISED, SKIMMER, NEW_SCHEME = range(7)

COUNTRIES = ("US", "GB", "DE", "FR", "CA", "ES", "IT", "NL", "MX", "BR", "JP", "AU", "IN")
HOME_WEIGHTS = np.array([30, 12, 10, 9, 6, 6, 6, 4, 4, 4, 3, 3, 3], dtype=float)
# Tourists favour a few destinations; fraudsters' countries are drawn uniformly instead so that
# neither distribution alone marks a country as "fraudulent".
TRAVEL_WEIGHTS = np.array([14, 10, 6, 14, 5, 12, 11, 5, 6, 3, 5, 4, 3], dtype=float)

# code, weight among usual merchants, amount factor vs the account level (0: tiny absolute
# amounts), share of online merchants.
_MCC_TABLE = (
    ("5411", 0.15, 1.0, 0.05),  # grocery
    ("5812", 0.09, 0.9, 0.05),  # restaurants
    ("5814", 0.09, 0.0, 0.05),  # coffee / fast food: tiny
    ("5541", 0.07, 1.2, 0.0),  # fuel
    ("5311", 0.05, 1.5, 0.3),  # department stores
    ("5691", 0.04, 1.6, 0.45),  # clothing
    ("5912", 0.04, 0.6, 0.1),  # pharmacy
    ("5999", 0.06, 0.9, 0.5),  # misc retail
    ("4111", 0.05, 0.0, 0.1),  # transit: tiny
    ("7523", 0.02, 0.0, 0.2),  # parking: tiny
    ("5818", 0.05, 0.0, 1.0),  # digital goods / apps: tiny, online
    ("6011", 0.05, 2.5, 0.0),  # ATM cash
    ("5732", 0.035, 3.0, 0.5),  # electronics
    ("4829", 0.03, 3.5, 0.7),  # money transfer
    ("7995", 0.015, 1.5, 0.6),  # gambling
    ("5947", 0.02, 1.0, 0.4),  # gift cards
    ("5944", 0.01, 5.0, 0.2),  # jewelry
    ("4511", 0.01, 8.0, 0.8),  # airlines
    ("7011", 0.01, 5.0, 0.5),  # hotels
)
MCC_CODES = tuple(row[0] for row in _MCC_TABLE)
_MCC = {code: i for i, code in enumerate(MCC_CODES)}
_MCC_POP = np.array([row[1] for row in _MCC_TABLE]) / sum(row[1] for row in _MCC_TABLE)
_MCC_FACTOR = np.array([row[2] for row in _MCC_TABLE])
_MCC_ONLINE = np.array([row[3] for row in _MCC_TABLE])

_SHOPPING = ("5999", "5691", "5732", "5311", "5818", "5947", "4829", "5944")
SLOTS = 8  # usual merchants per account (weights make only a few of them dominant)

# Incident rates per account-day (per card-present genuine transaction for compromises),
# tuned for an overall fraud share near 1% of transactions.
RATE_CARD_TESTING = 6e-4
RATE_TAKEOVER = 6e-4
RATE_ESCALATION = 5e-4
RATE_COMPROMISE = 2.5e-4
# Opt-in typologies: skimmers per eligible card-present visit (busy places likelier), the
# share of the cards visiting a skimmed place that are cloned, and new-scheme victims per
# account-day after the scheme starts (plus legitimate first-time buyers of its category).
RATE_SKIMMER = 1.2e-4
CLONED_SHARE = 0.5
SKIMMED_MCCS = ("5541", "6011", "5411", "5814", "5912", "5999")  # fuel, ATMs, small shops
RATE_NEW_SCHEME = 8e-4
NEW_SCHEME_MCC = "6051"  # quasi-cash: crypto exchanges, a category absent before the scheme
EXCHANGES_PER_COUNTRY = 3
LEGIT_NEW_CATEGORY_SHARE = 0.3  # legitimate first-time buyers per new-scheme victim


@dataclass
class _Merchants:
    """Merchants sorted by (country, mcc, online); `start`/`count` index each cell."""

    country: np.ndarray
    mcc: np.ndarray
    online: np.ndarray
    start: np.ndarray  # (countries, mccs, 2)
    count: np.ndarray
    popularity_cum: np.ndarray  # cumulative popularity within each cell, offset by cell index

    @property
    def size(self) -> int:
        return self.country.size

    def pick(self, rng: np.random.Generator, country, mcc, online, popular: bool) -> np.ndarray:
        """One merchant per row in the requested cell (the other online flag if it is empty).

        `popular` picks in proportion to merchant popularity, so habits are shared between
        cards (which lets a compromised merchant reach many of them); fraudsters pick uniformly.
        """
        country, mcc = np.asarray(country), np.asarray(mcc)
        online = np.asarray(online).astype(np.int64)
        online = np.where(self.count[country, mcc, online] > 0, online, 1 - online)
        cell = np.ravel_multi_index((country, mcc, online), self.count.shape)
        u = rng.random(cell.shape)
        if popular:
            return np.searchsorted(self.popularity_cum, cell + u, side="right")
        count = self.count.ravel()[cell]
        return self.start.ravel()[cell] + np.minimum((u * count).astype(np.int64), count - 1)


@dataclass
class _Accounts:
    home: np.ndarray
    level: np.ndarray  # typical amount (log-normal across accounts)
    spread: np.ndarray  # log-sd of the account's amounts
    rate: np.ndarray  # transactions a day
    hour_center: np.ndarray
    hour_spread: np.ndarray
    contactless: np.ndarray  # share of small card-present payments made contactless
    explore: np.ndarray  # share of purchases at merchants outside the habits
    slot_merchant: np.ndarray  # (accounts, SLOTS)
    slot_cum: np.ndarray  # flattened cumulative slot weights, offset by account index
    device: np.ndarray  # primary device
    second: np.ndarray  # second device or -1
    second_share: np.ndarray
    new_phone_at: np.ndarray  # seconds; inf when the account keeps its phone
    new_phone: np.ndarray

    @property
    def size(self) -> int:
        return self.home.size

    def device_at(self, acc: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return np.where(ts >= self.new_phone_at[acc], self.new_phone[acc], self.device[acc])


class _DeviceBook:
    """Hands out internal device numbers; they are mapped to random public ids at the end."""

    def __init__(self, first: int) -> None:
        self.next = first

    def new(self, n: int) -> np.ndarray:
        ids = np.arange(self.next, self.next + n, dtype=np.int64)
        self.next += n
        return ids


@dataclass
class _Rows:
    """Transactions as parallel arrays; `mcc` and `country` come from the merchant."""

    acc: np.ndarray
    ts: np.ndarray  # seconds since start (float until the end)
    amount: np.ndarray
    merchant: np.ndarray
    channel: np.ndarray
    device: np.ndarray
    kind: np.ndarray

    @classmethod
    def concat(cls, parts: list[_Rows]) -> _Rows:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    def take(self, idx: np.ndarray) -> _Rows:
        return _Rows(*(getattr(self, f.name)[idx] for f in fields(self)))


def _rows(acc, ts, amount, merchant, channel, device, kind: int) -> _Rows:
    """Build rows from arrays or scalars (scalars are broadcast to every row)."""
    acc = np.asarray(acc, dtype=np.int64)

    def col(values, dtype) -> np.ndarray:
        return np.broadcast_to(np.asarray(values, dtype=dtype), acc.shape)

    return _Rows(
        acc,
        col(ts, float),
        col(amount, float),
        col(merchant, np.int64),
        col(channel, np.int64),
        col(device, np.int64),
        col(kind, np.int64),
    )


# ---------------------------------------------------------------------------- small helpers


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of groups of sizes `counts`: (group of each row, position in group, group start)."""
    counts = np.asarray(counts, dtype=np.int64)
    first = np.cumsum(counts) - counts
    owner = np.repeat(np.arange(counts.size), counts)
    return owner, np.arange(owner.size) - first[owner], first


def _group_cumsum(values: np.ndarray, owner: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each group (groups are contiguous)."""
    cs = np.cumsum(values)
    if cs.size == 0:
        return cs
    head = first[owner]
    return cs - (cs[head] - values[head])


def _other_country(rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
    """A uniformly drawn country different from `home`."""
    return (home + 1 + rng.integers(0, len(COUNTRIES) - 1, home.size)) % len(COUNTRIES)


def _mcc_choice(rng: np.random.Generator, codes: tuple[str, ...], p, n: int) -> np.ndarray:
    idx = np.array([_MCC[c] for c in codes])
    return idx[rng.choice(len(codes), size=n, p=np.asarray(p) / np.sum(p))]


def _channel_for(merchants: _Merchants, merchant: np.ndarray) -> np.ndarray:
    """Online merchants give online payments, ATMs cash withdrawals, the rest chip & PIN."""
    channel = np.where(merchants.online[merchant], ONLINE, POS)
    return np.where(merchants.mcc[merchant] == _MCC["6011"], ATM, channel)


def _format_ids(prefix: str, nums: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded ids like T00000001, built as a byte matrix (fast for millions of rows)."""
    nums = np.asarray(nums, dtype=np.int64)
    chars = np.empty((nums.size, len(prefix) + width), dtype=np.uint8)
    chars[:, : len(prefix)] = np.frombuffer(prefix.encode(), dtype=np.uint8)
    rest = nums.copy()
    for col in range(len(prefix) + width - 1, len(prefix) - 1, -1):
        chars[:, col] = rest % 10 + 48
        rest //= 10
    return chars.view(f"S{chars.shape[1]}").ravel().astype(f"U{chars.shape[1]}")


def _random_ids(rng: np.random.Generator, prefix: str, n: int, width: int) -> np.ndarray:
    """Distinct random ids, so an id's magnitude says nothing about when it was created."""
    while 10**width < 2 * max(n, 1):
        width += 1
    return _format_ids(prefix, rng.choice(10**width, size=n, replace=False), width)


# ---------------------------------------------------------------------------- world and habits


def _merchants(rng: np.random.Generator, accounts: int) -> _Merchants:
    """Enough merchants per (country, category) that habits overlap between cards.

    Merchants scale with accounts and popularity is drawn per merchant (not by rank in a
    cell), so visits per merchant, and so compromised-merchant fraud, do not grow with size.
    """
    target = int(np.clip(accounts // 2, 500, 60_000))
    weight = HOME_WEIGHTS[:, None] * np.sqrt(_MCC_POP)[None, :]
    per_cell = np.maximum(2, np.round(target * weight / weight.sum())).astype(np.int64)
    n_online = np.round(per_cell * _MCC_ONLINE).astype(np.int64)
    n_online = np.where(_MCC_ONLINE > 0, np.maximum(n_online, 1), 0)
    n_phys = np.where(_MCC_ONLINE < 1, np.maximum(per_cell - n_online, 1), 0)
    count = np.stack([n_phys, n_online], axis=-1)  # (countries, mccs, online)
    flat = count.ravel()
    start = (np.cumsum(flat) - flat).reshape(count.shape)
    cells = np.repeat(np.arange(flat.size), flat)
    country, mcc, online = np.unravel_index(cells, count.shape)
    popularity = np.exp(rng.normal(0, 1.0, cells.size))
    cum = np.cumsum(popularity)
    cell_total = np.add.reduceat(popularity, start.ravel()[flat > 0])
    before = (cum - popularity)[start.ravel()[flat > 0]]
    cell_rank = np.repeat(np.arange(np.count_nonzero(flat)), flat[flat > 0])
    within = (cum - before[cell_rank]) / cell_total[cell_rank]
    within[np.cumsum(flat)[flat > 0] - 1] = 1.0  # exact 1 at each cell end: no spill-over
    return _Merchants(country, mcc, online.astype(bool), start, count, within + cells)


def _accounts(
    rng: np.random.Generator, n: int, days: int, merchants: _Merchants, devices: _DeviceBook
) -> _Accounts:
    home = rng.choice(len(COUNTRIES), size=n, p=HOME_WEIGHTS / HOME_WEIGHTS.sum())
    level = np.exp(rng.normal(np.log(35.0), 0.7, n))
    rate = np.clip(np.exp(rng.normal(np.log(1.2), 0.8, n)), 0.2, 8.0)
    # Most people are active by day; about one in ten is a night owl.
    owl = rng.random(n) < 0.1
    hour_center = np.where(owl, rng.uniform(20, 25, n), rng.normal(13.5, 2.0, n)) % 24
    hour_spread = rng.uniform(1.5, 4.0, n)
    online_pref = rng.beta(2, 3, n)

    # Usual merchants: slot categories by popularity, merchants from the home country.
    slot_mcc = rng.choice(len(MCC_CODES), size=(n, SLOTS), p=_MCC_POP)
    p_online = np.clip(_MCC_ONLINE[slot_mcc] * 2 * online_pref[:, None], 0, 1)
    slot_online = rng.random((n, SLOTS)) < p_online
    slot_merchant = merchants.pick(
        rng, np.repeat(home, SLOTS), slot_mcc.ravel(), slot_online.ravel(), popular=True
    ).reshape(n, SLOTS)
    cum = rng.dirichlet(np.full(SLOTS, 0.7), n).cumsum(axis=1)
    cum[:, -1] = 1.0
    slot_cum = (cum + np.arange(n)[:, None]).ravel()

    device = devices.new(n)
    has_second = rng.random(n) < 0.3
    second = np.where(has_second, devices.new(n), -1)
    # Phones are replaced every few years: about 5% of cards in a month get a new one.
    new_phone_at = np.where(
        rng.random(n) < 1 - np.exp(-days / 600), rng.uniform(0, days, n) * DAY, np.inf
    )
    return _Accounts(
        home=home,
        level=level,
        spread=rng.uniform(0.35, 0.8, n),
        rate=rate,
        hour_center=hour_center,
        hour_spread=hour_spread,
        contactless=rng.beta(2, 2, n),
        explore=rng.uniform(0.01, 0.08, n),
        slot_merchant=slot_merchant,
        slot_cum=slot_cum,
        device=device,
        second=second,
        second_share=rng.uniform(0.1, 0.4, n),
        new_phone_at=new_phone_at,
        new_phone=devices.new(n),
    )


def _habit_seconds(rng: np.random.Generator, accs: _Accounts, acc: np.ndarray) -> np.ndarray:
    """Second of the day around the account's usual hours (5% anywhere in the day)."""
    hour = accs.hour_center[acc] + accs.hour_spread[acc] * rng.standard_normal(acc.size)
    hour = np.where(rng.random(acc.size) < 0.05, rng.uniform(0, 24, acc.size), hour)
    return np.floor((hour % 24) * HOUR)


def _fraud_seconds(rng: np.random.Generator, accs: _Accounts, acc: np.ndarray) -> np.ndarray:
    """Fraudsters act at the victim's hours only sometimes (40%), otherwise any time."""
    habit = _habit_seconds(rng, accs, acc)
    return np.where(rng.random(acc.size) < 0.4, habit, np.floor(rng.uniform(0, DAY, acc.size)))


def _incident_starts(
    rng: np.random.Generator, accs: _Accounts, acc: np.ndarray, days: int
) -> np.ndarray:
    """Incidents start after the first 15% of the period, so victims have some history."""
    day = np.floor(rng.uniform(0.15 * days, days, acc.size))
    return day * DAY + _fraud_seconds(rng, accs, acc)


def _victims(rng: np.random.Generator, accounts: int, days: int, rate: float) -> np.ndarray:
    """Distinct victim accounts for one scenario (one incident per card keeps labels clean)."""
    n = min(int(rng.poisson(accounts * days * rate)), accounts)
    return np.sort(rng.choice(accounts, size=n, replace=False))


# ---------------------------------------------------------------------------- genuine activity


def _trips(rng: np.random.Generator, accs: _Accounts, days: int) -> dict[str, np.ndarray]:
    """Trips abroad: a few days in another country, sorted by (account, start)."""
    per_year = np.exp(rng.normal(np.log(1.5), 1.0, accs.size))
    counts = rng.poisson(per_year * days / 365)
    acc = np.repeat(np.arange(accs.size), counts)
    start = rng.uniform(-3, days, acc.size) * DAY
    dest = rng.choice(len(COUNTRIES), size=acc.size, p=TRAVEL_WEIGHTS / TRAVEL_WEIGHTS.sum())
    at_home = dest == accs.home[acc]
    dest[at_home] = _other_country(rng, accs.home[acc][at_home])
    order = np.lexsort((start, acc))
    return {
        "acc": acc[order],
        "start": start[order],
        "end": start[order] + rng.uniform(2, 9, acc.size) * DAY,
        "dest": dest[order],
    }


def _trip_of(
    trips: dict[str, np.ndarray], acc: np.ndarray, ts: np.ndarray, days: int
) -> np.ndarray:
    """Index of the trip each transaction falls in, or -1 (one searchsorted for all rows)."""
    if trips["acc"].size == 0:
        return np.full(acc.size, -1)
    span = (days + 30) * DAY
    keys = trips["acc"] * span + trips["start"]
    idx = np.searchsorted(keys, acc * span + ts, side="right") - 1
    safe = np.maximum(idx, 0)
    inside = (idx >= 0) & (trips["acc"][safe] == acc) & (ts < trips["end"][safe])
    return np.where(inside, idx, -1)


def _amounts(
    rng: np.random.Generator, accs: _Accounts, acc: np.ndarray, mcc: np.ndarray
) -> np.ndarray:
    """Account level x category factor x noise; tiny categories cost a few units for everyone."""
    noise = np.exp(accs.spread[acc] * rng.standard_normal(acc.size))
    amount = accs.level[acc] * _MCC_FACTOR[mcc] * noise
    tiny = _MCC_FACTOR[mcc] == 0
    amount[tiny] = np.clip(np.exp(rng.normal(np.log(3.0), 0.45, tiny.sum())), 0.5, 15)
    return _cash_rounding(amount, mcc)


def _cash_rounding(amount: np.ndarray, mcc: np.ndarray) -> np.ndarray:
    atm = mcc == _MCC["6011"]
    amount = np.where(atm, np.maximum(20.0, np.round(amount / 20) * 20), amount)
    return np.maximum(np.round(amount, 2), 0.5)


def _genuine(
    rng: np.random.Generator,
    accs: _Accounts,
    merchants: _Merchants,
    trips: dict[str, np.ndarray],
    days: int,
) -> _Rows:
    """All genuine transactions at once: habits, exploration, one-off big buys, travel."""
    acc = np.repeat(np.arange(accs.size), rng.poisson(accs.rate * days))
    n = acc.size
    ts = rng.integers(0, days, n) * DAY + _habit_seconds(rng, accs, acc)

    # Usual merchant: inverse CDF of the account's slot weights for every row in one search.
    slot = np.searchsorted(accs.slot_cum, acc + rng.random(n), side="right") - acc * SLOTS
    merchant = accs.slot_merchant[acc, np.minimum(slot, SLOTS - 1)]

    # Shopping somewhere new, often online and sometimes cross-border.
    new = np.flatnonzero(rng.random(n) < accs.explore[acc])
    online = rng.random(new.size) < 0.6
    abroad = online & (rng.random(new.size) < 0.15)
    home = accs.home[acc[new]]
    country = np.where(abroad, _other_country(rng, home), home)
    # Online exploration is mostly shopping, in the categories fraudsters like too.
    mcc_new = np.where(
        online,
        _mcc_choice(rng, _SHOPPING, (3, 3, 2, 2, 2, 1, 1, 1), new.size),
        rng.choice(len(MCC_CODES), size=new.size, p=_MCC_POP),
    )
    merchant[new] = merchants.pick(rng, country, mcc_new, online, popular=False)

    # Rare one-off big purchases (a laptop, a flight, a hotel, a ring) at new merchants.
    big = np.flatnonzero(rng.random(n) < 0.004)
    mcc_big = _mcc_choice(rng, ("5732", "4511", "7011", "5944"), (45, 25, 20, 10), big.size)
    merchant[big] = merchants.pick(
        rng, accs.home[acc[big]], mcc_big, rng.random(big.size) < 0.5, popular=False
    )

    # Travel: card-present purchases happen at merchants of the destination.
    trip = _trip_of(trips, acc, ts, days)
    away = np.flatnonzero((trip >= 0) & ~merchants.online[merchant])
    merchant[away] = merchants.pick(
        rng, trips["dest"][trip[away]], merchants.mcc[merchant[away]], False, popular=True
    )

    mcc = merchants.mcc[merchant]
    amount = _amounts(rng, accs, acc, mcc)
    amount[big] = np.round(accs.level[acc[big]] * rng.uniform(4, 12, big.size), 2)

    channel = _channel_for(merchants, merchant)
    tap = (channel == POS) & (amount <= 100) & (rng.random(n) < accs.contactless[acc])
    channel[tap] = CONTACTLESS

    device = accs.device_at(acc, ts)
    second = (accs.second[acc] >= 0) & (rng.random(n) < accs.second_share[acc])
    device = np.where(second, accs.second[acc], device)
    return _rows(acc, ts, amount, merchant, channel, device, GENUINE)


def _trip_purchases(
    rng: np.random.Generator, accs: _Accounts, merchants: _Merchants, trips: dict[str, np.ndarray]
) -> _Rows:
    """A flight booked at home before each trip and a hotel bill at the destination."""
    acc, n = trips["acc"], trips["acc"].size
    if n == 0:
        return _rows([], [], [], [], [], [], GENUINE)
    flight_ts = trips["start"] - rng.uniform(1, 30, n) * DAY
    flight = merchants.pick(rng, accs.home[acc], np.full(n, _MCC["4511"]), True, popular=True)
    nights = (trips["end"] - trips["start"]) / DAY
    hotel = merchants.pick(rng, trips["dest"], np.full(n, _MCC["7011"]), False, popular=True)
    hotel_ts = trips["end"] - rng.uniform(0.1, 0.4, n) * DAY
    level = accs.level[acc]
    amount = np.round(
        np.concatenate([level * rng.uniform(6, 15, n), level * nights * rng.uniform(1.5, 3, n)]), 2
    )
    ts = np.concatenate([flight_ts, hotel_ts])
    merchant = np.concatenate([flight, hotel])
    both = np.concatenate([acc, acc])
    return _rows(
        both,
        ts,
        amount,
        merchant,
        _channel_for(merchants, merchant),
        accs.device_at(both, ts),
        GENUINE,
    )


# ---------------------------------------------------------------------------- fraud scenarios


def _card_testing(
    rng: np.random.Generator,
    accs: _Accounts,
    merchants: _Merchants,
    days: int,
    devices: _DeviceBook,
) -> _Rows:
    """Tiny online charges minutes apart (is the card alive?), then a few large purchases."""
    victim = _victims(rng, accs.size, days, RATE_CARD_TESTING)
    k = victim.size
    start = _incident_starts(rng, accs, victim, days)
    device = devices.new(k)
    test_country = rng.integers(0, len(COUNTRIES), k)
    test_mccs, test_p = ("5818", "5999", "4829", "5947", "5812"), (4, 3, 1, 1, 2)
    test_merchant = merchants.pick(
        rng, test_country, _mcc_choice(rng, test_mccs, test_p, k), True, popular=False
    )

    owner, pos, first = _expand(2 + rng.poisson(3, k))
    gap = np.where(pos == 0, 0.0, 5 + rng.exponential(90, owner.size))
    tiny_ts = start[owner] + _group_cumsum(gap, owner, first)
    other = merchants.pick(
        rng,
        test_country[owner],
        _mcc_choice(rng, test_mccs, test_p, owner.size),
        True,
        popular=False,
    )
    tiny_merchant = np.where(rng.random(owner.size) < 0.8, test_merchant[owner], other)
    tiny_amount = np.round(rng.uniform(0.5, 3.0, owner.size), 2)
    tiny_amount[rng.random(owner.size) < 0.25] = 1.0
    tiny = _rows(
        victim[owner], tiny_ts, tiny_amount, tiny_merchant, ONLINE, device[owner], CARD_TESTING
    )

    last_tiny = tiny_ts[first + np.bincount(owner, minlength=k) - 1] if k else np.zeros(0)
    owner, pos, first = _expand(1 + rng.binomial(2, 0.35, k))
    gap = np.where(
        pos == 0, 60 + rng.exponential(1200, owner.size), 30 + rng.exponential(600, owner.size)
    )
    big_ts = last_tiny[owner] + _group_cumsum(gap, owner, first)
    country = np.where(rng.random(owner.size) < 0.5, test_country[owner], accs.home[victim[owner]])
    big_mcc = _mcc_choice(
        rng,
        ("5732", "5944", "5947", "5999", "5691", "5311", "4511"),
        (4, 1, 2, 2, 2, 2, 1),
        owner.size,
    )
    big_merchant = merchants.pick(rng, country, big_mcc, True, popular=False)
    big_amount = np.round(np.exp(rng.normal(np.log(250), 0.7, owner.size)), 2)
    big = _rows(
        victim[owner],
        big_ts,
        big_amount,
        big_merchant,
        _channel_for(merchants, big_merchant),
        device[owner],
        CARD_TESTING,
    )
    return _Rows.concat([tiny, big])


def _account_takeover(
    rng: np.random.Generator,
    accs: _Accounts,
    merchants: _Merchants,
    days: int,
    devices: _DeviceBook,
) -> _Rows:
    """A new device, often abroad, buying resellable goods above the account's habit, fast."""
    victim = _victims(rng, accs.size, days, RATE_TAKEOVER)
    k = victim.size
    start = _incident_starts(rng, accs, victim, days)
    home = accs.home[victim]
    country = np.where(rng.random(k) < 0.6, _other_country(rng, home), home)
    device = devices.new(k)

    owner, pos, first = _expand(3 + rng.poisson(4, k))
    acc = victim[owner]
    gap = np.where(pos == 0, 0.0, 20 + rng.exponential(900, owner.size))
    ts = start[owner] + _group_cumsum(gap, owner, first)
    mcc = _mcc_choice(
        rng,
        ("5732", "4829", "5947", "5944", "5999", "5311", "5691"),
        (3, 3, 2, 1, 2, 1, 1),
        owner.size,
    )
    merchant = merchants.pick(
        rng, country[owner], mcc, rng.random(owner.size) < 0.85, popular=False
    )
    amount = (
        accs.level[acc] * rng.uniform(2, 6, owner.size) * np.exp(rng.normal(0, 0.3, owner.size))
    )
    transfer = (mcc == _MCC["4829"]) & (rng.random(owner.size) < 0.5)
    amount[transfer] = np.maximum(10, np.round(amount[transfer], -1))
    return _rows(
        acc,
        ts,
        np.round(amount, 2),
        merchant,
        _channel_for(merchants, merchant),
        device[owner],
        TAKEOVER,
    )


def _escalation(
    rng: np.random.Generator,
    accs: _Accounts,
    merchants: _Merchants,
    days: int,
    devices: _DeviceBook,
) -> _Rows:
    """Charges at one new merchant, each 1.5-2x the previous, hours apart."""
    victim = _victims(rng, accs.size, days, RATE_ESCALATION)
    k = victim.size
    start = _incident_starts(rng, accs, victim, days)
    home = accs.home[victim]
    country = np.where(rng.random(k) < 0.7, home, _other_country(rng, home))
    mcc = _mcc_choice(
        rng,
        ("5999", "5732", "5691", "5944", "5947", "4829", "7995", "5818", "5311", "5812"),
        (3, 2, 2, 1, 1, 1, 1, 1, 2, 1),
        k,
    )
    merchant = merchants.pick(rng, country, mcc, rng.random(k) < 0.75, popular=False)
    # A fraudster's device, or the victim's own (stolen phone, remote-access malware).
    own_device = accs.device_at(victim, start)
    device = np.where(rng.random(k) < 0.6, devices.new(k), own_device)

    owner, pos, first = _expand(3 + np.minimum(rng.poisson(2.5, k), 6))
    gap = np.where(pos == 0, 0.0, 600 + rng.exponential(4 * HOUR, owner.size))
    ts = start[owner] + _group_cumsum(gap, owner, first)
    step = np.where(pos == 0, 0.0, np.log(rng.uniform(1.5, 2.0, owner.size)))
    first_amount = np.exp(rng.normal(np.log(8.0), 0.6, k))
    amount = np.round(first_amount[owner] * np.exp(_group_cumsum(step, owner, first)), 2)
    return _rows(
        victim[owner],
        ts,
        amount,
        merchant[owner],
        _channel_for(merchants, merchant[owner]),
        device[owner],
        ESCALATION,
    )


def _breach_windows(
    rng: np.random.Generator,
    genuine: _Rows,
    merchants: _Merchants,
    present: np.ndarray,
    n: int,
    days: tuple[float, float],
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`n` windows of `days` (low, high) opened up to 2 days before random rows of `present`
    (seeding on visits makes busy merchants likelier targets, like real breaches), one per
    merchant. Returns the merchants with their windows (seconds), and the rows of `present`
    inside them in time order."""
    seed_row = rng.choice(present, size=n)
    opens = genuine.ts[seed_row] - rng.uniform(0, 2, n) * DAY
    closes = opens + rng.uniform(*days, n) * DAY
    merchant, keep = np.unique(genuine.merchant[seed_row], return_index=True)
    w_open = np.full(merchants.size, np.inf)
    w_close = np.full(merchants.size, -np.inf)
    w_open[merchant], w_close[merchant] = opens[keep], closes[keep]
    m = genuine.merchant[present]
    exposed = present[(genuine.ts[present] >= w_open[m]) & (genuine.ts[present] < w_close[m])]
    windows = {"merchant": merchant, "open": opens[keep], "close": closes[keep]}
    return windows, exposed[np.argsort(genuine.ts[exposed], kind="stable")]


def _compromised_merchants(
    rng: np.random.Generator,
    accs: _Accounts,
    merchants: _Merchants,
    genuine: _Rows,
    days: int,
    devices: _DeviceBook,
) -> _Rows:
    """Merchants compromised for 1-3 weeks: their own extra charges, and cloned cards later."""
    present = np.flatnonzero(genuine.channel != ONLINE)
    n = int(rng.poisson(present.size * RATE_COMPROMISE))
    if n == 0 or present.size == 0:
        return _rows([], [], [], [], [], [], COMPROMISED)
    _, exposed = _breach_windows(rng, genuine, merchants, present, n, (7, 21))

    # (a) The merchant adds charges on visiting cards: same place, same device, a normal-looking
    # amount. Only the merchant's history (many later-confirmed frauds) reveals them.
    not_atm = exposed[merchants.mcc[genuine.merchant[exposed]] != _MCC["6011"]]
    dup = not_atm[rng.random(not_atm.size) < 0.1]
    extra = _rows(
        genuine.acc[dup],
        genuine.ts[dup] + rng.uniform(1, 30, dup.size) * HOUR,
        np.round(genuine.amount[dup] * rng.uniform(0.8, 2.5, dup.size), 2),
        genuine.merchant[dup],
        genuine.channel[dup],
        genuine.device[dup],
        COMPROMISED,
    )

    # (b) Some cards skimmed there (first visit per card and merchant) are cloned and used
    # in shops and ATMs elsewhere a few days later.
    key = genuine.acc[exposed] * merchants.size + genuine.merchant[exposed]
    _, first_visit = np.unique(key, return_index=True)
    hit = exposed[first_visit]
    hit = hit[rng.random(hit.size) < 0.12]
    victim = genuine.acc[hit]
    day = np.floor((genuine.ts[hit] + rng.uniform(1, 10, hit.size) * DAY) / DAY)
    start = day * DAY + _fraud_seconds(rng, accs, victim)
    home = accs.home[victim]
    country = np.where(rng.random(hit.size) < 0.5, _other_country(rng, home), home)
    device = devices.new(hit.size)

    owner, pos, first = _expand(1 + np.minimum(rng.poisson(1.5, hit.size), 4))
    gap = np.where(pos == 0, 0.0, 120 + rng.exponential(2400, owner.size))
    ts = start[owner] + _group_cumsum(gap, owner, first)
    cash = rng.random(owner.size) < 0.4
    mcc = np.where(
        cash,
        _MCC["6011"],
        _mcc_choice(
            rng,
            ("5732", "5944", "5999", "5311", "5691", "5541", "5411", "5812"),
            (3, 1, 2, 2, 2, 2, 2, 1),
            owner.size,
        ),
    )
    merchant = merchants.pick(rng, country[owner], mcc, False, popular=False)
    amount = accs.level[victim[owner]] * rng.uniform(1.5, 5, owner.size)
    cloned = _rows(
        victim[owner],
        ts,
        _cash_rounding(amount, mcc),
        merchant,
        _channel_for(merchants, merchant),
        device[owner],
        COMPROMISED,
    )
    return _Rows.concat([extra, cloned])


def _skimmers(
    rng: np.random.Generator, accs: _Accounts, merchants: _Merchants, genuine: _Rows, days: int
) -> tuple[_Rows, dict[str, np.ndarray]]:
    """Skimmed card-present places for 5-14 days; cards that visited are cloned (one incident
    per card: its first exposed visit) and used 2-20 days later where the card might shop.

    Returns the clones' rows and the skimmed merchants with their windows (seconds)."""
    eligible = np.isin(merchants.mcc[genuine.merchant], [_MCC[c] for c in SKIMMED_MCCS])
    present = np.flatnonzero(
        (genuine.channel != ONLINE) & eligible & (genuine.ts >= 0.1 * days * DAY)
    )
    # At least one skimmed place when asked for (small simulations would often have none).
    n = max(int(rng.poisson(present.size * RATE_SKIMMER)), 1)
    none = {"merchant": np.zeros(0, np.int64), "open": np.zeros(0), "close": np.zeros(0)}
    if present.size == 0:
        return _rows([], [], [], [], [], [], SKIMMER), none
    skimmed, exposed = _breach_windows(rng, genuine, merchants, present, n, (5, 14))
    is_skimmed = np.zeros(merchants.size, dtype=bool)
    is_skimmed[skimmed["merchant"]] = True
    _, first_visit = np.unique(genuine.acc[exposed], return_index=True)
    hit = exposed[first_visit]
    hit = hit[rng.random(hit.size) < CLONED_SHARE]
    victim, visit = genuine.acc[hit], genuine.ts[hit]

    owner, pos, first = _expand(1 + np.minimum(rng.poisson(1.0, hit.size), 3))
    acc = victim[owner]
    gap = np.where(pos == 0, 0.0, 1200 + rng.exponential(3 * HOUR, owner.size))
    ts = (visit + rng.uniform(2, 19, hit.size) * DAY)[owner] + _group_cumsum(gap, owner, first)
    # Ordinary for the card: a category of its usual merchants (card-present only), a
    # popular place of that category at home, the card's amount level, its own chip profile.
    slot = np.searchsorted(accs.slot_cum, acc + rng.random(acc.size), side="right") - acc * SLOTS
    mcc = merchants.mcc[accs.slot_merchant[acc, np.minimum(slot, SLOTS - 1)]]
    mcc = np.where(_MCC_ONLINE[mcc] >= 1, _MCC["5411"], mcc)
    place = merchants.pick(rng, accs.home[acc], mcc, False, popular=True)
    other = merchants.pick(rng, accs.home[acc], mcc, False, popular=False)
    place = np.where(is_skimmed[place], other, place)  # elsewhere: not at a skimmed place
    rows = _rows(
        acc,
        ts,
        _amounts(rng, accs, acc, merchants.mcc[place]),
        place,
        _channel_for(merchants, place),
        accs.device_at(acc, ts),
        SKIMMER,
    )
    return rows.take(np.flatnonzero(~is_skimmed[place])), skimmed


def _exchanges(merchants: _Merchants) -> _Merchants:
    """`merchants` plus online crypto exchanges (the new scheme's category) in every country,
    appended after the existing ones (`pick` never returns them)."""
    n = len(COUNTRIES) * EXCHANGES_PER_COUNTRY
    return dataclasses.replace(
        merchants,
        country=np.concatenate(
            [merchants.country, np.repeat(np.arange(len(COUNTRIES)), EXCHANGES_PER_COUNTRY)]
        ),
        mcc=np.concatenate([merchants.mcc, np.full(n, len(MCC_CODES))]),
        online=np.concatenate([merchants.online, np.ones(n, dtype=bool)]),
    )


def _new_scheme(
    rng: np.random.Generator, accs: _Accounts, first_exchange: int, days: int, begin: float
) -> _Rows:
    """From `begin` (seconds) on: bursts of round crypto purchases on the victim's own phone,
    at home; and a few legitimate first-time buyers of that category (look-alikes)."""
    span = days * DAY - begin
    victim = _victims(rng, accs.size, max(span / DAY, 0.0), RATE_NEW_SCHEME)
    k = victim.size
    start = begin + rng.uniform(0, span, k)
    exchange = first_exchange + accs.home[victim] * EXCHANGES_PER_COUNTRY
    favourite = exchange + rng.integers(0, EXCHANGES_PER_COUNTRY, k)

    owner, pos, first = _expand(2 + np.minimum(rng.poisson(2.5, k), 6))
    acc = victim[owner]
    gap = np.where(pos == 0, 0.0, 300 + rng.exponential(1800, owner.size))
    ts = start[owner] + _group_cumsum(gap, owner, first)
    other = exchange[owner] + rng.integers(0, EXCHANGES_PER_COUNTRY, owner.size)
    merchant = np.where(rng.random(owner.size) < 0.8, favourite[owner], other)
    amount = np.maximum(20.0, np.round(accs.level[acc] * rng.uniform(1, 3, owner.size), -1))
    fraud = _rows(acc, ts, amount, merchant, ONLINE, accs.device_at(acc, ts), NEW_SCHEME)

    n_legit = min(int(rng.poisson(LEGIT_NEW_CATEGORY_SHARE * k)), accs.size)
    buyer = np.sort(rng.choice(accs.size, size=n_legit, replace=False))
    owner, _, _ = _expand(1 + rng.binomial(1, 0.3, n_legit))
    acc = buyer[owner]
    ts = begin + rng.uniform(0, span, acc.size)
    merchant = first_exchange + accs.home[acc] * EXCHANGES_PER_COUNTRY
    merchant = merchant + rng.integers(0, EXCHANGES_PER_COUNTRY, acc.size)
    amount = np.round(accs.level[acc] * np.exp(rng.normal(0, 0.6, acc.size)), 2)
    legit = _rows(acc, ts, amount, merchant, ONLINE, accs.device_at(acc, ts), GENUINE)
    return _Rows.concat([fraud, legit])


# ---------------------------------------------------------------------------- assembly


def _strings(labels, codes: np.ndarray):
    """A string column as a lookup into `labels` (far faster than converting each row)."""
    return pd.array(np.asarray(labels), dtype="str").take(codes)


def _frame(
    rows: _Rows,
    accounts: int,
    merchants: _Merchants,
    rng: np.random.Generator,
    start: pd.Timestamp,
    skimmed: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Sort by time, assign tx ids in that order and turn codes into strings.

    `skimmed` (merchant indices and window seconds) goes to `attrs["skimmed_merchants"]`."""
    rows = rows.take(np.lexsort((np.arange(rows.acc.size), rows.acc, rows.ts)))
    n = rows.acc.size
    devices, device_idx = np.unique(rows.device, return_inverse=True)
    ts = start.to_datetime64().astype("datetime64[ns]") + (
        rows.ts.astype(np.int64) * 1_000_000_000
    ).astype("timedelta64[ns]")
    card_ids = _format_ids("C", np.arange(accounts), max(6, len(str(accounts - 1))))
    device_ids = _random_ids(rng, "D", devices.size, 7)  # drawn before the merchants' ids
    merchant_ids = _random_ids(rng, "M", merchants.size, 5)
    frame = pd.DataFrame(
        {
            "tx_id": pd.array(
                _format_ids("T", np.arange(1, n + 1), max(8, len(str(n)))), dtype="str"
            ),
            "card_id": _strings(card_ids, rows.acc),
            "ts": ts,
            "amount": rows.amount.astype(np.float64),
            "mcc": _strings((*MCC_CODES, NEW_SCHEME_MCC), merchants.mcc[rows.merchant]),
            "country": _strings(COUNTRIES, merchants.country[rows.merchant]),
            "channel": _strings(CHANNELS, rows.channel),
            "device_id": _strings(device_ids, device_idx),
            "merchant_id": _strings(merchant_ids, rows.merchant),
            "is_fraud": (rows.kind != GENUINE).astype(np.int64),
            "fraud_type": _strings(("none", *FRAUD_TYPES, *OPT_IN_SCENARIOS), rows.kind),
        },
        columns=list(SIMULATOR_COLUMNS),
    )
    if skimmed is not None:
        origin = start.to_datetime64().astype("datetime64[s]")

        def when(seconds: np.ndarray) -> list[str]:
            clipped = np.clip(np.floor(seconds), 0, None).astype(np.int64)
            return [str(t) for t in origin + clipped.astype("timedelta64[s]")]

        frame.attrs["skimmed_merchants"] = [
            {"merchant_id": str(m), "from": f, "until": u}
            for m, f, u in zip(
                merchant_ids[skimmed["merchant"]],
                when(skimmed["open"]),
                when(skimmed["close"]),
                strict=True,
            )
        ]
    return frame


def simulate(
    accounts: int = 2000,
    days: int = 60,
    seed: int = 0,
    start: str = "2026-01-01",
    scenarios: tuple[str, ...] | list[str] = (),
    new_scheme_start: str | None = None,
) -> pd.DataFrame:
    """Simulate card transactions of `accounts` cards over `days` days with labelled fraud.

    Returns one row per transaction with columns `SIMULATOR_COLUMNS`, sorted by `ts` (ties by
    `tx_id`), `ts` naive UTC at second resolution within [start, start + days). Fraud rows have
    `is_fraud == 1` and `fraud_type` in `FRAUD_TYPES`; genuine rows have "none". The same
    arguments always give the same frame.

    `scenarios` adds opt-in typologies (`OPT_IN_SCENARIOS`: "skimmer", "new_scheme"; see the
    module docstring), whose fraud rows have `fraud_type` equal to their name. Without them
    the frame is exactly what it was before they existed. `new_scheme_start` (a date or ISO
    time inside the period; default 70% into it, at midnight) is when "new_scheme" begins.
    With "skimmer", `frame.attrs["skimmed_merchants"]` lists each skimmed merchant_id with
    its window (`from`, `until`).
    """
    if int(accounts) < 1 or int(days) < 1:
        raise ValueError(f"accounts and days must be >= 1, got accounts={accounts}, days={days}")
    accounts, days = int(accounts), int(days)
    origin = parse_time(start, "start")  # a clear error for a bad date
    if origin.tzinfo is not None:
        origin = origin.tz_convert("UTC").tz_localize(None)
    extra = _opt_in(scenarios)
    begin = _new_scheme_begin(new_scheme_start, origin, days, "new_scheme" in extra)
    rng = np.random.default_rng(seed)

    merchants = _merchants(rng, accounts)
    devices = _DeviceBook(0)
    accs = _accounts(rng, accounts, days, merchants, devices)
    trips = _trips(rng, accs, days)
    genuine = _genuine(rng, accs, merchants, trips, days)
    rows = _Rows.concat(
        [
            genuine,
            _trip_purchases(rng, accs, merchants, trips),
            _card_testing(rng, accs, merchants, days, devices),
            _account_takeover(rng, accs, merchants, days, devices),
            _escalation(rng, accs, merchants, days, devices),
            _compromised_merchants(rng, accs, merchants, genuine, days, devices),
        ]
    )
    skimmed = None
    if "skimmer" in extra:
        clones, skimmed = _skimmers(rng, accs, merchants, genuine, days)
        rows = _Rows.concat([rows, clones])
    if "new_scheme" in extra:
        first_exchange = merchants.size
        merchants = _exchanges(merchants)
        rows = _Rows.concat([rows, _new_scheme(rng, accs, first_exchange, days, begin)])
    # Incidents and bookings may spill outside the period: keep what falls inside it.
    rows.ts = np.floor(rows.ts)
    rows = rows.take(np.flatnonzero((rows.ts >= 0) & (rows.ts < days * DAY)))
    return _frame(rows, accounts, merchants, rng, origin, skimmed)


def _opt_in(scenarios) -> tuple[str, ...]:
    """The requested opt-in typologies, checked (a clear error names the choices)."""
    if isinstance(scenarios, str):
        scenarios = (scenarios,)
    unknown = [name for name in scenarios if name not in OPT_IN_SCENARIOS]
    if unknown:
        default = f" ({unknown[0]} is always simulated)" if unknown[0] in FRAUD_TYPES else ""
        raise ValueError(
            f"unknown scenario {unknown[0]!r}{default}; the opt-in scenarios are "
            f"{', '.join(OPT_IN_SCENARIOS)}"
        )
    return tuple(dict.fromkeys(scenarios))


def _new_scheme_begin(value, origin: pd.Timestamp, days: int, enabled: bool) -> float:
    """Seconds from the origin at which the new scheme starts (default 70% into the period,
    at midnight); a start outside the period is an error."""
    if value is None:
        return float(round(0.7 * days) * DAY)
    if not enabled:
        raise ValueError("new_scheme_start is given but the new_scheme scenario is not")
    at = parse_time(value, "new_scheme_start")  # naive UTC
    seconds = (at - origin).total_seconds()
    if not 0 <= seconds < days * DAY:
        end = origin + pd.Timedelta(days=days)
        raise ValueError(
            f"new_scheme_start {value} is outside the simulated period [{origin}, {end}); "
            "give a time inside it"
        )
    return float(seconds)
