import re

import numpy as np
import pytest

import anynet
from anynet import networks
from anynet.backend import to_numpy
from anynet.functions import sigmoid
from anynet.networks import MultiLayerNet
from tests.helpers import assert_close


def test_chapter3_forward_seed_values(device):
    network = networks.init_network(device)
    x = device.asarray([1.0, 0.5])
    a1 = x @ network["W1"] + network["b1"]
    assert_close(a1, [0.3, 0.7, 1.1], device=device)
    assert_close(sigmoid(a1), [0.57444252, 0.66818777, 0.75026011], device=device)
    assert_close(networks.forward(network, x), [0.31682708, 0.69627909], device=device)


def test_chapter3_forward_on_a_batch_in_float64(device):
    if not device.supports_float64:
        with pytest.raises(ValueError, match="does not support float64"):
            networks.init_network(device, dtype="float64")
        return
    network = networks.init_network(device, dtype="float64")
    assert all(w.dtype == device.xp.float64 for w in network.values())
    y = networks.forward(network, device.asarray([[1.0, 0.5], [1.0, 0.5]], dtype="float64"))
    assert_close(y, [[0.31682708, 0.69627909]] * 2, device=device, dtype="float64", rtol=1e-7)


def test_input_on_another_device_is_a_clear_error(device):
    """A NumPy input against weights elsewhere (strict's device1 when the weights would be NumPy)."""
    weights_on = device if device.name != "cpu" else anynet.device("strict:device1")
    network = networks.init_network(weights_on)
    with pytest.raises(TypeError) as caught:
        networks.forward(network, np.array([1.0, 0.5], dtype=np.float32))
    message = str(caught.value)
    assert "numpy ndarray on device 'cpu'" in message
    assert f"on device {weights_on.name!r}" in message
    # the fix names the argument to move and the device to move it to (backend's device-mixing error)
    # the fix moves the NumPy input onto the weights' device, never the weights onto the input's
    assert (f"Move argument 0 onto argument 1's device {weights_on.name!r} first: "
            f"anynet.device({weights_on.name!r}).asarray(<argument 0>)") in message, message


def _three_layer_weights(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"W1": (6, 4), "b1": (4,), "W2": (4, 3), "b2": (3,), "W3": (3, 5), "b3": (5,)}
    return {name: rng.normal(0, 1, size=shape).astype(np.float32) for name, shape in shapes.items()}


def test_predict_is_sigmoid_sigmoid_softmax(device):
    weights = _three_layer_weights()
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)

    def sigmoid_(a):
        return 1 / (1 + np.exp(-a))

    logits = sigmoid_(sigmoid_(x @ weights["W1"] + weights["b1"]) @ weights["W2"] + weights["b2"]) @ weights["W3"]
    logits = logits + weights["b3"]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    network = {name: device.asarray(w) for name, w in weights.items()}
    assert_close(networks.predict(network, device.asarray(x)), expected, device=device, rtol=1e-5, atol=1e-7)
    # host input is moved onto the weights' device; one sample gives one row of probabilities
    assert_close(networks.predict(network, x), expected, device=device, rtol=1e-5, atol=1e-7)
    assert_close(networks.predict(network, x[0]), expected[0], device=device, rtol=1e-5, atol=1e-7)


def test_predict_names_a_feature_count_mismatch(device):
    network = {name: device.asarray(w) for name, w in _three_layer_weights().items()}
    with pytest.raises(ValueError, match=r"input has 5 features per sample, the network's W1 expects 6 .*\(N, 6\)"):
        networks.predict(network, device.asarray(np.zeros((2, 5), dtype=np.float32)))


def test_float64_input_on_the_device_is_computed_in_the_networks_dtype(device64):
    """Floating input of another precision is cast to the weights' dtype (PyTorch would refuse the product, NumPy
    would widen it, CuPy's kernels take one dtype), on the generic and the fast paths alike."""
    net = MultiLayerNet(20, [16], 5, seed=3, device=device64)
    x = np.random.default_rng(0).normal(size=(64, 20))
    labels = np.random.default_rng(1).integers(0, 5, size=64)
    x64 = device64.asarray(x, dtype="float64")
    scores = net.predict(x64)
    assert_close(scores, to_numpy(net.predict(x.astype(np.float32))), device=device64, rtol=1e-6, atol=1e-6)
    assert net.accuracy(x64, device64.asarray(labels)) == net.accuracy(x.astype(np.float32), labels)
    assert float(to_numpy(net.loss(x64, device64.asarray(labels)))) == pytest.approx(
        float(to_numpy(net.loss(x.astype(np.float32), labels))), rel=1e-6)


