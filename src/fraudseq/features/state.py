"""Per-entity feature state: one entity's (`AccountState`) and many entities' as columns
(`StateTable`), with the bytes format the state stores keep (compact binary, never pickle).

The blocks of `fraudseq.features.blocks` read and write these fields:

================  =========================================================================
field             blocks
================  =========================================================================
n, last_time      recency, amount_history (n_previous, the running mean)
sum_log, max_log  amount_history: running sum and max of signed log-amounts; old_max the
                  largest of the events no longer in `times`
times, amounts    amount_history (last HISTORY_LAST_N), velocity (the last 7 days, at most
                  VELOCITY_CAP), late insertion (LATENESS more)
new_totals,       novelty: the new-value total of each of the latest events, and which
firsts            value each introduced
seen, seen_times  novelty: per categorical column, value hashes and when each was first seen
rows              not a block's: the encoded rows and ids of the model's window
================  =========================================================================
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraudseq.errors import FraudseqError
from fraudseq.features.segments import group_ids, ranges, starts_of

# -- per-account state -------------------------------------------------------------------
# Format 2 of an entity's state in bytes, declared once for both codecs (`AccountState` for
# one entity, `encode_states` / `decode_states` for many): HEADER, then SECTIONS in order,
# each holding, per entity, the product of the header counts it names of its dtype ("ids":
# the sum of the entity's id lengths), then per categorical column its seen values (a <u4
# count, the value hashes <u8, their first-seen times <i8), then, only for a model with the
# exposure block, its visits (a <u4 count, then per visit the counterparty hash <u8, the
# day <i8 and the known fraud bucket <i8; read by `AccountState` only: the batch codec
# does not carry them yet). Format 1 (read, never written) had no old_max, no firsts and no
# first-seen times.
HEADER = np.dtype(
    [
        ("version", "u1"), ("n", "<i8"), ("last_time", "<i8"), ("sum_log", "<f8"),
        ("max_log", "<f8"), ("old_max", "<f8"), ("m", "<u2"), ("n_new", "<u2"),
        ("rows", "<u2"), ("n_num", "<u2"), ("n_cat", "<u2"), ("n_seen", "u1"),
    ]
)  # fmt: skip
SECTIONS = (
    ("times", "<i8", ("m",)),
    ("amounts", "<f8", ("m",)),
    ("new_totals", "<u2", ("n_new",)),
    ("id_lengths", "<u2", ("rows",)),
    ("numeric", "<f4", ("rows", "n_num")),
    ("codes", "<i4", ("rows", "n_cat")),
    ("id_bytes", "u1", ("ids",)),
    ("firsts", "u1", ("n_new", "n_seen")),
)
_STRUCT_CODES = {"u1": "B", "<u2": "H", "<u4": "I", "<u8": "Q", "<i4": "i", "<i8": "q",
                 "<f4": "f", "<f8": "d"}  # fmt: skip
_HEADER = struct.Struct("<" + "".join(_STRUCT_CODES[HEADER[k].str.replace("|", "")]
                                      for k in HEADER.names))  # fmt: skip
_HEADER_V1 = struct.Struct("<BqqddHHHHHB")
_STATE_VERSION = 2
#: First-seen time of a value remembered by a version-1 state (which kept none): long ago.
_LONG_AGO = -(2**63)
#: SECTIONS with two factors (the second None for one) and the item size, for the loops.
_SECTIONS = [
    (name, dtype, (*factors, None)[:2], np.dtype(dtype).itemsize)
    for name, dtype, factors in SECTIONS
]
#: The leading SECTIONS, which an AccountState holds as Python lists: one struct call packs
#: or reads them all (the others are arrays or bytes).
_LISTS = ("times", "amounts", "new_totals", "id_lengths")
assert tuple(name for name, _, _ in SECTIONS[: len(_LISTS)]) == _LISTS


class _Hashes(dict):
    """value -> `value_hash`, each hashed on first use (categorical values repeat); emptied
    when it holds 1 << 16. A dict, so a column is looked up in C (`distinct_hashes`)."""

    def __missing__(self, value: str) -> int:
        if len(self) >= 1 << 16:
            self.clear()
        digest = hashlib.blake2b(value.encode(), digest_size=8).digest()
        out = self[value] = int.from_bytes(digest, "little")
        return out


_HASHES = _Hashes()


def value_hash(value: str) -> int:
    """The 8-byte hash a state remembers a categorical value by."""
    return _HASHES[value]


def value_hashes(values) -> np.ndarray:
    """`value_hash` of each value (uint64), hashing each distinct value once."""
    index, distinct = pd.factorize(np.asarray(values, dtype=object))
    return distinct_hashes(distinct)[index]


def distinct_hashes(distinct: np.ndarray | list[str]) -> np.ndarray:
    """`value_hash` of each of `distinct` (values already distinct, as pd.factorize gives,
    or a list of values: a dict look-up each)."""
    values = distinct.tolist() if isinstance(distinct, np.ndarray) else distinct
    return np.fromiter(map(_HASHES.__getitem__, values), np.uint64, len(values))


def first_mark(value_hash: int) -> int:
    """The byte `firsts` holds for an event that introduced a value (its hash's top 7 bits,
    odd, so never 0): enough to tell apart the few events of one timestamp."""
    return (value_hash >> 56) | 1


@dataclass
class AccountState:
    """What the live features and the window need of one account's past, in time order.

    Events are kept sorted by time (equal times in arrival order); a late event is inserted
    in its place (`LiveEncoder.insert`), so the state is the same whatever order its events
    arrived in. `n`, `last_time`, `sum_log` and `max_log` cover every event; `old_max` the
    largest signed log-amount of the events no longer in `times`. `times`/`amounts` hold the
    latest events: at least `LiveEncoder.keep_last` of them, every event within 7 days +
    LATENESS of the latest when velocity features are used, at most VELOCITY_CAP.
    `new_totals` (the novelty total of each) and `firsts` (per categorical column,
    `first_mark` of the value the event introduced, else 0; row-major bytes) cover the
    latest `LiveEncoder.zone` of them; `numeric`/`codes`/`ids` the encoded rows and
    transaction ids of the latest `LiveEncoder.rows_kept`. `seen` per categorical column
    maps the 8-byte hash of each value seen to the time it was first seen, oldest first.
    """

    n: int = 0
    last_time: int = 0
    sum_log: float = 0.0
    max_log: float = -math.inf
    old_max: float = -math.inf
    times: list[int] = field(default_factory=list)
    amounts: list[float] = field(default_factory=list)
    new_totals: list[int] = field(default_factory=list)
    firsts: bytearray = field(default_factory=bytearray)
    ids: list[str] = field(default_factory=list)
    numeric: np.ndarray | None = None  # (r, F) float32
    codes: np.ndarray | None = None  # (r, C) int32
    seen: list[dict[int, int]] = field(default_factory=list)
    #: The exposure block's visits (counterparty hash, day, known fraud bucket), in order;
    #: None (and nothing in the bytes) for a model without that block.
    visits: list[tuple[int, int, int]] | None = None

    #: Set on views of the history before a late event (`_Before`): the novelty flags of
    #: an event being recomputed. Never stored.
    flags = None

    def to_bytes(self) -> bytes:
        """The state in format 2 (HEADER and SECTIONS); never pickle."""
        numeric = self.numeric if self.numeric is not None else np.zeros((0, 0), np.float32)
        codes = self.codes if self.codes is not None else np.zeros((0, 0), np.int32)
        ids = [i.encode() for i in self.ids]
        header = (
            _STATE_VERSION, self.n, self.last_time, self.sum_log, self.max_log, self.old_max,
            len(self.times), len(self.new_totals), *numeric.shape, codes.shape[1],
            len(self.seen),
        )  # fmt: skip
        lengths = [len(i) for i in ids]
        lists = _lists_struct(len(self.times), len(self.new_totals), len(lengths))
        values = {"numeric": numeric, "codes": codes, "id_bytes": b"".join(ids),
                  "firsts": bytes(self.firsts)}  # fmt: skip
        parts = [
            _HEADER.pack(*header),
            lists.pack(*self.times, *self.amounts, *self.new_totals, *lengths),
            *(_pack(values[name], dtype) for name, dtype, _ in SECTIONS[len(_LISTS) :]),
        ]
        for seen in self.seen:
            k = len(seen)
            parts.append(struct.pack(f"<I{k}Q{k}q", k, *seen, *seen.values()))
        if self.visits is not None:  # a trailing section: absent, the format is unchanged
            k = len(self.visits)
            flat = [value for visit in self.visits for value in visit]
            parts.append(struct.pack(f"<I{'Qqq' * k}", k, *flat))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> AccountState:
        if blob[0] == 1:
            return cls._from_v1(blob)
        header = dict(zip(HEADER.names, _HEADER.unpack_from(blob, 0), strict=True))
        if header["version"] != _STATE_VERSION:
            raise FraudseqError(f"account state format {header['version']} is not supported")
        state = cls(**{k: header[k] for k in ("n", "last_time", "sum_log", "max_log", "old_max")})
        offset = state._read_sections(blob, _HEADER.size, header)
        for _ in range(header["n_seen"]):
            (count,) = struct.unpack_from("<I", blob, offset)
            values = struct.unpack_from(f"<{count}Q{count}q", blob, offset + 4)
            state.seen.append(dict(zip(values[:count], values[count:], strict=True)))
            offset += 4 + 16 * count
        if offset < len(blob):  # the exposure block's visits
            (count,) = struct.unpack_from("<I", blob, offset)
            flat = struct.unpack_from(f"<{'Qqq' * count}", blob, offset + 4)
            state.visits = [tuple(flat[i : i + 3]) for i in range(0, 3 * count, 3)]
        return state

    def _read_sections(self, blob: bytes, offset: int, counts: dict) -> int:
        """Read SECTIONS (those format 1 lacks are empty there); the offset after them."""
        m, n_new, rows = counts["m"], counts["n_new"], counts["rows"]
        lists = _lists_struct(m, n_new, rows)
        values = lists.unpack_from(blob, offset)
        offset += lists.size
        self.times, self.amounts = list(values[:m]), list(values[m : 2 * m])
        self.new_totals = list(values[2 * m : 2 * m + n_new])
        for name, dtype, factors, itemsize in _SECTIONS[len(_LISTS) :]:
            if name == "id_bytes":
                ids = []
                for length in values[2 * m + n_new :]:
                    ids.append(blob[offset : offset + length].decode())
                    offset += length
                self.ids = ids
                continue
            items = counts.get(factors[0], 0) * (counts.get(factors[1], 0) if factors[1] else 1)
            if name == "firsts":
                self.firsts = bytearray(blob[offset : offset + items])
            else:
                array = np.frombuffer(blob, dtype, items, offset)
                setattr(self, name, array.reshape(rows, counts[factors[1]]))
            offset += itemsize * items
        return offset

    @classmethod
    def _from_v1(cls, blob: bytes) -> AccountState:
        """A version-1 state (written before late events were inserted): the same events;
        what it did not keep is filled in conservatively. Values seen were first seen long
        ago, no event is known to have introduced a value (`firsts` 0), and the events it
        dropped had the largest log-amount of all if any were dropped."""
        (_, n, last_time, sum_log, max_log, m, n_new, rows, n_num, n_cat, n_seen) = (
            _HEADER_V1.unpack_from(blob, 0)
        )
        state = cls(n=n, last_time=last_time, sum_log=sum_log, max_log=max_log)
        counts = {"m": m, "n_new": n_new, "rows": rows, "n_num": n_num, "n_cat": n_cat}
        offset = state._read_sections(blob, _HEADER_V1.size, counts)  # no firsts in format 1
        state.old_max = max_log if n > m else -math.inf
        state.firsts = bytearray(n_new * n_seen)
        for _ in range(n_seen):
            (count,) = struct.unpack_from("<I", blob, offset)
            hashes = struct.unpack_from(f"<{count}Q", blob, offset + 4)
            state.seen.append(dict.fromkeys(hashes, _LONG_AGO))
            offset += 4 + 8 * count
        return state


@functools.lru_cache(maxsize=4096)
def _lists_struct(m: int, n_new: int, rows: int) -> struct.Struct:
    """The struct of the list sections for these header counts."""
    counts = {"m": m, "n_new": n_new, "rows": rows}
    return struct.Struct(
        "<" + "".join(f"{counts[f[0]]}{_STRUCT_CODES[d]}" for _, d, f in SECTIONS[: len(_LISTS)])
    )


def _pack(values, dtype: str) -> bytes:
    """A section's bytes from a list (struct: fastest for one entity), an array or bytes."""
    if isinstance(values, bytes):
        return values
    if isinstance(values, np.ndarray):
        return np.ascontiguousarray(values, dtype=dtype).tobytes()
    return struct.pack(f"<{len(values)}{_STRUCT_CODES[dtype]}", *values)


