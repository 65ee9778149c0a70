"""The Trainer: the same batches on every device, history, checkpoints and resume, and its errors."""

import os

import numpy as np
import pytest

import anynet
from anynet import Device
from anynet.io import read_metadata
from anynet.networks import MultiLayerNet, TwoLayerNet
from anynet.trainer import ConsoleReporter, Reporter, Trainer, TrainingDivergedError
from tests.helpers import DEVICE_NAMES, FAST_DEVICES, blobs

# Only where a fused fast path exists does fast_path=True run other code than fast_path=False: only there are both run.
DEVICE_AND_FAST_PATH = [
    pytest.param(name, fast_path, id=f"{name}-{'fast-path' if fast_path else 'generic'}")
    for name in DEVICE_NAMES
    for fast_path in ((True, False) if name in FAST_DEVICES else (False,))
]


@pytest.fixture(scope="module")
def data():
    x, t = blobs(7000)
    return x[:6000], t[:6000], x[6000:], t[6000:]


@pytest.mark.parametrize("sampling", ["replacement", "shuffle"])
def test_the_same_seed_gives_the_same_loss_on_numpy_strict_and_torch(data, sampling):
    """600 steps of the book's chapter-4 setting (784-50-10 sigmoid, SGD 0.1, batch 10 of 6000 samples)."""
    names = [n for n in ("cpu", "strict:device1", "torch:cpu") if n in DEVICE_NAMES]
    if len(names) < 2:
        pytest.skip("needs two of numpy, strict:device1, torch:cpu")
    finals = {}
    for name in names:
        net = TwoLayerNet(784, 50, 10, device=name, seed=0)
        trainer = Trainer(net, *data, epochs=1, mini_batch_size=10, optimizer="sgd", optimizer_param={"lr": 0.1},
                          seed=1, sampling=sampling, verbose=False)
        trainer.train()
        assert len(trainer.train_loss_list) == 600
        finals[name] = trainer.train_loss_list
    reference = finals["cpu"]
    assert reference[-1] < 0.5 * reference[0], "the loss did not fall: nothing was learnt"
    for name, losses in finals.items():
        assert losses[-1] == pytest.approx(reference[-1], rel=1e-4), name
        np.testing.assert_allclose(losses, reference, rtol=1e-4, err_msg=name)


def test_history_and_accuracy(device, data, capsys):
    net = MultiLayerNet(784, [32], 10, device=device, seed=0)
    trainer = Trainer(net, *data, epochs=2, mini_batch_size=100, optimizer="adam", optimizer_param={"lr": 0.01},
                      seed=0, evaluate_sample_num_per_epoch=500)
    history = trainer.train()
    assert trainer.iter_per_epoch == 60 and len(history["train_loss_list"]) == 120
    assert len(history["train_acc_list"]) == len(history["test_acc_list"]) == 2
    assert history["test_acc_list"][-1] > 0.9  # the blobs are separable
    assert history["final_test_accuracy"] == net.accuracy(data[2], data[3])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"training on {device.name}: 60 steps per epoch of 100, 2 epochs, Adam"
    assert out[1].split() == ["epoch", "loss", "train", "acc", "test", "acc", "seconds"]
    assert out[2].split()[0] == "1/2" and out[3].split()[0] == "2/2"
    assert float(out[3].split()[3]) == pytest.approx(history["test_acc_list"][-1], abs=1e-4)
    assert out[-1] == f"final test accuracy: {history['final_test_accuracy']:.4f}"


