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


def test_a_figure_that_cannot_be_saved_is_closed_and_the_error_raised(tmp_path):
    import matplotlib.pyplot as plt

    history = {"train_loss_list": [2.0, 1.0], "train_acc_list": [0.8], "test_acc_list": [0.7]}
    open_before = plt.get_fignums()
    with pytest.raises(FileNotFoundError):
        plot.plot_training_curves(history, tmp_path / "no-such-folder" / "curves.png")
    with pytest.raises(FileNotFoundError):
        plot.filter_show(np.ones((2, 1, 3, 3)), path=tmp_path / "no-such-folder" / "filters.png")
    assert plt.get_fignums() == open_before  # the caller never got them to close
    figure = plot.plot_training_curves(history)  # unsaved: kept open for plt.show()
    assert plt.get_fignums() == open_before + [figure.number]
    plot.close(figure)
    assert plt.get_fignums() == open_before


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


def _book_normalized(filters):
    """What the book's ``imshow(filters[i, 0])`` shows of filter i: its first channel mapped from [min, max] to
    [0, 1] (matplotlib's default normalisation, per image)."""
    first = np.asarray(filters, dtype=np.float64)[:, 0]
    return np.stack([(f - f.min()) / (f.max() - f.min()) if f.max() > f.min() else np.zeros_like(f) for f in first])


def test_filter_show_draws_each_filter_as_the_book_does(tmp_path):
    rng = np.random.default_rng(0)
    filters = (0.01 * rng.standard_normal((30, 3, 5, 5))).astype(np.float32)
    filters[7] = 0.25  # a constant filter: all one grey, as imshow draws it
    figure = plot.filter_show(filters, path=tmp_path / "filters.png")
    axes = figure.axes
    assert len(axes) == 30 and all(len(axis.images) == 1 for axis in axes)
    assert {axis.get_subplotspec().get_geometry()[:2] for axis in axes} == {(4, 8)}  # ceil(30 / 8) rows of 8
    assert [axis.get_subplotspec().num1 for axis in axes] == list(range(30))
    assert all(list(axis.get_xticks()) == [] and list(axis.get_yticks()) == [] for axis in axes)
    shown = np.stack([axis.images[0].get_array() for axis in axes])
    np.testing.assert_allclose(shown, _book_normalized(filters), atol=1e-12)
    assert shown[7].max() == 0.0 and shown[0].min() == 0.0 and shown[0].max() == 1.0
    image = axes[0].images[0]
    assert image.get_cmap().name == "gray_r" and image.get_clim() == (0.0, 1.0)
    np.testing.assert_allclose(plot.normalized_filters(filters, channel=2), _book_normalized(filters[:, 2:]))
    assert _pixels(tmp_path / "filters.png").std() > 0.01


def test_filter_show_takes_filters_on_any_device_and_draws_into_a_subfigure(device):
    rng = np.random.default_rng(1)
    host = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    figure = plot._pyplot().figure()
    left, right = figure.subfigures(1, 2)
    drawn = plot.filter_show(device.asarray(host), nx=4, figure=right, title="W1")
    assert drawn is right and right.get_suptitle() == "W1" and left.axes == []
    assert len(right.axes) == 6 and right.axes[0].get_subplotspec().get_geometry()[:2] == (2, 4)
    np.testing.assert_allclose(np.stack([axis.images[0].get_array() for axis in right.axes]),
                               _book_normalized(host), rtol=1e-6, atol=1e-7)


def test_filter_show_says_what_it_takes():
    with pytest.raises(ValueError, match=r"\(filter_num, channels, height, width\).*shape \(30, 25\)"):
        plot.filter_show(np.zeros((30, 25)))
    with pytest.raises(ValueError, match="channel 1 of filters with 1 channel"):
        plot.filter_show(np.zeros((4, 1, 5, 5)), channel=1)
    with pytest.raises(ValueError, match="nx .* positive integer, got 0"):
        plot.filter_show(np.zeros((4, 1, 5, 5)), nx=0)
