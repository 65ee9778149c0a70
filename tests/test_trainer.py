"""The Trainer: the same batches on every device, history, checkpoints and resume, and its errors."""

import os
import re
import warnings

import numpy as np
import pytest

import anynet
from anynet import Device
from anynet.io import read_metadata
from anynet.networks import MultiLayerNet, TwoLayerNet
from anynet.trainer import DIVERGENCE_FACTOR, ConsoleReporter, Reporter, Trainer, TrainingDivergedError
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


def test_an_interrupt_without_a_checkpoint_says_so(data, monkeypatch):
    trainer = Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=2, verbose=False)
    _interrupt_after(monkeypatch, steps=70)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.last_checkpoint is None and trainer.current_epoch == 1
    assert trainer.resume_hint() == ("interrupted in epoch 2 of 2; no checkpoint holds a finished epoch "
                                     "(checkpoint=PATH writes one after each)")


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
        with pytest.raises(KeyboardInterrupt) as interrupted:
            first.train()
    assert read_metadata(checkpoint)["epoch"] == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "a temporary or lock file was left behind"
    # where to resume from, for the caller (the CLI prints it) and in the exception's note
    assert first.last_checkpoint == (str(checkpoint), 1)
    hint = f"interrupted in epoch 2 of 3; {checkpoint} holds epoch 1: resume from it (resume={str(checkpoint)!r})"
    assert first.resume_hint() == hint
    assert getattr(interrupted.value, "__notes__", [hint]) == [hint]

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
    with pytest.raises(ValueError, match=r"cannot resume this run from it: optimizer SGD vs Adam in the checkpoint\. "
                                         r"Resume with the settings the checkpoint was made with\.$"):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, optimizer="sgd", resume=checkpoint, verbose=False)
    with pytest.raises(ValueError, match=r"network \{'sizes': \[784, 9, 10\].* vs .*'sizes': \[784, 8, 10\].* in the "
                                         r"checkpoint"):  # not even resume_anyway: the parameters would not fit
        Trainer(TwoLayerNet(784, 9, 10, seed=0), *data, optimizer="adam", resume=checkpoint, resume_anyway=True,
                verbose=False)
    plain = anynet.save_params(tmp_path / "weights.npz", {"W1": np.zeros(2)})
    with pytest.raises(ValueError, match="not a checkpoint written by anynet's Trainer"):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, resume=plain, verbose=False)


def _checkpointed_run(data, tmp_path, **options):
    """One epoch of MultiLayerNet 784-16-10 with Adam 0.01, seed 0, batch 200, checkpointed; returns its path."""
    checkpoint = tmp_path / "ckpt.npz"
    Trainer(MultiLayerNet(784, [16], 10, seed=0), *data, epochs=1, mini_batch_size=200, optimizer="adam",
            optimizer_param={"lr": 0.01}, seed=0, checkpoint=checkpoint, verbose=False, **options).train()
    return checkpoint


