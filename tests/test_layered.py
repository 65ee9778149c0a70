"""LayerNet and the networks built on it (TwoLayerNet, MultiLayerNet, MultiLayerNetExtend): backprop against the
numerical gradient and torch autograd, one loss curve per seed on every device, and the book's API (names,
train_flg, params, devices, files)."""

import functools

import numpy as np
import pytest

import anynet
from anynet.backend import namespace, to_numpy
from anynet.layers import Affine, BatchNormalization, Dropout, Relu, Sigmoid
from anynet.networks import LayerNet, MultiLayerNet, MultiLayerNetExtend, TwoLayerNet
from anynet.optimizers import SGD, Adam
from tests.helpers import DEVICE_NAMES, assert_close, problem

FEATURES, CLASSES = 5, 3


def _batch(n=8, features=FEATURES, classes=CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)), rng.integers(0, classes, size=n)


def _host(shape, seed, scale=1.0):
    return scale * np.random.default_rng(seed).normal(size=shape)


class BookAffine:
    """The book's common/layers.py Affine as a reader writes it: no param_names, W and b, dW and db."""

    def __init__(self, W, b):
        self.W, self.b = W, b
        self.x = self.dW = self.db = None

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout):
        self.dW = self.x.T @ dout
        self.db = namespace(dout).sum(dout, axis=0)
        return dout @ self.W.T


class BookScale:
    """A book-style layer holding only a W (an elementwise scale): it takes W1, the next W-holder W2."""

    def __init__(self, W):
        self.W = W
        self.x = self.dW = None

    def forward(self, x):
        self.x = x
        return x * self.W

    def backward(self, dout):
        self.dW = namespace(dout).sum(dout * self.x, axis=0)
        return dout * self.W


def _custom_stack(where, dtype="float64", seed=0):
    """Scale - BookAffine - BatchNorm - Sigmoid - Dropout - Affine - Relu - Affine, weight decay 0.01."""
    xp, native = where.xp, where.native

    def array(shape, index, scale=0.7):
        return where.asarray(_host(shape, seed + index, scale), dtype=dtype)

    layers = [
        ("Scale", BookScale(array((FEATURES,), 1, 1.0))),
        ("BookAffine", BookAffine(array((FEATURES, 5), 2), array((5,), 3, 0.1))),
        ("BatchNorm", BatchNormalization(array((5,), 4, 1.0), array((5,), 5, 0.3))),
        ("Sigmoid", Sigmoid()),
        ("Dropout", Dropout(0.3, seed=seed)),
        ("Affine2", Affine(array((5, 4), 6), array((4,), 7, 0.1))),
        ("Relu", Relu()),
        ("Affine3", Affine(array((4, CLASSES), 8), xp.zeros((CLASSES,), dtype=where.dtype(dtype), device=native))),
    ]
    return LayerNet(layers, weight_decay_lambda=0.01)


NETWORKS = {
    "custom-stack": lambda d: _custom_stack(d),
    "two-layer": lambda d: TwoLayerNet(FEATURES, 5, CLASSES, weight_init_std=0.5, activation="relu", device=d,
                                       dtype="float64", seed=1),
    "multi-layer": lambda d: MultiLayerNet(FEATURES, [5, 4], CLASSES, activation="sigmoid", weight_decay_lambda=0.1,
                                           device=d, dtype="float64", seed=2),
    "extend-batchnorm": lambda d: MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_batchnorm=True, device=d,
                                                      dtype="float64", seed=3),
    "extend-dropout": lambda d: MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_dropout=True, dropout_ration=0.3,
                                                    device=d, dtype="float64", seed=4),
    "extend-both-decay": lambda d: MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_batchnorm=True,
                                                       use_dropout=True, dropout_ration=0.2, weight_decay_lambda=0.1,
                                                       device=d, dtype="float64", seed=5),
}


