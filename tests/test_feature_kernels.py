"""Every feature block's kernel over time-ordered chunks, with each entity's state and the
counterparty buckets carried from chunk to chunk, equals the kernel over the whole file.

(The live path, one transaction at a time through the blocks' scalar forms, is held to the
kernel for every block by test_live_features.test_live_features_equal_batch_encoding; the
kernels are held to slow pure-Python references in test_feature_blocks.)
"""

from __future__ import annotations

import numpy as np
import pytest

from fraudseq.errors import DataValidationError
from fraudseq.features import BLOCKS, FeatureEncoder
from fraudseq.features.stream import FeatureStream
from fraudseq.schema import load_transactions
from test_live_features import EXTRA, _awkward


@pytest.fixture(scope="module")
def frame(small_frame):
    return load_transactions(_awkward(small_frame), EXTRA)


def _cuts(n: int, rng) -> list[tuple[int, int]]:
    """Random chunk bounds: some single rows, some empty, some long."""
    inner = np.sort(rng.choice(np.arange(1, n), size=rng.integers(1, 12), replace=False))
    bounds = [0, *inner.tolist(), *inner[:2].tolist(), n]  # repeated bounds: empty chunks
    bounds = sorted(bounds) + [n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


@pytest.mark.parametrize("block", list(BLOCKS))
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("delay", [7, 0.5])
def test_chunks_with_carried_state_equal_the_whole(frame, block, seed, delay):
    encoder = FeatureEncoder(EXTRA, blocks=(block,), label_delay_days=delay)
    whole, sorted_frame = encoder._raw_numeric(frame)
    stream = FeatureStream(EXTRA, (block,), delay)
    parts = [
        stream.push(frame.iloc[a:b]) for a, b in _cuts(len(frame), np.random.default_rng(seed))
    ]
    rows = sorted_frame.order
    names = [name for name in whole if not name.startswith("numeric:")]
    assert names and set(parts[0]) == set(names)
    for name in names:
        chunked = np.concatenate([part[name] for part in parts])
        np.testing.assert_allclose(chunked[rows], whole[name], rtol=1e-9, atol=1e-9, err_msg=name)
        assert np.unique(whole[name]).size > 1, name  # not a comparison of constants


def test_the_carried_state_stays_bounded(frame):
    stream = FeatureStream(EXTRA, tuple(BLOCKS), 7)
    for start in range(0, len(frame), 500):
        stream.push(frame.iloc[start : start + 500])
    state = stream.state
    assert state.m.max() <= 1024 and state.n.sum() == len(frame)
    assert state.n_new.max() <= 15 and len(state.times) < len(frame)


def test_a_chunk_older_than_an_earlier_one_is_refused(frame):
    stream = FeatureStream(EXTRA, tuple(BLOCKS), 7)
    stream.push(frame.iloc[len(frame) // 2 :])
    with pytest.raises(DataValidationError, match="time order"):
        stream.push(frame.iloc[: len(frame) // 2])
