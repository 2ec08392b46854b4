"""The `surprise` family: how unexpected a window's scored (last) event is, given the events
before it, to a next-event model trained without labels (issue 23's novelty signal).

**Network and training.** The masked-event network of `fraudseq.pretraining`
(`MaskedEventNetwork` around an LSTM classifier's encoder: a learned mask vector and linear
heads predicting each event's amount bucket, categorical codes and time-gap bucket), trained
by the one `Trainer` with `MaskedEventObjective`: the masked term and the next-event term,
early stopping on the validation windows' loss. Its `Targets` (the buckets) are fitted on the
training windows' last events, from the encoder's column layout that `FraudModel.build_args`
passes in the parameters (`fields`), as it passes the transformer's `gap`.

Every training window is trained on, fraud or not: labels are never read. A scheme that
starts after training is not in the training period anyway, and the known fraud, a small
share of the windows, barely moves a next-event model; training on label 0 only would also
make the family need labels, which it does not (it trains on unlabelled data alike). Each
epoch takes a seeded sample of at most `WINDOWS_PER_EPOCH` windows (`EpochSample`), as
pretraining does.

**Score.** Each field of a window's last event (amount bucket, each categorical code,
gap bucket) has a surprise: its negative log-likelihood as the heads predict it from the
encoder's output at the event before it (`MaskedEventNetwork.surprise`; deterministic, no
random mask). Each field's surprise is ranked among the validation windows' surprises of that
field (`error_rank`), and the window's surprise is the largest of the fields' rank logits:
how unusual its most unusual field is. The largest rank, not the summed log-likelihood, since
one field far out (a category never seen in training) is the signal, and the sum buries it in
the other fields' ordinary spread (on the simulator's new scheme, 800 accounts: 36% of its
transactions above the legitimate 99th percentile by the sum, all of them by the largest
rank). As the autoencoder's error, that score is mapped to its rank among the validation
windows' (`error_rank` again), and `decision_function` is logit(rank): in an ensemble it is
fused as novelty (see models/ensemble.py); alone, its default threshold is a percentile.

**Persistence.** The network's tensors, the sorted validation surprises (each field's and the
windows'), the targets'
bucket edges and columns as tensors (`targets.*`); the categorical columns' names come from
the parameters' `fields` again at load.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from fraudseq.errors import ConfigError
from fraudseq.models.autoencoder import (
    REFERENCE,
    AutoencoderWindowModel,
    _logit,
    error_rank,
    reference_errors,
)
from fraudseq.models.recurrent import RecurrentClassifier
from fraudseq.pretraining import (
    BUCKETS,
    MASK_RATE,
    WINDOWS_PER_EPOCH,
    EpochSample,
    MaskedEventNetwork,
    MaskedEventObjective,
    Targets,
)
from fraudseq.training import Trainer, WindowSet

log = logging.getLogger("fraudseq")

#: Tensor names of the targets in the model state.
AMOUNT_EDGES, GAP_EDGES = "targets.amount_edges", "targets.gap_edges"
COLUMNS, CATEGORICAL = "targets.columns", "targets.categorical"
FIELD_REFERENCE = "field_reference_errors"  # (fields, n): each field's sorted validation surprise
BATCH = 4096


class SurpriseWindowModel(AutoencoderWindowModel):
    """The window-model interface around a next-event `MaskedEventNetwork`; unsupervised.
    The rank mapping (`rank`, `decision_function`, `default_threshold`) is the
    autoencoder's, over the surprise instead of the reconstruction error."""

    def __init__(
        self,
        classifier: nn.Module,
        fields: dict,
        cardinalities: list[int],
        trainer: Trainer,
        *,
        hidden_size: int,
        seed: int,
        buckets: int = BUCKETS,
        mask_rate: float = MASK_RATE,
        windows_per_epoch: int = WINDOWS_PER_EPOCH,
    ) -> None:
        self.classifier = classifier
        self.fields = fields
        self.cardinalities = list(cardinalities)
        self.trainer = trainer
        self.hidden_size, self.seed = hidden_size, seed
        self.buckets, self.mask_rate = buckets, mask_rate
        self.windows_per_epoch = windows_per_epoch
        self.network: MaskedEventNetwork | None = None
        self.history_: list[dict] = []

    def _network(self, targets: Targets) -> MaskedEventNetwork:
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return MaskedEventNetwork(
                self.classifier, targets, self.hidden_size, self.mask_rate, self.seed
            )

    def fit(self, train: WindowSet, valid: WindowSet | None) -> SurpriseWindowModel:
        if len(train) == 0:
            raise ValueError("the surprise model needs training windows")
        numeric = np.concatenate(
            [part.source.numeric[part.positions].numpy() for part in train.parts()]
        )
        targets = Targets.fit_columns(
            self.fields["numeric"],
            self.fields["categorical"],
            self.cardinalities,
            numeric,
            self.buckets,
        )
        self.network, self._scorer = self._network(targets), None
        unlabelled = np.zeros(len(train), np.float32)  # labels are never read
        sample = (
            EpochSample(train.source, train.positions, unlabelled, per_epoch=self.windows_per_epoch)
            if type(train) is WindowSet
            else train
        )
        log.info(
            "surprise: next-event model on %d windows (at most %d an epoch), labels unused",
            len(train),
            self.windows_per_epoch,
        )
        self.trainer.fit(self.network, sample, valid if valid is not None and len(valid) else None)
        self.network.eval()
        self.history_ = self.trainer.history_
        reference = valid if valid is not None and len(valid) else train
        fields = self.field_surprise(reference)
        self.field_reference_ = torch.stack([reference_errors(f) for f in fields.T])
        self.reference_ = reference_errors(self.surprise(reference, fields))
        return self

    @torch.inference_mode()
    def field_surprise(self, windows: WindowSet) -> np.ndarray:
        """Each window's surprise per field (N, fields), float64: computed by a float64 copy
        of the network, since the two rank mappings magnify float32's batch-size-dependent
        rounding beyond live = batch's 1e-6."""
        if getattr(self, "_scorer", None) is None:
            self._scorer = copy.deepcopy(self.network).double().eval()

        def part_surprise(source, positions) -> np.ndarray:
            numeric, categorical, lengths = source.batch(positions)
            return self._scorer.surprise(numeric.double(), categorical, lengths).numpy()

        out = [
            part_surprise(part.source, part.positions[i : i + BATCH])
            for part in windows.parts()
            for i in range(0, len(part), BATCH)
        ]
        fields = len(self.network.targets.classes())
        return np.concatenate(out) if out else np.empty((0, fields), np.float64)

    def surprise(self, windows: WindowSet, fields: np.ndarray | None = None) -> np.ndarray:
        """Each window's surprise (the raw anomaly score): the largest over the fields of
        the logit of the field's surprise ranked among the validation windows'."""
        fields = self.field_surprise(windows) if fields is None else fields
        reference = self.field_reference_.numpy()
        ranks = [error_rank(fields[:, j], reference[j]) for j in range(fields.shape[1])]
        return _logit(np.column_stack(ranks)).max(axis=1) if len(fields) else np.empty(0)

    def reconstruction_error(self, windows: WindowSet) -> np.ndarray:
        """The raw anomaly score the autoencoder's rank mapping reads: the surprise."""
        return self.surprise(windows)

    # -- persistence ---------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, bytes]]:
        t = self.network.targets
        names = self.fields["categorical"]
        targets = {
            AMOUNT_EDGES: torch.tensor(t.amount_edges, dtype=torch.float64),
            GAP_EDGES: torch.tensor(t.gap_edges, dtype=torch.float64),
            COLUMNS: torch.tensor([t.amount_column, -1 if t.gap_column is None else t.gap_column]),
            CATEGORICAL: torch.tensor(
                [[names.index(c), n] for c, (_, n) in t.categorical.items()], dtype=torch.int64
            ).reshape(-1, 2),
        }
        references = {REFERENCE: self.reference_, FIELD_REFERENCE: self.field_reference_}
        return {**self.network.state_dict(), **references, **targets}, {}

    def load_state(self, tensors: dict[str, torch.Tensor], files: dict[str, bytes]) -> None:
        tensors = dict(tensors)
        self.reference_ = tensors.pop(REFERENCE)
        self.field_reference_ = tensors.pop(FIELD_REFERENCE)
        amount, gap = tensors.pop(COLUMNS).tolist()
        names = self.fields["categorical"]
        targets = Targets(
            amount,
            tensors.pop(AMOUNT_EDGES).tolist(),
            None if gap < 0 else gap,
            tensors.pop(GAP_EDGES).tolist(),
            {names[j]: (j, n) for j, n in tensors.pop(CATEGORICAL).tolist()},
        )
        self.network, self._scorer = self._network(targets), None
        self.network.load_state_dict(tensors)
        self.network.eval()


def build_surprise(n_numeric: int, cardinalities: list[int], params: dict, seed: int):
    """The `surprise` window model (`build_model`'s): an LSTM encoder of `hidden_size`,
    `num_layers` and `dropout`, trained by the parameters' epochs, batch size, learning rate
    and patience."""
    fields = params.get("fields")
    if fields is None:
        raise ConfigError(
            "the surprise model needs the feature encoder's column layout (params['fields'], "
            "as FraudModel.build_args gives it); build it through FraudModel"
        )
    classifier = RecurrentClassifier(
        n_numeric,
        cardinalities,
        cell="lstm",
        **{k: params[k] for k in ("hidden_size", "num_layers", "dropout")},
    )
    trainer = Trainer.from_params(params, seed, objective=MaskedEventObjective())
    return SurpriseWindowModel(
        classifier, fields, cardinalities, trainer, hidden_size=params["hidden_size"], seed=seed
    )