def _network_error(backprop, numeric):
    """max |backprop - numerical| over every parameter, relative to the largest numerical gradient of the whole
    network: a bias before batch norm has a true gradient of 0, whose per-parameter relative error is noise."""
    scale = max(float(np.abs(to_numpy(value)).max()) for value in numeric.values())
    return {name: float(np.abs(to_numpy(backprop[name]) - to_numpy(numeric[name])).max()) / scale
            for name in numeric}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_backprop_equals_the_numerical_gradient(device64, name):
    net = NETWORKS[name](device64)
    for index, bias in enumerate(key for key in net.params if key.startswith("b")):
        # biases of 0 put a Relu exactly at its kink for a sample whose inputs are all dropped (the numerical
        # gradient there is half the slope): random ones keep them away from it
        net.params[bias] = device64.asarray(_host(net.params[bias].shape, 20 + index, 0.1), dtype="float64")
    x, t = _batch()
    with net.frozen_dropout():
        backprop = net.gradient(x, t)
        numeric = net.numerical_gradient(x, t)
    assert set(backprop) == set(numeric) == set(net.params)
    for value in backprop.values():
        assert anynet.device_of(value) == device64 and value.dtype == device64.dtype("float64")
    errors = _network_error(backprop, numeric)
    assert max(errors.values()) < 1e-6, errors
    if any(isinstance(layer, Dropout) for layer in net.layers.values()):  # the masks were really frozen
        assert 0 < float(to_numpy(net.layers[next(k for k in net.layers if "Dropout" in k)].mask).mean()) < 1


def test_the_books_batch_norm_gradient_check_through_the_network(device64):
    """ch06/batch_norm_gradient_check.py: MultiLayerNetExtend(784, [100, 100], 10, use_batchnorm=True), here
    smaller; the book prints the mean |difference| per parameter, which is tiny for every one of them."""
    net = MultiLayerNetExtend(FEATURES, [4, 4], CLASSES, use_batchnorm=True, device=device64, dtype="float64",
                              seed=6)
    x, t = _batch(n=4, seed=1)
    backprop, numeric = net.gradient(x, t), net.numerical_gradient(x, t)
    for name in ("W1", "gamma1", "beta1", "gamma2", "beta2", "W3", "b3"):
        assert np.abs(to_numpy(backprop[name]) - to_numpy(numeric[name])).mean() < 1e-8, name
    # the biases feeding batch norm: both gradients are 0 up to rounding
    for name in ("b1", "b2"):
        assert np.abs(to_numpy(backprop[name])).max() < 1e-12 and np.abs(to_numpy(numeric[name])).max() < 1e-8


def _torch_extend_loss(torch, net, x, t):
    """MultiLayerNetExtend built in torch from the same weights, with the masks its Dropout layers last used."""
    functional = torch.nn.functional
    weights = {name: torch.tensor(to_numpy(value), requires_grad=True) for name, value in net.params.items()}
    h = torch.tensor(x)
    for index in range(1, net.depth + 1):
        h = h @ weights[f"W{index}"] + weights[f"b{index}"]
        if index == net.depth:
            break
        if net.use_batchnorm:
            h = functional.batch_norm(h, None, None, weights[f"gamma{index}"], weights[f"beta{index}"],
                                      training=True, eps=1e-6)
        h = torch.relu(h)
        if net.use_dropout:
            h = h * torch.tensor(to_numpy(net.layers[f"Dropout{index}"].mask))
    loss = functional.cross_entropy(h, torch.tensor(t))
    loss = loss + 0.5 * net.weight_decay_lambda * sum((weights[f"W{i}"] ** 2).sum() for i in range(1, net.depth + 1))
    loss.backward()
    return loss, weights


@pytest.mark.parametrize("batchnorm, dropout, decay", [(True, False, 0.0), (False, True, 0.0), (True, True, 0.05)],
                         ids=["batchnorm", "dropout", "both-decay"])