def test_replacement_sampling_counts_steps_like_the_book(data):
    trainer = Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, mini_batch_size=64, sampling="replacement",
                      verbose=False)
    assert trainer.iter_per_epoch == 6000 // 64
    shuffled = Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, mini_batch_size=64, verbose=False)
    assert shuffled.iter_per_epoch == -(-6000 // 64)  # every sample once, the last batch smaller


def test_data_too_big_for_the_device_goes_batch_by_batch(data, monkeypatch):
    def run():
        trainer = Trainer(TwoLayerNet(784, 16, 10, seed=0), *data, epochs=1, mini_batch_size=50, seed=3,
                          optimizer="momentum", verbose=False)
        trainer.train()
        return trainer

    resident = run()
    monkeypatch.setattr(Device, "free_memory", lambda self: 1000)  # a "GPU" with 1000 bytes free
    streamed = run()
    assert resident.resident and not streamed.resident
    assert streamed.train_loss_list == resident.train_loss_list
    assert streamed.train_acc_list == resident.train_acc_list and streamed.test_acc_list == resident.test_acc_list


def _interrupt_after(monkeypatch, steps):
    """Stop training with a KeyboardInterrupt after ``steps`` steps, as Ctrl-C would."""
    import anynet.trainer

    class Bar:
        count = 0

        def __init__(self, *args, **options):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            Bar.count += n
            if Bar.count >= steps:
                raise KeyboardInterrupt

        def set_postfix_str(self, text):
            pass

    monkeypatch.setattr(anynet.trainer, "progress_bar", Bar)


@pytest.mark.parametrize("device_name, fast_path", DEVICE_AND_FAST_PATH)
@pytest.mark.parametrize("optimizer", ["adam", "momentum", "sgd"])
def test_an_interrupted_then_resumed_run_ends_where_an_uninterrupted_one_does(device_name, fast_path, data, tmp_path,
                                                                              monkeypatch, optimizer):
    device = anynet.device(device_name)

    def make(**options):
        net = MultiLayerNet(784, [16], 10, device=device, seed=5)
        return net, Trainer(net, *data, epochs=3, mini_batch_size=200, optimizer=optimizer,
                            optimizer_param={"lr": 0.01}, seed=9, verbose=False, fast_path=fast_path, **options)

    net_a, straight = make()
    straight.train()

    checkpoint = tmp_path / "ckpt.npz"
    _, first = make(checkpoint=checkpoint)
    with monkeypatch.context() as patch:
        _interrupt_after(patch, steps=30 + 15)  # dies half-way through epoch 2
        with pytest.raises(KeyboardInterrupt):
            first.train()
    assert read_metadata(checkpoint)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "a temporary file was left behind"

    net_b, resumed = make(checkpoint=checkpoint, resume=checkpoint)
    assert resumed.current_epoch == 1
    resumed.train()
    for name, value in net_a.params.items():
        assert np.array_equal(anynet.to_numpy(net_b.params[name]), anynet.to_numpy(value)), name
    assert resumed.train_loss_list == straight.train_loss_list
    assert resumed.test_acc_list == straight.test_acc_list
    assert read_metadata(checkpoint)["epoch"] == 3


def test_resume_refuses_a_checkpoint_of_another_run(data, tmp_path):
    checkpoint = tmp_path / "ckpt.npz"
    Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, optimizer="adam", checkpoint=checkpoint,
            verbose=False).train()
    with pytest.raises(ValueError, match=r"cannot resume this run from it: optimizer Adam vs SGD"):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, optimizer="sgd", resume=checkpoint, verbose=False)
    with pytest.raises(ValueError, match=r"network .* vs .*'sizes': \[784, 9, 10\]"):
        Trainer(TwoLayerNet(784, 9, 10, seed=0), *data, optimizer="adam", resume=checkpoint, verbose=False)
    plain = anynet.save_params(tmp_path / "weights.npz", {"W1": np.zeros(2)})
    with pytest.raises(ValueError, match="not a checkpoint written by anynet's Trainer"):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, resume=plain, verbose=False)


def test_a_diverging_loss_stops_with_the_epoch_step_and_advice(data, tmp_path):
    net = TwoLayerNet(784, 8, 10, seed=0)
    net.params["W1"][0, 0] = np.nan  # the first step already fails
    checkpoint = tmp_path / "ckpt.npz"
    trainer = Trainer(net, *data, epochs=2, optimizer_param={"lr": 0.5}, checkpoint=checkpoint, verbose=False)
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at epoch 1, step 1 of 60 \(step 1 overall\)"):
        trainer.train()
    assert not checkpoint.exists(), "a diverged epoch must not be checkpointed"


