"""`StatePool`: the memory store's account states, decoded, as the columns of a `StateTable`.

A batch reads its accounts' states as one `StateTable` and writes one back. The memory
store keeps them in that form rather than as bytes: each account's part of every column
(its events, novelty totals, window rows, id bytes, seen values) lies at an offset in an
append-only array, so a read is one gather per column (`ranges` of offsets and counts) and
a write one copy per column, appended. A rewritten account leaves its old parts as dead
space; once the appended items pass `_DEAD_RATIO` times the live ones, one gather per
column compacts the pool.
Nothing is encoded: the bytes format (`fraudseq.features.state`, the one codec) is used
only when a caller asks for an account's bytes (`AccountStates`, `MemoryStore.account`).
Not thread-safe: the store holds its lock around every call.
"""

from __future__ import annotations

from itertools import repeat

import numpy as np

from fraudseq.features.segments import group_ids, ranges, starts_of
from fraudseq.features.state import StateTable

#: Per-entity values of a StateTable (segment counts among them).
_PER_ENTITY = ("n", "last_time", "sum_log", "max_log", "old_max", "m", "n_new", "rows")
#: Segment groups: the column counting each entity's items, and the columns cut by it.
_GROUPS = {
    "m": ("times", "amounts"),
    "n_new": ("new_totals", "firsts"),
    "rows": ("numeric", "codes", "id_lengths"),
    "ids": ("id_bytes",),
}
#: Do not compact a pool holding fewer items than this in a group (small pools grow).
_MIN_COMPACT = 1 << 16
#: Compact once a group's appended items pass this many times its live ones (memory: up to
#: this many times the live states, for fewer compactions).
_DEAD_RATIO = 4


