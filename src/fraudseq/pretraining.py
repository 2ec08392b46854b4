"""Self-supervised pretraining of a sequence encoder (`fraudseq pretrain`, issue 22) and the
encoder directory that `fraudseq train --init` fine-tunes a classifier from.

**Data.** Every transaction with time before `until` (default: all), labelled or not. The
label column is never read: the file is loaded with a schema without the label (and the
scenario), so an encoder is the same whether labels are there, shuffled or blank. The
feature blocks are the label-free ones (the defaults without `counterparty_risk`, which is
built from delayed labels; as the autoencoder's), and a fine-tuned model uses the same
blocks: `--init` reuses the encoder's fitted FeatureEncoder (scalers, ranges, vocabularies)
as it is. The FeatureEncoder is fitted on the pretraining rows before the held-out days.

**Objective: masked-event modelling.** The network is the classifier the family builds
(`build_model`), whose every module but `head` is the encoder. In each window about
`mask_rate` of the valid events (and the last one when the draw picked none) have their
embedded input replaced by a learned mask vector; from the encoder's output at a masked
event, small linear heads predict its amount bucket (quantile buckets of the encoded
`log_amount`, i.e. of the raw amount, fitted on the pretraining rows), the code of each
categorical column with a vocabulary, and its time-gap bucket (quantile buckets of the
`recency` block's `log_gap_seconds`). A window's loss is the mean of the cross-entropies
over the fields and its masked events, averaged with the same mean over a **next-event
term**: every event after the window's first predicted, by the same heads, from the
encoder's output at the event before it (so that every output, the unmasked scored event's
too, is trained to summarise the past). Windows' losses are averaged.

Every family here is causal (the transformer's attention and the LSTM/GRU alike), so the
output at a masked event sees only the events before it and the mask: predicting it is
next-event prediction from its past, plus, for the transformer, the time from the event to
the window's last one (its positions; the masked event's own gap is the mask's). Nothing
after an event reaches the output it is predicted from.

The next-event term is there because it measured better: on the simulator (3,000
accounts, 60 days, 10% of the accounts labelled), a transformer fine-tuned from an encoder
pretrained on the masked term alone had a clearly lower test AP, over two seeds, than one
from an encoder with both terms (benchmarks/pretraining_simulator.py prints the current
numbers, and a transformer trained from scratch on the same features next to them).

**Training.** The one `Trainer` with `MaskedEventObjective`; a seeded sample of at most
`windows_per_epoch` training windows per epoch (`EpochSample`); early stopping on the
held-out masked loss of the last `valid_days` before `until` (at most `VALID_WINDOWS`
windows, masked the same way every epoch).

**The encoder directory** (`artifacts.save_model_dir` with kind "encoder", so that a
model's commands refuse it and `--init` refuses a model): model.json (family, the
FraudModel parameters that built the network, the pretraining schema, the FeatureEncoder,
the buckets, the span and row counts, losses per epoch, held-out accuracy against the
majority class), weights.safetensors (the encoder's tensors under the classifier's own key
names, plus the mask and heads under `pretraining.`) and the manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from fraudseq.artifacts import load_model_dir, save_model_dir
from fraudseq.choices import PRETRAINABLE
from fraudseq.errors import ConfigError, FraudseqError, ModelDirectoryError
from fraudseq.features import FeatureEncoder
from fraudseq.fraud_model import LABEL_BLOCKS, FraudModel, default_features, versions
from fraudseq.models.autoencoder import AutoencoderObjective
from fraudseq.models.ensemble import parse_members
from fraudseq.models.transformer import GAP_FEATURE
from fraudseq.schema import Schema, load_transactions
from fraudseq.splits import parse_time, validation_start
from fraudseq.training import Trainer, WindowSet, WindowSource

log = logging.getLogger("fraudseq")

FORMAT_VERSION = 1
KIND = "encoder"
MASK_RATE = 0.15
BUCKETS = 16
WINDOWS_PER_EPOCH = 100_000
VALID_WINDOWS = 20_000
AMOUNT_FEATURE = "log_amount"
#: Key prefix of the classifier's head (not part of the encoder) and of the pretraining
#: module's own tensors (mask vector, prediction heads) in an encoder directory.
HEAD = "head."
PRETRAINING = "pretraining."
#: The FraudModel parameters that shape the encoder's tensors: `--init` takes them from the
#: encoder, and a different explicit value is an error.
ARCHITECTURE = ("window", "hidden_size", "num_layers", "transformer_layers", "transformer_heads")
#: Schema roles the encoder's features read; a fine-tuning schema must agree on each.
ROLES = ("entity", "time", "amount", "categorical", "numeric", "counterparty", "time_unit",
         "time_origin")  # fmt: skip


def label_free(schema: Schema) -> Schema:
    """`schema` without its label and scenario: what pretraining loads data with."""
    return dataclasses.replace(schema, label=None, scenario=None)


@dataclass
class Targets:
    """What a masked event's fields are predicted as: bucket edges of the encoded amount
    and gap columns (`*_column` their index among the numeric features; gap None without
    the recency block) and the categorical columns (index, classes) with a vocabulary."""

    amount_column: int
    amount_edges: list[float]
    gap_column: int | None
    gap_edges: list[float]
    categorical: dict[str, tuple[int, int]]

    @classmethod
    def fit(cls, encoder: FeatureEncoder, numeric: np.ndarray, buckets: int) -> Targets:
        return cls.fit_columns(
            list(encoder.numeric_names_),
            list(encoder.schema.categorical),
            list(encoder.cardinalities),
            numeric,
            buckets,
        )

    @classmethod
    def fit_columns(
        cls,
        names: list[str],
        categorical_columns: list[str],
        sizes: list[int],
        numeric: np.ndarray,
        buckets: int,
    ) -> Targets:
        """`fit` from the encoder's column layout: its numeric feature names, categorical
        columns and their cardinalities (what a window model is built with)."""
        if AMOUNT_FEATURE not in names:
            raise ConfigError(
                f"pretraining predicts the amount from the {AMOUNT_FEATURE!r} feature of the "
                "'event' block; keep that block in the features"
            )
        amount = names.index(AMOUNT_FEATURE)
        gap = names.index(GAP_FEATURE) if GAP_FEATURE in names else None
        categorical = {
            column: (j, sizes[j])
            for j, column in enumerate(categorical_columns)
            if sizes[j] > 2  # padding and out-of-vocabulary only: nothing to predict
        }
        return cls(
            amount,
            _quantile_edges(numeric[:, amount], buckets),
            gap,
            [] if gap is None else _quantile_edges(numeric[:, gap], buckets),
            categorical,
        )

    def classes(self) -> dict[str, int]:
        """Each predicted field's number of classes, in a fixed order."""
        out = {"amount": len(self.amount_edges) + 1}
        if self.gap_column is not None:
            out["gap"] = len(self.gap_edges) + 1
        out.update({f"code:{c}": n for c, (_, n) in self.categorical.items()})
        return out

    def of(self, numeric: torch.Tensor, categorical: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each field's class of encoded events (numeric (..., F), codes (..., C))."""
        edges = torch.tensor(self.amount_edges, dtype=numeric.dtype)
        amount = numeric[..., self.amount_column].contiguous()
        out = {"amount": torch.bucketize(amount, edges, right=True)}
        if self.gap_column is not None:
            edges = torch.tensor(self.gap_edges, dtype=numeric.dtype)
            gap = numeric[..., self.gap_column].contiguous()
            out["gap"] = torch.bucketize(gap, edges, right=True)
        out.update({f"code:{c}": categorical[..., j] for c, (j, _) in self.categorical.items()})
        return out

    def to_json(self) -> dict:
        return {
            "amount_feature": AMOUNT_FEATURE,
            "amount_column": self.amount_column,
            "amount_edges": self.amount_edges,
            "gap_feature": GAP_FEATURE,
            "gap_column": self.gap_column,
            "gap_edges": self.gap_edges,
            "categorical": {c: list(v) for c, v in self.categorical.items()},
        }

    @classmethod
    def from_json(cls, state: dict) -> Targets:
        return cls(
            state["amount_column"],
            list(state["amount_edges"]),
            state["gap_column"],
            list(state["gap_edges"]),
            {c: (int(v[0]), int(v[1])) for c, v in state["categorical"].items()},
        )


def _quantile_edges(values: np.ndarray, buckets: int) -> list[float]:
    """Inner edges of `buckets` quantile buckets of `values` (ties merged)."""
    edges = np.quantile(values.astype(np.float64), np.linspace(0, 1, buckets + 1)[1:-1])
    return [float(v) for v in np.unique(edges.astype(np.float32))]


class MaskedEventNetwork(nn.Module):
    """The classifier `network` (its encoder: every module but `head`), a learned mask
    vector and one linear head per predicted field. `forward` gives each window's masked
    loss (B,); `masked` the masked events' logits and targets."""

    def __init__(
        self, network: nn.Module, targets: Targets, hidden_size: int, mask_rate: float, seed: int
    ) -> None:
        super().__init__()
        self.network = network
        self.targets = targets
        self.mask_rate = mask_rate
        self.seed = seed
        self.mask = nn.Parameter(torch.zeros(network.embed.out_dim))
        self.heads = nn.ModuleDict(
            {_key(name): nn.Linear(hidden_size, n) for name, n in targets.classes().items()}
        )
        self._eval_draws = torch.Generator().manual_seed(seed)

    def train(self, mode: bool = True) -> MaskedEventNetwork:
        # every evaluation pass (predict_logits sets eval mode first) masks the same events
        if not mode:
            self._eval_draws = torch.Generator().manual_seed(self.seed)
        return super().train(mode)

    def draw_mask(self, lengths: torch.Tensor, steps: int) -> torch.Tensor:
        """(B, K) True at the masked events: each valid one with probability `mask_rate`,
        and a window's last one when the draw picked none."""
        generator = None if self.training else self._eval_draws
        draws = torch.rand((len(lengths), steps), generator=generator)
        index = torch.arange(steps)[None, :]
        mask = (draws < self.mask_rate) & (index < lengths[:, None])
        last = index == (lengths[:, None] - 1)
        return mask | (last & ~mask.any(dim=1, keepdim=True))

    def encode(self, numeric, categorical, lengths):
        """(mask (B, K), the encoder's states (B, K, hidden) of the masked windows, each
        field's targets (B, K))."""
        events = self.network.embed(numeric, categorical)
        mask = self.draw_mask(lengths, events.size(1))
        events = torch.where(mask[..., None], self.mask.to(events.dtype), events)
        states = self.network.states(events, lengths)
        return mask, states, self.targets.of(numeric, categorical)

    def predict(self, states: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each field's logits (M, classes) from states (M, hidden)."""
        return {name: self.heads[_key(name)](states) for name in self.targets.classes()}

    def masked(self, numeric, categorical, lengths):
        """(mask (B, K), logits by field (M, classes), targets by field (M,)) of the M
        masked events, each predicted from the encoder's output at itself."""
        mask, states, targets = self.encode(numeric, categorical, lengths)
        return mask, self.predict(states[mask]), {n: t[mask] for n, t in targets.items()}

    def forward(self, numeric, categorical, lengths) -> torch.Tensor:
        """Each window's loss (B,): the mean cross-entropy of its masked events' fields,
        averaged with that of every event after its first predicted from the output at the
        event before it (the next-event term; see the module docstring)."""
        mask, states, targets = self.encode(numeric, categorical, lengths)
        own = _window_loss(mask, self.predict(states[mask]), targets)
        index = torch.arange(mask.size(1))[None, :]
        following = (index >= 1) & (index < lengths[:, None])  # predicted from the one before
        before = states[:, :-1][following[:, 1:]]
        after = _window_loss(following, self.predict(before), targets)
        return torch.where(lengths > 1, (own + after) / 2, own)

    def surprise(self, numeric, categorical, lengths) -> torch.Tensor:
        """Each window's surprise per field (B, fields, in `targets.classes()` order): the
        negative log-likelihood of its last event's field as the heads predict it from the
        encoder's output at the event before it (the next-event term); a window of one
        event, from the output at that event masked (nothing but the mask: the population's
        prior). Deterministic: no random draw, only the last event is masked."""
        events = self.network.embed(numeric, categorical)
        last = lengths - 1
        is_last = torch.arange(events.size(1))[None, :] == last[:, None]
        events = torch.where(is_last[..., None], self.mask.to(events.dtype), events)
        states = self.network.states(events, lengths)
        before = (lengths - 2).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(-1))
        logits = self.predict(states.gather(1, before).squeeze(1))
        targets = self.targets.of(numeric, categorical)
        return torch.stack(
            [
                nn.functional.cross_entropy(
                    logits[n], targets[n].gather(1, last.view(-1, 1)).squeeze(1), reduction="none"
                )
                for n in logits
            ],
            dim=1,
        )


def _window_loss(chosen: torch.Tensor, logits: dict, targets: dict) -> torch.Tensor:
    """Per window (B,), the mean over its `chosen` events (B, K) of the mean over fields of
    the cross-entropy of `logits` (M, classes; the chosen events in row-major order) against
    `targets` (B, K); 0 for a window without any."""
    per_event = torch.stack(
        [nn.functional.cross_entropy(logits[n], targets[n][chosen], reduction="none")
         for n in logits]
    ).mean(dim=0)  # fmt: skip
    window = chosen.nonzero()[:, 0]  # each chosen event's window, in row-major order
    total = torch.zeros(len(chosen), dtype=per_event.dtype).index_add(0, window, per_event)
    return total / chosen.sum(dim=1).clamp(min=1)


def _key(name: str) -> str:
    """A field's name as a module key ("." would nest it)."""
    return name.replace(".", "_")


class MaskedEventObjective(AutoencoderObjective):
    """The Trainer's objective for pretraining: as the autoencoder's (the mean of the
    module's per-window losses, without labels; the held-out loss ranks epochs), with the
    masked-event network itself as the module."""

    def module(self, net: MaskedEventNetwork) -> nn.Module:
        return net


@dataclass
class EpochSample(WindowSet):
    """Windows of which training takes a fresh seeded sample of at most `per_epoch` each
    epoch: `parts(rng)` draws it with the Trainer's per-epoch generator; without a
    generator (prediction) it is every window."""

    per_epoch: int = WINDOWS_PER_EPOCH

    def parts(self, rng: np.random.Generator | None = None) -> Iterator[WindowSet]:
        if rng is None or len(self) <= self.per_epoch:
            yield self
            return
        yield self.select(np.sort(rng.choice(len(self), self.per_epoch, replace=False)))


class PretrainedEncoder:
    """A pretrained encoder: the FraudModel parameters and FeatureEncoder it was built with,
    its masked-event network, what it was trained on and how it did. Made by `pretrain`,
    written by `save`, read by `load`; `fill` puts its weights into a classifier."""

    def __init__(
        self,
        model: FraudModel,
        targets: Targets,
        network: MaskedEventNetwork,
        info: dict,
        source: str = "<memory>",
    ) -> None:
        self.model = model  # params, schema_ (without the label), encoder_
        self.targets = targets
        self.network = network
        self.info = info  # span, rows, history, evaluation, mask rate
        self.source = source

    @property
    def family(self) -> str:
        return self.model.model

    @property
    def feature_encoder(self) -> FeatureEncoder:
        return self.model.encoder_

    def encoder_state(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors under the classifier's key names (every key but `head.`)."""
        return {
            k: v for k, v in self.network.network.state_dict().items() if not k.startswith(HEAD)
        }

    def features_for(self, fresh: FeatureEncoder, training: pd.DataFrame) -> FeatureEncoder:
        """The fine-tuned model's feature encoder: the encoder's own (features, scalers and
        vocabularies, as pretrained) or, when `fresh` (unfitted) has blocks of its own
        besides, `fresh` fitted on the `training` rows with the encoder's scaling of its
        features and its vocabularies (`FeatureEncoder.adopt`)."""
        own = self.feature_encoder
        if set(fresh.blocks) == set(own.blocks):
            return FeatureEncoder.from_json(own.to_json(), fresh.schema)
        return fresh.fit(training).adopt(own)

    def fill(self, network: nn.Module, numeric_names: list[str] | None = None) -> None:
        """Load the encoder's weights into a freshly built classifier of the same family and
        architecture; its head stays as built. With `numeric_names`, the classifier's
        numeric features (the encoder's and blocks added at fine-tuning, `features_for`):
        the input weights of the added features start at zero, so the classifier starts
        as the encoder and learns what they add."""
        state, own = self.encoder_state(), list(self.feature_encoder.numeric_names_)
        if numeric_names is not None and list(numeric_names) != own:
            state = _widened(state, network.state_dict(), own, list(numeric_names))
        missing, unexpected = network.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(HEAD) for k in missing):
            raise ModelDirectoryError(
                f"{self.source}: the encoder's tensors do not fit the {self.family} network "
                f"(missing {missing}, unexpected {unexpected}); pretrain it again"
            )

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the encoder directory atomically (see the module docstring)."""
        config = {
            "format_version": FORMAT_VERSION,
            "kind": KIND,
            "model": self.family,
            "params": self.model._stored_params(),
            "schema": self.model.schema_.to_document(),
            "encoder": self.feature_encoder.to_json(),
            "targets": self.targets.to_json(),
            **self.info,
            "versions": versions(),
        }
        own = {
            PRETRAINING + k: v
            for k, v in self.network.state_dict().items()
            if not k.startswith("network.")
        }
        return save_model_dir(path, config, {**self.encoder_state(), **own}, kind=KIND)

    @classmethod
    def load(cls, path: str | Path) -> PretrainedEncoder:
        """Read an encoder directory after checking it against its manifest (a model
        directory, or any other, is refused by name)."""
        config, tensors, _ = load_model_dir(path, kind=KIND)
        if config.get("format_version") != FORMAT_VERSION:
            raise ModelDirectoryError(
                f"{path}: encoder format {config.get('format_version')} is not supported by "
                f"this fraudseq ({FORMAT_VERSION}); pretrain it again"
            )
        try:
            model = FraudModel.from_params(config["model"], config["params"])
            model.schema_ = Schema.from_document(config["schema"], source=f"{path}/model.json")
            model.encoder_ = FeatureEncoder.from_json(config["encoder"], model.schema_)
            targets = Targets.from_json(config["targets"])
            info = {k: config[k] for k in ("pretraining", "history", "evaluation")}
            net = _network(model, targets, info["pretraining"]["mask_rate"])
            head = {k: v for k, v in net.network.state_dict().items() if k.startswith(HEAD)}
            state = {f"network.{k}": v for k, v in head.items()}  # as built: not pretrained
            for k, v in tensors.items():
                own = k.startswith(PRETRAINING)
                state[k[len(PRETRAINING) :] if own else f"network.{k}"] = v
            net.load_state_dict(state)
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise ModelDirectoryError(
                f"{path}/model.json: not a complete fraudseq encoder description "
                f"({type(exc).__name__}: {exc}); pretrain it again"
            ) from None
        net.eval()
        return cls(model, targets, net, info, source=str(path))

    # -- fine-tuning ---------------------------------------------------------------------
    def check_fits(self, model: FraudModel, schema: Schema) -> None:
        """Raise FraudseqError naming the first thing that keeps `model` (to be trained on
        data of `schema`) from starting from this encoder, and the fix."""
        where = f"--init {self.source}"
        if model.model == "ensemble":
            if self.family not in parse_members(model.members):
                raise ConfigError(
                    f"{where} was pretrained for the {self.family} family, which is not a "
                    f"member of the ensemble ({', '.join(parse_members(model.members))}): "
                    f"train --model {self.family}, add {self.family} to --members, or "
                    "pretrain with --model of a member"
                )
        elif model.model != self.family:
            raise ConfigError(
                f"{where} was pretrained for the {self.family} family, not {model.model}: "
                f"train with --model {self.family}, or pretrain with --model {model.model}"
                if model.model in PRETRAINABLE
                else f"{where}: --init fine-tunes {', '.join(PRETRAINABLE)} (and an ensemble's "
                f"member of the encoder's family) only, not {model.model}"
            )
        for name in ARCHITECTURE:
            mine, theirs = getattr(model, name), self.model.get_params()[name]
            if mine != theirs:
                option = "--" + name.replace("_", "-")
                raise ConfigError(
                    f"{where} has {name}={theirs} but the model asks for {mine}: leave out "
                    f"{option} ({name}) to take the encoder's, set it to {theirs}, or "
                    f"pretrain with {option} {mine}"
                )
        blocks = tuple(self.feature_encoder.blocks)
        lacking = [b for b in blocks if model.features is not None and b not in model.features]
        if lacking:
            raise ConfigError(
                f"{where} was pretrained on the feature blocks {', '.join(blocks)}, but the "
                f"model asks for {', '.join(model.features)}, without {', '.join(lacking)}: "
                "leave features out to take the encoder's (and the label blocks), or "
                "pretrain on the blocks you want"
            )
        theirs, mine = self.model.schema_, schema
        for role in ROLES:
            a, b = getattr(theirs, role), getattr(mine, role)
            if a != b:
                raise ConfigError(
                    f"{where}: the schema's {role} {_columns(a, b)}; the encoder's features "
                    "and vocabularies are those of its schema: train with the schema it was "
                    "pretrained with, or pretrain again with this one"
                )


def _widened(state: dict, target: dict, old: list[str], new: list[str]) -> dict:
    """`state` with each input layer (a tensor whose last axis is an event's inputs:
    numeric features, then categorical embeddings) widened from the `old` numeric features
    to the `new` ones, which hold them: each old feature's weights in its new place, the
    embeddings' after the new features, zeros for the added features."""
    at = [new.index(name) for name in old]
    out = {}
    for key, value in state.items():
        want = target.get(key)
        if (
            want is not None
            and want.shape != value.shape
            and want.shape[:-1] == value.shape[:-1]
            and want.shape[-1] - len(new) == value.shape[-1] - len(old)
        ):
            wide = torch.zeros_like(want)
            wide[..., at] = value[..., : len(old)]
            wide[..., len(new) :] = value[..., len(old) :]
            value = wide
        out[key] = value
    return out


def _columns(theirs, mine) -> str:
    """How a schema role differs, naming its columns."""
    if isinstance(theirs, tuple) and isinstance(mine, tuple):
        parts = []
        missing = [c for c in theirs if c not in mine]
        extra = [c for c in mine if c not in theirs]
        if missing:
            parts.append(f"lacks column {', '.join(missing)} that the encoder was pretrained on")
        if extra:
            parts.append(f"has column {', '.join(extra)} that the encoder was not pretrained on")
        if not parts:
            parts.append(f"lists columns {', '.join(mine)} in another order than {theirs}")
        return " and ".join(parts)
    return f"is {mine!r}, but the encoder was pretrained with {theirs!r}"


def _network(model: FraudModel, targets: Targets, mask_rate: float) -> MaskedEventNetwork:
    """The masked-event network around the classifier `model` builds for its encoder."""
    torch.manual_seed(model.seed)
    classifier = model._build().network
    return MaskedEventNetwork(classifier, targets, model.hidden_size, mask_rate, model.seed)


def pretrain(
    data,
    schema: Schema | None = None,
    model: FraudModel | None = None,
    *,
    until=None,
    valid_days: float = 7,
    mask_rate: float = MASK_RATE,
    buckets: int = BUCKETS,
    windows_per_epoch: int = WINDOWS_PER_EPOCH,
) -> PretrainedEncoder:
    """Pretrain the encoder of `model`'s family and architecture (a FraudModel of family
    transformer, lstm or gru; its window, hidden_size, num_layers, transformer_layers,
    transformer_heads, dropout, features, epochs, batch_size, learning_rate, weight_decay,
    patience, min_count, max_vocabulary, seed and progress are used) by masked-event
    modelling on every transaction of `data` with time before `until`, without labels.
    The last `valid_days` before `until` are held out for early stopping (0: none)."""
    model = model if model is not None else FraudModel("transformer")
    model = FraudModel.from_params(model.model, model.get_params())  # the caller's untouched
    model._check_params()
    if model.model not in PRETRAINABLE:
        raise ConfigError(
            f"pretrain builds an encoder for {', '.join(PRETRAINABLE)}, not {model.model}"
        )
    if not 0 < mask_rate <= 1 or buckets < 2 or windows_per_epoch < 1 or valid_days < 0:
        raise ConfigError(
            f"invalid mask_rate={mask_rate}, buckets={buckets}, windows_per_epoch="
            f"{windows_per_epoch} or valid_days={valid_days}: expected a rate in (0, 1], at "
            "least 2 buckets, at least 1 window and days >= 0"
        )
    model.features = _blocks(model)
    schema = label_free(schema or Schema.simulator())
    started = time.perf_counter()
    frame = load_transactions(data, schema)
    times = frame[schema.time]
    if until is not None:
        frame = frame[(times < parse_time(until, "--until")).to_numpy()].reset_index(drop=True)
        times = frame[schema.time]
    if frame.empty:
        raise FraudseqError(f"no transactions before --until {until} to pretrain on")
    end = parse_time(until) if until is not None else times.max() + pd.Timedelta(1, "ns")
    valid_from = validation_start(end, valid_days) if valid_days else end
    in_valid = (times >= valid_from).to_numpy()
    if in_valid.all():
        raise FraudseqError(
            f"every transaction before {end} is in the {valid_days:g} held-out days from "
            f"{valid_from}: choose fewer --valid-days or a later --until"
        )
    model.schema_ = schema
    model.encoder_ = model._new_encoder().fit(frame[~in_valid])
    encoded = model.encoder_.transform(frame)
    source = WindowSource(encoded, model.window)
    train_rows = np.flatnonzero(~in_valid)
    targets = Targets.fit(model.encoder_, encoded.numeric[source.positions_of(train_rows)], buckets)
    train = EpochSample(
        source, source.positions_of(train_rows), np.zeros(len(train_rows), np.float32),
        per_epoch=windows_per_epoch,
    )  # fmt: skip
    valid_rows = np.flatnonzero(in_valid)
    if len(valid_rows) > VALID_WINDOWS:
        rng = np.random.default_rng([model.seed, 22])
        valid_rows = np.sort(rng.choice(valid_rows, VALID_WINDOWS, replace=False))
    valid = WindowSet(
        source, source.positions_of(valid_rows), np.zeros(len(valid_rows), np.float32)
    )
    net = _network(model, targets, mask_rate)
    log.info(
        "pretraining a %s encoder on %d transactions before %s (%d training windows, %d a "
        "epoch; %d held out from %s)",
        model.model, len(frame), end, len(train), min(len(train), windows_per_epoch),
        len(valid), valid_from,
    )  # fmt: skip
    trainer = Trainer.from_params(model.get_params(), model.seed, objective=MaskedEventObjective())
    trainer.fit(net, train, valid if len(valid) else None)
    net.eval()
    majority = _majority(targets, encoded, source.positions_of(train_rows))
    evaluation = masked_accuracy(net, valid, majority, model.batch_size * 4) if len(valid) else {}
    info = {
        "pretraining": {
            "from": str(times.min()),
            "until": str(end),
            "valid_from": str(valid_from) if len(valid) else None,
            "rows": len(frame),
            "train_windows": len(train),
            "valid_windows": len(valid),
            "windows_per_epoch": windows_per_epoch,
            "mask_rate": mask_rate,
            "buckets": buckets,
            "seconds": round(time.perf_counter() - started, 1),
        },
        "history": trainer.history_,
        "evaluation": evaluation,
    }
    for field, values in evaluation.items():
        log.info(
            "held-out masked %s: accuracy %.4f, majority class %.4f",
            field, values["accuracy"], values["majority"],
        )  # fmt: skip
    return PretrainedEncoder(model, targets, net, info)


def _blocks(model: FraudModel) -> tuple[str, ...]:
    """The feature blocks to pretrain on: the model's, or the label-free defaults."""
    if model.features is None:
        return default_features("autoencoder")  # the defaults without the label blocks
    labelled = [b for b in model.features if b in LABEL_BLOCKS]
    if labelled:
        raise ConfigError(
            f"the feature block {', '.join(labelled)} is built from labels, which pretraining "
            "never reads: leave it out of features"
        )
    return tuple(model.features)


def _majority(targets: Targets, encoded, positions: np.ndarray) -> dict[str, int]:
    """Each field's most frequent class among the training rows."""
    numeric = torch.from_numpy(encoded.numeric[positions])
    codes = torch.from_numpy(encoded.categorical[positions])
    return {name: int(torch.bincount(t).argmax()) for name, t in targets.of(numeric, codes).items()}


@torch.inference_mode()
def masked_accuracy(
    net: MaskedEventNetwork, windows: WindowSet, majority: dict[str, int], batch_size: int = 2048
) -> dict[str, dict[str, float]]:
    """Per field, on the masked events of `windows` (masked as in validation): the accuracy
    of the predicted class and that of always predicting the training majority class."""
    net.eval()
    right: dict[str, float] = {}
    base: dict[str, float] = {}
    count = 0
    source = windows.source
    for start in range(0, len(windows), batch_size):
        batch = source.batch(windows.positions[start : start + batch_size])
        _, logits, targets = net.masked(*batch)
        count += len(next(iter(targets.values())))
        for name, target in targets.items():
            right[name] = right.get(name, 0) + int((logits[name].argmax(-1) == target).sum())
            base[name] = base.get(name, 0) + int((target == majority[name]).sum())
    return {
        name: {"accuracy": right[name] / count, "majority": base[name] / count, "events": count}
        for name in right
    }
