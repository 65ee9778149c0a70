"""What a book script ported by its imports gets: chapter 5's ReLU TwoLayerNet, gradient checks of the book's size
in float32, and the book's printed loss where asked for."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import anynet
from anynet.backend import to_numpy
from anynet.layers import SoftmaxWithLoss
from anynet.networks import TwoLayerNet, TwoLayerNetReLU
from anynet.optimizers import SGD
from tests.helpers import assert_close

# -- the book's chapter-5 TwoLayerNet (ch05/two_layer_net.py, common/layers.py), written out in NumPy float64 --


def _book_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def _book_cross_entropy_error(y, t):
    if t.size == y.size:
        t = t.argmax(axis=1)
    return -np.sum(np.log(y[np.arange(y.shape[0]), t] + 1e-7)) / y.shape[0]


class _BookTwoLayerNetCh05:
    def __init__(self, params):
        self.params = {name: np.array(value, dtype=np.float64) for name, value in params.items()}

    def predict(self, x):
        self.x, self.a = x, x @ self.params["W1"] + self.params["b1"]
        self.z = np.maximum(self.a, 0)  # Relu
        return self.z @ self.params["W2"] + self.params["b2"]

    def loss(self, x, t):
        self.y, self.t = _book_softmax(self.predict(x)), t
        return _book_cross_entropy_error(self.y, t)

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.y.copy()
        dout[np.arange(t.shape[0]), t] -= 1
        dout /= t.shape[0]
        grads = {"W2": self.z.T @ dout, "b2": dout.sum(axis=0)}
        dz = dout @ self.params["W2"].T
        dz[self.a <= 0] = 0
        grads["W1"], grads["b1"] = self.x.T @ dz, dz.sum(axis=0)
        return grads


def _batch(n=5, features=784, classes=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((n, features)).astype(np.float32), rng.integers(0, classes, n)


# -- item 2: chapter 5's TwoLayerNet is ReLU ----------------------------------------------------------------------


def test_the_ported_chapter5_import_gives_the_books_relu_network(device):
    net = TwoLayerNetReLU(input_size=784, hidden_size=50, output_size=10, device=device, seed=0)
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"]
    assert type(net.layers["Relu1"]) is anynet.layers.Relu and net.activation == "relu"
    assert list(net.params) == ["W1", "b1", "W2", "b2"]

    x, t = _batch()
    book = _BookTwoLayerNetCh05({name: to_numpy(value) for name, value in net.params.items()})
    where = net.device
    assert_close(net.predict(where.asarray(x)), book.predict(x.astype(np.float64)).astype(np.float32),
                 device=device, rtol=1e-5, atol=1e-6)
    assert_close(net.loss(where.asarray(x), where.asarray(t)), np.float32(book.loss(x.astype(np.float64), t)),
                 device=device, rtol=1e-5)
    grads, expected = net.gradient(where.asarray(x), where.asarray(t)), book.gradient(x.astype(np.float64), t)
    for name in ("W1", "b1", "W2", "b2"):
        assert_close(grads[name], expected[name].astype(np.float32), device=device, rtol=1e-4, atol=1e-7)


def test_chapter4s_twolayernet_stays_sigmoid_and_differs_from_chapter5s(device):
    sigmoid, relu = TwoLayerNet(20, 6, 3, device=device, seed=0), TwoLayerNetReLU(20, 6, 3, device=device, seed=0)
    assert list(sigmoid.layers) == ["Affine1", "Sigmoid1", "Affine2"]
    x, _ = _batch(4, 20, 3)
    a, b = to_numpy(sigmoid.predict(device.asarray(x))), to_numpy(relu.predict(device.asarray(x)))
    assert not np.allclose(a, b)


# -- item 4: the chapter-5 gradient check prints the book's differences in float32 ---------------------------------


def _gradient_check(net, x, t, **options):
    """ch05/gradient_check.py: the mean absolute difference per parameter."""
    numerical = net.numerical_gradient(x, t, **options)
    backprop = net.gradient(x, t)
    return {name: float(np.mean(np.abs(to_numpy(backprop[name]) - to_numpy(numerical[name])))) for name in numerical}


def test_the_chapter5_gradient_check_of_float32_weights_reports_the_books_differences(device64):
    # as gradient_check.py: three samples, float32 weights (the default); 196 features keep it quick on strict
    x, t = _batch(3, features=196)
    net = TwoLayerNetReLU(196, 4, 10, device=device64, seed=0)
    numerical = net.numerical_gradient(device64.asarray(x), device64.asarray(t))
    assert all(value.dtype == net.params[name].dtype for name, value in numerical.items())
    backprop = net.gradient(device64.asarray(x), device64.asarray(t))
    differences = {name: float(np.mean(np.abs(to_numpy(backprop[name]) - to_numpy(numerical[name]))))
                   for name in numerical}
    assert all(diff < 1e-6 for diff in differences.values()), differences


def test_the_float32_gradient_check_with_the_books_step_is_there_when_asked_for(device):
    # 196 features at twice the brightness: the hidden units' spread of 784 (a smaller one puts some within the
    # chosen step of ReLU's kink); each difference's rounding does not depend on the input's size
    x, t = _batch(3, features=196)
    x = x * 2
    net = TwoLayerNetReLU(196, 4, 10, device=device, seed=0)
    old = _gradient_check(net, device.asarray(x), device.asarray(t), dtype="float32", h=1e-4)
    assert max(old.values()) > 1e-5, old  # float32 rounding over a step of 1e-4: the 3e-4..7e-4
    chosen = _gradient_check(net, device.asarray(x), device.asarray(t), dtype="float32")  # the step for float32
    assert max(chosen.values()) < max(old.values()) / 3, (chosen, old)


def test_numerical_gradient_chooses_its_step_from_the_dtype(device):
    """The function-level numerical_gradient in float32, on parameters aliased by f (the book's idiom)."""
    x, t = _batch(3, 30, 5)
    net = TwoLayerNetReLU(30, 8, 5, device=device, seed=0)
    xd, td = device.asarray(x), device.asarray(t)
    exact = _BookTwoLayerNetCh05({name: to_numpy(value) for name, value in net.params.items()}).gradient(
        x.astype(np.float64), t)["W2"]

    def error(**options):
        grad = anynet.numerical_gradient(lambda W: net.loss(xd, td), net.params["W2"], **options)
        return float(np.max(np.abs(to_numpy(grad) - exact)))

    assert anynet.gradient.default_step(np.float64, np) == 1e-4
    assert error() < error(h=1e-4) / 3


# -- item 5: the book's printed loss where asked for ---------------------------------------------------------------


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_with_loss_gives_the_books_value_when_asked_and_the_exact_one_by_default(device, one_hot):
    scores = device.asarray([[0.0, 30.0, 0.0], [2.0, 1.0, 0.0]])  # the true class of the first: p = 9.4e-14
    labels = np.array([0, 0])
    t = device.asarray(np.eye(3, dtype=np.float32)[labels]) if one_hot else device.asarray(labels)
    x64 = np.array([[0.0, 30.0, 0.0], [2.0, 1.0, 0.0]])
    y = _book_softmax(x64)
    book = _book_cross_entropy_error(y, labels)  # (16.118 + 0.408) / 2
    exact = -np.mean(np.log(y[[0, 1], labels]))  # (30.0 + 0.408) / 2
    assert abs(book - exact) > 6

    default, books = SoftmaxWithLoss(), SoftmaxWithLoss(book_loss=True)
    assert_close(default.forward(scores, t), np.float32(exact), device=device, rtol=1e-6)
    assert_close(books.forward(scores, t), np.float32(book), device=device, rtol=1e-6)
    assert_close(books.backward(1), to_numpy(default.backward(1)), device=device, rtol=0, atol=0)


def test_a_network_with_the_books_loss_trains_on_the_generic_path(device):
    net = TwoLayerNetReLU(20, 6, 3, device=device, seed=0)
    if device.name == "cpu":  # the fast path a default last layer trains on
        assert net.fused_step(SGD(lr=0.1)) is not None
    net.last_layer = SoftmaxWithLoss(book_loss=True)
    assert net.fused_step(SGD(lr=0.1)) is None
    x, t = _batch(4, 20, 3)
    book = _BookTwoLayerNetCh05({name: to_numpy(value) for name, value in net.params.items()})
    assert_close(net.loss(device.asarray(x), device.asarray(t)), np.float32(book.loss(x.astype(np.float64), t)),
                 device=device, rtol=1e-5)


def test_layer_net_of_your_own_accepts_the_books_loss(device):
    identity = anynet.layers.Affine(device.asarray(np.eye(2, dtype=np.float32)), device.asarray([0.0, 0.0]))
    net = anynet.networks.LayerNet(OrderedDict(Affine1=identity), SoftmaxWithLoss(book_loss=True))
    loss = net.loss(device.asarray([[0.0, 40.0]]), device.asarray(np.array([0])))  # p = 4.2e-18: log(p + 1e-7)
    assert float(to_numpy(loss)) == pytest.approx(-np.log(np.exp(-40.0) + 1e-7), rel=1e-6)  # 16.118, not 40
