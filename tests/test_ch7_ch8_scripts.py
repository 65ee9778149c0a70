"""scripts/ch7_train_convnet.py and scripts/ch8_deep_convnet.py, the book's chapter-7 and chapter-8 walkthroughs,
run in-process with short settings.

On synthetic images (class prototypes plus noise, (N, 1, 28, 28), in place of the dataset loader) SimpleConvNet must
learn, the accuracies printed must be what the trained network measures, the saved file must hold it, the run must
be the same on every device, and the figure must show the accuracies and the first layer's filters before and
after training as the book's filter_show does. DeepConvNet must score saved weights as the network does, on every
device, and train with --train. On the real MNIST test split the book's trained DeepConvNet weights must give the
accuracy measured for them (0.976 on the first 1000 images, as the book's own code in float64 gives).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import anynet
from anynet.io import load_params
from anynet.networks import DeepConvNet, SimpleConvNet

matplotlib = pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
DATA = os.environ.get("ANYNET_DATA")
MNIST_TEST = Path(DATA or "", "mnist", "t10k-images-idx3-ubyte.gz")
BOOK_DEEP = Path(DATA or "", "book", "deep_convnet_params.pkl")

real_mnist = pytest.mark.skipif(not MNIST_TEST.is_file() or not BOOK_DEEP.is_file(),
                                reason="real data absent: set ANYNET_DATA to a folder with mnist/ and book/ "
                                       "(CI uses ../shared/data)")


@pytest.fixture(scope="module")
def scripts():
    """The two scripts and what they share, imported as `python scripts/ch7_....py` would import them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(SCRIPTS))
        ch7 = importlib.import_module("ch7_train_convnet")
        ch8 = importlib.import_module("ch8_deep_convnet")
        shared = importlib.import_module("_ch7")
    return SimpleNamespace(ch7=ch7, ch8=ch8, shared=shared)


def images(noise: float = 0.2, n_train: int = 300, n_test: int = 300, seed: int = 0):
    """The book's load_mnist(flatten=False) shapes and dtypes: each class a sparse prototype image, each image its
    prototype plus noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 1, 28, 28)) * (rng.random((10, 1, 28, 28)) < 0.3)

    def draw(n):
        t = rng.integers(0, 10, n)
        return np.clip(prototypes[t] + noise * rng.standard_normal((n, 1, 28, 28)), 0, 1).astype(np.float32), t

    return draw(n_train), draw(n_test)


def use_data(monkeypatch, scripts, data) -> list:
    """The scripts' loader answers with ``data``; returns the list of the splits asked for."""
    asked = []

    def load_dataset(name, normalize, flatten, one_hot_label, split=None, data_dir=None):
        assert normalize and not flatten and not one_hot_label  # the book's load_mnist(flatten=False)
        asked.append((name, split))
        return data[1] if split == "test" else data

    monkeypatch.setattr(scripts.shared, "load_dataset", load_dataset)
    return asked


@pytest.fixture
def easy(monkeypatch, scripts):
    data = images()
    use_data(monkeypatch, scripts, data)
    return data


def epoch_rows(printed: str, epochs: int) -> list[list[float]]:
    """The Trainer's table: [loss, train acc, test acc] per epoch."""
    rows = re.findall(rf"^\s*\d+/{epochs}\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", printed, flags=re.M)
    return [[float(v) for v in row] for row in rows]


def printed_accuracy(printed: str) -> tuple[float, int, int]:
    found = re.search(r"^test accuracy: ([\d.]+) \((\d+) of (\d+)\)", printed, flags=re.M)
    assert found, printed
    return float(found[1]), int(found[2]), int(found[3])


def printed_pairs(printed: str) -> dict:
    lines = printed.splitlines()
    start = lines.index("======= misclassified result =======")
    assert lines[start + 1] == "{view index: (label, inference), ...}"
    return eval(lines[start + 2], {})  # the book prints the dict itself


def shown(axes) -> np.ndarray:
    return np.stack([axis.images[0].get_array() for axis in axes])


