import numpy as np
import pytest
import torch

from fraudseq.features import FeatureEncoder
from fraudseq.models import build_model
from fraudseq.models.attention import AttentionLSTMClassifier, BiLSTMAttentionClassifier
from fraudseq.models.transformer import TransformerClassifier
from fraudseq.schema import Schema, load_transactions
from fraudseq.training import WindowSet, WindowSource, predict_logits

NETWORKS = {
    "lstm-attention": lambda: AttentionLSTMClassifier(5, [4, 6], hidden_size=8),
    "bilstm-in-lstm-attention": lambda: AttentionLSTMClassifier(
        5, [4, 6], hidden_size=8, bidirectional=True
    ),
    "bilstm-attention": lambda: BiLSTMAttentionClassifier(5, [4, 6], hidden_size=8),
    # the gaps read from numeric column 1 (scaled: mean 3, scale 2)
    "transformer": lambda: TransformerClassifier(
        5, [4, 6], window=K, gap=(1, 3.0, 2.0), hidden_size=8
    ),
}
K = 7
LENGTHS = torch.tensor([1, 3, 7, 5, 2, 7, 4, 6])


def random_windows(seed=0):
    g = torch.Generator().manual_seed(seed)
    numeric = torch.randn(len(LENGTHS), K, 5, generator=g)
    categorical = torch.randint(0, 4, (len(LENGTHS), K, 2), generator=g)
    return numeric, categorical, torch.arange(K)[None, :] >= LENGTHS[:, None]


@pytest.fixture(params=list(NETWORKS))
def network(request):
    torch.manual_seed(0)
    return NETWORKS[request.param]().eval()


def test_attention_weights_shape_sum_and_zero_on_padding(network):
    numeric, categorical, padding = random_windows()
    with torch.no_grad():
        events = network.embed(numeric, categorical)
        logits, weights = network.forward_events(events, LENGTHS, return_attention=True)
        plain = network.forward_events(events, LENGTHS)
    assert logits.shape == (len(LENGTHS),)
    assert weights.shape == (len(LENGTHS), K)
    torch.testing.assert_close(weights.sum(1), torch.ones(len(LENGTHS)))
    assert (weights[padding] == 0).all()
    assert (weights[~padding] > 0).all()
    torch.testing.assert_close(logits, plain, atol=1e-6, rtol=0)


def test_padding_content_does_not_change_logits(network):
    numeric, categorical, padding = random_windows()
    noisy_numeric, noisy_categorical = numeric.clone(), categorical.clone()
    count = int(padding.sum())
    noisy_numeric[padding] = torch.randn(count, 5) * 10
    noisy_categorical[padding] = torch.randint(0, 4, (count, 2))
    with torch.no_grad():
        clean = network(numeric, categorical, LENGTHS)
        noisy = network(noisy_numeric, noisy_categorical, LENGTHS)
        _, clean_weights = network.forward_events(
            network.embed(numeric, categorical), LENGTHS, return_attention=True
        )
        _, noisy_weights = network.forward_events(
            network.embed(noisy_numeric, noisy_categorical), LENGTHS, return_attention=True
        )
    torch.testing.assert_close(clean, noisy, atol=0, rtol=0)
    torch.testing.assert_close(clean_weights, noisy_weights, atol=0, rtol=0)


@pytest.fixture(scope="module")
def source(small_frame):
    frame = load_transactions(small_frame, Schema.simulator())
    encoder = FeatureEncoder(Schema.simulator()).fit(frame)
    return encoder, WindowSource(encoder.transform(frame), 8)


@pytest.mark.parametrize("name", ["lstm-attention", "bilstm-attention", "transformer"])
def test_embed_once_path_and_attention_report(name, source):
    encoder, windows = source
    params = {
        "window": 8,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.1,
        "epochs": 1,
        "progress": False,
    }
    torch.manual_seed(0)
    model = build_model(name, encoder.n_numeric, encoder.cardinalities, params, seed=0)
    everything = WindowSet(windows, np.arange(len(windows.starts)))  # embed-once path
    few = WindowSet(windows, np.arange(40))  # per-window path
    np.testing.assert_allclose(
        predict_logits(model.network, everything)[:40],
        model.decision_function(few),
        atol=1e-6,
    )
    weights = model.attention(few)
    _, lengths = windows.index(few.positions)
    assert weights.shape == (40, 8)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    assert (weights[np.arange(8)[None, :] >= lengths.numpy()[:, None]] == 0).all()
