#!/usr/bin/env python3
"""The book's train_convnet.py (chapter 7): SimpleConvNet trained by the Trainer, and its first layer's filters.

    python scripts/ch7_train_convnet.py --device auto --dataset fashion-mnist --plot convnet.png

SimpleConvNet (30 filters 5x5 - ReLU - 2x2 max pooling - Affine 100 - ReLU - Affine 10; initial weights 0.01 times
standard normal draws from --seed) is trained by the Trainer with Adam (lr 0.001) on batches of 100, drawn with
replacement as the book's Trainer draws them, for 20 epochs. After each epoch the accuracy on the first 1000
training and test images is printed (the book's evaluate_sample_num_per_epoch), at the end the accuracy on the whole
test set. --save writes the trained parameters (the book's params.pkl; anynet writes an .npz whatever the name).
The figure: train and test accuracy against the epochs (the book's), beside the 30 filters of the first layer (W1)
before and after training as the book's visualize_filter.py shows them (grey images, each scaled to its own range).

--dataset mnist-test trains on MNIST's test split cut in two, images 0-4999 to train and 5000-9999 to test: real
digits on a machine that has only that split. The book suggests --train-size 5000 when training takes too long.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import _ch6
from _ch7 import add_training_options, check_save, first, load_images, make_parser, train

import anynet
from anynet.networks import SimpleConvNet
from anynet.plot import filter_show


def plot_training(train_acc_list: list[float], test_acc_list: list[float], filters_before, filters_after,
                  path: str):
    """The book's two chapter-7 figures side by side: train and test accuracy against the epochs (train_convnet.py)
    and the first layer's filters before and after training (visualize_filter.py)."""
    figure = _ch6.pyplot().figure(figsize=(12, 5.6))
    left, right = figure.subfigures(1, 2, width_ratios=(6.4, 5.6))
    axis = left.subplots()
    left.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.92)
    epochs = range(1, len(train_acc_list) + 1)
    axis.plot(epochs, train_acc_list, marker="o", label="train", markevery=2)
    axis.plot(epochs, test_acc_list, marker="s", label="test", markevery=2)
    axis.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0))
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.legend(loc="lower right")
    before, after = right.subfigures(2, 1, hspace=0.08)
    filter_show(filters_before, figure=before, title="W1 before training")
    filter_show(filters_after, figure=after, title="W1 after training")
    figure.savefig(Path(path).expanduser(), dpi=100)
    print(f"figure: {path}")
    return figure


def run(argv: list[str] | None = None) -> dict:
    parser = make_parser(__doc__)
    add_training_options(parser)
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot)
    check_save(args.save)
    where = anynet.device(args.device)  # a bad device is said before the data is read
    (x_train, t_train), (x_test, t_test) = load_images(args.dataset, args.data_dir)
    x_train, t_train = first(x_train, t_train, args.train_size, "--train-size", args.dataset, "training")
    print(f"device: {where.name}; {args.dataset}: {x_train.shape[0]} training and {x_test.shape[0]} test images; "
          f"seed {args.seed}")

    network = SimpleConvNet(input_dim=(1, 28, 28),
                            conv_param={"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1},
                            hidden_size=100, output_size=10, weight_init_std=0.01, device=where, seed=args.seed)
    filters_before = anynet.to_numpy(network.params["W1"]).copy()  # Adam updates W1 in place
    started = time.perf_counter()
    trainer = train(network, where, args, x_train, t_train, x_test, t_test)
    seconds = time.perf_counter() - started

    results = {**trainer.history(), "network": network, "filters_before": filters_before, "seconds": seconds,
               "final_test_accuracy": trainer.final_test_accuracy}
    if args.plot:
        results["figure"] = plot_training(trainer.train_acc_list, trainer.test_acc_list, filters_before,
                                          network.params["W1"], args.plot)
    return results


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
