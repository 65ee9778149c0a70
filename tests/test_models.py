"""TwoLayerNet and MultiLayerNet: seeded weights, backprop against numerical gradients and torch, devices."""

import math

import numpy as np
import pytest

import anynet
from anynet.backend import to_numpy
from anynet.networks import MultiLayerNet, TwoLayerNet
from tests.helpers import assert_close


def _batch(n=6, features=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), rng.integers(0, classes, size=n)


def test_same_seed_same_weights_on_every_device(device):
    reference = TwoLayerNet(784, 50, 10, device="cpu", seed=7)
    here = TwoLayerNet(784, 50, 10, device=device, seed=7)
    for name, value in reference.params.items():
        assert_close(here.params[name], value, device=device, rtol=0)
    assert here.device == device and here.params["b1"].shape == (50,)
    other = TwoLayerNet(784, 50, 10, device="cpu", seed=8)
    assert not np.array_equal(other.params["W1"], reference.params["W1"])
    assert abs(float(np.std(reference.params["W1"])) - 0.01) < 0.001  # weight_init_std


@pytest.mark.parametrize("init, scale", [("relu", math.sqrt(2 / 784)), ("he", math.sqrt(2 / 784)),
                                         ("sigmoid", math.sqrt(1 / 784)), ("xavier", math.sqrt(1 / 784)), (0.05, 0.05)])
def test_multilayer_init_scales(init, scale):
    net = MultiLayerNet(784, [400, 100], 10, weight_init_std=init, seed=0)
    assert abs(float(np.std(net.params["W1"])) / scale - 1) < 0.02
    assert [tuple(net.params[f"W{i}"].shape) for i in (1, 2, 3)] == [(784, 400), (400, 100), (100, 10)]


def test_bad_network_settings_are_named():
    with pytest.raises(ValueError, match="unknown activation 'tanh': expected one of sigmoid, relu"):
        TwoLayerNet(4, 3, 2, activation="tanh")
    with pytest.raises(ValueError, match="unknown weight_init_std 'large'"):
        MultiLayerNet(4, [3], 2, weight_init_std="large")
    with pytest.raises(ValueError, match=r"layer sizes must be positive integers, got \[4, 0, 2\]"):
        MultiLayerNet(4, [0], 2)


@pytest.mark.parametrize("make", [
    lambda d: TwoLayerNet(12, 5, 3, weight_init_std=0.5, device=d, dtype="float64", seed=1),
    lambda d: TwoLayerNet(12, 5, 3, weight_init_std=0.5, activation="relu", device=d, dtype="float64", seed=1),
    lambda d: MultiLayerNet(12, [6, 5], 3, activation="relu", weight_decay_lambda=0.1, device=d, dtype="float64",
                            seed=2),
    lambda d: MultiLayerNet(12, [6], 3, activation="sigmoid", weight_init_std="xavier", device=d, dtype="float64",
                            seed=3),
], ids=["two-layer-sigmoid", "two-layer-relu", "mlp-relu-decay", "mlp-sigmoid"])
def test_backprop_equals_the_numerical_gradient(device64, make):
    """On the devices with float64 (``device64``): gradient checks need it."""
    net = make(device64)
    x, t = _batch()
    backprop = net.gradient(x, t)
    numeric = net.numerical_gradient(x, t)
    for name in net.params:
        a, n = to_numpy(backprop[name]), to_numpy(numeric[name])
        assert np.abs(a - n).max() / max(np.abs(a).max(), 1e-12) < 1e-6, name
    assert_close(net.last_loss, to_numpy(net.loss(x, t)), device=device64, dtype="float64", rtol=1e-12)


def test_backprop_equals_torch_autograd():
    torch = pytest.importorskip("torch")
    net = MultiLayerNet(12, [7, 5], 3, activation="relu", weight_decay_lambda=0.05, dtype="float64", seed=4)
    sig = TwoLayerNet(12, 6, 3, weight_init_std=0.5, dtype="float64", seed=5)
    x, t = _batch(n=8)
    for model, activation in ((net, torch.relu), (sig, torch.sigmoid)):
        weights = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
        h = torch.tensor(x)
        for i in range(1, model.depth + 1):
            h = h @ weights[f"W{i}"] + weights[f"b{i}"]
            if i < model.depth:
                h = activation(h)
        loss = torch.nn.functional.cross_entropy(h, torch.tensor(t))
        loss = loss + 0.5 * model.weight_decay_lambda * sum((weights[f"W{i}"] ** 2).sum()
                                                            for i in range(1, model.depth + 1))
        loss.backward()
        grads = model.gradient(x, t)
        assert float(model.last_loss) == pytest.approx(loss.item(), rel=1e-12)
        for name, tensor in weights.items():
            np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


