"""The real MNIST test split and Fashion-MNIST from $ANYNET_DATA (CI points it at ../shared/data)."""

import hashlib
import itertools
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anynet import datasets
from anynet.networks import predict
from tests.helpers import serve_files

DATA = os.environ.get("ANYNET_DATA")
pytestmark = pytest.mark.skipif(
    not DATA or not Path(DATA, "mnist", "t10k-images-idx3-ubyte.gz").is_file(),
    reason="real data absent: set ANYNET_DATA to a folder with mnist/ and fashion-mnist/ (CI uses ../shared/data)",
)
ROOT = Path(__file__).resolve().parents[1]
MNIST_TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Parsed-array caches go to a fresh folder, so these tests parse the real files themselves."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


def test_mnist_test_split():
    x, t = datasets.load_mnist(split="test", download=False)
    assert x.shape == (10000, 784) and x.dtype == np.float32
    assert t[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(t, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS


@pytest.mark.parametrize("normalize, flatten, one_hot", list(itertools.product([True, False], repeat=3)))
def test_fashion_mnist_shapes_and_dtypes(normalize, flatten, one_hot):
    (x_train, t_train), (x_test, t_test) = datasets.load_fashion_mnist(normalize, flatten, one_hot, download=False)
    for x, t, n in ((x_train, t_train, 60000), (x_test, t_test, 10000)):
        assert x.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        assert x.dtype == (np.float32 if normalize else np.uint8)
        assert t.shape == ((n, 10) if one_hot else (n,))
        assert t.dtype == (np.float32 if one_hot else np.int64)
    labels = t_train.argmax(axis=1) if one_hot else t_train
    assert np.bincount(labels, minlength=10).tolist() == [6000] * 10  # Fashion-MNIST is balanced
    if normalize:
        assert float(x_train.max()) == 1.0 and float(x_train.min()) == 0.0


def test_mnist_test_split_all_option_combinations():
    for normalize, flatten, one_hot in itertools.product([True, False], repeat=3):
        x, t = datasets.load_mnist(normalize, flatten, one_hot, split="test", download=False)
        assert x.shape == ((10000, 784) if flatten else (10000, 1, 28, 28))
        assert x.dtype == (np.float32 if normalize else np.uint8)
        assert t.shape == ((10000, 10) if one_hot else (10000,))
        assert (t.argmax(axis=1) if one_hot else t)[:5].tolist() == [7, 2, 1, 0, 4]


def test_the_published_md5_verifies_a_download_of_the_real_files(tmp_path, monkeypatch):
    """Serve the real t10k files on loopback: the download checks them against MNIST's published checksums."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_FOLDER", tmp_path / "system")
    monkeypatch.delenv("ANYNET_DATA")
    source = Path(DATA, "mnist")
    routes = {f"/mnist/{p.name}": (p.read_bytes(), "ok") for p in source.glob("t10k-*.gz")}
    with serve_files(routes) as base:
        x, t = datasets.load_mnist(split="test", mirrors=[f"{base}/mnist/"])
    assert np.bincount(t, minlength=10).tolist() == MNIST_TEST_LABEL_COUNTS
    downloaded = tmp_path / "cache" / "anynet" / "mnist" / "t10k-images-idx3-ubyte.gz"
    assert hashlib.md5(downloaded.read_bytes()).hexdigest() == "9fb629c4189551a2d022fa330f9573f3"


def _book_style_pickle(path):
    rng = np.random.default_rng(3)
    shapes = {"W1": (784, 50), "b1": (50,), "W2": (50, 100), "b2": (100,), "W3": (100, 10), "b3": (10,)}
    weights = {name: rng.normal(0, 0.3, size=shape).astype(np.float32) for name, shape in shapes.items()}
    path.write_bytes(pickle.dumps(weights, protocol=3).replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return weights


def _reference_accuracy(weights, x, t):
    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    z1 = sigmoid(x @ weights["W1"] + weights["b1"])
    z2 = sigmoid(z1 @ weights["W2"] + weights["b2"])
    return float(np.mean(np.argmax(z2 @ weights["W3"] + weights["b3"], axis=1) == t))


def test_predict_matches_the_book_on_real_images(tmp_path, device):
    weights = _book_style_pickle(tmp_path / "w.pkl")
    x, t = datasets.load_mnist(split="test", download=False)
    network = {name: device.asarray(w) for name, w in weights.items()}
    probabilities = predict(network, x[:500])  # host images are moved onto the weights' device
    from anynet import to_numpy

    p = to_numpy(probabilities)
    assert p.shape == (500, 10) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert float(np.mean(p.argmax(axis=1) == t[:500])) == _reference_accuracy(weights, x[:500], t[:500])


def test_ch3_mnist_inference_script(tmp_path):
    weights = _book_style_pickle(tmp_path / "sample_weight.pkl")
    x, t = datasets.load_mnist(split="test", download=False)
    expected = _reference_accuracy(weights, x, t)
    result = subprocess.run(
        [sys.executable, "scripts/ch3_mnist_inference.py", "--weights", str(tmp_path / "sample_weight.pkl"),
         "--device", "cpu", "--batch-size", "100"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "device: cpu, 10000 MNIST test images"
    assert f"accuracy {expected:.4f}" in lines[1] and lines[1].startswith("one image at a time:")
    assert f"accuracy {expected:.4f}" in lines[2] and lines[2].startswith("batches of 100:")


@pytest.mark.slow
def test_book_chapter4_walkthrough_reaches_its_accuracy_on_fashion_mnist():
    """train_neuralnet.py's setting: 784-50-10 sigmoid, SGD 0.1, batch 100, 10000 steps (the book's code: 0.853)."""
    result = subprocess.run(
        [sys.executable, "scripts/ch4_train_two_layer.py", "--device", "cpu", "--dataset", "fashion-mnist"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if len(line.split()) == 4 and line.split()[0].isdigit()]
    assert [int(row[0]) for row in rows] == list(range(0, 10000, 600)) + [9999]
    final_test = float(rows[-1][3])
    assert final_test >= 0.84, result.stdout
    assert float(rows[-1][1]) < float(rows[0][1])  # the loss fell


@pytest.mark.slow
def test_anynet_train_defaults_reach_the_target_on_fashion_mnist(tmp_path):
    """MLP 784-100-100-10, ReLU, Adam 1e-3, batch 100, 10 epochs (PyTorch, same net and optimizer: 0.878-0.883)."""
    result = subprocess.run(
        [sys.executable, "-m", "anynet", "train", "--dataset", "fashion-mnist", "--device", "cpu",
         "--save", str(tmp_path / "model.npz")],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    final = float(result.stdout.split("final test accuracy: ")[1].split()[0])
    assert final >= 0.875, result.stdout
    evaluated = subprocess.run(
        [sys.executable, "-m", "anynet", "evaluate", "--weights", str(tmp_path / "model.npz"), "--dataset",
         "fashion-mnist", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert f"accuracy: {final:.4f}" in evaluated.stdout