@dataclass
class StateTable:
    """The states of A accounts as flat arrays, each account's part contiguous and in
    account order: per account `n`, `last_time`, `sum_log`, `max_log`, `old_max`; segments
    of `times`/`amounts` (counts `m`), `new_totals` and `firsts` rows (counts `n_new`;
    `firsts` is (total, columns) uint8), window rows `numeric`, `codes` and the rows'
    transaction ids (`id_bytes`, per-row `id_lengths`; counts `rows`), and per categorical
    column the `seen` hashes and their first-seen times `seen_times` (counts
    `seen_counts[j]`)."""

    n: np.ndarray
    last_time: np.ndarray
    sum_log: np.ndarray
    max_log: np.ndarray
    old_max: np.ndarray
    m: np.ndarray
    times: np.ndarray
    amounts: np.ndarray
    n_new: np.ndarray
    new_totals: np.ndarray
    firsts: np.ndarray
    rows: np.ndarray
    numeric: np.ndarray
    codes: np.ndarray
    id_lengths: np.ndarray
    id_bytes: np.ndarray
    seen_counts: list[np.ndarray]
    seen: list[np.ndarray]
    seen_times: list[np.ndarray]

    @classmethod
    def empty(cls, entities: int, columns: int, n_numeric: int = 0) -> StateTable:
        """The state of `entities` entities without any event (`columns`: categorical)."""
        zeros = np.zeros(entities, dtype=np.int64)

        def no(dtype, *shape):
            return np.zeros((0, *shape), dtype=dtype)

        return cls(
            n=zeros, last_time=zeros.copy(), sum_log=np.zeros(entities),
            max_log=np.full(entities, -math.inf), old_max=np.full(entities, -math.inf),
            m=zeros.copy(), times=no(np.int64), amounts=no(np.float64), n_new=zeros.copy(),
            new_totals=no(np.int64), firsts=no(np.uint8, columns), rows=zeros.copy(),
            numeric=no(np.float32, n_numeric), codes=no(np.int32, columns),
            id_lengths=no(np.int64), id_bytes=no(np.uint8),
            seen_counts=[zeros.copy() for _ in range(columns)],
            seen=[no(np.uint64) for _ in range(columns)],
            seen_times=[no(np.int64) for _ in range(columns)],
        )  # fmt: skip

    def extended(self, entities: int) -> StateTable:
        """This table with `entities` more entities, without any event."""
        if entities <= 0:
            return self
        return self.concat(StateTable.empty(entities, len(self.seen), self.numeric.shape[1]))

    def concat(self, other: StateTable) -> StateTable:
        """The entities of this table, then those of `other` (same columns). An empty side
        of a column is not copied: extending by accounts without events keeps the events."""

        def cat(mine, theirs):
            if not len(theirs):
                return mine
            return theirs if not len(mine) else np.concatenate([mine, theirs])

        per_column = ("seen_counts", "seen", "seen_times")
        return StateTable(
            **{
                name: cat(getattr(self, name), getattr(other, name))
                for name in self.__dataclass_fields__
                if name not in per_column
            },
            **{
                name: [
                    cat(mine, theirs)
                    for mine, theirs in zip(getattr(self, name), getattr(other, name), strict=True)
                ]
                for name in per_column
            },
        )

    def ids(self, first_row: int, stop_row: int) -> list[str]:
        """Transaction ids of flat rows [first_row, stop_row)."""
        offsets = starts_of(self.id_lengths)
        out = []
        for r in range(first_row, stop_row):
            lo = int(offsets[r])
            out.append(self.id_bytes[lo : lo + int(self.id_lengths[r])].tobytes().decode())
        return out


