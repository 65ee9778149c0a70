"""The Trainer with layered networks that have batch norm and dropout: MultiLayerNetExtend, a LayerNet built by hand
and a network written the book's way with anynet's layers. Train time and test time are the network's to choose
(gradient at train time, accuracy at test time); checkpoints hold the running statistics and dropout generators."""

import os
import re
from collections import OrderedDict

import numpy as np
import pytest

import anynet
from anynet.backend import host_generator
from anynet.io import load_checkpoint, read_metadata
from anynet.layers import Affine, BatchNormalization, Dropout, Relu, SoftmaxWithLoss
from anynet.networks import LayerNet, MultiLayerNetExtend
from anynet.trainer import Reporter, Trainer, epoch_order
from tests.helpers import blobs
from tests.test_trainer import _interrupt_after


@pytest.fixture(scope="module")
def data():
    x, t = blobs(7000)
    return x[:6000], t[:6000], x[6000:], t[6000:]


def _host_state(network):
    return {name: anynet.to_numpy(value) for name, value in network.state_arrays().items()}


def _assert_same_state(ours, theirs):
    ours, theirs = _host_state(ours), _host_state(theirs)
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        assert np.array_equal(ours[name], value), name


def test_an_interrupted_then_resumed_extend_run_ends_where_an_unbroken_one_does(device, data, tmp_path, monkeypatch):
    """Batch norm and dropout: the same losses, accuracies, weights, running statistics and dropout generator states
    as a run never interrupted, on every device."""

    def make(**options):
        net = MultiLayerNetExtend(784, [24, 16], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.15,
                                  device=device, seed=5)
        return net, Trainer(net, *data, epochs=3, mini_batch_size=200, optimizer="adam", optimizer_param={"lr": 0.01},
                            evaluate_sample_num_per_epoch=1000, seed=9, verbose=False, **options)

    net_a, straight = make()
    straight.train()

    checkpoint = tmp_path / "ckpt.npz"
    net_interrupted, first = make(checkpoint=checkpoint)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, steps=30 + 15)  # dies half-way through epoch 2, its masks and statistics moved on
        with pytest.raises(KeyboardInterrupt):
            first.train()
    saved = read_metadata(checkpoint)
    assert saved["epoch"] == 1 and len(saved["network_random_state"]) == 2  # one generator per Dropout layer
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]

    net_b, resumed = make(checkpoint=checkpoint, resume=checkpoint)
    assert resumed.current_epoch == 1
    resumed.train()
    _assert_same_state(net_b, net_a)
    assert net_b.random_state() == net_a.random_state()
    assert resumed.train_loss_list == straight.train_loss_list
    assert resumed.train_acc_list == straight.train_acc_list and resumed.test_acc_list == straight.test_acc_list
    assert resumed.final_test_accuracy == straight.final_test_accuracy > 0.9
    running_var = anynet.to_numpy(net_a.state_arrays()["running_var1"])
    assert float(running_var.min()) > 0  # trained statistics, not the initial zeros
    # what the checkpoint holds matters: the run interrupted in epoch 2 had moved both on past it
    assert net_interrupted.random_state() != net_a.random_state()


def test_accuracy_is_at_test_time_and_leaves_the_training_state_alone(data, capsys):
    """evaluate_sample_num_per_epoch scores that many samples of each set, at test time: no dropout draw, no running
    statistic updated, the same number as the network's own accuracy on them; verbose=False prints nothing."""
    n = 500
    seen = []

    class Check(Reporter):
        def epoch_end(self, trainer, epoch):
            network = trainer.network
            before, generators = _host_state(network), network.random_state()
            x, t = data[2][:n], data[3][:n]
            seen.append((trainer.test_acc_list[-1], network.accuracy(x, t), network.accuracy(x, t)))
            after = _host_state(network)
            assert network.random_state() == generators
            assert all(np.array_equal(after[name], value) for name, value in before.items())

    net = MultiLayerNetExtend(784, [16], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.3, seed=1)
    trainer = Trainer(net, *data, epochs=2, mini_batch_size=100, optimizer="adam", optimizer_param={"lr": 0.01},
                      evaluate_sample_num_per_epoch=n, verbose=False, seed=0, reporter=Check())
    history = trainer.train()
    assert capsys.readouterr() == ("", "")
    assert len(seen) == 2 and all(recorded == again == twice for recorded, again, twice in seen)
    assert all(round(accuracy * n) == accuracy * n for accuracy in history["test_acc_list"])  # of n samples
    assert history["final_test_accuracy"] == net.accuracy(data[2], data[3])  # the final one: every test sample