def test_extend_backprop_equals_torch_autograd(batchnorm, dropout, decay):
    torch = pytest.importorskip("torch")
    net = MultiLayerNetExtend(10, [7, 6], 4, use_batchnorm=batchnorm, use_dropout=dropout, dropout_ration=0.3,
                              weight_decay_lambda=decay, dtype="float64", seed=7)
    x, t = _batch(n=9, features=10, classes=4, seed=2)
    grads = net.gradient(x, t)
    loss, weights = _torch_extend_loss(torch, net, x, t)
    assert float(net.last_loss) == pytest.approx(loss.item(), rel=1e-12)
    for name, tensor in weights.items():
        np.testing.assert_allclose(grads[name], tensor.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


# -- one loss curve per seed ------------------------------------------------------------------------------------

CURVE_STEPS = 300


# The devices the curve is compared on (against NumPy's): array-api-strict's device1 and PyTorch, where usable.
CURVE_RUNS = [(name, optimizer) for name in ("strict:device1", "torch:cpu") if name in DEVICE_NAMES
              for optimizer in ("sgd", "adam")]


@functools.cache
def _loss_curve(device_name, optimizer_name):
    """300 steps of MultiLayerNetExtend with batch norm and dropout on mini-batches of 16 from 64 samples; its
    losses, read once at the end."""
    where = anynet.device(device_name)
    net = MultiLayerNetExtend(20, [16, 16], 5, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
                              device=where, seed=11)
    optimizer = SGD(lr=0.05) if optimizer_name == "sgd" else Adam(lr=0.002)
    x_host, labels, _ = problem(3, classes=5, n=64, features=20)
    x, t = where.asarray(x_host), where.asarray(labels)
    order = np.random.default_rng(12).integers(0, 64, size=(CURVE_STEPS, 16))
    losses = []
    for indices in order:
        batch = where.asarray(indices)
        grads = net.gradient(where.xp.take(x, batch, axis=0), where.xp.take(t, batch, axis=0))
        optimizer.update(net.params, grads)
        losses.append(net.last_loss)
    return to_numpy(where.xp.stack(losses)).astype(np.float64)


@pytest.mark.parametrize("device_name, optimizer_name", CURVE_RUNS, ids=[f"{d}-{o}" for d, o in CURVE_RUNS])
def test_the_same_seed_gives_the_same_loss_curve_on_every_device(device_name, optimizer_name):
    reference = _loss_curve("cpu", optimizer_name)
    assert reference[-20:].mean() < 0.75 * reference[:20].mean()  # it learns: the curve is worth comparing
    np.testing.assert_allclose(_loss_curve(device_name, optimizer_name), reference, rtol=1e-4)


# -- the book's API ---------------------------------------------------------------------------------------------


def test_a_book_style_layer_gets_the_books_parameter_names(device64):
    net = _custom_stack(device64)
    layers = net.layers
    assert set(net.params) == {"W1", "W2", "b1", "gamma1", "beta1", "W3", "b2", "W4", "b3"}
    assert net.params["W1"] is layers["Scale"].W and net.params["W2"] is layers["BookAffine"].W
    assert net.params["b1"] is layers["BookAffine"].b  # the first layer holding a b
    assert net.params["gamma1"] is layers["BatchNorm"].gamma and net.params["W4"] is layers["Affine3"].W
    assert set(net.buffers) == {"running_mean1", "running_var1"}
    x, t = _batch()
    grads = net.gradient(x, t)  # d<name> of a book-style layer is its gradient
    assert_close(grads["W1"], to_numpy(layers["Scale"].dW) + 0.01 * to_numpy(net.params["W1"]), device=device64,
                 dtype="float64", rtol=1e-15)
    assert_close(grads["b1"], to_numpy(layers["BookAffine"].db), device=device64, dtype="float64", rtol=0)


class FlagRecorder:
    """A layer whose forward takes train_flg, recording what it was given."""

    def __init__(self):
        self.flags = []

    def forward(self, x, train_flg=True):
        self.flags.append(train_flg)
        return x

    def backward(self, dout):
        return dout


class Doubler:
    """A layer whose forward takes no train_flg: passing one would raise TypeError."""

    def forward(self, x):
        return 2 * x

    def backward(self, dout):
        return 2 * dout


def test_predict_passes_train_flg_only_to_layers_that_take_it(device):
    W = device.asarray(np.eye(3), dtype="float32")
    recorder = FlagRecorder()
    b = device.asarray(np.zeros(3), dtype="float32")
    net = LayerNet([("Double", Doubler()), ("Record", recorder), ("Affine", Affine(W, b))])
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    assert_close(net.predict(x), [[2.0, 4.0, 6.0]], device=device, rtol=0)
    net.predict(x, train_flg=True)
    net.loss(x, np.array([0]), train_flg=True)
    net.gradient(x, np.array([0]))
    net.accuracy(x, np.array([2]))
    assert recorder.flags == [False, True, True, True, False]


def test_params_replaced_entry_by_entry_are_seen_by_the_next_forward(device):
    net = TwoLayerNet(4, 3, 2, activation="relu", device=device, seed=0)
    x = _host((5, 4), seed=1).astype(np.float32)
    new = {"W1": _host((4, 3), 2), "b1": _host((3,), 3), "W2": _host((3, 2), 4), "b2": _host((2,), 5)}
    new = {name: value.astype(np.float32) for name, value in new.items()}
    for name, value in new.items():  # the book's load_params: one entry at a time
        net.params[name] = device.asarray(value)
    expected = np.maximum(x @ new["W1"] + new["b1"], 0) @ new["W2"] + new["b2"]
    assert_close(net.predict(x), expected, device=device, rtol=1e-5, atol=1e-6)
    assert net.layers["Affine1"].W is net.params["W1"]


def _trained_extend(where, steps=3, seed=8):
    net = MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
                              device=where, seed=seed)
    optimizer = SGD(lr=0.1)
    for step in range(steps):
        x, t = _batch(n=10, seed=step)
        optimizer.update(net.params, net.gradient(x.astype(np.float32), t))
    return net


