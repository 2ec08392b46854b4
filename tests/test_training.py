import copy

import numpy as np
import pytest
import torch

from fraudseq.features import FeatureEncoder
from fraudseq.metrics import average_precision
from fraudseq.models import RecurrentClassifier
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import (
    Callback,
    EarlyStopping,
    Trainer,
    WindowSet,
    WindowSource,
    predict_logits,
)


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


class Scripted(Callback):
    """Records the next of `values` as the epoch's `score`, and the weights it ended with."""

    def __init__(self, values):
        self.values, self.weights = list(values), []

    def on_epoch_end(self, net, record):
        record["score"] = self.values[record["epoch"] - 1]
        self.weights.append(copy.deepcopy(net.state_dict()))
        return False


class StopAfter(Callback):
    """Asks to stop after `epoch`; notes the epochs it saw and whether training ended."""

    def __init__(self, epoch):
        self.epoch, self.seen, self.ended = epoch, [], False

    def on_epoch_end(self, net, record):
        self.seen.append(record["epoch"])
        return record["epoch"] >= self.epoch

    def on_train_end(self, net):
        self.ended = True


def small_fit(small_frame, callbacks, epochs):
    """A small LSTM trained with `callbacks` on 1,500 windows, validated on 1,500 others."""
    encoder, source, labels = windows(small_frame)
    positions = np.arange(3000)
    train = WindowSet(source, positions[::2], labels[:3000:2])
    valid = WindowSet(source, positions[1::2], labels[1:3000:2])
    torch.manual_seed(0)
    net = RecurrentClassifier(encoder.n_numeric, encoder.cardinalities, hidden_size=8)
    trainer = Trainer(epochs=epochs, progress=False, learning_rate=3e-2, callbacks=callbacks)
    trainer.fit(net, train, valid)
    return net, trainer


def test_early_stopping_on_a_recorded_value_restores_its_best_epoch(small_frame):
    scripted = Scripted([0.1, 0.5, 0.3, 0.4, 0.9, 1.0])
    stopping = EarlyStopping("score", patience=2, lower_is_better=False)
    net, trainer = small_fit(small_frame, [scripted, stopping], epochs=6)
    assert [h["epoch"] for h in trainer.history_] == [1, 2, 3, 4]  # epochs 3, 4 not better
    assert [h["score"] for h in trainer.history_] == [0.1, 0.5, 0.3, 0.4]
    best, last = scripted.weights[1], scripted.weights[-1]
    assert any(not torch.equal(best[k], last[k]) for k in best)  # training moved the weights
    for name, value in net.state_dict().items():
        torch.testing.assert_close(value, best[name], atol=0, rtol=0)


def test_a_callback_stops_training_and_every_callback_sees_each_epoch(small_frame):
    stop, watcher = StopAfter(2), StopAfter(10)
    _, trainer = small_fit(small_frame, [stop, watcher], epochs=5)
    assert len(trainer.history_) == 2
    assert stop.seen == watcher.seen == [1, 2]
    assert stop.ended and watcher.ended


def test_early_stopping_names_a_value_the_record_lacks(small_frame):
    with pytest.raises(KeyError, match="valid_auc"):
        small_fit(small_frame, [EarlyStopping("valid_auc")], epochs=1)