def test_non_finite_data_is_refused_before_the_first_step(device, data):
    """One NaN sample made every weight NaN while training went on (relu turned NaN into 0): refused up front,
    naming the array, how many values and where, on every device (the data already there or not)."""
    x_train, t_train, x_test, t_test = (a.copy() for a in data)
    x_train[[17, 17, 4000], [3, 5, 0]] = [np.nan, np.inf, -np.inf]
    net = TwoLayerNet(784, 8, 10, activation="relu", device=device, seed=0)
    before = anynet.to_numpy(net.params["W1"]).copy()
    for placed in (False, True):
        arrays = [device.asarray(a) for a in (x_train, t_train, x_test, t_test)] if placed else \
            [x_train, t_train, x_test, t_test]
        with pytest.raises(ValueError, match=r"^training data: x_train holds 3 non-finite values \(NaN or "
                                             r"infinity\) in 2 samples, the first at row 17; replace or drop those "
                                             r"samples before training$"):
            Trainer(net, *arrays, verbose=False)
    x_test[99, 7] = np.nan
    with pytest.raises(ValueError, match=r"^test data: x_test holds 1 non-finite value \(NaN or infinity\) in 1 "
                                         r"sample, the first at row 99;"):
        Trainer(net, *data[:2], x_test, t_test, verbose=False)
    np.testing.assert_array_equal(anynet.to_numpy(net.params["W1"]), before)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: (d[0], d[1][:-1], d[2], d[3]), r"training data: 6000 samples in x but 5999 labels in t"),
        (lambda d: (d[0][:, :700], d[1], d[2], d[3]), r"training data: 700 features per sample .* takes 784"),
        (lambda d: (d[0], d[1] + 5, d[2], d[3]), r"labels must be integers in \[0, 10\), got values from 5 to 14"),
        (lambda d: (d[0], d[1], d[2], np.eye(12)[d[3] % 12]), r"test data: one-hot labels of width 12"),
        (lambda d: (d[0], d[1].astype(np.float32), d[2], d[3]), r"labels must be integers .*float32"),
    ],
)
def test_bad_data_is_refused_before_the_first_step(data, change, message):
    with pytest.raises(ValueError, match=message):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *change(data), verbose=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"mini_batch_size": 2.5}, "mini_batch_size must be a positive integer, got 2.5"),
        ({"sampling": "random"}, "unknown sampling 'random'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ],
)
def test_bad_settings_are_refused(data, options, message):
    with pytest.raises(ValueError, match=message):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, verbose=False, **options)


def test_device_switch_moves_the_network(data):
    net = TwoLayerNet(784, 8, 10, seed=0)
    trainer = Trainer(net, *data, epochs=1, device="strict:device1", verbose=False)
    trainer.train()  # device1 raises on any hidden host copy: passing proves the whole step stays there
    assert net.device == "strict:device1" and anynet.device_of(trainer.x_train) == "strict:device1"


def test_the_book_positional_order_and_every_keyword_still_work(data, tmp_path):
    net = TwoLayerNet(784, 8, 10, seed=0)
    trainer = Trainer(net, *data, 1, 200, "adam", {"lr": 0.01}, 300, False, device="cpu", seed=2,
                      sampling="replacement", checkpoint=tmp_path / "c.npz", resume=None, progress=False,
                      fast_path=False)
    assert (trainer.epochs, trainer.batch_size, type(trainer.optimizer).__name__, trainer.optimizer.lr) == \
        (1, 200, "Adam", 0.01)
    assert (trainer.evaluate_sample_num_per_epoch, trainer.verbose, trainer.seed, trainer.sampling) == \
        (300, False, 2, "replacement")
    trainer.train()
    assert read_metadata(tmp_path / "c.npz")["epoch"] == 1


class Recorder(Reporter):
    def __init__(self):
        self.calls = []

    def train_start(self, trainer):
        self.calls.append(("start", trainer.current_epoch))

    def epoch_end(self, trainer, epoch):
        self.calls.append(("epoch", epoch, trainer.test_acc_list[epoch - 1]))

    def train_end(self, trainer):
        self.calls.append(("end", trainer.final_test_accuracy))


def test_a_reporter_of_ones_own_replaces_the_printed_table(data, capsys):
    recorder = Recorder()
    trainer = Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=2, optimizer="adam", reporter=recorder)
    history = trainer.train()
    assert capsys.readouterr().out == ""
    assert recorder.calls == [("start", 0), ("epoch", 1, history["test_acc_list"][0]),
                              ("epoch", 2, history["test_acc_list"][1]), ("end", history["final_test_accuracy"])]
    Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, verbose=False).train()
    assert capsys.readouterr().out == "", "verbose=False prints nothing"
    assert isinstance(Trainer(TwoLayerNet(784, 8, 10, seed=0), *data).reporter, ConsoleReporter)