def test_to_moves_every_parameter_and_the_layers(device):
    net = MultiLayerNet(12, [5], 3, seed=0)
    x, t = _batch(n=40)
    before = to_numpy(net.predict(x))
    assert net.to(device) is net and net.device == device
    for value in net.params.values():
        assert anynet.device_of(value) == device
    # predict and accuracy take host arrays and move them; loss too
    x32 = x.astype(np.float32)
    assert_close(net.predict(x32), before, device=device, rtol=1e-5, atol=1e-6)
    # the count by hand, from the device's scores (17 of these 40 samples: neither 0 nor 1)
    expected = np.count_nonzero(np.argmax(to_numpy(net.predict(x32)), axis=1) == t) / len(t)
    assert 0.0 < expected < 1.0
    assert net.accuracy(x32, t) == expected
    assert net.accuracy(x32, np.eye(3)[t]) == expected
    assert net.accuracy(device.asarray(x32), device.asarray(t), batch_size=7) == expected


def test_arrays_on_another_device_are_a_clear_error(device):
    net = TwoLayerNet(12, 5, 3, device=device, seed=0)
    other = anynet.device("strict:device1" if device.name != "strict:device1" else "strict")
    x = other.asarray(np.zeros((2, 12), dtype=np.float32))
    with pytest.raises(TypeError, match=rf"on device {other.name!r}.*anynet.device\("):
        net.predict(x)


def test_a_wrong_feature_count_is_named(device):
    net = TwoLayerNet(12, 5, 3, device=device, seed=0)
    with pytest.raises(ValueError, match=r"input of shape \(2, 10\) has 10 features per sample, the network takes 12"):
        net.predict(np.zeros((2, 10), dtype=np.float32))


def test_accuracy_counts_exactly(device):
    net = TwoLayerNet(2, 2, 2, device=device, seed=0)
    net.load_params({"W1": np.eye(2, dtype=np.float32), "b1": np.zeros(2, dtype=np.float32),
                     "W2": np.array([[5.0, -5.0], [-5.0, 5.0]], dtype=np.float32), "b2": np.zeros(2, dtype=np.float32)})
    x = np.array([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [0.0, 3.0]], dtype=np.float32)  # classes 0, 1, 0, 1
    assert net.accuracy(x, np.array([0, 1, 1, 1])) == 0.75
    assert net.accuracy(x, np.array([0, 1, 1, 1]), batch_size=3) == 0.75
    # data already on the device goes through the fast path whole, host data chunk by chunk: the same count
    on_device = device.asarray(x)
    for batch_size in (1, 3, 10000):
        assert net.accuracy(on_device, device.asarray(np.array([0, 1, 0, 1])), batch_size=batch_size) == 1.0
        assert net.accuracy(on_device, np.eye(2, dtype=np.float32)[[1, 1, 1, 1]], batch_size=batch_size) == 0.5
    if device.supports_float64:
        assert net.accuracy(x.astype(np.float64), np.array([1, 1, 1, 0])) == 0.25
    with pytest.raises(ValueError, match="parameters do not fit this network"):
        net.load_params({"W1": np.eye(3, dtype=np.float32)})


def test_load_params_copies_so_training_leaves_the_source_alone(device):
    source = {k: v.copy() for k, v in TwoLayerNet(12, 5, 3, seed=0).params.items()}
    kept = {k: v.copy() for k, v in source.items()}
    net = TwoLayerNet(12, 5, 3, device=device, seed=1).load_params(source)
    from anynet.optimizers import SGD

    x, t = _batch()
    SGD(lr=0.5).update(net.params, net.gradient(x.astype(np.float32), t))
    for name in source:
        assert np.array_equal(source[name], kept[name]), name


def test_the_books_layer_names():
    net = TwoLayerNet(4, 3, 2, activation="relu", seed=0)
    assert list(net.layers) == ["Affine1", "Relu1", "Affine2"] and net.lastLayer is net.last_layer
    mlp = MultiLayerNet(4, [3, 3], 2, activation="sigmoid", seed=0)
    # chapter 6's MultiLayerNet names its activations by position, whichever they are
    assert list(mlp.layers) == ["Affine1", "Activation_function1", "Affine2", "Activation_function2", "Affine3"]
