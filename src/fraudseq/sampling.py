"""Training-set samplers for extreme imbalance. They only ever see training windows: the
Trainer draws each epoch's indices from them, while validation and test windows are scored
as they are."""

from __future__ import annotations

import numpy as np

from fraudseq.errors import FraudseqError


def check_sampling(oversample: float | None, fraud_ratio: float | None) -> None:
    if oversample is not None and fraud_ratio is not None:
        raise FraudseqError("use either --oversample or --fraud-ratio, not both")
    if oversample is not None and not oversample > 0:
        raise FraudseqError(f"--oversample must be a positive:negative ratio > 0, got {oversample}")
    if fraud_ratio is not None and not 0 < fraud_ratio < 1:
        raise FraudseqError(f"--fraud-ratio must be in (0, 1), got {fraud_ratio}")


def epoch_indices(
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    oversample: float | None = None,
    fraud_ratio: float | None = None,
) -> np.ndarray:
    """Shuffled indices into the training windows for one epoch.

    - `oversample=R`: positives are repeated (with replacement) until positives:negatives
      is R; every negative is kept.
    - `fraud_ratio=R`: a fresh random subset of negatives is drawn each epoch so that
      positives make up a fraction R; every positive is kept.
    - neither: every window once.
    """
    positives = np.flatnonzero(labels > 0.5)
    negatives = np.flatnonzero(labels <= 0.5)
    if oversample is not None and len(positives):
        target = int(round(oversample * len(negatives)))
        extra = rng.choice(positives, size=max(target - len(positives), 0), replace=True)
        chosen = np.concatenate([negatives, positives, extra])
    elif fraud_ratio is not None and len(positives):
        wanted = int(round(len(positives) * (1 - fraud_ratio) / fraud_ratio))
        kept = rng.choice(negatives, size=min(wanted, len(negatives)), replace=False)
        chosen = np.concatenate([positives, kept])
    else:
        chosen = np.arange(len(labels))
    return rng.permutation(chosen)
