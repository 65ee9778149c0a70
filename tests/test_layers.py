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
