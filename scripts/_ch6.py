"""What the chapter-6 walkthroughs (scripts/ch6_*.py) share: their options, the data on the device, a training
step, the losses read in blocks, and matplotlib for --plot.

Each experiment's settings, loop and figure stay in its script as in the book, except what two of the book's scripts
repeat word for word: the side-by-side loop and figure of the two loss comparisons (compare_losses) and the end of
the two overfitting scripts (overfit_results).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anynet
from anynet.datasets import load_dataset
from anynet.plot import INSTALL_HINT, SMOOTH_WINDOW, smooth_curve

# What a script's main turns into one line on stderr (exit status 1) instead of a traceback.
USER_ERRORS = (OSError, ValueError, TypeError, FloatingPointError, ImportError)


def make_parser(doc: str, datasets: tuple[str, ...] = ("mnist", "fashion-mnist"),
                dataset_help: str = "mnist (default, as the book) or fashion-mnist") -> argparse.ArgumentParser:
    """The options every chapter-6 script takes (the chapter-7 and -8 ones too, with one more dataset); each adds
    its own size options."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, torch:cuda, strict, ... or auto (default)")
    parser.add_argument("--dataset", default="mnist", choices=list(datasets), help=dataset_help)
    parser.add_argument("--data-dir", default=None,
                        help="the folder that holds mnist/ and fashion-mnist/ (as ANYNET_DATA; else the usual places)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights, batches and dropout masks")
    parser.add_argument("--plot", metavar="FILE.png", default=None, help="write the book's figure to this file")
    return parser


def positive(value: str) -> int:
    """argparse type: an integer of at least 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def check_plot(path: str | None, smoothed_points: int | None = None) -> None:
    """Refuse an unusable --plot before training: matplotlib missing, a folder, a missing folder, or curves too short
    to smooth (``smoothed_points``: how many points the curves smoothed with smooth_curve will have)."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    target = Path(path).expanduser()
    if target.is_dir():
        raise ValueError(f"--plot {path} is a folder: name the image file to write, e.g. {target / 'figure.png'}")
    if not target.parent.is_dir():
        raise ValueError(f"--plot {path}: the folder {target.parent} does not exist")
    if smoothed_points is not None and smoothed_points < SMOOTH_WINDOW:
        raise ValueError(f"--plot smooths the curves over {SMOOTH_WINDOW} iterations (the book's smooth_curve): "
                         f"train for at least {SMOOTH_WINDOW}, not {smoothed_points}")


def load(args: argparse.Namespace, train_size: int | None = None):
    """(where, (x_train, t_train), (x_test, t_test)): the dataset of ``args`` with labels as class numbers, the
    first ``train_size`` training samples (the book's ``x_train[:300]``), moved once onto ``args.device``."""
    where = anynet.device(args.device)  # a bad device is said before the data is read
    (x_train, t_train), (x_test, t_test) = load_dataset(args.dataset, normalize=True, one_hot_label=False,
                                                        data_dir=args.data_dir)
    if train_size is not None:
        if train_size > x_train.shape[0]:
            raise ValueError(f"--train-size {train_size}: {args.dataset} has {x_train.shape[0]} training samples")
        x_train, t_train = x_train[:train_size], t_train[:train_size]
    with where.active():
        moved = [where.asarray(x_train), where.asarray(t_train), where.asarray(x_test), where.asarray(t_test)]
    print(f"device: {where.name}; {args.dataset}: {x_train.shape[0]} training and {x_test.shape[0]} test images; "
          f"seed {args.seed}")
    return where, (moved[0], moved[1]), (moved[2], moved[3])


def batch_indices(where, seed: int, steps: int, train_size: int, batch_size: int) -> Any:
    """Every step's batch, drawn with replacement as the book's ``np.random.choice(train_size, batch_size)``, from
    a host generator seeded by ``seed`` (the same batches on every device), moved onto the device at once:
    row i (``batches[i, ...]``) holds step i's sample indices."""
    rng = anynet.backend.host_generator(seed)
    return where.asarray(rng.integers(0, train_size, size=(steps, batch_size)))


def training_step(network, optimizer) -> Callable[[Any, Any, Any], Any]:
    """``step(x, t, indices) -> loss``: the book's ``grads = network.gradient(x_batch, t_batch)`` and
    ``optimizer.update(network.params, grads)`` on the samples ``indices`` of (x, t), through the network's fused
    step where it has one (same results, to rounding). The loss (of the batch, before the update) stays on the
    device."""
    fused = network.fused_step(optimizer)
    if fused is not None:
        return fused

    def step(x, t, indices):
        xp = anynet.namespace(x)
        grads = network.gradient(xp.take(x, indices, axis=0), xp.take(t, indices, axis=0))
        optimizer.update(network.params, grads)
        return network.last_loss

    return step


