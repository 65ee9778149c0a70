import sys

import numpy as np
import pytest

from anynet import plot

matplotlib = pytest.importorskip("matplotlib")


def _pixels(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_training_curves(tmp_path):
    history = {"train_loss_list": list(np.linspace(2.3, 0.3, 120)), "train_acc_list": [0.8, 0.9],
               "test_acc_list": [0.78, 0.86]}
    figure = plot.plot_training_curves(history, tmp_path / "curves.png")
    left, right = figure.axes
    assert left.get_xlabel() == "step" and len(left.lines[0].get_xdata()) == 120
    assert list(right.lines[1].get_ydata()) == [0.78, 0.86] and right.get_legend() is not None
    image = _pixels(tmp_path / "curves.png")
    assert image.shape[0] > 200 and image.std() > 0.01  # a real picture, not a blank
    with pytest.raises(ValueError, match="the history is empty"):
        plot.plot_training_curves({"train_loss_list": [], "train_acc_list": [], "test_acc_list": []})


def test_activation_figure_on_a_device(tmp_path, device):
    figure = plot.plot_activations(tmp_path / "act.png", device=device)
    lines = figure.axes[0].lines
    assert [line.get_label() for line in lines] == ["step_function", "sigmoid", "relu"]
    x, sig = lines[1].get_xdata(), lines[1].get_ydata()
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-x)), rtol=1e-5)
    assert (tmp_path / "act.png").stat().st_size > 1000


def test_misclassified_grid(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((30, 784)).astype(np.float32)
    t = np.arange(30) % 10
    p = np.eye(10)[t]
    p[[3, 7, 11]] = np.eye(10)[[4, 8, 2]] * 0.9 + 0.01  # three wrong guesses
    figure = plot.plot_misclassified(x, t, p, tmp_path / "wrong.png", class_names=[f"c{i}" for i in range(10)])
    titles = [axis.get_title() for axis in figure.axes if axis.get_title()]
    assert titles == ["true c3\npred c4 (0.91)", "true c7\npred c8 (0.91)", "true c1\npred c2 (0.91)"]
    with pytest.raises(ValueError, match="30 images, 29 labels and 30 predictions"):
        plot.plot_misclassified(x, t[:-1], p)


def test_without_matplotlib_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match=r'pip install "anynet\[plot\]"'):
        plot.plot_activations()
