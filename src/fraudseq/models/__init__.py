"""Model families behind one window-model interface; `build_model` makes one by name.

A window model has `fit(train, valid)`, `decision_function(windows)` (logits),
`state()` -> (tensors, files) and `load_state(tensors, files)`, plus `history_`.
"""

from __future__ import annotations

from fraudseq.models.boosted import BoostedWindowModel
from fraudseq.models.neural import NeuralWindowModel
from fraudseq.models.recurrent import CELLS, RecurrentClassifier
from fraudseq.training import Trainer

MODELS = (*CELLS, "xgboost")

__all__ = [
    "MODELS",
    "BoostedWindowModel",
    "NeuralWindowModel",
    "RecurrentClassifier",
    "build_model",
]


def build_model(name: str, n_numeric: int, cardinalities: list[int], params: dict, seed: int):
    """Build the window model of family `name`; `params` holds every hyperparameter the
    FraudModel knows, and each family takes the ones it uses."""
    if name in CELLS:
        network = RecurrentClassifier(
            n_numeric,
            cardinalities,
            cell=name,
            **{k: params[k] for k in ("hidden_size", "num_layers", "dropout")},
        )
        trainer = Trainer(
            seed=seed,
            progress=params.get("progress"),
            **{
                k: params[k]
                for k in (
                    "epochs",
                    "batch_size",
                    "learning_rate",
                    "weight_decay",
                    "patience",
                    "class_weight",
                )
            },
        )
        return NeuralWindowModel(network, trainer)
    if name == "xgboost":
        return BoostedWindowModel(
            n_estimators=params["n_estimators"],
            max_depth=params["max_depth"],
            class_weight=params["class_weight"],
            seed=seed,
        )
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
