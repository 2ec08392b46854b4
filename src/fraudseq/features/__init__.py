"""Features declared once: blocks (`blocks/`), their kernel (`kernel`), the per-entity
state (`state`) and the fitted encoder that scales them for a model (`encoder`)."""

from __future__ import annotations

from fraudseq.features.blocks import BLOCKS
from fraudseq.features.encoder import (
    FEATURE_LIMIT,
    NO_RANGE,
    OOV_CODE,
    PAD_CODE,
    RANGE_MARGIN,
    EncodedFrame,
    FeatureEncoder,
    clean_features,
)
from fraudseq.features.plain import plain_quantity

__all__ = [
    "BLOCKS",
    "FEATURE_LIMIT",
    "NO_RANGE",
    "OOV_CODE",
    "PAD_CODE",
    "RANGE_MARGIN",
    "EncodedFrame",
    "FeatureEncoder",
    "clean_features",
    "plain_quantity",
]