def test_verbose_prints_the_table_for_a_layered_network(data, capsys):
    net = MultiLayerNetExtend(784, [16], 10, use_batchnorm=True, seed=1)
    Trainer(net, *data, epochs=1, mini_batch_size=100, optimizer="adam", seed=0, verbose=True).train()
    out = capsys.readouterr().out
    assert out.startswith("training on cpu: 60 steps per epoch of 100, 1 epoch, Adam\n")
    assert "  1/1  " in out and "final test accuracy: " in out


def _hand_built(seed=0, running_statistics=True):
    """A LayerNet of anynet's layers: Affine - BatchNorm - Relu - Dropout - Affine."""
    rng = np.random.default_rng(seed)
    zeros, ones = np.zeros(32, np.float32), np.ones(32, np.float32)
    statistics = {"running_mean": zeros.copy(), "running_var": zeros.copy()} if running_statistics else {}
    return LayerNet([
        ("Affine1", Affine((0.05 * rng.standard_normal((784, 32))).astype(np.float32), zeros.copy())),
        ("BatchNorm1", BatchNormalization(ones.copy(), zeros.copy(), **statistics)),
        ("Relu1", Relu()),
        ("Dropout1", Dropout(0.2, seed=seed)),
        ("Affine2", Affine((0.05 * rng.standard_normal((32, 10))).astype(np.float32), np.zeros(10, np.float32))),
    ])


# without: a BatchNormalization built the book's way, whose running statistics are made at its first forward pass
@pytest.mark.parametrize("running_statistics", [True, False])
def test_a_hand_built_layer_net_trains_and_resumes_exactly(data, tmp_path, running_statistics):
    options = {"epochs": 2, "mini_batch_size": 200, "optimizer": "momentum", "optimizer_param": {"lr": 0.05},
               "seed": 2, "verbose": False}
    straight = _hand_built(running_statistics=running_statistics)
    history = Trainer(straight, *data, **options).train()
    assert history["final_test_accuracy"] > 0.9
    checkpoint = tmp_path / "ckpt.npz"
    first = _hand_built(running_statistics=running_statistics)
    Trainer(first, *data, checkpoint=checkpoint, **{**options, "epochs": 1}).train()
    resumed = _hand_built(running_statistics=running_statistics)
    Trainer(resumed, *data, resume=checkpoint, checkpoint=checkpoint, **options).train()
    _assert_same_state(resumed, straight)
    assert resumed.random_state() == straight.random_state()


class BookExtendNet:
    """The book's MultiLayerNetExtend (ch06/multi_layer_net_extend.py) cut to one hidden layer, written the book's
    way (its own params, layers and gradient; no LayerNet) with anynet's layers."""

    def __init__(self, params, dropout_ratio):
        self.params = params
        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["BatchNorm1"] = BatchNormalization(self.params["gamma1"], self.params["beta1"])
        self.layers["Activation_function1"] = Relu()
        self.layers["Dropout1"] = Dropout(dropout_ratio)
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.last_layer = SoftmaxWithLoss()

    def predict(self, x, train_flg=False):
        for key, layer in self.layers.items():
            if "Dropout" in key or "BatchNorm" in key:  # noqa: SIM108 - as the book writes it
                x = layer.forward(x, train_flg)
            else:
                x = layer.forward(x)
        return x

    def loss(self, x, t, train_flg=False):
        return self.last_layer.forward(self.predict(x, train_flg), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x, train_flg=False), axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "gamma1": self.layers["BatchNorm1"].dgamma, "beta1": self.layers["BatchNorm1"].dbeta,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


