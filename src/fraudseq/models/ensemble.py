"""An ensemble of window models: a weighted average of their probabilities, or a logistic
regression stacker on their logits.

Members are trained on the training windows with early stopping on the validation windows;
the combination is then chosen on the validation windows:

- `average` (default): weights on a grid over the simplex (steps of 1/10) maximising the
  validation AP. The grid holds the one-hot corners, and a corner returns that member's
  logits unchanged, so the ensemble's validation AP is at least the best member's.
- `stacker`: scikit-learn's `LogisticRegression` on the members' validation logits; only its
  coefficients and intercept are stored (as tensors, never pickled).

Members' state is stored inside the ensemble's with prefixed names: tensor `m0.xxx`, file
`m0.booster.ubj` (flat names, no directories).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import torch
from scipy.special import log_expit, logsumexp
from sklearn.linear_model import LogisticRegression

from fraudseq.choices import COMBINERS
from fraudseq.errors import FraudseqError
from fraudseq.metrics import average_precision
from fraudseq.training import WindowSet

log = logging.getLogger("fraudseq")

DEFAULT_MEMBERS = ("lstm", "xgboost")
GRID_STEPS = 10
WEIGHTS, COEF, INTERCEPT = "ensemble.weights", "ensemble.coef", "ensemble.intercept"


def parse_members(members) -> list[str]:
    """Member names from a list or a comma-separated string; the default when empty."""
    if isinstance(members, str):
        members = members.split(",")
    names = [str(m).strip() for m in (members or DEFAULT_MEMBERS) if str(m).strip()]
    if not names:
        names = list(DEFAULT_MEMBERS)
    if "ensemble" in names:
        raise FraudseqError("an ensemble cannot have an ensemble as a member; fix --members")
    return names


def simplex_grid(members: int, steps: int = GRID_STEPS) -> np.ndarray:
    """Every weight vector with entries in {0, 1/steps, ..., 1} summing to 1, one-hot corners
    included, in a fixed (lexicographic) order."""
    points = [
        c + (steps - sum(c),)
        for c in itertools.product(range(steps + 1), repeat=members - 1)
        if sum(c) <= steps
    ]
    return np.asarray(points, dtype=np.float64).reshape(-1, members) / steps


def average_logits(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Logit of the weighted mean of the members' probabilities, computed in log space.

    `logits` is (N, M); members with weight 0 are left out, and a single remaining member's
    logits come back unchanged.
    """
    used = np.flatnonzero(weights > 0)
    if len(used) == 1:
        return logits[:, used[0]].astype(np.float32)
    x, w = logits[:, used].astype(np.float64), weights[used]
    positive = logsumexp(log_expit(x), b=w, axis=1)
    negative = logsumexp(log_expit(-x), b=w, axis=1)
    return (positive - negative).astype(np.float32)


class EnsembleWindowModel:
    """Window models combined by validation-chosen weights or a logistic stacker."""

    def __init__(self, members: list[tuple[str, object]], *, combiner: str = "average") -> None:
        if combiner not in COMBINERS:
            raise FraudseqError(f"unknown combiner {combiner!r}; choose one of {COMBINERS}")
        if not members:
            raise FraudseqError("an ensemble needs at least one member")
        self.members = members
        self.combiner = combiner
        self.history_: list[dict] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.members]

    def fit(self, train: WindowSet, valid: WindowSet | None) -> EnsembleWindowModel:
        for i, (name, member) in enumerate(self.members):
            log.info("ensemble member %d/%d: %s", i + 1, len(self.members), name)
            member.fit(train, valid)
        labelled = bool(valid is not None and 0 < valid.labels.sum() < len(valid))
        self.weights_ = np.full(len(self.members), 1.0 / len(self.members))
        self.stacker_: tuple[np.ndarray, np.ndarray] | None = None
        member_ap = [float("nan")] * len(self.members)
        if not labelled:
            log.warning("ensemble: no labelled validation windows; equal weights, no stacker")
        else:
            logits = self.member_logits(valid)
            member_ap = [
                average_precision(valid.labels, logits[:, j]) for j in range(len(self.members))
            ]
            if self.combiner == "stacker":
                stacker = LogisticRegression(C=1.0, max_iter=1000).fit(logits, valid.labels)
                self.stacker_ = (
                    stacker.coef_[0].astype(np.float64),
                    stacker.intercept_.astype(np.float64),
                )
            else:
                self.weights_ = self._best_weights(logits, valid.labels)
        ensemble_ap = (
            average_precision(valid.labels, self.decision_function(valid))
            if labelled
            else float("nan")
        )
        log.info(
            "ensemble (%s): validation AP %.4f; members %s",
            self.combiner,
            ensemble_ap,
            ", ".join(
                f"{n} AP {ap:.4f} weight {w:.1f}"
                for n, ap, w in zip(self.names, member_ap, self.weights_, strict=True)
            ),
        )
        self.history_ = [
            {
                "epoch": 1,
                "valid_ap": ensemble_ap,
                "combiner": self.combiner,
                "members": [
                    {"name": n, "valid_ap": ap, "weight": float(w), "history": m.history_}
                    for (n, m), ap, w in zip(self.members, member_ap, self.weights_, strict=True)
                ],
            }
        ]
        return self

    @staticmethod
    def _best_weights(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The grid point with the highest validation AP (the first one on ties)."""
        best, best_ap = None, -np.inf
        for weights in simplex_grid(logits.shape[1]):
            ap = average_precision(labels, average_logits(logits, weights))
            if ap > best_ap:
                best, best_ap = weights, ap
        return best

    def member_logits(self, windows: WindowSet) -> np.ndarray:
        """(N, M) float32 logits of every member."""
        return np.column_stack([m.decision_function(windows) for _, m in self.members])

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        logits = self.member_logits(windows)
        if self.stacker_ is not None:
            coef, intercept = self.stacker_
            return (logits.astype(np.float64) @ coef + intercept[0]).astype(np.float32)
        return average_logits(logits, self.weights_)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        tensors: dict[str, torch.Tensor] = {WEIGHTS: torch.from_numpy(self.weights_.copy())}
        if self.stacker_ is not None:
            tensors[COEF] = torch.from_numpy(self.stacker_[0].copy())
            tensors[INTERCEPT] = torch.from_numpy(self.stacker_[1].copy())
        files: dict[str, bytes] = {}
        for i, (_, member) in enumerate(self.members):
            member_tensors, member_files = member.state()
            tensors.update({f"m{i}.{k}": v for k, v in member_tensors.items()})
            files.update({f"m{i}.{k}": v for k, v in member_files.items()})
        return tensors, files

    def load_state(self, tensors: dict[str, torch.Tensor], files: dict[str, bytes]) -> None:
        self.weights_ = tensors[WEIGHTS].numpy().astype(np.float64)
        self.stacker_ = None
        if COEF in tensors:
            self.stacker_ = (
                tensors[COEF].numpy().astype(np.float64),
                tensors[INTERCEPT].numpy().astype(np.float64),
            )
        for i, (_, member) in enumerate(self.members):
            prefix = f"m{i}."
            member.load_state(
                {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
                {k[len(prefix) :]: v for k, v in files.items() if k.startswith(prefix)},
            )
