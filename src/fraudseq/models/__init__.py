"""Model families behind one window-model interface; `build_model` makes one by name.

A window model has `fit(train, valid)`, `decision_function(windows)` (logits),
`state()` -> (tensors, files) and `load_state(tensors, files)`, plus `history_`.
"""

from __future__ import annotations

from fraudseq.choices import MODELS, UNSUPERVISED
from fraudseq.errors import ConfigError
from fraudseq.models.attention import (
    ATTENTION_NETWORKS,
    AttentionLSTMClassifier,
    AttentionWindowModel,
    BiLSTMAttentionClassifier,
)
from fraudseq.models.autoencoder import (
    AutoencoderObjective,
    AutoencoderWindowModel,
    SequenceAutoencoder,
)
from fraudseq.models.boosted import BoostedWindowModel
from fraudseq.models.ensemble import EnsembleWindowModel, parse_members
from fraudseq.models.neural import NeuralWindowModel
from fraudseq.models.recurrent import CELLS, RecurrentClassifier
from fraudseq.models.transformer import TransformerClassifier
from fraudseq.training import Trainer

__all__ = [
    "MODELS",
    "UNSUPERVISED",
    "AttentionLSTMClassifier",
    "AttentionWindowModel",
    "AutoencoderWindowModel",
    "BiLSTMAttentionClassifier",
    "BoostedWindowModel",
    "EnsembleWindowModel",
    "NeuralWindowModel",
    "RecurrentClassifier",
    "SequenceAutoencoder",
    "TransformerClassifier",
    "build_model",
    "check_family",
    "learns_from_fraud",
]


def check_family(name: str, members=None) -> None:
    """Raise ConfigError unless `name` is a model family and, for an ensemble, every one of
    `members` is one too."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if name == "ensemble":
        for member in parse_members(members):
            if member not in MODELS:
                raise ConfigError(
                    f"unknown ensemble member {member!r} in members; choose among "
                    f"{', '.join(m for m in MODELS if m != 'ensemble')}"
                )


def learns_from_fraud(name: str, members=None) -> bool:
    """Whether family `name` (an ensemble: any of its `members`) learns from fraud labels,
    so that its training period must hold fraud."""
    if name == "ensemble":
        return any(learns_from_fraud(member) for member in parse_members(members))
    return name not in UNSUPERVISED


def build_model(name: str, n_numeric: int, cardinalities: list[int], params: dict, seed: int):
    """Build the window model of family `name`; `params` holds every hyperparameter the
    FraudModel knows, and each family takes the ones it uses."""
    check_family(name)
    network_params = {k: params[k] for k in ("hidden_size", "num_layers", "dropout")}
    if name in CELLS:
        network = RecurrentClassifier(n_numeric, cardinalities, cell=name, **network_params)
        return NeuralWindowModel(network, Trainer.from_params(params, seed))
    if name in ATTENTION_NETWORKS:
        if name == "lstm-attention":  # optional knobs; FraudModel may not carry them
            network_params["bidirectional"] = bool(params.get("bidirectional", False))
            network_params["heads"] = int(params.get("attention_heads", 4))
        network = ATTENTION_NETWORKS[name](n_numeric, cardinalities, **network_params)
        return AttentionWindowModel(network, Trainer.from_params(params, seed))
    if name == "transformer":  # d_model is hidden_size; `gap` comes from the encoder
        network = TransformerClassifier(
            n_numeric,
            cardinalities,
            window=params["window"],
            gap=params.get("gap"),
            hidden_size=params["hidden_size"],
            layers=int(params.get("transformer_layers", 2)),
            heads=int(params.get("transformer_heads", 2)),
            dropout=params["dropout"],
        )
        return AttentionWindowModel(network, Trainer.from_params(params, seed))
    if name == "autoencoder":
        network = SequenceAutoencoder(n_numeric, cardinalities, **network_params)
        trainer = Trainer.from_params(params, seed, objective=AutoencoderObjective())
        return AutoencoderWindowModel(network, trainer)
    if name == "surprise":  # imported here: fraudseq.pretraining imports FraudModel
        from fraudseq.models.surprise import build_surprise

        return build_surprise(n_numeric, cardinalities, params, seed)
    if name == "xgboost":
        return BoostedWindowModel(
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            class_weight=params["class_weight"],
            seed=seed,
        )
    if name == "ensemble":
        members = parse_members(params.get("members"))
        return EnsembleWindowModel(
            [
                (member, build_model(member, n_numeric, cardinalities, params, seed + i))
                for i, member in enumerate(members)
            ],
            combiner=params.get("combiner", "average"),
            novelty_ap_loss=params.get("novelty_ap_loss", 0.0),
        )
    raise AssertionError(f"{name!r} is in MODELS but build_model does not build it")
