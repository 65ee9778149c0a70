"""CuPy's device rule, run where there is no second GPU.

CuPy puts every new array on its *current* GPU, whatever ``device=`` says (array-api-compat's CuPy creation functions
ignore it), so a network on ``cuda:1`` whose code creates an array outside ``with cupy.cuda.Device(1)`` gets it on
GPU 0. Here array-api-strict's ``device1`` is given that rule: its creation functions ignore ``device=`` and use a
current device that only ``Device.active()`` changes, and strict refuses to combine arrays of two devices, so any
array anynet creates without activating its device makes the test fail, as it would on a two-GPU machine.
"""

import contextlib
import types

import numpy as np
import pytest

import anynet
from anynet import backend
from anynet._libraries import LIBRARIES
from anynet.backend import device_of, to_numpy
from anynet.layers import SoftmaxWithLoss
from anynet.metrics import confusion_matrix
from anynet.networks import MultiLayerNet
from anynet.optimizers import make_optimizer
from anynet.trainer import Trainer
from tests.helpers import DEVICE_NAMES, problem

pytestmark = pytest.mark.skipif("strict:device1" not in DEVICE_NAMES, reason="needs array-api-strict's device1")

CREATION = ("arange", "empty", "eye", "full", "linspace", "ones", "zeros")
LIKE = ("empty_like", "full_like", "ones_like", "zeros_like")


@pytest.fixture
def device1(monkeypatch):
    """strict:device1 with CuPy's rule: new arrays go to the current device (strict's default unless activated)."""
    adapter = next(library for library in LIBRARIES if library.key == "strict")
    where = anynet.device("strict:device1")
    real = where.xp
    current = [real.asarray(0).device]

    def creation(function):
        return lambda *args, device=None, **kwargs: function(*args, device=current[-1], **kwargs)

    def like(function):
        return lambda x, /, *args, device=None, **kwargs: function(x, *args, device=current[-1], **kwargs)

    def asarray(obj, /, *, dtype=None, device=None, copy=None):
        if isinstance(obj, type(real.asarray(0))):  # CuPy: an array stays where it is, a copy goes to the current
            return obj if not copy else real.asarray(obj, dtype=dtype, copy=True, device=current[-1])
        return real.asarray(obj, dtype=dtype, copy=copy, device=current[-1])

    rule = types.ModuleType("strict_with_a_current_device")
    rule.__dict__.update({name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
    rule.__dict__.update({name: creation(getattr(real, name)) for name in CREATION})
    rule.__dict__.update({name: like(getattr(real, name)) for name in LIKE})
    rule.asarray = asarray

    @contextlib.contextmanager
    def activate(native):
        current.append(native)
        try:
            yield
        finally:
            current.pop()

    def from_host(host, xp, native):  # as the CuPy adapter does
        with activate(native):
            return xp.asarray(host)

    monkeypatch.setattr(adapter, "activate", activate)
    monkeypatch.setattr(adapter, "from_host", from_host)
    for name in ("strict", "strict:device1"):
        monkeypatch.setattr(anynet.device(name), "xp", rule)
    monkeypatch.setitem(backend._NAMESPACE_BY_TYPE, type(real.asarray(0)), rule)
    return where


def _all_on(arrays, where):
    assert {device_of(value).name for value in arrays} == {where.name}


def test_the_rule_is_in_force(device1):
    assert device_of(device1.xp.zeros(3, device=device1.native)).name == "strict"
    with device1.active():
        assert device_of(device1.xp.zeros(3)).name == "strict:device1"


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_a_network_and_its_optimizer_stay_on_their_device(device1, optimizer):
    x, labels, one_hot = problem(0)
    nets = [MultiLayerNet(20, [16, 12], 5, weight_decay_lambda=0.01, seed=3, device=name)
            for name in ("cpu", "strict:device1")]
    opts = [make_optimizer(optimizer, {"lr": 0.05}) for _ in nets]
    _all_on(nets[1].params.values(), device1)
    for k in range(3):
        rows = slice(16 * k, 16 * (k + 1))
        losses = []
        for net, opt in zip(nets, opts):
            xb, tb = net.device.asarray(x[rows]), net.device.asarray(labels[rows])
            opt.update(net.params, net.gradient(xb, tb))
            losses.append(float(to_numpy(net.last_loss)))
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    _all_on(nets[1].params.values(), device1)
    state = [value for slot in opts[1].state.values() for value in slot.values()]
    assert len(state) == len(nets[1].params) * len(opts[1].slots)
    if state:
        _all_on(state, device1)
    assert nets[1].accuracy(x, one_hot) == nets[0].accuracy(x, one_hot)
    assert nets[1].accuracy(device1.asarray(x), device1.asarray(labels)) == nets[0].accuracy(x, labels)
    np.testing.assert_allclose(to_numpy(nets[1].loss(x, one_hot)), to_numpy(nets[0].loss(x, one_hot)), rtol=1e-5)


def test_moving_and_loading_land_on_the_device(device1):
    net = MultiLayerNet(20, [16], 5, seed=3).to("strict:device1")
    _all_on(net.params.values(), device1)
    net.load_params({name: to_numpy(value) + 1 for name, value in net.params.items()})
    _all_on(net.params.values(), device1)
    opt = make_optimizer("adam", {"lr": 0.01})
    opt.load_state_dict({"iter": 2, "arrays": {"m/W1": np.zeros((20, 16), np.float32)}}, device1)
    _all_on(opt.state["m"].values(), device1)


def test_the_trainer_keeps_batches_and_state_on_the_device(device1):
    x, labels, _ = problem(1)
    histories = []
    for name in ("cpu", "strict:device1"):
        net = MultiLayerNet(20, [16], 5, seed=3)
        trainer = Trainer(net, x, labels, x, labels, epochs=2, mini_batch_size=16, optimizer="momentum",
                          optimizer_param={"lr": 0.05}, device=name, seed=0, verbose=False)
        histories.append(trainer.train())
        _all_on(net.params.values(), anynet.device(name))
    np.testing.assert_allclose(histories[1]["train_loss_list"], histories[0]["train_loss_list"], rtol=1e-5)
    assert histories[1]["final_test_accuracy"] == histories[0]["final_test_accuracy"]


def test_layers_and_metrics_that_make_arrays_make_them_on_their_inputs_device(device1):
    scores = device1.asarray(np.array([[2.0, 0.5, 0.1], [0.1, 0.2, 3.0]], np.float32))
    labels = device1.asarray(np.array([0, 1]))
    layer = SoftmaxWithLoss()
    layer.forward(scores, labels)
    dx = layer.backward()
    assert device_of(dx).name == "strict:device1"
    counts = confusion_matrix(labels, scores, 3)
    assert device_of(counts).name == "strict:device1"
    np.testing.assert_array_equal(to_numpy(counts), [[1, 0, 0], [0, 0, 1], [0, 0, 0]])
