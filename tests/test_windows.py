import numpy as np
import pytest

from fraudseq.windows import entity_order, group_starts, window_index


def brute_force_windows(entities, times, size):
    """Reference: for each row, the same entity's rows with earlier (time, row), last `size`."""
    windows = []
    for i in range(len(entities)):
        earlier = [
            j
            for j in range(len(entities))
            if entities[j] == entities[i] and (times[j], j) <= (times[i], i)
        ]
        earlier.sort(key=lambda j: (times[j], j))
        windows.append(earlier[-size:])
    return windows


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [1, 3, 16])
def test_windows_match_brute_force(seed, size):
    rng = np.random.default_rng(seed)
    n = 300
    entities = rng.integers(0, 25, n)
    times = rng.integers(0, 50, n)  # many ties, to exercise the stable tie-break
    order = entity_order(entities, times)
    starts = group_starts(entities[order])
    index, lengths = window_index(np.arange(n), starts, size, pad_index=-1)
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    expected = brute_force_windows(entities, times, size)
    for row in range(n):
        pos = inverse[row]
        got = [int(order[p]) for p in index[pos, : lengths[pos]]]
        assert got == expected[row]
        assert (index[pos, lengths[pos] :] == -1).all()


def test_windows_never_cross_entities():
    entities = np.array([0, 1, 0, 1, 2, 0])
    times = np.arange(6)
    order = entity_order(entities, times)
    starts = group_starts(entities[order])
    index, lengths = window_index(np.arange(6), starts, 16, pad_index=99)
    sorted_entities = entities[order]
    for pos in range(6):
        steps = index[pos, : lengths[pos]]
        assert (sorted_entities[steps] == sorted_entities[pos]).all()
        assert steps[-1] == pos


def test_empty_input():
    assert group_starts(np.array([], dtype=np.int64)).shape == (0,)