def book_normalized(filters) -> np.ndarray:
    """What the book's imshow(filters[i, 0]) shows: each filter's first channel from [min, max] to [0, 1]."""
    first = np.asarray(anynet.to_numpy(filters), dtype=np.float64)[:, 0]
    low = first.min(axis=(1, 2), keepdims=True)
    return (first - low) / (first.max(axis=(1, 2), keepdims=True) - low)


def assert_picture(path):
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.std() > 0.01  # a real picture, not a blank


# -- chapter 7 ---------------------------------------------------------------------------------------------------

def test_ch7_trains_simple_convnet_and_prints_what_the_network_measures(scripts, easy, tmp_path, capsys):
    (x_train, t_train), (x_test, t_test) = easy
    saved, figure_path = tmp_path / "params.npz", tmp_path / "convnet.png"
    results = scripts.ch7.run(["--device", "cpu", "--train-size", "300", "--epochs", "4", "--lr", "0.005",
                               "--evaluate-size", "100", "--save", str(saved), "--plot", str(figure_path)])
    network = results["network"]
    assert isinstance(network, SimpleConvNet) and network.params["W1"].shape == (30, 1, 5, 5)
    assert network.params["W2"].shape == (30 * 12 * 12, 100) and network.params["W3"].shape == (100, 10)
    assert len(results["train_loss_list"]) == 4 * 3  # 4 epochs of 300 / 100 steps
    assert results["test_acc_list"][0] < 0.3 < 0.6 < results["final_test_accuracy"]  # it learns

    printed = capsys.readouterr().out
    assert "device: cpu; mnist: 300 training and 300 test images; seed 0" in printed
    assert "3 steps per epoch of 100, 4 epochs, Adam" in printed
    rows = epoch_rows(printed, 4)
    assert [row[2] for row in rows] == pytest.approx(results["test_acc_list"], abs=5e-5)
    # the last row was measured on the trained network, on the first 100 images of each set (--evaluate-size)
    assert rows[-1][1] == pytest.approx(network.accuracy(x_train[:100], t_train[:100]), abs=5e-5)
    assert rows[-1][2] == pytest.approx(network.accuracy(x_test[:100], t_test[:100]), abs=5e-5)
    final = float(re.search(r"final test accuracy: ([\d.]+)", printed)[1])
    assert final == round(network.accuracy(x_test, t_test), 4) == round(results["final_test_accuracy"], 4)

    # the initial filters are those the seed draws; Adam changed them
    np.testing.assert_array_equal(results["filters_before"], SimpleConvNet(seed=0).params["W1"])
    assert not np.allclose(results["filters_before"], network.params["W1"])
    assert f"saved the network's parameters: {saved}" in printed
    stored = load_params(saved)
    assert sorted(stored) == sorted(network.params)
    for name, value in network.params.items():
        np.testing.assert_array_equal(stored[name], value)
    assert SimpleConvNet().load_params(saved).accuracy(x_test, t_test) == network.accuracy(x_test, t_test)

    left, right = results["figure"].subfigs
    axis = left.axes[0]
    assert (axis.get_xlabel(), axis.get_ylabel(), axis.get_ylim()) == ("epochs", "accuracy", (0.0, 1.0))
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["train", "test"]
    assert list(axis.lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(axis.lines[0].get_ydata()) == results["train_acc_list"]
    assert list(axis.lines[1].get_ydata()) == results["test_acc_list"]
    before, after = right.subfigs
    assert (before.get_suptitle(), after.get_suptitle()) == ("W1 before training", "W1 after training")
    assert len(before.axes) == len(after.axes) == 30
    assert {a.get_subplotspec().get_geometry()[:2] for a in before.axes + after.axes} == {(4, 8)}  # the book's nx=8
    np.testing.assert_allclose(shown(before.axes), book_normalized(results["filters_before"]), atol=1e-12)
    np.testing.assert_allclose(shown(after.axes), book_normalized(network.params["W1"]), atol=1e-12)
    assert f"figure: {figure_path}" in printed
    assert_picture(figure_path)


def test_ch7_is_the_same_run_on_every_device(scripts, easy, device):
    """Weights and batches come from the seed on the host: the losses agree across devices (to float32 rounding,
    NumPy's channels-last convolution against the generic im2col path)."""
    argv = ["--train-size", "200", "--epochs", "2", "--batch-size", "50", "--lr", "0.005", "--evaluate-size", "100"]
    here = scripts.ch7.run([*argv, "--device", "cpu"])
    there = scripts.ch7.run([*argv, "--device", device.name])
    assert there["network"].device == device and len(there["train_loss_list"]) == 8
    np.testing.assert_allclose(there["train_loss_list"], here["train_loss_list"], rtol=1e-4)
    assert there["final_test_accuracy"] == pytest.approx(here["final_test_accuracy"], abs=0.01)
    assert here["train_loss_list"][-1] < here["train_loss_list"][0]


# -- chapter 8 ---------------------------------------------------------------------------------------------------

def test_ch8_scores_saved_weights_as_the_network_does_on_every_device(scripts, easy, device, tmp_path, capsys):
    x_test, t_test = easy[1][0][:100], easy[1][1][:100]
    weights = tmp_path / "deep.npz"
    reference = DeepConvNet(seed=5)
    reference.save_params(weights)
    results = scripts.ch8.run(["--device", device.name, "--weights", str(weights), "--test-size", "100"])
    guesses = np.argmax(reference.predict(x_test), axis=1)
    np.testing.assert_array_equal(results["guesses"], guesses)
    network = results["network"]
    assert network.device == device and results["test_accuracy"] == network.accuracy(x_test, t_test)
    printed = capsys.readouterr().out
    accuracy, correct, n = printed_accuracy(printed)
    assert (correct, n) == (int((guesses == t_test).sum()), 100)
    assert accuracy == round(reference.accuracy(x_test, t_test), 4)
    wrong = np.nonzero(guesses != t_test)[0][:20]
    assert printed_pairs(printed) == {view: (int(t_test[i]), int(guesses[i])) for view, i in enumerate(wrong, 1)}
    assert f"DeepConvNet with {weights}; mnist: 100 test images" in printed


def test_ch8_trains_a_deep_convnet_with_train(scripts, easy, tmp_path, capsys):
    x_test, t_test = easy[1][0][:100], easy[1][1][:100]
    saved, figure_path = tmp_path / "deep.npz", tmp_path / "wrong.png"
    results = scripts.ch8.run(["--device", "cpu", "--train", "--train-size", "200", "--epochs", "1",
                               "--batch-size", "50", "--test-size", "100", "--save", str(saved),
                               "--plot", str(figure_path)])
    network = results["network"]
    assert isinstance(network, DeepConvNet) and len(results["train_loss_list"]) == 4
    assert results["weights"] is None
    out, err = capsys.readouterr()
    assert "warning: DeepConvNet trains slowly on a CPU" in err and "1 epoch of 200 images is 4 steps" in err
    accuracy, correct, n = printed_accuracy(out)
    assert n == 100 and accuracy == round(network.accuracy(x_test, t_test), 4)
    assert f"final test accuracy: {network.accuracy(x_test, t_test):.4f}" in out  # the Trainer's, the same
    stored = DeepConvNet().load_params(saved)
    for name, value in network.params.items():
        np.testing.assert_array_equal(stored.params[name], value)

    titled = [axis for axis in results["figure"].axes if axis.get_title()]
    pairs = printed_pairs(out)
    assert len(titled) == len(pairs) == min(20, 100 - correct)
    for axis, (label, guess) in zip(titled, pairs.values()):
        assert axis.get_title().startswith(f"true {label}\npred {guess} (")
    assert_picture(figure_path)


def test_ch8_finds_the_books_weights(scripts, easy, tmp_path, monkeypatch):
    here, data_dir, env_dir = tmp_path / "here", tmp_path / "data", tmp_path / "env"
    for folder in (here, data_dir / "book", env_dir / "book"):
        folder.mkdir(parents=True)
    DeepConvNet(seed=1).save_params(here / "deep_convnet_params.pkl")  # anynet writes an .npz whatever the name
    monkeypatch.chdir(here)
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    argv = ["--device", "cpu", "--test-size", "10"]
    assert scripts.ch8.run(argv)["weights"] == Path("deep_convnet_params.pkl")  # the book's script reads it here
    DeepConvNet(seed=2).save_params(env_dir / "book" / "deep_convnet_params.pkl")
    monkeypatch.setenv("ANYNET_DATA", str(env_dir))
    assert scripts.ch8.run(argv)["weights"] == env_dir / "book" / "deep_convnet_params.pkl"
    DeepConvNet(seed=3).save_params(data_dir / "book" / "deep_convnet_params.pkl")
    found = scripts.ch8.run([*argv, "--data-dir", str(data_dir)])
    assert found["weights"] == data_dir / "book" / "deep_convnet_params.pkl"
    np.testing.assert_array_equal(found["network"].params["W8"], DeepConvNet(seed=3).params["W8"])


def test_mnist_test_cuts_the_test_split_in_two(scripts, monkeypatch):
    x, t = np.arange(10000), np.arange(10000) % 10
    asked = use_data(monkeypatch, scripts, (None, (x, t)))
    (x_train, t_train), (x_test, t_test) = scripts.shared.load_images("mnist-test", None)
    assert x_train.tolist() == list(range(5000)) and x_test.tolist() == list(range(5000, 10000))
    assert t_test.tolist() == (np.arange(5000, 10000) % 10).tolist()
    assert scripts.shared.load_images("mnist-test", None, split="test")[0].tolist() == list(range(5000, 10000))
    assert asked == [("mnist", "test"), ("mnist", "test")]  # MNIST's training files are never needed
    assert scripts.shared.class_names("mnist-test")[9] == "9"
    assert scripts.shared.class_names("fashion-mnist")[9] == "Ankle boot"


def test_ch8_tests_without_the_training_files(scripts, monkeypatch, tmp_path):
    asked = use_data(monkeypatch, scripts, (None, images(n_test=50)[1]))
    DeepConvNet(seed=1).save_params(tmp_path / "deep.npz")
    scripts.ch8.run(["--device", "cpu", "--weights", str(tmp_path / "deep.npz")])
    assert asked == [("mnist", "test")]


def test_mistakes_are_one_line_before_any_work(scripts, easy, monkeypatch, tmp_path, capsys):
    ch7, ch8 = scripts.ch7, scripts.ch8
    assert ch7.main(["--device", "cpu", "--train-size", "1000"]) == 1
    assert capsys.readouterr().err == "error: --train-size 1000: mnist has 300 training images\n"
    assert ch7.main(["--device", "cpu", "--save", str(tmp_path)]) == 1
    assert "--save" in (err := capsys.readouterr().err) and "is a folder" in err
    assert ch7.main(["--device", "cpu", "--plot", str(tmp_path / "absent" / "f.png")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert ch7.main(["--device", "tpu"]) == 1
    assert "tpu" in capsys.readouterr().err

    for argv, message in ((["--epochs", "3"], "--epochs goes with --train"),
                          (["--save", "x.npz", "--lr", "0.01"], "--lr, --save go with --train"),
                          (["--train", "--weights", "w.npz"], "give one of them")):
        with pytest.raises(SystemExit) as stopped:
            ch8.run(argv)
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    assert ch8.main(["--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "deep_convnet_params.pkl was not found (looked for ./deep_convnet_params.pkl)" in err
    assert "--weights FILE" in err and "--train" in err
    assert ch8.main(["--device", "cpu", "--weights", "absent.pkl"]) == 1
    assert capsys.readouterr().err == "error: --weights absent.pkl: no such file\n"
    DeepConvNet(seed=1).save_params(tmp_path / "deep.npz")
    assert ch8.main(["--device", "cpu", "--weights", "deep.npz", "--test-size", "301"]) == 1
    assert capsys.readouterr().err == "error: --test-size 301: mnist has 300 test images\n"
    SimpleConvNet(seed=1).save_params(tmp_path / "simple.npz")
    assert ch8.main(["--device", "cpu", "--weights", "simple.npz"]) == 1
    assert "parameters do not fit this network" in capsys.readouterr().err


def test_each_script_runs_as_a_command():
    for name in ("ch7_train_convnet", "ch8_deep_convnet"):
        script = SCRIPTS / f"{name}.py"
        assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env python3\n"), name
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT,
                                timeout=120)
        assert result.returncode == 0 and "--train-size" in result.stdout and "mnist-test" in result.stdout


# -- real MNIST test split and the book's weights ------------------------------------------------------------------

@pytest.fixture
def mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return ["--device", "cpu", "--data-dir", DATA]


def _the_books_misclassified(results, printed, x, t, n):
    """The printed accuracy and pairs are the network's own, and the figure shows those images."""
    network = results["network"]
    assert printed_accuracy(printed)[0] == round(network.accuracy(x[:n], t[:n]), 4)
    pairs = printed_pairs(printed)
    guesses = results["guesses"]
    wrong = np.nonzero(guesses != t[:n])[0][:20]
    assert pairs == {view: (int(t[i]), int(guesses[i])) for view, i in enumerate(wrong, 1)}
    return pairs, wrong


@real_mnist
def test_ch8_the_books_weights_on_the_first_1000_mnist_test_images(scripts, mnist, tmp_path, capsys):
    figure_path = tmp_path / "misclassified.png"
    results = scripts.ch8.run([*mnist, "--test-size", "1000", "--plot", str(figure_path)])
    assert results["weights"] == Path(DATA) / "book" / "deep_convnet_params.pkl"
    # measured with the book's own code (NumPy, float64) on the same images: 0.976
    assert results["test_accuracy"] == 0.976 and results["correct"] == 976
    printed = capsys.readouterr().out
    assert "test accuracy: 0.9760 (976 of 1000)" in printed
    x, t = anynet.load_mnist(flatten=False, split="test", data_dir=DATA)
    pairs, wrong = _the_books_misclassified(results, printed, x, t, 1000)
    assert list(pairs.values())[:5] == [(9, 8), (9, 8), (9, 8), (6, 0), (8, 5)]

    axes = [axis for axis in results["figure"].axes if axis.images]
    assert len(axes) == 20 and axes[0].get_subplotspec().get_geometry()[:2] == (4, 5)  # the book's 4 x 5
    np.testing.assert_array_equal(shown(axes), x[wrong].reshape(20, 28, 28))
    assert axes[0].get_title().startswith("true 9\npred 8 (")
    assert_picture(figure_path)


@pytest.mark.slow
@real_mnist
def test_ch8_the_books_weights_on_the_mnist_test_split(scripts, mnist, capsys):
    results = scripts.ch8.run(mnist)
    assert results["test_accuracy"] == 0.9797  # the whole split, as the book's misclassified_mnist.py
    x, t = anynet.load_mnist(flatten=False, split="test", data_dir=DATA)
    _the_books_misclassified(results, capsys.readouterr().out, x, t, 10000)


@pytest.mark.slow
@real_mnist
def test_ch7_learns_digits_from_half_the_mnist_test_split(scripts, mnist, capsys):
    results = scripts.ch7.run([*mnist, "--dataset", "mnist-test", "--epochs", "1"])
    x, t = anynet.load_mnist(flatten=False, split="test", data_dir=DATA)
    network = results["network"]
    assert len(results["train_loss_list"]) == 50  # 5000 images in batches of 100
    assert results["final_test_accuracy"] == network.accuracy(x[5000:], t[5000:]) > 0.75
    printed = capsys.readouterr().out
    assert "mnist-test: 5000 training and 5000 test images" in printed
    assert f"final test accuracy: {results['final_test_accuracy']:.4f}" in printed
