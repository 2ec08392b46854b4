import numpy as np
import torch

from fraudseq.features import FeatureEncoder
from fraudseq.metrics import average_precision
from fraudseq.models import RecurrentClassifier
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import Trainer, WindowSet, WindowSource, predict_logits


def windows(small_frame, size=8):
    frame = load_transactions(small_frame, Schema.simulator())
    encoder = FeatureEncoder(Schema.simulator()).fit(frame)
    source = WindowSource(encoder.transform(frame), size)
    labels = frame["is_fraud"].to_numpy()[source.encoded.order].astype(np.float32)
    return encoder, source, labels


def test_embedding_once_equals_embedding_per_window(small_frame):
    encoder, source, _ = windows(small_frame)
    torch.manual_seed(0)
    net = RecurrentClassifier(encoder.n_numeric, encoder.cardinalities, hidden_size=8)
    everything = WindowSet(source, np.arange(len(source.starts)))  # takes the embed-once path
    few = WindowSet(source, np.arange(5))  # takes the per-window path
    np.testing.assert_allclose(
        predict_logits(net, everything)[:5], predict_logits(net, few), atol=1e-6
    )


def test_trainer_keeps_the_best_epoch(small_frame):
    encoder, source, labels = windows(small_frame)
    positions = np.arange(len(labels))
    train = WindowSet(source, positions[::2], labels[::2])
    valid = WindowSet(source, positions[1::2], labels[1::2])
    torch.manual_seed(0)
    net = RecurrentClassifier(encoder.n_numeric, encoder.cardinalities, hidden_size=8)
    trainer = Trainer(epochs=4, patience=10, progress=False, learning_rate=3e-2)
    trainer.fit(net, train, valid)
    best = max(h["valid_ap"] for h in trainer.history_)
    assert average_precision(valid.labels, predict_logits(net, valid)) == best
    assert len(trainer.history_) == 4
