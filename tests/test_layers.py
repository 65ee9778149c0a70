"""Every layer's backward pass against the numerical gradient, in float64, on every float64-capable device."""

import numpy as np
import pytest

from anynet.backend import to_numpy
from anynet.gradient import numerical_gradient
from anynet.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from tests.helpers import assert_close


def relative_error(analytic, numeric):
    a, n = to_numpy(analytic), to_numpy(numeric)
    return float(np.abs(a - n).max() / max(np.abs(a).max(), np.abs(n).max(), 1e-300))


def _random(device, shape, seed, low=-2.0, high=2.0):
    host = np.random.default_rng(seed).uniform(low, high, size=shape)
    return device.asarray(host, dtype="float64")


def _check_elementwise(device, layer, x):
    xp = device.xp
    upstream = _random(device, x.shape, seed=9)
    layer.forward(x)
    analytic = layer.backward(upstream)
    numeric = numerical_gradient(lambda _: xp.sum(layer.forward(x) * upstream), x)
    assert relative_error(analytic, numeric) < 1e-6


def test_sigmoid_backward(device64):
    _check_elementwise(device64, Sigmoid(), _random(device64, (4, 5), seed=1))


def test_relu_backward_away_from_the_kink(device64):
    x = _random(device64, (4, 5), seed=2)
    x = x + 0.02 * device64.xp.astype(x >= 0, x.dtype) - 0.01  # keep inputs 0.01 away from relu's kink at 0
    _check_elementwise(device64, Relu(), x)
    assert_close(Relu().forward(x), np.maximum(to_numpy(x), 0), device=device64, dtype="float64", rtol=0)


def test_relu_layer_keeps_nan_as_the_books_layer_does(device):
    """The book's Relu zeroes where x <= 0: NaN is not, so it stays NaN and its gradient passes."""
    layer = Relu()
    out = layer.forward(device.asarray([[np.nan, -1.0, 0.0, 2.0]]))
    assert_close(out, [[np.nan, 0.0, 0.0, 2.0]], device=device)
    assert_close(layer.backward(device.asarray([[1.0, 3.0, 5.0, 7.0]])), [[1.0, 0.0, 0.0, 7.0]], device=device)


def test_affine_backward_for_flattened_images(device64):
    xp = device64.xp
    x = _random(device64, (3, 2, 2, 2), seed=3)  # (N, C, H, W) input is flattened to (N, 8)
    W, b = _random(device64, (8, 4), seed=4), _random(device64, (4,), seed=5)
    layer = Affine(W, b)
    upstream = _random(device64, (3, 4), seed=6)

    def loss(_):
        return xp.sum(layer.forward(x) * upstream)

    loss(None)
    dx = layer.backward(upstream)
    assert tuple(dx.shape) == (3, 2, 2, 2)
    assert relative_error(dx, numerical_gradient(loss, x)) < 1e-6
    assert relative_error(layer.dW, numerical_gradient(loss, W)) < 1e-6
    assert relative_error(layer.db, numerical_gradient(loss, b)) < 1e-6


@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_softmax_with_loss_backward(device64, targets):
    x = _random(device64, (5, 4), seed=7, low=-5, high=5)
    labels = np.array([0, 3, 1, 1, 2])
    t = device64.asarray(labels) if targets == "labels" else device64.asarray(np.eye(4)[labels], dtype="float64")
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    host = to_numpy(x)
    log_p = host - host.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    assert_close(loss, -log_p[np.arange(5), labels].mean(), device=device64, dtype="float64", rtol=1e-12)
    dx = layer.backward()
    numeric = numerical_gradient(lambda _: layer.forward(x, t), x)
    assert relative_error(dx, numeric) < 1e-6
    expected = (np.exp(log_p) - np.eye(4)[labels]) / 5
    assert_close(dx, expected, device=device64, dtype="float64", rtol=1e-10, atol=1e-15)


