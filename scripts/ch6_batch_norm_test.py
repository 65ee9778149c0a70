#!/usr/bin/env python3
"""The book's batch_norm_test.py (chapter 6): training with and without batch normalization, for 16 weight scales.

    python scripts/ch6_batch_norm_test.py --device auto --dataset fashion-mnist --plot batch_norm.png

On the first 1000 training images, two MultiLayerNetExtend 784-100-100-100-100-100-10 (ReLU), one with batch
normalization after each hidden Affine layer and one without, start from the same initial weights (W times
standard normal draws from --seed) and train side by side with SGD (lr 0.01) on the same batches of 100, drawn
with replacement, for 20 epochs of 10 steps; that is repeated for 16 weight scales W from 1 down to 0.0001
(logspace(0, -4, 16)). As in the book, the training accuracy of both is printed after the first step of each epoch
(epoch 0 is after one step), and the figure is a 4x4 grid of those accuracies, one panel per W.
"""

from __future__ import annotations

import math
import sys
import time
import warnings

import _ch6

from anynet.networks import MultiLayerNetExtend
from anynet.optimizers import SGD

SCALES = 16


def weight_scales(count: int = SCALES) -> list[float]:
    """The book's np.logspace(0, -4, num=16): from 1 down to 1e-4, evenly on a log scale."""
    return [10.0 ** (-4.0 * k / (count - 1)) for k in range(count)]


def train(where, x_train, t_train, weight_init_std, args) -> tuple[list[float], list[float]]:
    """The book's __train(weight_init_std): the training accuracies per epoch without and with batch norm."""
    bn_network = MultiLayerNetExtend(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100, 100],
                                     output_size=10, weight_init_std=weight_init_std, use_batchnorm=True,
                                     device=where, seed=args.seed)
    network = MultiLayerNetExtend(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100, 100],
                                  output_size=10, weight_init_std=weight_init_std, device=where, seed=args.seed)
    optimizer = SGD(lr=args.lr)
    steps = [_ch6.training_step(bn_network, optimizer), _ch6.training_step(network, optimizer)]

    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size // args.batch_size, 1)
    batches = _ch6.batch_indices(where, args.seed, (args.epochs - 1) * iter_per_epoch + 1, train_size,
                                 args.batch_size)
    train_acc_list: list[float] = []
    bn_train_acc_list: list[float] = []
    for i in range(batches.shape[0]):
        for step in steps:
            step(x_train, t_train, batches[i, ...])  # the book does not look at these losses
        if i % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            bn_train_acc_list.append(bn_network.accuracy(x_train, t_train))
            print(f"{len(train_acc_list) - 1:>5} {train_acc_list[-1]:>8.4f} {bn_train_acc_list[-1]:>10.4f}",
                  flush=True)
    return train_acc_list, bn_train_acc_list


def run(argv: list[str] | None = None) -> dict:
    parser = _ch6.make_parser(__doc__)
    parser.add_argument("--train-size", type=_ch6.positive, default=1000, help="training images (the book: 1000)")
    parser.add_argument("--epochs", type=_ch6.positive, default=20, help="epochs (the book: 20)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=100)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD's learning rate (the book: 0.01)")
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot)
    where, (x_train, t_train), _ = _ch6.load(args, train_size=args.train_size)

    scales = weight_scales()
    results: dict = {"weight_scales": scales, "train_acc": [], "bn_train_acc": []}
    started = time.perf_counter()
    for i, w in enumerate(scales):
        print(f"============== {i + 1}/{len(scales)}: W {w:.4g} ==============")
        print(f"{'epoch':>5} {'normal':>8} {'batch norm':>10}")
        with warnings.catch_warnings():  # without batch norm, W = 1 overflows: the book's figure shows it failing
            warnings.simplefilter("ignore", RuntimeWarning)
            train_acc_list, bn_train_acc_list = train(where, x_train, t_train, w, args)
        results["train_acc"].append(train_acc_list)
        results["bn_train_acc"].append(bn_train_acc_list)
    results["seconds"] = time.perf_counter() - started
    print("final training accuracy (normal / batch norm) per W: " + ", ".join(
        f"{w:.3g}: {normal[-1]:.3f}/{bn[-1]:.3f}"
        for w, normal, bn in zip(scales, results["train_acc"], results["bn_train_acc"]))
        + f"; {results['seconds']:.1f} s")

    # the figure ==========
    if args.plot:
        plt = _ch6.pyplot()
        rows = math.ceil(len(scales) / 4)
        figure, axes = plt.subplots(rows, 4, figsize=(11, 2.4 * rows), squeeze=False)
        x = range(args.epochs)
        for i, (w, axis) in enumerate(zip(scales, axes.flat)):
            axis.set_title(f"W:{w:.4g}")
            if i == len(scales) - 1:
                axis.plot(x, results["bn_train_acc"][i], label="Batch Normalization", markevery=2)
                axis.plot(x, results["train_acc"][i], linestyle="--", label="Normal(without BatchNorm)",
                          markevery=2)
                axis.legend(loc="lower right")
            else:
                axis.plot(x, results["bn_train_acc"][i], markevery=2)
                axis.plot(x, results["train_acc"][i], linestyle="--", markevery=2)
            axis.set_ylim(0, 1.0)
            if i % 4:
                axis.set_yticks([])
            else:
                axis.set_ylabel("accuracy")
            if i < len(scales) - 4:
                axis.set_xticks([])
            else:
                axis.set_xlabel("epochs")
        _ch6.save(figure, args.plot)
        results["figure"] = figure
    return results


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