class StatePool:
    """Account states by entity, as StateTable columns (see the module docstring)."""

    def __init__(self, template: StateTable) -> None:
        self.slot: dict[str, int] = {}
        #: Per slot, when its state was last written (the store's clock, for its TTL).
        self.touched = np.zeros(0, dtype=np.float64)
        self._free: list[int] = []
        self._capacity = 0
        self._entity: dict[str, np.ndarray] = {}  # per-entity values by slot
        self._offset: dict[str, np.ndarray] = {}  # per group, each slot's first item
        self._data: dict[str, np.ndarray] = {}  # per column, the items
        self._used: dict[str, int] = {}  # per group, items appended (live and dead)
        self._live: dict[str, int] = {}  # per group, items of live slots
        self._seen_columns = len(template.seen)
        groups = dict(_GROUPS)
        for j in range(self._seen_columns):
            groups[f"seen_counts{j}"] = (f"seen{j}", f"seen_times{j}")
        self._groups = groups
        columns = _columns(template)
        for name in _PER_ENTITY:
            self._entity[name] = np.zeros(0, dtype=getattr(template, name).dtype)
        for group, names in groups.items():
            self._entity.setdefault(group, np.zeros(0, dtype=np.int64))
            self._offset[group] = np.zeros(0, dtype=np.int64)
            self._used[group] = self._live[group] = 0
            for name in names:
                self._data[name] = np.zeros((0, *columns[name].shape[1:]), columns[name].dtype)

    def __len__(self) -> int:
        return len(self.slot)

    def __contains__(self, entity: str) -> bool:
        return entity in self.slot

    def slots(self, entities: list[str]) -> np.ndarray:
        """The slot of each entity, -1 for one not held (a dict look-up each, in C)."""
        return np.fromiter(map(self.slot.get, entities, repeat(-1)), np.int64, len(entities))

    def read(self, entities: list[str]) -> StateTable:
        """The states of `entities` (all held), as one table in that order."""
        return self.read_slots(
            np.fromiter(map(self.slot.__getitem__, entities), np.int64, len(entities))
        )

    def read_slots(self, slots: np.ndarray) -> StateTable:
        """The states in `slots` (held ones, `slots`), as one table in that order."""
        values = {name: self._entity[name][slots] for name in _PER_ENTITY}
        for group, names in self._groups.items():
            counts = self._entity[group][slots]
            at = ranges(self._offset[group][slots], counts)
            for name in names:
                values[name] = self._data[name][at]
            if group.startswith("seen_counts"):
                values[group] = counts
        k = self._seen_columns
        return StateTable(
            **{name: values[name] for name in _PER_ENTITY},
            **{name: values[name] for names in _GROUPS.values() for name in names},
            seen_counts=[values[f"seen_counts{j}"] for j in range(k)],
            seen=[values[f"seen{j}"] for j in range(k)],
            seen_times=[values[f"seen_times{j}"] for j in range(k)],
        )

    def write(self, entities: list[str], table: StateTable, touched: float = 0.0) -> None:
        """Hold `table`'s states (entity i is row i) for `entities`, replacing theirs,
        written at time `touched`."""
        slots = np.fromiter(map(self._slot, entities), np.int64, len(entities))
        self.touched[slots] = touched
        columns = _columns(table)
        for group in self._groups:  # the replaced items become dead
            self._live[group] -= int(self._entity[group][slots].sum())
        for name in _PER_ENTITY:
            self._entity[name][slots] = getattr(table, name)
        for group, names in self._groups.items():
            counts = columns[group]
            total = int(counts.sum())
            self._live[group] += total
            start = self._reserve(group, total)
            for name in names:
                self._data[name][start : start + total] = columns[name]
            self._entity[group][slots] = counts
            self._offset[group][slots] = start + starts_of(counts)
        if any(
            self._used[g] > max(_DEAD_RATIO * self._live[g], _MIN_COMPACT) for g in self._groups
        ):  # amortised: a compaction gathers the live items once per (ratio - 1) x appended
            self._compact()

    def written_before(self, limit: float) -> list[str]:
        """The entities whose states were written before `limit` (`touched`)."""
        names = list(self.slot)
        slots = np.fromiter(self.slot.values(), np.int64, len(names))
        return [names[i] for i in np.flatnonzero(self.touched[slots] < limit).tolist()]

    def drop(self, entity: str) -> None:
        """Forget the entity's state (its items become dead space)."""
        slot = self.slot.pop(entity, None)
        if slot is None:
            return
        for group in self._groups:
            self._live[group] -= int(self._entity[group][slot])
            self._entity[group][slot] = 0
        self._free.append(slot)

    def _slot(self, entity: str) -> int:
        slot = self.slot.get(entity)
        if slot is None:
            if not self._free:
                self._grow_slots()
            slot = self.slot[entity] = self._free.pop()
        return slot

    def _grow_slots(self) -> None:
        old = self._capacity
        self._capacity = max(2 * old, 1024)
        for table in (self._entity, self._offset):
            for name, values in table.items():
                grown = np.zeros(self._capacity, dtype=values.dtype)
                grown[:old] = values
                table[name] = grown
        touched = np.zeros(self._capacity, dtype=np.float64)
        touched[:old] = self.touched
        self.touched = touched
        self._free.extend(range(self._capacity - 1, old - 1, -1))

    def _reserve(self, group: str, items: int) -> int:
        """Where `items` new items of the group's columns go (the columns grown to fit)."""
        start = self._used[group]
        need = start + items
        for name in self._groups[group]:
            data = self._data[name]
            if len(data) < need:
                grown = np.empty((max(need, 2 * len(data), 1024), *data.shape[1:]), data.dtype)
                grown[:start] = data[:start]
                self._data[name] = grown
        self._used[group] = need
        return start

    def _compact(self) -> None:
        """Move every live slot's items together, in slot order (one gather per column), to
        the start of the same arrays: their room (and pages) is reused by later writes."""
        for group, names in self._groups.items():
            counts = self._entity[group]
            at = ranges(self._offset[group], counts)
            for name in names:
                self._data[name][: len(at)] = self._data[name][at]
            self._offset[group] = starts_of(counts)
            self._used[group] = self._live[group] = len(at)


def _columns(table: StateTable) -> dict[str, np.ndarray]:
    """The table's segment columns and counts by the pool's names."""
    out = {name: getattr(table, name) for names in _GROUPS.values() for name in names}
    out.update({name: getattr(table, name) for name in ("m", "n_new", "rows")})
    out["ids"] = np.bincount(
        group_ids(table.rows), weights=table.id_lengths, minlength=len(table.n)
    ).astype(np.int64)
    for j, (count, seen, first_seen) in enumerate(
        zip(table.seen_counts, table.seen, table.seen_times, strict=True)
    ):
        out[f"seen_counts{j}"], out[f"seen{j}"], out[f"seen_times{j}"] = count, seen, first_seen
    return out