def test_to_moves_the_running_statistics_too(device):
    net = _trained_extend("cpu")
    x = _host((7, FEATURES), seed=9).astype(np.float32)
    before = to_numpy(net.predict(x))
    stats = {name: to_numpy(value) for name, value in net.buffers.items()}
    assert all(np.abs(value).max() > 0 for value in stats.values())  # trained: not the zeros they start at
    assert net.to(device) is net
    assert set(net.buffers) == {"running_mean1", "running_var1", "running_mean2", "running_var2"}
    for name, value in net.buffers.items():
        assert_close(value, stats[name], device=device, rtol=0)
        layer = net.layers[f"BatchNorm{name[-1]}"]
        assert getattr(layer, name[:-1]) is value
    assert_close(net.predict(x), before, device=device, rtol=1e-5, atol=1e-6)
    net.gradient(x, np.arange(7) % CLASSES)  # a training step on the new device keeps them there
    for value in net.buffers.values():
        assert anynet.device_of(value) == device


def test_save_and_load_params_round_trip_bit_for_bit(device, tmp_path):
    net = _trained_extend(device)
    path = tmp_path / "extend.npz"
    net.save_params(path)
    with np.load(path) as saved:
        assert {"W1", "gamma2", "running_mean1", "running_var2"} <= set(saved.files)
        np.testing.assert_array_equal(saved["running_var2"], to_numpy(net.buffers["running_var2"]))
    other = MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_batchnorm=True, use_dropout=True, dropout_ration=0.2,
                                device=device, seed=99)
    x = _host((6, FEATURES), seed=10).astype(np.float32)
    assert not np.array_equal(to_numpy(other.predict(x)), to_numpy(net.predict(x)))
    assert other.load_params(str(path)) is other
    np.testing.assert_array_equal(to_numpy(other.predict(x)), to_numpy(net.predict(x)))
    for name, value in net.state_arrays().items():
        assert_close(other.state_arrays()[name], to_numpy(value), device=device, rtol=0)


def test_a_fresh_custom_stack_loads_the_running_statistics_it_has_not_made_yet(device, tmp_path):
    """Its BatchNormalization is built the book's way, without running statistics (made at the first forward
    pass): a saved network's are taken all the same."""
    dtype = "float64" if device.supports_float64 else "float32"
    net = _custom_stack(device, dtype)
    x, t = _batch()
    net.gradient(x, t)
    net.save_params(tmp_path / "custom.npz")
    fresh = _custom_stack(device, dtype, seed=5)
    assert fresh.buffers == {"running_mean1": None, "running_var1": None}
    fresh.load_params(tmp_path / "custom.npz")
    for name, value in net.buffers.items():
        assert_close(fresh.buffers[name], to_numpy(value), device=device, dtype=dtype, rtol=0)
    np.testing.assert_array_equal(to_numpy(fresh.predict(x)), to_numpy(net.predict(x)))


def test_load_params_without_the_running_statistics_names_them():
    net = _trained_extend("cpu")
    with pytest.raises(ValueError, match=r"\(no running_mean1, running_var1, running_mean2, running_var2: the running "
                                         r"statistics are saved with the parameters by save_params\)"):
        net.load_params(dict(net.params))


def test_fused_step_only_for_a_plain_affine_stack():
    plain = MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, seed=0)
    assert plain.fused_step(SGD(lr=0.1)) is not None
    for options in ({"use_batchnorm": True}, {"use_dropout": True}, {"use_batchnorm": True, "use_dropout": True}):
        net = MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, seed=0, **options)
        assert net.fused_step(SGD(lr=0.1)) is None, options
    single = MultiLayerNetExtend(FEATURES, [5], CLASSES, use_dropout=True, seed=0)  # Affine, Relu, Dropout, Affine
    assert single.fused_step(SGD(lr=0.1)) is None


def test_numerical_gradient_leaves_the_running_statistics_and_dropout_as_they_were():
    net = MultiLayerNetExtend(FEATURES, [4], CLASSES, use_batchnorm=True, use_dropout=True, dtype="float64", seed=1)
    x, t = _batch()
    net.gradient(x, t)
    stats = {name: to_numpy(value).copy() for name, value in net.buffers.items()}
    net.numerical_gradient(x, t)
    for name, value in net.buffers.items():
        np.testing.assert_array_equal(to_numpy(value), stats[name], err_msg=name)
    assert not net.layers["Dropout1"].frozen
    net.gradient(x, t)  # while a training step does move them
    assert not np.array_equal(to_numpy(net.buffers["running_mean1"]), stats["running_mean1"])