def test_resume_lists_each_difference_from_the_checkpoints_run_unless_resume_anyway(data, tmp_path):
    """--resume --lr 0.5 used to continue silently (and end at accuracy 0.1)."""
    checkpoint = _checkpointed_run(data, tmp_path)
    saved = read_metadata(checkpoint)
    assert saved["config"] == {"optimizer": "Adam", "hyperparameters": {"lr": 0.01, "beta1": 0.9, "beta2": 0.999},
                               "weight_decay_lambda": 0.0, "seed": 0, "batch_size": 200, "sampling": "shuffle",
                               "epochs": 1, "architecture": {"sizes": [784, 16, 10], "activation": "relu"},
                               "dtype": "float32"}
    assert saved["data"]["x_train"] == {"shape": [6000, 784], "dtype": "float32"}
    assert saved["data"]["t_train"] == {"shape": [6000], "dtype": "int64"} and len(saved["data"]["sha256"]) == 64
    other = (data[0] * 0.5, *data[1:])

    def resume(x_train=data, anyway=False, decay=0.1, **options):
        settings = {"epochs": 2, "mini_batch_size": 100, "optimizer": "adam", "optimizer_param": {"lr": 0.5},
                    "seed": 1, "verbose": False, **options}
        return Trainer(MultiLayerNet(784, [16], 10, weight_decay_lambda=decay, seed=0), *x_train, **settings,
                       resume=checkpoint, resume_anyway=anyway)

    differences = [
        "lr 0.5 vs 0.01 in the checkpoint", "weight_decay_lambda 0.1 vs 0.0 in the checkpoint",
        "seed 1 vs 0 in the checkpoint", "batch_size 100 vs 200 in the checkpoint",
        r"training data of the same shapes with other values \(sample hash [0-9a-f]{12} vs [0-9a-f]{12} in the "
        r"checkpoint\)"]
    with pytest.raises(ValueError, match=rf"^{re.escape(str(checkpoint))}: cannot resume this run from it: "
                                         + "; ".join(differences) + r"\. Resume with the settings the checkpoint was "
                                         r"made with, or pass resume_anyway=True \(--resume-anyway on the command "
                                         r"line\) to continue it with these\.$"):
        resume(other)
    with pytest.raises(ValueError, match=r"training data x_train \(5000, 784\) float32, t_train \(5000,\) int64 vs "
                                         r"x_train \(6000, 784\) float32, t_train \(6000,\) int64 in the checkpoint"):
        resume((data[0][:5000], data[1][:5000], *data[2:]), decay=0.0, optimizer_param={"lr": 0.01}, seed=0,
               mini_batch_size=200)
    with pytest.raises(ValueError, match=r"cannot resume this run from it: dtype float64 vs float32 in the checkpoint"):
        Trainer(MultiLayerNet(784, [16], 10, dtype="float64", seed=0), *data, mini_batch_size=200, optimizer="adam",
                optimizer_param={"lr": 0.01}, seed=0, resume=checkpoint, verbose=False)

    trainer = resume(other, anyway=True)  # e.g. a lower rate after a divergence: this run's settings go on
    assert len(trainer.resumed_despite) == 5 and trainer.resumed_despite[0] == differences[0]
    assert trainer.current_epoch == 1 and trainer.optimizer.lr == 0.5 and trainer.network.weight_decay_lambda == 0.1
    arrays, _ = anynet.io.load_checkpoint(checkpoint)
    for name, value in arrays["params"].items():
        np.testing.assert_array_equal(anynet.to_numpy(trainer.network.params[name]), anynet.to_numpy(value))
    # the same run resumes without a word, the epoch count being free (resuming is how a run is extended), a NumPy
    # integer seed being the same seed
    assert resume(decay=0.0, optimizer_param={"lr": 0.01}, seed=np.int64(0), mini_batch_size=200,
                  epochs=5).current_epoch == 1
    numpy_seeded = Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, seed=np.int64(3), checkpoint=tmp_path / "s.npz",
                           verbose=False)
    numpy_seeded.train_epoch()  # a NumPy integer is not JSON: the checkpoint stores it as an int
    assert read_metadata(tmp_path / "s.npz")["config"]["seed"] == 3


def test_the_data_fingerprint_is_the_same_on_every_device(device, data, tmp_path):
    """Checkpointed from NumPy data on the CPU, resumed from the same data already on ``device``: no difference;
    other values there are told apart."""
    checkpoint = _checkpointed_run(data, tmp_path)
    on_device = [device.asarray(a) for a in data]
    trainer = Trainer(MultiLayerNet(784, [16], 10, device=device, seed=0), *on_device, epochs=2, mini_batch_size=200,
                      optimizer="adam", optimizer_param={"lr": 0.01}, seed=0, resume=checkpoint, verbose=False)
    assert trainer.current_epoch == 1 and trainer.resumed_despite == []
    shifted = data[1].copy()
    shifted[3000] = (shifted[3000] + 1) % 10  # one label of 6000
    with pytest.raises(ValueError, match="training data of the same shapes with other values"):
        Trainer(MultiLayerNet(784, [16], 10, device=device, seed=0), on_device[0], device.asarray(shifted),
                *on_device[2:], mini_batch_size=200, optimizer="adam", optimizer_param={"lr": 0.01}, seed=0,
                resume=checkpoint, verbose=False)