#: The StateTable dtype of each section's values.
_TABLE_DTYPES = {"times": np.int64, "amounts": np.float64, "new_totals": np.int64,
                 "id_lengths": np.int64, "numeric": np.float32, "codes": np.int32,
                 "id_bytes": np.uint8, "firsts": np.uint8}  # fmt: skip


def decode_states(blobs: list[bytes], live) -> StateTable:
    """`AccountState.from_bytes` of every blob at once, into a StateTable (blobs of the
    first format are converted through AccountState first)."""
    blobs = [b if b[0] == _STATE_VERSION else AccountState.from_bytes(b).to_bytes() for b in blobs]
    lengths = np.array([len(b) for b in blobs], dtype=np.int64)
    joined = b"".join(blobs)
    buf = np.frombuffer(joined, dtype=np.uint8)
    start = starts_of(lengths)
    header = buf[start[:, None] + np.arange(HEADER.itemsize)].copy().view(HEADER).reshape(-1)
    if (header["version"] != _STATE_VERSION).any():
        raise FraudseqError("account state format not supported")
    counts = {k: header[k].astype(np.int64) for k in ("m", "n_new", "rows")}
    counts["n_num"], counts["n_cat"] = live.n_numeric, live.n_categorical
    counts["n_seen"] = n_seen = live.n_categorical if live.novelty else 0
    stored = counts["rows"] > 0
    for key in ("n_num", "n_cat"):
        if (header[key][stored] != counts[key]).any():
            raise FraudseqError("account state rows do not match the model's features")
    if (header["n_seen"] != n_seen).any():
        raise FraudseqError("account state categorical memory does not match the model")

    def take(offsets, nbytes, dtype, width):
        at = ranges(offsets, nbytes // width, width)
        if not len(at):
            return np.zeros(0, dtype)
        return _items(buf, width)[at].view(np.uint8).view(dtype)

    o = start + HEADER.itemsize
    values = {}
    for name, dtype, factors in SECTIONS:
        if name == "id_bytes":
            rows = group_ids(counts["rows"])
            ids = np.bincount(rows, weights=values["id_lengths"], minlength=len(blobs))
            items = ids.astype(np.int64)
        else:
            items = math.prod(counts[f] for f in factors)
        width = np.dtype(dtype).itemsize * math.prod(counts[f] for f in factors[1:])
        nbytes = np.dtype(dtype).itemsize * items
        values[name] = take(o, nbytes, dtype, max(width, 1)).astype(_TABLE_DTYPES[name])
        o = o + nbytes
    total_rows = int(counts["rows"].sum())  # not reshape(-1, ...): a model may have no columns
    values["numeric"] = values["numeric"].reshape(total_rows, counts["n_num"])
    values["codes"] = values["codes"].reshape(total_rows, counts["n_cat"])
    values["firsts"] = values["firsts"].reshape(int(counts["n_new"].sum()), n_seen)
    seen_counts, seen, seen_times = [], [], []
    for _ in range(n_seen):
        count = take(o, np.full(len(blobs), 4), "<u4", 4).astype(np.int64)
        seen_counts.append(count)
        seen.append(take(o + 4, 8 * count, "<u8", 8).astype(np.uint64))
        seen_times.append(take(o + 4 + 8 * count, 8 * count, "<i8", 8).astype(np.int64))
        o = o + 4 + 16 * count
    return StateTable(
        n=header["n"].astype(np.int64), last_time=header["last_time"].astype(np.int64),
        sum_log=header["sum_log"].astype(np.float64),
        max_log=header["max_log"].astype(np.float64),
        old_max=header["old_max"].astype(np.float64), m=counts["m"], n_new=counts["n_new"],
        rows=counts["rows"], seen_counts=seen_counts, seen=seen, seen_times=seen_times,
        **values,
    )  # fmt: skip


def encode_states(table: StateTable, live) -> list[bytes]:
    """`AccountState.to_bytes` of every account of the table (byte for byte)."""
    a = len(table.n)
    ids = np.bincount(group_ids(table.rows), weights=table.id_lengths, minlength=a)
    counts = {
        "m": table.m, "n_new": table.n_new, "rows": table.rows, "n_num": live.n_numeric,
        "n_cat": live.n_categorical, "n_seen": len(table.seen), "ids": ids.astype(np.int64),
    }  # fmt: skip
    header = np.zeros(a, dtype=HEADER)
    header["version"] = _STATE_VERSION
    for name in HEADER.names[1:]:
        header[name] = counts[name] if name in counts else getattr(table, name)
    # (bytes per account, item width in bytes, flat little-endian bytes) per section
    sections = [(np.full(a, HEADER.itemsize), HEADER.itemsize, header.view(np.uint8))]
    for name, dtype, factors in SECTIONS:
        width = np.dtype(dtype).itemsize * math.prod(counts[f] for f in factors[1:])
        nbytes = np.dtype(dtype).itemsize * math.prod(counts[f] for f in factors)
        flat = np.ascontiguousarray(getattr(table, name), dtype=dtype).reshape(-1)
        sections.append((nbytes * np.ones(a, dtype=np.int64), width, flat.view(np.uint8)))
    for count, values, first_seen in zip(
        table.seen_counts, table.seen, table.seen_times, strict=True
    ):
        sections.append((np.full(a, 4), 4, count.astype("<u4").view(np.uint8)))
        sections.append((8 * count, 8, values.astype("<u8").view(np.uint8)))
        sections.append((8 * count, 8, first_seen.astype("<i8").view(np.uint8)))
    # Every section's items copied to their place in the accounts' concatenated states.
    sizes = np.sum([nbytes for nbytes, _, _ in sections], axis=0)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    offset = starts_of(sizes)
    for nbytes, width, flat in sections:
        at = ranges(offset, nbytes // max(width, 1), width)
        if len(at):
            _items(out, width)[at] = flat.view(f"V{width}")
        offset = offset + nbytes
    return _slices(out.tobytes(), starts_of(sizes), sizes)


def _slices(buf: bytes, offsets: np.ndarray, sizes: np.ndarray) -> list[bytes]:
    """The byte ranges [offset, offset + size) of `buf`."""
    return [buf[o : o + n] for o, n in zip(offsets.tolist(), sizes.tolist(), strict=True)]


def _items(buf: np.ndarray, width: int) -> np.ndarray:
    """`buf` (uint8) as overlapping `width`-byte items, item r starting at byte r: indexing
    it copies whole items (rows, 8-byte values) at any byte offset with one index per item,
    where a slice per account and section cost a Python object each."""
    return np.ndarray((len(buf) - width + 1,), dtype=f"V{width}", buffer=buf, strides=(1,))
