"""Per-entity windows as index arithmetic on entity-sorted arrays.

Rows are sorted by (entity, time, original order) once. The window of the row at sorted
position `s` is then the contiguous run `[max(group_start[s], s - K + 1), s]`: no row is
copied and no window can reach into another entity. Windows are left-aligned (oldest event
first, padding after the last valid step), so a causal RNN's output at step `length - 1`
never sees padding.
"""

from __future__ import annotations

import numpy as np


def entity_order(entity_codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return the stable permutation that sorts rows by (entity, time, original position)."""
    return np.lexsort((np.arange(len(times)), times, entity_codes))


def group_starts(sorted_entity_codes: np.ndarray) -> np.ndarray:
    """For each sorted position, the sorted position of its entity's first row."""
    n = len(sorted_entity_codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    is_first = np.empty(n, dtype=bool)
    is_first[0] = True
    np.not_equal(sorted_entity_codes[1:], sorted_entity_codes[:-1], out=is_first[1:])
    first_positions = np.flatnonzero(is_first)
    return first_positions[np.cumsum(is_first) - 1]


def window_lengths(positions: np.ndarray, starts: np.ndarray, size: int) -> np.ndarray:
    """Number of valid steps in each window ending at sorted `positions`."""
    return np.minimum(positions - starts[positions] + 1, size)


def window_index(
    positions: np.ndarray, starts: np.ndarray, size: int, pad_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index matrix (len(positions), size) of each window, left-aligned, padded with `pad_index`.

    >>> starts = group_starts(np.array([0, 0, 0, 1, 1]))
    >>> idx, lengths = window_index(np.array([2, 4]), starts, size=3, pad_index=99)
    >>> idx.tolist(), lengths.tolist()
    ([[0, 1, 2], [3, 4, 99]], [3, 2])
    """
    positions = np.asarray(positions, dtype=np.int64)
    lengths = window_lengths(positions, starts, size)
    steps = np.arange(size, dtype=np.int64)
    index = (positions - lengths + 1)[:, None] + steps[None, :]
    index[steps[None, :] >= lengths[:, None]] = pad_index
    return index, lengths