def test_a_second_run_writing_the_same_checkpoint_is_refused(data, tmp_path):
    """Two runs on one checkpoint path overwrote each other's epochs: the second is refused before its first step,
    naming the path and the holder; the lock goes when the first run ends."""
    checkpoint = tmp_path / "ckpt.npz"
    refused = []

    class StartAnother(Reporter):
        def epoch_end(self, trainer, epoch):
            second = Trainer(TwoLayerNet(784, 8, 10, seed=1), *data, epochs=1, checkpoint=checkpoint, verbose=False)
            with pytest.raises(anynet._atomic.LockedError) as error:
                second.train()
            refused.append((str(error.value), second.current_epoch))

    Trainer(TwoLayerNet(784, 8, 10, seed=0), *data, epochs=1, checkpoint=checkpoint, reporter=StartAnother()).train()
    message, epochs_done = refused[0]
    assert message == (f"{checkpoint} is being written by this very process (PID {os.getpid()}): another Trainer "
                       f"here writes it: two runs writing one checkpoint overwrite each other's. Choose another path, "
                       f"or wait for that run to end; if it is gone, delete {checkpoint}.lock")
    assert epochs_done == 0 and read_metadata(checkpoint)["config"]["seed"] is None
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "the lock is removed when the run ends"
    Trainer(TwoLayerNet(784, 8, 10, seed=1), *data, epochs=1, checkpoint=checkpoint, verbose=False).train()


def test_a_diverged_or_interrupted_run_releases_its_lock(data, tmp_path):
    checkpoint = tmp_path / "ckpt.npz"
    net = TwoLayerNet(784, 8, 10, seed=0)
    net.params["W1"][0, 0] = np.nan
    with pytest.raises(TrainingDivergedError):
        Trainer(net, *data, epochs=1, checkpoint=checkpoint, verbose=False).train()
    assert os.listdir(tmp_path) == []


def test_a_non_finite_first_loss_blames_the_start_not_the_learning_rate(data, tmp_path):
    net = TwoLayerNet(784, 8, 10, seed=0)
    net.params["W1"][0, 0] = np.nan  # the first step already fails
    checkpoint = tmp_path / "ckpt.npz"
    trainer = Trainer(net, *data, epochs=2, optimizer_param={"lr": 0.5}, checkpoint=checkpoint, verbose=False)
    with pytest.raises(TrainingDivergedError, match=r"^the loss became nan at epoch 1, step 1 of 60 \(step 1 "
                                                    r"overall\)\. It happened at the very first step, before any "
                                                    r"update could "
                                                    r"cause it: check the network's initial parameters and the scale "
                                                    r"of the data$"):
        trainer.train()
    assert not checkpoint.exists(), "a diverged epoch must not be checkpointed"


def _diverge_in_epoch_two(device, fast_path, data, tmp_path, lr, **options):
    """A run that learns for an epoch (Adam 0.01, checkpointed), then gets learning rate ``lr``: returns the
    trainer, the error it raised, the parameters after epoch 1 and the warnings raised while it trained."""
    net = MultiLayerNet(784, [32], 10, device=device, seed=0)
    trainer = Trainer(net, *data, epochs=3, mini_batch_size=200, optimizer="adam", optimizer_param={"lr": 0.01},
                      seed=0, checkpoint=tmp_path / "ckpt.npz", verbose=False, fast_path=fast_path, **options)
    trainer.train_epoch()
    after_one = {name: anynet.to_numpy(value).copy() for name, value in net.params.items()}
    trainer.optimizer.lr = lr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDivergedError) as error:
            trainer.train()
    return trainer, error.value, after_one, caught