def test_the_books_layer_and_parameter_names():
    net = MultiLayerNetExtend(4, [3, 3], 2, use_batchnorm=True, use_dropout=True, seed=0)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3"]
    shapes = {name: tuple(value.shape) for name, value in net.params.items()}
    assert shapes == {"W1": (4, 3), "b1": (3,), "gamma1": (3,), "beta1": (3,), "W2": (3, 3), "b2": (3,),
                      "gamma2": (3,), "beta2": (3,), "W3": (3, 2), "b3": (2,)}
    assert list(net.buffers) == ["running_mean1", "running_var1", "running_mean2", "running_var2"]
    assert isinstance(net.layers["Activation_function1"], Relu)
    assert net.layers["Dropout2"].dropout_ratio == 0.5  # the book's default dropout_ration
    plain = MultiLayerNetExtend(4, [3], 2, activation="sigmoid", seed=0)
    assert list(plain.layers) == ["Affine1", "Activation_function1", "Affine2"]
    assert isinstance(plain.layers["Activation_function1"], Sigmoid)
    # the same seed gives MultiLayerNet's weights
    reference = MultiLayerNet(4, [3, 3], 2, seed=0)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(net.params[name], value, err_msg=name)


def test_frozen_dropout_reuses_the_masks_and_nests():
    net = MultiLayerNetExtend(FEATURES, [5], CLASSES, use_dropout=True, seed=2)
    x = _host((4, FEATURES), seed=3).astype(np.float32)
    with net.frozen_dropout():
        first = to_numpy(net.predict(x, train_flg=True))
        with net.frozen_dropout():
            inner = to_numpy(net.predict(x, train_flg=True))
        again = to_numpy(net.predict(x, train_flg=True))
    np.testing.assert_array_equal(inner, first)
    np.testing.assert_array_equal(again, first)
    assert not net.layers["Dropout1"].frozen
    assert not np.array_equal(to_numpy(net.predict(x, train_flg=True)), first)
    # test time never drops: the same scores every time, scaled by 1 - ratio
    np.testing.assert_array_equal(to_numpy(net.predict(x)), to_numpy(net.predict(x)))


def test_random_state_restores_the_dropout_masks():
    net = MultiLayerNetExtend(FEATURES, [5, 4], CLASSES, use_dropout=True, seed=4)
    x, t = _batch()
    state = net.random_state()
    assert len(state) == 2
    first = float(net.loss(x.astype(np.float32), t, train_flg=True))
    second = float(net.loss(x.astype(np.float32), t, train_flg=True))
    net.set_random_state(state)
    assert float(net.loss(x.astype(np.float32), t, train_flg=True)) == first != second
    with pytest.raises(ValueError, match="1 dropout generator states for 2 Dropout layers"):
        net.set_random_state(state[:1])


def test_the_books_gradient_check_order_compares_like_with_like_with_dropout(device64):
    """ch05/gradient_check.py calls numerical_gradient, then gradient: the generators are put back after the first,
    so the second draws the same masks, and a later step the masks it would have drawn without the check."""
    net = NETWORKS["extend-both-decay"](device64)
    twin = NETWORKS["extend-both-decay"](device64)
    for index, bias in enumerate(key for key in net.params if key.startswith("b")):  # off Relu's kink, as above
        net.params[bias] = device64.asarray(_host(net.params[bias].shape, 20 + index, 0.1), dtype="float64")
        twin.params[bias] = device64.asarray(_host(net.params[bias].shape, 20 + index, 0.1), dtype="float64")
    x, t = _batch()
    numeric = net.numerical_gradient(x, t)
    backprop = net.gradient(x, t)
    assert max(_network_error(backprop, numeric).values()) < 1e-6
    twin.gradient(x, t)  # the twin never ran a check: its first and second steps draw what net's do
    twin.gradient(x, t)
    net.gradient(x, t)
    for name, layer in net.layers.items():
        if isinstance(layer, Dropout):
            np.testing.assert_array_equal(to_numpy(layer.mask), to_numpy(twin.layers[name].mask), err_msg=name)


def test_a_stack_without_parameters_is_refused_by_name():
    with pytest.raises(ValueError, match=r"none of the layers Relu1, Dropout1 holds parameters"):
        LayerNet({"Relu1": Relu(), "Dropout1": Dropout(0.5)})