def test_a_book_style_network_with_batch_norm_and_dropout_trains_like_multilayernetextend(data):
    ours = MultiLayerNetExtend(784, [32], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.15, seed=3)
    book = BookExtendNet({name: anynet.to_numpy(value).copy() for name, value in ours.params.items()}, 0.15)
    # the same masks: the book's Dropout draws from the generator state ours starts with
    book.layers["Dropout1"].generator.bit_generator.state = ours.random_state()[0]
    assert not hasattr(book, "fused_step") and not hasattr(book, "state_arrays")
    options = {"epochs": 2, "mini_batch_size": 100, "optimizer": "adam", "optimizer_param": {"lr": 0.005}, "seed": 1,
               "verbose": False}
    ours_history = Trainer(ours, *data, **options).train()
    history = Trainer(book, *data, **options).train()
    assert history["test_acc_list"][-1] > 0.9 and len(history["train_loss_list"]) == 120
    for name, value in ours.params.items():
        np.testing.assert_allclose(book.params[name], anynet.to_numpy(value), rtol=1e-5, atol=1e-6, err_msg=name)
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(book.layers["BatchNorm1"], name),
                                   anynet.to_numpy(ours.state_arrays()[f"{name}1"]), rtol=1e-5, atol=1e-6)
    assert history["test_acc_list"] == pytest.approx(ours_history["test_acc_list"], abs=2e-3)
    # the book's Trainer measures each step's loss after the update, at test time (the book's loss() default)
    rng = host_generator(1)
    epoch_order(rng, 6000, 100, "shuffle")
    last = epoch_order(rng, 6000, 100, "shuffle")[-100:]
    assert history["train_loss_list"][-1] == pytest.approx(float(book.loss(data[0][last], data[1][last])), rel=1e-6)


def test_a_book_style_network_resumes_exactly_with_its_layers_statistics_and_masks(data, tmp_path):
    """A network written the book's way has no state_arrays(): its checkpoint still holds its BatchNorm's running
    statistics (named as LayerNet names them) and its Dropout's generator, and a resumed run ends where an unbroken
    one does."""
    template = MultiLayerNetExtend(784, [32], 10, use_batchnorm=True, use_dropout=True, dropout_ration=0.15, seed=3)

    def book_net():
        book = BookExtendNet({name: anynet.to_numpy(value).copy() for name, value in template.params.items()}, 0.15)
        book.layers["Dropout1"].generator.bit_generator.state = template.random_state()[0]
        return book

    options = {"epochs": 2, "mini_batch_size": 200, "optimizer": "adam", "optimizer_param": {"lr": 0.005}, "seed": 1,
               "verbose": False}
    straight = book_net()
    Trainer(straight, *data, **options).train()
    checkpoint = tmp_path / "ckpt.npz"
    Trainer(book_net(), *data, checkpoint=checkpoint, **{**options, "epochs": 1}).train()
    saved, _ = load_checkpoint(checkpoint)
    assert {"running_mean1", "running_var1"} <= set(saved["params"])
    resumed = book_net()
    Trainer(resumed, *data, resume=checkpoint, **options).train()
    for name, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[name], value, err_msg=name)
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(getattr(resumed.layers["BatchNorm1"], name),
                                      getattr(straight.layers["BatchNorm1"], name), err_msg=name)
    assert resumed.layers["Dropout1"].generator.bit_generator.state == \
        straight.layers["Dropout1"].generator.bit_generator.state


def test_running_statistics_that_overflow_stop_the_run_by_name_and_are_never_checkpointed(tmp_path):
    """Inputs near 1e20 (finite in float32) square to infinity in a batch norm's variance, while its normalized
    output and so the loss stay finite: without a check, training would go on and every test-time prediction would
    be the same class. The run stops at the end of the epoch, naming the statistics; the checkpoint is not written."""
    from anynet.trainer import TrainingDivergedError

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(300, 4)) * 1e20).astype(np.float32)
    t = rng.integers(0, 2, size=300)
    net = MultiLayerNetExtend(4, [3], 2, use_batchnorm=True, seed=0)
    checkpoint = tmp_path / "ckpt.npz"
    trainer = Trainer(net, x, t, x, t, epochs=2, mini_batch_size=100, seed=0, verbose=False, checkpoint=checkpoint)
    with pytest.raises(TrainingDivergedError) as caught:
        trainer.train()
    assert re.fullmatch(
        r"the running statistics running_var1 became non-finite \(NaN or infinity\) during epoch 1 while the losses "
        r"stayed finite \(the last was 0\.69\d+\): a batch norm layer's input grew too large for its variance to be "
        r"held in float32\. Check the scale of the data and of the initial weights, then the learning rate \(SGD "
        r"lr=0\.01\)", str(caught.value))
    assert caught.value.epoch == 1 and caught.value.step == 3
    assert trainer.current_epoch == 0 and list(tmp_path.iterdir()) == []