@pytest.mark.parametrize("device_name, fast_path", DEVICE_AND_FAST_PATH)
def test_a_learning_rate_far_too_high_stops_at_the_step_the_loss_explodes(device_name, fast_path, data, tmp_path):
    """Adam at lr=1e6 used to train on with a loss of 1e20 and accuracy 0.1, and save: a finite loss a thousand
    times the first one is a divergence, found at its step on every device and path, the last good checkpoint
    kept."""
    device = anynet.device(device_name)
    trainer, error, after_one, caught = _diverge_in_epoch_two(device, fast_path, data, tmp_path, lr=1e6)
    first = trainer.first_loss
    assert 2.0 < first < 3.5  # about ln(10): the bound is 1000 times that
    assert re.fullmatch(
        r"the loss rose to \S+ at epoch 2, step 2 of 30 \(step 32 overall\), above the divergence bound "
        rf"{1000 * first:.4g} \(1000 times the run's first loss, {first:.4g}\); the last finite loss was \S+ "
        r"\(step 31 overall\)\. The learning rate is likely too high for Adam: lr=1e\+06 \(Adam's default is "
        rf"0\.001\); lower it, e\.g\. to lr=100000\. The checkpoint {re.escape(str(tmp_path / 'ckpt.npz'))} "
        r"\(epoch 1\) is kept: resume from it with a lower learning rate and resume_anyway=True "
        r"\(--resume-anyway\), since the rate differs from the checkpoint's", str(error)), str(error)
    assert (error.epoch, error.step) == (2, 32) and error.loss > 1000 * first
    assert error.last_finite_loss == pytest.approx(trainer.train_loss_list[-1], rel=1) and error.last_finite_loss < 10
    assert error.checkpoint == (str(tmp_path / "ckpt.npz"), 1) == trainer.last_checkpoint
    assert trainer.current_epoch == 1 and len(trainer.train_loss_list) == 30 and len(trainer.test_acc_list) == 1
    assert read_metadata(tmp_path / "ckpt.npz")["epoch"] == 1
    arrays, _ = anynet.io.load_checkpoint(tmp_path / "ckpt.npz")
    for name, value in after_one.items():
        np.testing.assert_array_equal(anynet.to_numpy(arrays["params"][name]), value, err_msg=name)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


@pytest.mark.parametrize("fast_path", [True, False])
def test_an_overflowing_step_is_reported_without_raw_numpy_warnings(data, tmp_path, fast_path):
    """At lr=1e30 the weights overflow float32 in the first update: NumPy's RuntimeWarnings (overflow, invalid
    value) were printed at the user and the NaN reported only at the epoch's end."""
    trainer, error, _, caught = _diverge_in_epoch_two("cpu", fast_path, data, tmp_path, lr=1e30)
    assert re.match(r"the loss became (nan|inf) at epoch 2, step 2 of 30 \(step 32 overall\); the last finite loss "
                    r"was \S+ \(step 31 overall\)\. The learning rate is likely too high for Adam: lr=1e\+30",
                    str(error)), str(error)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def test_on_a_gpu_the_losses_are_read_a_block_at_a_time_and_the_step_is_still_exact(data, tmp_path, monkeypatch):
    """No host read per step on a GPU: losses are read LOSS_READ_BLOCK steps at a time, and the divergence is
    still reported at the step where it happened (the steps after it are lost; the checkpoint is not)."""
    import anynet.trainer

    reads = []
    real = anynet.trainer._read_losses
    monkeypatch.setattr(anynet.trainer, "_read_losses", lambda losses: reads.append(len(losses)) or real(losses))
    monkeypatch.setattr(anynet.trainer, "LOSS_READ_BLOCK", 7)
    monkeypatch.setattr(anynet.device("cpu"), "platform", "cuda")  # the Trainer asks the device, as on a GPU
    trainer, error, after_one, _ = _diverge_in_epoch_two("cpu", True, data, tmp_path, lr=1e6)
    assert reads == [7, 7, 7, 7, 2, 7]  # epoch 1 in blocks (30 = 4 * 7 + 2); epoch 2 stopped after its first
    assert (error.epoch, error.step) == (2, 32) and "at epoch 2, step 2 of 30 (step 32 overall)" in str(error)
    assert read_metadata(tmp_path / "ckpt.npz")["epoch"] == 1


class _PoisonOnStep(anynet.optimizers.SGD):
    """SGD whose update number ``at`` writes NaN into the parameters (the loss of that step is still finite)."""

    def __init__(self, at):
        super().__init__(lr=0.01)
        self.at, self.count = at, 0

    def update(self, params, grads):
        super().update(params, grads)
        self.count += 1
        if self.count == self.at:
            params["W2"][0, 0] = np.nan


