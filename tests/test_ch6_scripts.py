"""scripts/ch6_*.py, the book's chapter-6 experiments, run in-process with short settings.

On synthetic data (class prototypes plus noise, 784 features, 10 classes, in place of the dataset loader) each
experiment must show what the book shows it for: Adam's loss below SGD's, He's initial weights learning where 0.01
does not, batch norm learning at small weight scales where the plain network does not, weight decay and dropout
narrowing the gap between train and test accuracy. The figures are checked for the book's axes, legends and curves.
The slow tests run the same on Fashion-MNIST from $ANYNET_DATA.
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anynet.plot import smooth_curve

matplotlib = pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
NAMES = ("ch6_optimizer_compare", "ch6_weight_init_compare", "ch6_batch_norm_test", "ch6_overfit_weight_decay",
         "ch6_overfit_dropout")
DATA = os.environ.get("ANYNET_DATA")
FASHION = Path(DATA or "", "fashion-mnist", "train-images-idx3-ubyte.gz")


@pytest.fixture(scope="module")
def scripts():
    """The five scripts and their helper module, imported as `python scripts/ch6_....py` would import them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPTS))
        helper = importlib.import_module("_ch6")
        modules = {name.removeprefix("ch6_"): importlib.import_module(name) for name in NAMES}
    return SimpleNamespace(helper=helper, **modules)


