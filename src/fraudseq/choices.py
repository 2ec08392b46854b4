"""The names users choose from: model families, losses and ensemble combiners.

This module imports nothing, so that the command line can list and check the choices without
loading torch, scikit-learn or XGBoost. The modules that implement the choices import their
names from here (one source of truth).
"""

from __future__ import annotations

RECURRENT = ("lstm", "gru", "rnn")
ATTENTION = ("lstm-attention", "bilstm-attention")
MODELS = (*RECURRENT, "xgboost", *ATTENTION, "autoencoder", "ensemble")
# Trained on legitimate windows only (see models/autoencoder.py): needs no fraud to train on.
UNSUPERVISED = ("autoencoder",)
MEMBERS = tuple(m for m in MODELS if m != "ensemble")  # what an ensemble may hold

LOSSES = ("bce", "focal")
COMBINERS = ("average", "stacker")