@pytest.mark.parametrize("decay", [float("nan"), float("inf"), -0.1, "heavy"])
def test_a_weight_decay_that_is_not_a_finite_number_at_least_0_is_refused(decay):
    """A NaN decay made every weight NaN, and the Trainer then blamed the learning rate."""
    with pytest.raises(ValueError, match=rf"^MultiLayerNet: weight_decay_lambda must be a finite number >= 0, got "
                                         rf"weight_decay_lambda={re.escape(repr(decay))} \(0: no weight decay\)$"):
        MultiLayerNet(4, [3], 2, weight_decay_lambda=decay)
    assert MultiLayerNet(4, [3], 2, weight_decay_lambda=0).weight_decay_lambda == 0.0


def _net_and_data(device, labels=None):
    net = MultiLayerNet(20, [16], 5, device=device, seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 20)).astype(np.float32)
    t = rng.integers(0, 5, size=8) if labels is None else np.array(labels)
    return net, device.asarray(x), device.asarray(t)


@pytest.mark.parametrize("bad, shown", [(-1, "from -1 to 4"), (5, "from 0 to 5"), (1000, "from 0 to 1000")])
def test_loss_gradient_and_accuracy_refuse_labels_outside_the_classes(device, bad, shown):
    """-1 was the last class, 5 and 1000 a raw IndexError (NumPy) or class 0 (torch); accuracy just counted them
    wrong. loss and gradient refuse them where checking is cheap; accuracy reads the range with its count anyway,
    so it refuses them on every device."""
    net, x, t = _net_and_data(device, [0, 1, 2, 3, 4, bad, 0, 4])
    message = rf"^labels must be class numbers 0\.\.4 for 5 classes, got labels {shown}$"
    before = {name: to_numpy(value).copy() for name, value in net.params.items()}
    with pytest.raises(ValueError, match=message):
        net.accuracy(x, t)
    if device.platform == "cuda":
        assert np.isnan(float(to_numpy(net.loss(x, t))))
        assert np.isnan(to_numpy(net.gradient(x, t)["W1"])).any()
        return
    with pytest.raises(ValueError, match=message):
        net.loss(x, t)
    with pytest.raises(ValueError, match=message):
        net.gradient(x, t)
    with pytest.raises(ValueError, match=message):
        net.loss(to_numpy(x), to_numpy(t))  # host labels, moved to the device first
    for name, value in before.items():
        np.testing.assert_array_equal(to_numpy(net.params[name]), value)


def test_loss_and_accuracy_refuse_float_labels_and_empty_batches(device):
    net, x, t = _net_and_data(device)
    floats = device.asarray(to_numpy(t).astype(np.float32) + 0.5)
    for method in (net.loss, net.gradient, net.accuracy):
        with pytest.raises(TypeError, match=r"^labels must be integers \(class numbers 0\.\.4\), got dtype"):
            method(x, floats)
    with pytest.raises(ValueError, match=r"^cannot compute the loss of an empty batch \(x of shape \(0, 20\)\): "
                                         r"pass at least one sample$"):
        net.loss(x[:0, ...], t[:0])
    with pytest.raises(ValueError, match=r"^cannot compute the accuracy of an empty batch \(x of shape \(0, 20\)\)"):
        net.accuracy(x[:0, ...], t[:0])
    with pytest.raises(ValueError, match=r"^cannot compute the loss of an empty batch"):
        net.gradient(x[:0, ...], t[:0])
    assert tuple(net.predict(device.asarray(np.zeros((0, 4, 5), dtype=np.float32))).shape) == (0, 5)
    # the checks leave good labels alone: integer labels and one-hot targets agree
    one_hot = device.asarray(np.eye(5, dtype=np.float32)[to_numpy(t)])
    assert net.accuracy(x, t) == net.accuracy(x, one_hot)
    assert float(to_numpy(net.loss(x, t))) == pytest.approx(float(to_numpy(net.loss(x, one_hot))), rel=1e-6)
