"""The names users choose from (model families, losses and ensemble combiners), and the
defaults of the training periods.

This module imports nothing, so that the command line can list and check the choices without
loading torch, scikit-learn or XGBoost. The modules that implement the choices import their
names from here (one source of truth).
"""

from __future__ import annotations

RECURRENT = ("lstm", "gru", "rnn")
ATTENTION = ("lstm-attention", "bilstm-attention")
MODELS = (*RECURRENT, "xgboost", *ATTENTION, "transformer", "autoencoder", "ensemble")
# Trained on legitimate windows only (see models/autoencoder.py): needs no fraud to train on.
UNSUPERVISED = ("autoencoder",)
MEMBERS = tuple(m for m in MODELS if m != "ensemble")  # what an ensemble may hold
#: The families `fraudseq pretrain` pretrains an encoder for and `train --init` fine-tunes.
PRETRAINABLE = ("transformer", "lstm", "gru")

LOSSES = ("bce", "focal")
COMBINERS = ("average", "stacker")

#: The defaults of `fraudseq train` (--valid-days, --label-delay-days), which `fraudseq check`
#: judges a file against; tests/test_check.py keeps them equal.
VALID_DAYS = 7.0
LABEL_DELAY_DAYS = 7.0

#: MLflow model URIs that commands reading a model accept instead of a model directory
#: (models:/NAME/VERSION, models:/NAME@ALIAS, runs:/RUN_ID/PATH; see fraudseq.mlflow).
MODEL_URI_SCHEMES = ("models:/", "runs:/")