def test_parameters_made_non_finite_by_an_epochs_last_update_are_never_checkpointed(data, tmp_path):
    checkpoint = tmp_path / "ckpt.npz"
    net = TwoLayerNet(784, 8, 10, seed=0)
    trainer = Trainer(net, *data, epochs=3, optimizer=_PoisonOnStep(at=120), checkpoint=checkpoint, verbose=False)
    with pytest.raises(TrainingDivergedError, match=r"^the parameters became non-finite \(NaN or infinity\) in the "
                                                    r"update at epoch 2, step 60 of 60 \(step 120 overall\); the "
                                                    r"last finite loss was \S+ \(step 120 overall\)\. The learning "
                                                    r"rate is likely too high for _PoisonOnStep: lr=0\.01;"):
        trainer.train()
    assert read_metadata(checkpoint)["epoch"] == 1 and trainer.current_epoch == 1


@pytest.mark.slow  # eight whole training runs
@pytest.mark.parametrize("optimizer, param, batch", [
    ("sgd", {"lr": 0.1}, 100), ("adam", {"lr": 0.001}, 100), ("adam", {"lr": 0.01}, 100),
    ("momentum", {"lr": 0.1}, 100), ("adagrad", {"lr": 0.1}, 100), ("rmsprop", {"lr": 0.01}, 100),
    ("sgd", {"lr": 0.01}, 1), ("adam", {"lr": 0.001}, 1),
])
def test_the_divergence_bound_leaves_usual_runs_alone(data, optimizer, param, batch):
    """The usual rates, batches down to one sample: the largest step loss stays far below the bound (on real
    Fashion-MNIST, AdaGrad 0.1 and RMSprop 0.01 spike to about 60 times the first loss and still learn)."""
    x, t = (data[0][:1000], data[1][:1000]) if batch == 1 else data[:2]
    trainer = Trainer(MultiLayerNet(784, [100, 100], 10, seed=0), x, t, *data[2:], epochs=2, mini_batch_size=batch,
                      optimizer=optimizer, optimizer_param=param, seed=0, verbose=False)
    trainer.train()
    assert max(trainer.train_loss_list) < 0.1 * DIVERGENCE_FACTOR * max(1.0, trainer.first_loss)
    assert trainer.test_acc_list[-1] > 0.8


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda net, opt: setattr(net, "weight_decay_lambda", float("nan")),
         r"MultiLayerNet: weight_decay_lambda must be a finite number >= 0, got weight_decay_lambda=nan"),
        (lambda net, opt: setattr(opt, "lr", float("inf")),
         r"Adam: the learning rate must be a finite number > 0, got lr=inf"),
        (lambda net, opt: setattr(opt, "beta2", 1.0),
         r"Adam: beta2 must be a finite number in \[0, 1\), got beta2=1.0"),
    ],
)
def test_settings_spoiled_after_construction_are_refused_before_the_first_step(data, spoil, message):
    """A NaN weight decay made every weight NaN and was then blamed on the learning rate."""
    net = MultiLayerNet(784, [8], 10, weight_decay_lambda=0.01, seed=0)
    optimizer = anynet.optimizers.Adam()
    spoil(net, optimizer)
    with pytest.raises(ValueError, match=f"^{message}"):
        Trainer(net, *data, optimizer=optimizer, verbose=False)


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
    "change, error, message",
    [
        (lambda d: (d[0], d[1][:-1], d[2], d[3]), ValueError, r"training data: 6000 samples in x but 5999 labels in t"),
        (lambda d: (d[0][:, :700], d[1], d[2], d[3]), ValueError,
         r"training data: 700 features per sample .* takes 784"),
        (lambda d: (d[0], d[1] + 5, d[2], d[3]), ValueError,
         r"^training data: labels must be class numbers 0\.\.9 for 10 classes, got labels from 5 to 14$"),
        (lambda d: (d[0], d[1], d[2], d[3] - 1), ValueError,
         r"^test data: labels must be class numbers 0\.\.9 for 10 classes, got labels from -1 to 8$"),
        (lambda d: (d[0], d[1], d[2], np.eye(12)[d[3] % 12]), ValueError, r"test data: one-hot labels of width 12"),
        (lambda d: (d[0], d[1].astype(np.float32), d[2], d[3]), TypeError,
         r"^training data: labels must be integers \(class numbers 0\.\.9\), got dtype float32; pass one-hot "
         r"targets as a 2-D array$"),
    ],
)
def test_bad_data_is_refused_before_the_first_step(data, change, error, message):
    """In the wording of the networks' loss and accuracy and of the fused steps, with the data set's name."""
    with pytest.raises(error, match=message):
        Trainer(TwoLayerNet(784, 8, 10, seed=0), *change(data), verbose=False)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: (d[0][:0], d[1][:0], d[2], d[3]),
         r"^training data is empty: x_train of shape \(0, 784\) has no samples; pass at least one$"),
        (lambda d: (d[0], d[1], d[2][:0], d[3][:0]),
         r"^test data is empty: x_test of shape \(0, 784\) has no samples; pass at least one$"),
        (lambda d: (np.zeros(0, dtype=np.float32), d[1][:0], d[2], d[3]),
         r"^training data is empty: x_train of shape \(0,\) has no samples"),
    ],
)
def test_empty_data_is_refused_before_the_first_step(device, data, change, message):
    """An empty set ended in a ZeroDivisionError or a reshape error, after an epoch for an empty test set."""
    arrays = [device.asarray(a) for a in change(data)]
    with pytest.raises(ValueError, match=message):
        Trainer(TwoLayerNet(784, 8, 10, device=device, seed=0), *arrays, verbose=False)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": 0}, "epochs must be a positive integer, got 0"),
        ({"mini_batch_size": 2.5}, "mini_batch_size must be a positive integer, got 2.5"),
        ({"sampling": "random"}, "unknown sampling 'random'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
        # evaluated after a whole epoch: 0 was a ZeroDivisionError then
        ({"evaluate_sample_num_per_epoch": 0},
         r"evaluate_sample_num_per_epoch must be a positive integer \(or None: every sample\), got 0"),
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
    with pytest.raises(ValueError, match=r"labels must be class numbers 0\.\.9 for 10 classes, got labels from 5 "
                                         r"to 14"):
        Trainer(TwoLayerNet(784, 8, 10, device=where, seed=0), on_device[0], bad, *on_device[2:], verbose=False)


def test_a_checkpoint_saved_by_hand_resumes_with_the_same_integer_data(tmp_path):
    """The fingerprint is of the data as given, not as cast for the network: uint8 images resume as uint8."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(200, 4), dtype=np.uint8)
    t = rng.integers(0, 3, size=200)
    trainer = Trainer(MultiLayerNet(4, [5], 3, seed=0), x, t, x, t, epochs=2, mini_batch_size=50, seed=0,
                      verbose=False)
    trainer.train_epoch()
    trainer.save_checkpoint(tmp_path / "ck.npz")
    resumed = Trainer(MultiLayerNet(4, [5], 3, seed=0), x, t, x, t, epochs=2, mini_batch_size=50, seed=0,
                      verbose=False, resume=tmp_path / "ck.npz")
    assert resumed.current_epoch == 1
    assert read_metadata(tmp_path / "ck.npz")["data"]["x_train"]["dtype"] == "uint8"


def test_a_run_seeded_with_a_generator_resumes(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    t = rng.integers(0, 3, size=200)
    options = {"epochs": 2, "mini_batch_size": 50, "verbose": False, "checkpoint": tmp_path / "ck.npz"}
    Trainer(MultiLayerNet(4, [5], 3, seed=0), x, t, x, t, seed=np.random.default_rng(1), **options).train_epoch()
    resumed = Trainer(MultiLayerNet(4, [5], 3, seed=0), x, t, x, t, seed=np.random.default_rng(1),
                      resume=tmp_path / "ck.npz", **options)
    assert resumed.current_epoch == 1
    assert read_metadata(tmp_path / "ck.npz")["config"]["seed"] == "<Generator>"