def train_side_by_side(steps: dict[str, Callable], x_train, t_train, batches, report_every: int = 100
                       ) -> dict[str, list[float]]:
    """The loop of optimizer_compare_mnist.py and weight_init_compare.py: at each iteration every network of
    ``steps`` (key -> training step) takes a step on the same batch (row i of ``batches``); each step's loss is
    kept, and those of iteration 0, 100, 200, ... are printed as the book prints them, one row per iteration.
    The losses are read from the device once per ``report_every`` steps."""
    iters = batches.shape[0]
    print(f"{'iteration':>9} " + " ".join(f"{key:>9}" for key in steps))
    train_loss: dict[str, list[float]] = {key: [] for key in steps}
    pending: dict[str, list] = {key: [] for key in steps}
    for i in range(iters):
        for key, step in steps.items():
            pending[key].append(step(x_train, t_train, batches[i, ...]))
        if i % report_every == 0 or i == iters - 1:
            for key in steps:
                train_loss[key] += read(pending[key])
                pending[key] = []
            if i % report_every == 0:
                print(f"{i:>9} " + " ".join(f"{train_loss[key][i]:9.4f}" for key in steps), flush=True)
    return train_loss


def compare_losses(steps: dict[str, Callable], x_train, t_train, batches, plot: str | None, markers: dict[str, str],
                   ylim: tuple[float, float], report_every: int = 100) -> dict:
    """The rest of the two loss comparisons: train side by side (timed), print each curve's final loss, and draw
    the book's figure (the smoothed losses against the iterations) when ``plot`` names a file."""
    started = time.perf_counter()
    train_loss = train_side_by_side(steps, x_train, t_train, batches, report_every)
    seconds = time.perf_counter() - started
    iters = batches.shape[0]
    print(f"final loss (mean of the last {min(report_every, iters)} iterations): "
          f"{final_losses(train_loss, report_every)}; {seconds:.1f} s")
    results = {"train_loss": train_loss, "seconds": seconds}
    if plot:
        figure, axis = pyplot().subplots(figsize=(7, 5))
        for key in steps:
            axis.plot(range(iters), smooth_curve(train_loss[key]), marker=markers[key], markevery=100, label=key)
        axis.set(xlabel="iterations", ylabel="loss", ylim=ylim)
        axis.legend()
        save(figure, plot)
        results["figure"] = figure
    return results


def overfit_results(train_acc_list: list[float], test_acc_list: list[float], seconds: float, plot: str | None,
                    results: dict | None = None) -> dict:
    """The end of the two overfitting scripts: the final accuracies and their gap printed, the figure drawn when
    ``plot`` names a file; returns ``results`` with "seconds" (and "figure") added."""
    print(f"final: train acc {train_acc_list[-1]:.4f}, test acc {test_acc_list[-1]:.4f}, gap "
          f"{train_acc_list[-1] - test_acc_list[-1]:.4f}; {seconds:.1f} s")
    results = {**(results or {}), "seconds": seconds}
    if plot:
        results["figure"] = plot_accuracy(train_acc_list, test_acc_list, plot)
    return results


def final_losses(train_loss: dict[str, list[float]], last: int = 100) -> str:
    """``SGD 0.2412, Adam 0.0581``: each curve's mean over its ``last`` iterations (less noisy than one step)."""
    return ", ".join(f"{key} {sum(losses[-last:]) / len(losses[-last:]):.4f}" for key, losses in train_loss.items())


def read(values: list) -> list[float]:
    """Device scalars (losses) to Python floats, in one read: no host synchronisation per step."""
    if not values:
        return []
    return anynet.to_numpy(anynet.namespace(values[0]).stack(values)).tolist()


def pyplot():
    """matplotlib.pyplot, drawing to files when there is no screen."""
    import matplotlib

    if not os.environ.get("DISPLAY") and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: str) -> None:
    figure.tight_layout()
    figure.savefig(Path(path).expanduser(), dpi=100)
    print(f"figure: {path}")


def plot_accuracy(train_acc_list: list[float], test_acc_list: list[float], path: str):
    """The figure of the book's two overfitting scripts: train and test accuracy against the epochs."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7, 5))
    x = range(len(train_acc_list))
    axis.plot(x, train_acc_list, marker="o", label="train", markevery=10)
    axis.plot(x, test_acc_list, marker="s", label="test", markevery=10)
    axis.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
    axis.legend(loc="lower right")
    save(figure, path)
    return figure


def run_main(run: Callable[[list[str] | None], dict], argv: list[str] | None) -> int:
    """A script's main: ``run(argv)``, with a mistake (no data, a bad device, ...) said in one line."""
    try:
        run(argv)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