def test_a_resumed_run_prints_the_epochs_it_had_done(data, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt.npz"
    Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, checkpoint=checkpoint).train()
    first = capsys.readouterr().out.splitlines()
    Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=2, resume=checkpoint).train()
    second = capsys.readouterr().out.splitlines()
    assert second[0].endswith("2 epochs, SGD") and second[1] == first[1]
    # the done epoch's row, as the first run printed it (its seconds from the checkpoint), then the new one
    assert first[2].split()[0] == "1/1" and second[2].split() == ["1/2", *first[2].split()[1:]]
    assert second[3].split()[0] == "2/2" and second[-1].startswith("final test accuracy: ")


class BookTwoLayerNet:
    """The book's chapter-5 TwoLayerNet, as a user copies it: params, layers, gradient, loss, accuracy; no
    fused_step, last_loss, device, to() or architecture()."""

    def __init__(self, weights):
        from collections import OrderedDict

        from anynet.layers import Affine, Relu, SoftmaxWithLoss

        self.params = {name: np.array(value) for name, value in weights.items()}
        self.layers = OrderedDict(Affine1=Affine(self.params["W1"], self.params["b1"]), Relu1=Relu(),
                                  Affine2=Affine(self.params["W2"], self.params["b2"]))
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        return self.lastLayer.forward(self.predict(x), t)

    def accuracy(self, x, t):
        return float(np.sum(np.argmax(self.predict(x), axis=1) == t) / x.shape[0])

    def gradient(self, x, t):
        self.loss(x, t)
        dout = self.lastLayer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        return {"W1": self.layers["Affine1"].dW, "b1": self.layers["Affine1"].db,
                "W2": self.layers["Affine2"].dW, "b2": self.layers["Affine2"].db}


def test_a_network_of_the_books_kind_trains_like_anynets_own(data, tmp_path):
    ours = TwoLayerNet(784, 16, 10, activation="relu", seed=3)
    book = BookTwoLayerNet({name: anynet.to_numpy(value) for name, value in ours.params.items()})
    assert not hasattr(book, "fused_step")
    options = {"epochs": 2, "mini_batch_size": 100, "optimizer": "adam", "optimizer_param": {"lr": 0.01}, "seed": 1,
               "verbose": False}
    Trainer(ours, *data, fast_path=False, **options).train()
    checkpoint = tmp_path / "book.npz"
    trainer = Trainer(book, *data, checkpoint=checkpoint, **options)
    history = trainer.train()
    for name, value in ours.params.items():
        np.testing.assert_allclose(book.params[name], anynet.to_numpy(value), rtol=1e-5, atol=1e-6, err_msg=name)
    assert history["test_acc_list"][-1] > 0.9 and len(history["train_loss_list"]) == 120
    # the book's Trainer records the loss after each update: here, of the trained network on the last batch
    from anynet.trainer import epoch_order

    rng = anynet.backend.host_generator(1)
    epoch_order(rng, 6000, 100, "shuffle")
    last = epoch_order(rng, 6000, 100, "shuffle")[-100:]
    x, t = data[0], data[1]
    assert history["train_loss_list"][-1] == pytest.approx(float(book.loss(x[last], t[last])), rel=1e-6)

    resumed = BookTwoLayerNet({name: np.zeros_like(value) for name, value in book.params.items()})
    Trainer(resumed, *data, resume=checkpoint, **options)
    for name, value in book.params.items():
        assert np.array_equal(resumed.params[name], value), name
    assert resumed.layers["Affine1"].W is resumed.params["W1"], "loaded in place: the layers see the weights"
    assert np.array_equal(resumed.predict(data[2]), book.predict(data[2]))


def test_labels_on_the_device_are_checked_where_they_are(data, monkeypatch):
    """Only the two ends of the label range come to the host, not the labels."""
    import anynet.trainer

    copied = []
    to_numpy = anynet.trainer.to_numpy
    monkeypatch.setattr(anynet.trainer, "to_numpy", lambda x: copied.append(x.shape) or to_numpy(x))
    where = anynet.device("strict:device1" if "strict:device1" in DEVICE_NAMES else "cpu")
    on_device = [where.asarray(a) for a in data]
    Trainer(TwoLayerNet(784, 8, 10, device=where, seed=0), *on_device, verbose=False)
    assert copied == [(), (2,), (), (2,)]  # per set: the count of non-finite inputs, the labels' two ends
    bad = where.asarray(data[1] + 5)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 10\), got values from 5 to 14"):
        Trainer(TwoLayerNet(784, 8, 10, device=where, seed=0), on_device[0], bad, *on_device[2:], verbose=False)
