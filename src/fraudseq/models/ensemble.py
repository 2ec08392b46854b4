"""An ensemble of window models: a weighted average of their probabilities, or a logistic
regression stacker on their logits.

Members are trained on the training windows with early stopping on the validation windows;
the combination is then chosen on the validation windows:

- `average` (default): weights on a grid over the simplex (steps of 1/10) maximising the
  validation AP. The grid holds the one-hot corners, and a corner returns that member's
  logits unchanged, so the ensemble's validation AP is at least the best member's.
- `stacker`: scikit-learn's `LogisticRegression` on the members' validation logits; only its
  coefficients and intercept are stored (as tensors, never pickled).

**Novelty fusion.** Unsupervised members (the autoencoder) are not averaged in: their rank
says how unusual a window is for the population given its account's history, which no
label can teach the supervised members about a scheme that starts after training. The
supervised members are combined as above; the novelty n (the unsupervised members' mean
logit of the rank) then raises the score only beyond a gate g, the logit of a rank among
the validation windows (0.99, 0.995 or 0.999):

    logit = combined supervised logit + boost * max(0, n - g)

The gate and boost are chosen on the validation windows, which hold only the known schemes:
among the pairs whose validation AP is at least the supervised combination's, less a
relative allowance (`novelty_ap_loss`, default `NOVELTY_AP_LOSS` = 0), the one that raises
a window as unusual as 1 in 2,000 validation windows the most. So novelty is added as
strongly as the known schemes allow, and not at all when every pair costs more. A model
saved before this fusion (no `ensemble.novelty` tensor) averages every member.

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

from fraudseq.choices import COMBINERS, UNSUPERVISED
from fraudseq.errors import FraudseqError
from fraudseq.metrics import average_precision
from fraudseq.training import WindowSet

log = logging.getLogger("fraudseq")

DEFAULT_MEMBERS = ("lstm", "xgboost")
GRID_STEPS = 10
WEIGHTS, COEF, INTERCEPT = "ensemble.weights", "ensemble.coef", "ensemble.intercept"
NOVELTY = "ensemble.novelty"  # (boost, gate)
#: Ranks among the validation windows above which novelty raises the score, and the boosts.
NOVELTY_GATES = (0.99, 0.995, 0.999)
NOVELTY_BOOSTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: The pair chosen raises a window this unusual (1 in 2,000) the most.
NOVELTY_REFERENCE = 0.9995
#: The share of the supervised validation AP that the novelty boost may cost by default:
#: none, as the known schemes' AP must not drop. A small allowance buys a stronger boost for a
#: sharp novelty member (docs/compromise.md measures it) and costs AP with a blunt one.
NOVELTY_AP_LOSS = 0.0


def rank_logit(rank: float) -> float:
    """The novelty logit of a rank among the validation windows (a gate)."""
    return float(np.log(rank / (1 - rank)))


def pick_novelty(candidates, base_ap: float, allowance: float) -> tuple[float, float]:
    """(boost, gate) of the `candidates` — (boost, gate, validation AP) triples — whose AP is
    at least `base_ap * (1 - allowance)`, lifting a NOVELTY_REFERENCE window most; (0, the
    first gate) when none is."""
    best, best_lift = (0.0, rank_logit(NOVELTY_GATES[0])), 0.0
    for boost, gate, ap in candidates:
        lift = boost * (rank_logit(NOVELTY_REFERENCE) - gate)
        if lift > best_lift and ap >= base_ap * (1 - allowance):
            best, best_lift = (boost, gate), lift
    return best


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

    def __init__(
        self,
        members: list[tuple[str, object]],
        *,
        combiner: str = "average",
        novelty_ap_loss: float = NOVELTY_AP_LOSS,
    ) -> None:
        if combiner not in COMBINERS:
            raise FraudseqError(f"unknown combiner {combiner!r}; choose one of {COMBINERS}")
        if not members:
            raise FraudseqError("an ensemble needs at least one member")
        self.members = members
        self.combiner = combiner
        self.novelty_ap_loss = float(novelty_ap_loss)
        self.novelty_: tuple[float, float] | None = None  # (boost, gate), see the docstring
        self.history_: list[dict] = []

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.members]

    @property
    def supervised(self) -> np.ndarray:
        """Positions of the members learning from labels (all, if none or all of them do)."""
        learns = np.array([name not in UNSUPERVISED for name in self.names])
        return np.flatnonzero(learns) if learns.any() else np.arange(len(self.members))

    @property
    def unsupervised(self) -> np.ndarray:
        """Positions of the members fused as novelty (none in an all-unsupervised ensemble)."""
        return np.setdiff1d(np.arange(len(self.members)), self.supervised)

    def fit(self, train: WindowSet, valid: WindowSet | None) -> EnsembleWindowModel:
        for i, (name, member) in enumerate(self.members):
            log.info("ensemble member %d/%d: %s", i + 1, len(self.members), name)
            member.fit(train, valid)
        labelled = bool(valid is not None and 0 < valid.labels.sum() < len(valid))
        supervised = self.supervised
        self.weights_ = np.zeros(len(self.members))
        self.weights_[supervised] = 1.0 / len(supervised)
        self.stacker_: tuple[np.ndarray, np.ndarray] | None = None
        self.novelty_ = (0.0, rank_logit(NOVELTY_GATES[0])) if len(self.unsupervised) else None
        member_ap = [float("nan")] * len(self.members)
        if not labelled:
            log.warning("ensemble: no labelled validation windows; equal weights, no stacker")
        else:
            logits = self.member_logits(valid)
            member_ap = [
                average_precision(valid.labels, logits[:, j]) for j in range(len(self.members))
            ]
            if self.combiner == "stacker":
                stacker = LogisticRegression(C=1.0, max_iter=1000)
                stacker.fit(logits[:, supervised], valid.labels)
                coef = np.zeros(len(self.members))
                coef[supervised] = stacker.coef_[0]
                self.stacker_ = (coef, stacker.intercept_.astype(np.float64))
            else:
                self.weights_[supervised] = self._best_weights(logits[:, supervised], valid.labels)
            if self.novelty_ is not None:
                self.novelty_ = self._novelty_boost(logits, valid.labels)
        ensemble_ap = (
            average_precision(valid.labels, self.decision_function(valid))
            if labelled
            else float("nan")
        )
        log.info(
            "ensemble (%s): validation AP %.4f; members %s%s",
            self.combiner,
            ensemble_ap,
            ", ".join(
                f"{n} AP {ap:.4f} weight {w:.1f}"
                for n, ap, w in zip(self.names, member_ap, self.weights_, strict=True)
            ),
            "" if self.novelty_ is None else f"; novelty boost {self.novelty_[0]:g}",
        )
        self.history_ = [
            {
                "epoch": 1,
                "valid_ap": ensemble_ap,
                "combiner": self.combiner,
                **({} if self.novelty_ is None else {"novelty_boost": self.novelty_[0]}),
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

    def _novelty_boost(self, logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """(boost, gate) by `pick_novelty` over every pair of the grid, against the
        supervised combination's validation AP."""
        base = self._supervised_logits(logits)
        candidates = []
        for gate in map(rank_logit, NOVELTY_GATES):
            excess = self._novelty_excess(logits, gate)
            candidates += [
                (boost, gate, average_precision(labels, base + boost * excess))
                for boost in NOVELTY_BOOSTS
            ]
        return pick_novelty(candidates, average_precision(labels, base), self.novelty_ap_loss)

    def member_logits(self, windows: WindowSet) -> np.ndarray:
        """(N, M) float32 logits of every member."""
        return np.column_stack([m.decision_function(windows) for _, m in self.members])

    def _supervised_logits(self, logits: np.ndarray) -> np.ndarray:
        """The weighted average or stacker (zero weight on novelty members; every member in
        a model saved before the fusion)."""
        if self.stacker_ is not None:
            coef, intercept = self.stacker_
            return (logits.astype(np.float64) @ coef + intercept[0]).astype(np.float32)
        return average_logits(logits, self.weights_)

    def _novelty_excess(self, logits: np.ndarray, gate: float) -> np.ndarray:
        novelty = logits[:, self.unsupervised].astype(np.float64).mean(axis=1)
        return np.maximum(novelty - gate, 0.0).astype(np.float32)

    def decision_function(self, windows: WindowSet) -> np.ndarray:
        logits = self.member_logits(windows)
        score = self._supervised_logits(logits)
        if self.novelty_ is None or self.novelty_[0] == 0:
            return score
        boost, gate = self.novelty_
        return (score + np.float32(boost) * self._novelty_excess(logits, gate)).astype(np.float32)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        tensors: dict[str, torch.Tensor] = {WEIGHTS: torch.from_numpy(self.weights_.copy())}
        if self.novelty_ is not None:
            tensors[NOVELTY] = torch.tensor(self.novelty_, dtype=torch.float64)
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
        self.novelty_ = None  # a model saved before the fusion averages every member
        if NOVELTY in tensors:
            boost, gate = tensors[NOVELTY].tolist()
            self.novelty_ = (float(boost), float(gate))
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
