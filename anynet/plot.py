"""Figures with matplotlib (the ``plot`` extra): training curves, the chapter-3 activations, misclassified images,
the chapter-7 convolution filters.

Each function draws into a new figure, saves it to ``path`` when one is given (PNG, PDF, SVG... by suffix), and
returns the figure. Arrays may live on any device; they are brought to the host here, at the edge.
``smooth_curve`` (the book's, for its loss figures) needs no matplotlib and computes on its input's device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from .backend import device as make_device
from .backend import namespace, to_numpy
from .functions import relu, sigmoid, step_function
from .util import is_whole

__all__ = ["plot_training_curves", "plot_activations", "plot_misclassified", "filter_show", "normalized_filters",
           "smooth_curve", "close"]

INSTALL_HINT = 'plotting needs matplotlib: pip install "anynet[plot]" (or pip install matplotlib)'


# The book's smooth_curve (common/util.py): a Kaiser window of 11 points, beta 2, over the curve, ends reflected.
SMOOTH_WINDOW = 11
SMOOTH_BETA = 2.0


def _bessel_i0(x: float) -> float:
    """The modified Bessel function I0 (the Kaiser window's), by its power series: sum of ((x/2)^k / k!)^2."""
    term, total, k = 1.0, 1.0, 0
    while term > 1e-17 * total:
        k += 1
        term *= (x / (2 * k)) ** 2
        total += term
    return total


def _kaiser(length: int, beta: float) -> list[float]:
    """NumPy's ``kaiser(length, beta)``: I0(beta * sqrt(1 - (2n / (length - 1) - 1)^2)) / I0(beta)."""
    return [_bessel_i0(beta * math.sqrt(max(0.0, 1.0 - (2.0 * n / (length - 1) - 1.0) ** 2))) / _bessel_i0(beta)
            for n in range(length)]


def smooth_curve(x: Any) -> Any:
    """The book's ``smooth_curve`` (common/util.py), used for its loss figures: each point becomes the average of
    the 11 around it, weighted by a Kaiser window (beta 2), with the curve reflected at both ends; the result has
    as many points as ``x``.

    ``x`` is a floating 1-D array of any library, computed on its device and returned there in its dtype, or a
    sequence of numbers (the book passes a list of losses), returned as a host float64 array as the book's is.
    """
    if not hasattr(x, "shape"):
        host = to_numpy(x)
        x = namespace(host).astype(host, namespace(host).float64)  # the book's result is float64 (its window is)
    if x.ndim != 1:
        raise ValueError(f"smooth_curve takes a 1-D curve, got an array of shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < SMOOTH_WINDOW:
        raise ValueError(f"smooth_curve needs at least {SMOOTH_WINDOW} points (its window), got {n}: plot a curve "
                         "that short as it is")
    xp = namespace(x)
    window = _kaiser(SMOOTH_WINDOW, SMOOTH_BETA)
    weights = [w / sum(window) for w in window]
    # the book's np.r_[x[window_len-1:0:-1], x, x[-1:-window_len:-1]]: x[10], ..., x[1], x, x[-1], ..., x[-10]
    padded = xp.concat([xp.flip(x[1:SMOOTH_WINDOW]), x, xp.flip(x[n - SMOOTH_WINDOW + 1:])])
    # np.convolve(weights, padded, "valid")[5:-5] as a weighted sum of shifted slices (the window is symmetric):
    # point i is centred on padded[i + 10], which is x[i]
    offset = SMOOTH_WINDOW // 2
    smoothed = weights[0] * padded[offset:offset + n]
    for j in range(1, SMOOTH_WINDOW):
        smoothed = smoothed + weights[j] * padded[offset + j:offset + j + n]
    return smoothed


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")  # no screen: draw to files
    import matplotlib.pyplot as plt

    return plt


def _finish(figure, path):
    figure.tight_layout()
    if path is not None:
        _save(figure, path)
    return figure


def _save(figure, path):
    """Save ``figure`` to ``path``; a failed save closes it (the caller never gets it to close)."""
    try:
        figure.savefig(path, dpi=120)
    except BaseException:
        close(figure)
        raise


def close(figure: Any) -> None:
    """Close ``figure`` in pyplot, which keeps every figure it made until closed (a program that saves figures in a
    loop would otherwise hold them all)."""
    _pyplot().close(figure)


def plot_training_curves(history: dict, path: str | os.PathLike | None = None):
    """Loss per step (left) and train/test accuracy per epoch (right), from ``Trainer.history()``."""
    plt = _pyplot()
    losses = history["train_loss_list"]
    train_acc, test_acc = history["train_acc_list"], history["test_acc_list"]
    if not losses or not train_acc:
        raise ValueError("the history is empty: train for at least one epoch before plotting it")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(range(1, len(losses) + 1), losses, linewidth=0.6)
    left.set(xlabel="step", ylabel="loss", title="training loss")
    epochs = range(1, len(train_acc) + 1)
    right.plot(epochs, train_acc, marker="o", label="train")
    right.plot(epochs, test_acc, marker="s", linestyle="--", label="test")
    right.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(min(0.5, *train_acc, *test_acc), 1.0))
    right.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
    right.legend(loc="lower right")
    return _finish(figure, path)


def plot_activations(path: str | os.PathLike | None = None, device: str = "cpu"):
    """The book's chapter-3 figure: step function, sigmoid and ReLU over [-5, 5], computed on ``device``."""
    plt = _pyplot()
    where = make_device(device)
    x = where.xp.arange(-5.0, 5.0, 0.1, dtype=where.xp.float32, device=where.native)
    figure, axis = plt.subplots(figsize=(6, 4))
    host_x = to_numpy(x)
    axis.plot(host_x, to_numpy(step_function(x)), linestyle="--", label="step_function")
    axis.plot(host_x, to_numpy(sigmoid(x)), label="sigmoid")
    axis.plot(host_x, to_numpy(relu(x)), linestyle=":", label="relu")
    axis.set(xlabel="x", ylabel="y", ylim=(-0.1, 1.1), title="activation functions")
    axis.legend()
    return _finish(figure, path)


def plot_misclassified(x: Any, t: Any, probabilities: Any, path: str | os.PathLike | None = None,
                       count: int = 25, class_names: Sequence[str] | None = None):
    """A grid of up to ``count`` misclassified images: true label, prediction and its probability."""
    plt = _pyplot()
    images, labels, p = to_numpy(x), to_numpy(t), to_numpy(probabilities)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    if images.shape[0] != labels.shape[0] or p.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images, {labels.shape[0]} labels and {p.shape[0]} predictions: "
                         "they must match")
    guesses = p.argmax(axis=1)
    wrong = (guesses != labels).nonzero()[0][:count]
    names = list(class_names) if class_names is not None else [str(i) for i in range(p.shape[1])]
    columns = 5
    rows = max(1, -(-len(wrong) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, index in zip(axes.flat, wrong):
        axis.imshow(images[index].reshape(28, 28), cmap="gray_r")
        axis.set_title(f"true {names[labels[index]]}\npred {names[guesses[index]]} ({p[index, guesses[index]]:.2f})",
                       fontsize=8)
    if len(wrong) == 0:
        axes.flat[0].set_title("no misclassified images")
    return _finish(figure, path)


def normalized_filters(filters: Any, channel: int = 0) -> Any:
    """What :func:`filter_show` shows: channel ``channel`` of each filter of ``filters`` (FN, C, FH, FW), as a host
    float64 array (FN, FH, FW), each filter scaled on its own to [0, 1] by its minimum and maximum, as the book's
    ``imshow`` scales each image (a constant filter shows as 0, as matplotlib draws it)."""
    host = to_numpy(filters)
    if host.ndim != 4:
        raise ValueError(f"filters must be (filter_num, channels, height, width), as a Convolution's W; got an array "
                         f"of shape {tuple(host.shape)}")
    if not 0 <= channel < host.shape[1]:
        raise ValueError(f"channel {channel} of filters with {host.shape[1]} channel(s): expected 0 to "
                         f"{host.shape[1] - 1}")
    shown = host[:, channel].astype("float64")
    low = shown.min(axis=(1, 2), keepdims=True)
    span = shown.max(axis=(1, 2), keepdims=True) - low
    return (shown - low) / (span + (span == 0))  # a constant filter: 0 / 1


def filter_show(filters: Any, nx: int = 8, *, path: str | os.PathLike | None = None, channel: int = 0,
                title: str | None = None, figure: Any = None):
    """The book's ``filter_show`` (ch07/visualize_filter.py): each filter of ``filters`` (FN, C, FH, FW, e.g. a
    network's ``params["W1"]``, on any device) as a grey image (``gray_r``: high weights dark), ``nx`` to a row,
    without ticks; the book shows the first channel (``channel``).

    Draws into ``figure`` (a matplotlib Figure or SubFigure, to put two sets side by side) or a new figure, with
    ``title`` above the filters; saves a new figure to ``path`` when given. Returns the figure drawn into.
    """
    if not is_whole(nx, 1):
        raise ValueError(f"nx (filters per row) must be a positive integer, got {nx!r}")
    shown = normalized_filters(filters, channel)
    count = shown.shape[0]
    rows = -(-count // nx)
    if figure is None:
        figure = _pyplot().figure(figsize=(min(nx, count) * 0.8, rows * 0.8 + (0.4 if title else 0.0)))
        owned = True
    else:
        owned = False
    figure.subplots_adjust(left=0, right=1, bottom=0.01, top=0.88 if title else 0.99, hspace=0.05, wspace=0.05)
    for i in range(count):
        axis = figure.add_subplot(rows, nx, i + 1, xticks=[], yticks=[])
        axis.imshow(shown[i], cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    if title:
        figure.suptitle(title)
    if owned and path is not None:
        _save(figure, path)
    return figure
