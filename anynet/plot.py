"""Figures with matplotlib (the ``plot`` extra): training curves, the chapter-3 activations, misclassified images.

Each function draws into a new figure, saves it to ``path`` when one is given (PNG, PDF, SVG... by suffix), and
returns the figure. Arrays may live on any device; they are brought to the host here, at the edge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .backend import device as make_device
from .backend import to_numpy
from .functions import relu, sigmoid, step_function

__all__ = ["plot_training_curves", "plot_activations", "plot_misclassified"]

INSTALL_HINT = 'plotting needs matplotlib: pip install "anynet[plot]" (or pip install matplotlib)'


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
        figure.savefig(path, dpi=120)
    return figure


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
