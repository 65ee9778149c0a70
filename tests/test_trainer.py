"""The Trainer: the same batches on every device, history, checkpoints and resume, and its errors."""

import os

import numpy as np
import pytest

import anynet
from anynet import Device
from anynet.io import read_metadata
from anynet.networks import MultiLayerNet, TwoLayerNet
from anynet.trainer import Trainer, TrainingDivergedError
from tests.conftest import DEVICE_NAMES


def blobs(n, features=784, classes=10, seed=0):
    """Separable but noisy classes: each a Gaussian around its own random centre, as float32 in [0, 1]-ish."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, size=(classes, features))
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + rng.normal(0, 0.6, size=(n, features))
    return x.astype(np.float32), labels


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


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "generic"])
@pytest.mark.parametrize("optimizer", ["adam", "momentum", "sgd"])
def test_an_interrupted_then_resumed_run_ends_where_an_uninterrupted_one_does(device, data, tmp_path, monkeypatch,
                                                                              optimizer, fast_path):
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
    x_train, t_train, x_test, t_test = data
    poisoned = x_train.copy()
    poisoned[:, 0] = np.nan  # every sample: the first step already fails
    checkpoint = tmp_path / "ckpt.npz"
    trainer = Trainer(TwoLayerNet(784, 8, 10, seed=0), poisoned, t_train, x_test, t_test, epochs=2,
                      optimizer_param={"lr": 0.5}, checkpoint=checkpoint, verbose=False)
    with pytest.raises(TrainingDivergedError, match=r"the loss became nan at epoch 1, step 1 of 60 \(step 1 overall\); "
                                                    r"lower the learning rate \(it is 0.5\)"):
        trainer.train()
    assert not checkpoint.exists(), "a diverged epoch must not be checkpointed"


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