def synthetic(noise: float, n_train: int = 1000, n_test: int = 500, seed: int = 0):
    """MNIST's shapes and dtypes: each class a sparse prototype in [0, 1], each image its prototype plus noise."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 784)) * (rng.random((10, 784)) < 0.3)

    def draw(n):
        t = rng.integers(0, 10, n)
        return np.clip(prototypes[t] + noise * rng.standard_normal((n, 784)), 0, 1).astype(np.float32), t

    return draw(n_train), draw(n_test)


def use_data(monkeypatch, scripts, data):
    def load_dataset(name, normalize, one_hot_label, data_dir):
        assert name == "mnist" and normalize and not one_hot_label  # the book's load_mnist(normalize=True)
        return data

    monkeypatch.setattr(scripts.helper, "load_dataset", load_dataset)


@pytest.fixture
def easy(monkeypatch, scripts):
    """Data a network learns in a hundred steps."""
    use_data(monkeypatch, scripts, synthetic(noise=0.35))


@pytest.fixture
def noisy(monkeypatch, scripts):
    """Data 300 samples of which are learnt by heart long before the network generalises: overfitting."""
    use_data(monkeypatch, scripts, synthetic(noise=1.0))


def final(losses, last=100):
    return sum(losses[-last:]) / len(losses[-last:])


def legend_texts(axis):
    return [text.get_text() for text in axis.get_legend().get_texts()]


def assert_picture(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.std() > 0.01  # a real picture, not a blank


def test_optimizer_compare_adam_learns_fastest_and_the_figure_is_the_books(scripts, easy, tmp_path, capsys):
    path = tmp_path / "optimizers.png"
    results = scripts.optimizer_compare.run(["--device", "cpu", "--iters", "120", "--plot", str(path)])
    loss = results["train_loss"]
    assert list(loss) == ["SGD", "Momentum", "AdaGrad", "Adam"] and all(len(v) == 120 for v in loss.values())
    assert loss["SGD"][0] == loss["Adam"][0] == pytest.approx(loss["Momentum"][0])  # same weights, same batch
    assert final(loss["Adam"]) < 0.1 < 0.5 < final(loss["SGD"])
    assert max(final(loss["Momentum"]), final(loss["AdaGrad"])) < final(loss["SGD"])
    printed = capsys.readouterr().out
    assert "iteration       SGD  Momentum   AdaGrad      Adam" in printed
    rows = [line.split() for line in printed.splitlines() if line.strip().split(" ")[0] in ("0", "100")]
    assert [row[0] for row in rows] == ["0", "100"]
    assert [float(v) for v in rows[1][1:]] == pytest.approx([loss[key][100] for key in loss], abs=1e-4)

    axis = results["figure"].axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_ylim()) == ("iterations", "loss", (0.0, 1.0))
    assert legend_texts(axis) == ["SGD", "Momentum", "AdaGrad", "Adam"]
    assert [line.get_marker() for line in axis.lines] == ["o", "x", "s", "D"]
    np.testing.assert_allclose(axis.lines[3].get_ydata(), smooth_curve(loss["Adam"]))
    assert_picture(path)


def test_weight_init_compare_he_learns_and_std_001_does_not(scripts, easy, tmp_path):
    path = tmp_path / "init.png"
    results = scripts.weight_init_compare.run(["--device", "cpu", "--iters", "120", "--plot", str(path)])
    loss = {key: final(values) for key, values in results["train_loss"].items()}
    assert loss["std=0.01"] == pytest.approx(math.log(10), abs=0.01)  # stuck at chance: the signal vanishes
    assert loss["He"] < loss["Xavier"] - 0.5 < loss["std=0.01"] - 0.5

    axis = results["figure"].axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_ylim()) == ("iterations", "loss", (0.0, 2.5))
    assert legend_texts(axis) == ["std=0.01", "Xavier", "He"]
    assert_picture(path)


def test_the_same_seed_gives_the_same_losses_on_every_device(scripts, easy, device):
    """Weights and batches come from the seed on the host: the curves agree across devices (to float32 rounding,
    the fused CPU step against the generic array-API one)."""
    argv = ["--iters", "12", "--batch-size", "32", "--optimizers", "SGD", "Adam", "--seed", "3"]
    here = scripts.optimizer_compare.run([*argv, "--device", "cpu"])["train_loss"]
    there = scripts.optimizer_compare.run([*argv, "--device", device.name])["train_loss"]
    for key in here:
        np.testing.assert_allclose(there[key], here[key], rtol=1e-4)
    assert here["Adam"][-1] < here["Adam"][0]


def test_batch_norm_learns_at_small_weight_scales_where_the_plain_network_cannot(scripts, easy, tmp_path, capsys):
    path = tmp_path / "bn.png"
    results = scripts.batch_norm_test.run(["--device", "cpu", "--train-size", "200", "--epochs", "3",
                                           "--plot", str(path)])
    scales = results["weight_scales"]
    np.testing.assert_allclose(scales, np.logspace(0, -4, num=16), rtol=1e-12)  # the book's scales
    assert all(len(acc) == 3 for acc in results["train_acc"] + results["bn_train_acc"])
    small = [i for i, w in enumerate(scales) if w < 0.02]
    plain = [results["train_acc"][i][-1] for i in small]
    normed = [results["bn_train_acc"][i][-1] for i in small]
    assert max(plain) < 0.15  # chance: the plain network's signal vanishes
    assert all(b > p for b, p in zip(normed, plain)) and sum(normed) / len(normed) > sum(plain) / len(plain) + 0.2
    assert "============== 16/16: W 0.0001 ==============" in capsys.readouterr().out

    axes = results["figure"].axes
    assert len(axes) == 16 and axes[0].get_title() == "W:1" and axes[15].get_title() == "W:0.0001"
    assert legend_texts(axes[15]) == ["Batch Normalization", "Normal(without BatchNorm)"]
    assert all(axis.get_legend() is None for axis in axes[:15])
    assert [axis.get_xlabel() for axis in axes[12:]] == ["epochs"] * 4 and axes[11].get_xlabel() == ""
    assert [axis.get_ylabel() for axis in axes[::4]] == ["accuracy"] * 4 and list(axes[1].get_yticks()) == []
    assert list(axes[15].lines[0].get_ydata()) == results["bn_train_acc"][15]
    assert axes[15].lines[1].get_linestyle() == "--" and axes[15].get_ylim() == (0.0, 1.0)
    assert_picture(path)


def _gap(results):
    return results["train_acc_list"][-1] - results["test_acc_list"][-1]


def test_weight_decay_narrows_the_gap_between_train_and_test(scripts, noisy, tmp_path):
    path = tmp_path / "decay.png"
    decayed = scripts.overfit_weight_decay.run(["--device", "cpu", "--epochs", "101", "--plot", str(path)])
    free = scripts.overfit_weight_decay.run(["--device", "cpu", "--epochs", "101", "--weight-decay-lambda", "0"])
    assert len(decayed["train_acc_list"]) == len(decayed["test_acc_list"]) == 101
    assert free["train_acc_list"][-1] == 1.0 and _gap(free) > 0.3  # 300 samples learnt by heart
    assert _gap(decayed) < _gap(free) - 0.05 and decayed["train_acc_list"][-1] < 1.0

    axis = decayed["figure"].axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_ylim()) == ("epochs", "accuracy", (0.0, 1.0))
    assert legend_texts(axis) == ["train", "test"]
    assert list(axis.lines[1].get_ydata()) == decayed["test_acc_list"]
    assert_picture(path)


def test_dropout_narrows_the_gap_between_train_and_test(scripts, noisy, tmp_path, capsys):
    path = tmp_path / "dropout.png"
    dropped = scripts.overfit_dropout.run(["--device", "cpu", "--epochs", "101", "--plot", str(path)])
    free = scripts.overfit_dropout.run(["--device", "cpu", "--epochs", "101", "--no-dropout"])
    assert len(dropped["train_acc_list"]) == 101 and len(dropped["train_loss_list"]) == 303  # 3 steps an epoch
    assert free["train_acc_list"][-1] == 1.0 and _gap(free) > 0.3
    assert _gap(dropped) < _gap(free) - 0.1 and dropped["train_acc_list"][-1] < 0.9
    printed = capsys.readouterr().out
    assert "dropout: ratio 0.2" in printed and "101/101" in printed and "final test accuracy" in printed
    assert legend_texts(dropped["figure"].axes[0]) == ["train", "test"]
    assert_picture(path)


def test_dropout_masks_come_from_the_seed(scripts, noisy):
    argv = ["--device", "cpu", "--epochs", "4", "--train-size", "100"]
    first, again = (scripts.overfit_dropout.run(argv)["train_loss_list"] for _ in range(2))
    other = scripts.overfit_dropout.run([*argv, "--seed", "1"])["train_loss_list"]
    assert first == again and first != other


def test_mistakes_are_one_line_before_any_training(scripts, monkeypatch, tmp_path, capsys):
    def no_data(name, **options):
        raise FileNotFoundError(f"{name}: no files here")

    monkeypatch.setattr(scripts.helper, "load_dataset", no_data)
    assert scripts.weight_init_compare.main(["--device", "cpu"]) == 1
    assert capsys.readouterr().err == "error: mnist: no files here\n"
    # the figure's path is checked before the data is even loaded
    assert scripts.batch_norm_test.main(["--plot", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert scripts.overfit_dropout.main(["--plot", str(tmp_path / "absent" / "f.png")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert scripts.optimizer_compare.main(["--iters", "5", "--plot", str(tmp_path / "f.png")]) == 1
    assert "at least 11" in capsys.readouterr().err
    use_data(monkeypatch, scripts, synthetic(0.5, n_train=50, n_test=10))
    assert scripts.overfit_weight_decay.main(["--device", "cpu"]) == 1  # the book's 300 samples of 50
    assert "--train-size 300: mnist has 50 training samples" in capsys.readouterr().err
    assert scripts.overfit_weight_decay.main(["--device", "tpu"]) == 1
    assert "tpu" in capsys.readouterr().err


def test_each_script_runs_as_a_command():
    for name in NAMES:
        script = SCRIPTS / f"{name}.py"
        assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env python3\n"), name
    result = subprocess.run([sys.executable, str(SCRIPTS / "ch6_batch_norm_test.py"), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and "--train-size" in result.stdout and "--dataset" in result.stdout


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------

real_data = pytest.mark.skipif(not FASHION.is_file(), reason="real data absent: set ANYNET_DATA to a folder with "
                                                             "fashion-mnist/ (CI uses ../shared/data)")


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return ["--device", "cpu", "--dataset", "fashion-mnist", "--data-dir", DATA]


@pytest.mark.slow
@real_data
def test_fashion_mnist_optimizers_and_initial_weights(scripts, fashion):
    curves = scripts.optimizer_compare.run([*fashion, "--iters", "300"])["train_loss"]
    loss = {key: final(values) for key, values in curves.items()}
    assert loss["Adam"] < min(loss["Momentum"], loss["AdaGrad"]) < loss["SGD"] - 0.1
    curves = scripts.weight_init_compare.run([*fashion, "--iters", "300"])["train_loss"]
    init = {key: final(values) for key, values in curves.items()}
    assert init["He"] < init["Xavier"] - 0.2 < init["std=0.01"] - 0.4 and init["std=0.01"] > 2.29


@pytest.mark.slow
@real_data
def test_fashion_mnist_batch_norm(scripts, fashion):
    results = scripts.batch_norm_test.run([*fashion, "--epochs", "6"])
    small = [i for i, w in enumerate(results["weight_scales"]) if w < 0.05]
    assert all(results["bn_train_acc"][i][-1] > results["train_acc"][i][-1] + 0.2 for i in small)


@pytest.mark.slow
@real_data
def test_fashion_mnist_weight_decay_and_dropout_narrow_the_gap(scripts, fashion):
    decayed = scripts.overfit_weight_decay.run(fashion)
    free = scripts.overfit_weight_decay.run([*fashion, "--weight-decay-lambda", "0"])
    assert free["train_acc_list"][-1] > 0.98 and _gap(decayed) < _gap(free) - 0.1
    dropped = scripts.overfit_dropout.run([*fashion, "--epochs", "151"])
    free = scripts.overfit_dropout.run([*fashion, "--epochs", "151", "--no-dropout"])
    assert free["train_acc_list"][-1] > 0.95 and _gap(dropped) < _gap(free) - 0.1