def test_softmax_with_loss_stays_finite_for_huge_logits(device):
    x = device.asarray([[1000.0, -1000.0], [-1000.0, 1000.0]])
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, device.asarray([1, 1]))
    assert_close(loss, 1000.0, device=device, rtol=1e-6)  # one sample is right, one off by 2000 nats
    assert_close(layer.backward(), [[0.5, -0.5], [0.0, 0.0]], device=device, atol=1e-7)


def _scores_and_labels(device, labels):
    x = _random(device, (5, 4), seed=11, low=-3, high=3) if device.supports_float64 else \
        device.asarray(np.random.default_rng(11).uniform(-3, 3, size=(5, 4)), dtype="float32")
    return x, device.asarray(np.array(labels))


@pytest.mark.parametrize("bad, shown", [(-1, "from -1 to 3"), (4, "from 0 to 4"), (1000, "from 0 to 1000")])
def test_softmax_with_loss_refuses_labels_outside_the_classes(device, bad, shown):
    """-1 was class 3 on every device; 4 and 1000 raised a raw IndexError on NumPy and were class 0 on torch."""
    x, t = _scores_and_labels(device, [0, 3, bad, 1, 2])
    if device.platform == "cuda":  # no check there (it would wait for the GPU): NaN, as the next test shows
        assert np.isnan(float(to_numpy(SoftmaxWithLoss().forward(x, t))))
        return
    with pytest.raises(ValueError, match=rf"^labels must be class numbers 0\.\.3 for 4 classes, got labels {shown}$"):
        SoftmaxWithLoss().forward(x, t)


def test_on_a_gpu_bad_labels_make_the_loss_and_their_rows_nan(device, monkeypatch):
    """Where reading the labels' range would wait for the GPU at every step (platform "cuda"), a bad label makes
    the loss NaN and its row of the gradient NaN, the other rows exact: never a silent wrong answer. Run on every
    device by letting each one say it is a GPU."""
    monkeypatch.setattr(device, "platform", "cuda")
    x, t = _scores_and_labels(device, [0, 3, -1, 1, 7])
    layer = SoftmaxWithLoss()
    assert np.isnan(float(to_numpy(layer.forward(x, t))))
    dx = to_numpy(layer.backward())
    good, bad = [0, 1, 3], [2, 4]
    host = to_numpy(x)
    p = np.exp(host - host.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = (p - np.eye(4)[[0, 3, 0, 1, 0]]) / 5
    np.testing.assert_allclose(dx[good], expected[good], rtol=1e-5, atol=1e-7)
    assert np.isnan(dx[bad]).all()
    valid = SoftmaxWithLoss()
    x_good, t_good = _scores_and_labels(device, [0, 3, 2, 1, 2])
    assert np.isfinite(float(to_numpy(valid.forward(x_good, t_good))))  # good labels: the usual result


def test_softmax_with_loss_refuses_float_labels(device):
    """1.5 must not become class 1; one-hot targets are 2-D."""
    x, _ = _scores_and_labels(device, [0, 3, 2, 1, 2])
    with pytest.raises(TypeError, match=r"^labels must be integers \(class numbers 0\.\.3\), got dtype .*float32.*; "
                                        r"pass one-hot targets as a 2-D array$"):
        SoftmaxWithLoss().forward(x, device.asarray([0.0, 1.5, 2.0, 1.0, 3.0], dtype="float32"))


def test_softmax_with_loss_refuses_an_empty_batch_and_labels_of_another_length(device):
    x, t = _scores_and_labels(device, [0, 3, 2, 1, 2])
    with pytest.raises(ValueError, match=r"^cannot compute the loss of an empty batch \(scores of shape \(0, 4\)\): "
                                         r"pass at least one sample$"):
        SoftmaxWithLoss().forward(x[:0, ...], t[:0])
    with pytest.raises(ValueError, match=r"labels t of shape \(4,\) do not fit scores x of shape \(5, 4\)"):
        SoftmaxWithLoss().forward(x, t[:4])
