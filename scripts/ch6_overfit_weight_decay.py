#!/usr/bin/env python3
"""The book's overfit_weight_decay.py (chapter 6): overfitting on 300 images, held back by weight decay.

    python scripts/ch6_overfit_weight_decay.py --device auto --dataset fashion-mnist --plot weight_decay.png

A MultiLayerNet 784-100-100-100-100-100-100-10 (ReLU, He initial weights from --seed) with weight decay 0.1
(--weight-decay-lambda 0 for the book's overfitting figure) trains on the first 300 training images with SGD
(lr 0.01) on batches of 100 drawn with replacement, for 201 epochs of 3 steps. As in the book, train and test
accuracy are printed after the first step of each epoch (epoch 0 is after one step), and the figure shows both
against the epochs.
"""

from __future__ import annotations

import sys
import time

import _ch6

from anynet.networks import MultiLayerNet
from anynet.optimizers import SGD


def run(argv: list[str] | None = None) -> dict:
    parser = _ch6.make_parser(__doc__)
    parser.add_argument("--train-size", type=_ch6.positive, default=300, help="training images (the book: 300)")
    parser.add_argument("--epochs", type=_ch6.positive, default=201, help="epochs (the book: 201)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=100)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD's learning rate (the book: 0.01)")
    parser.add_argument("--weight-decay-lambda", type=float, default=0.1,
                        help="the book: 0.1 (0: no weight decay, the overfitting it starts from)")
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot)
    where, (x_train, t_train), (x_test, t_test) = _ch6.load(args, train_size=args.train_size)

    network = MultiLayerNet(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100, 100, 100],
                            output_size=10, weight_decay_lambda=args.weight_decay_lambda, device=where,
                            seed=args.seed)
    optimizer = SGD(lr=args.lr)
    step = _ch6.training_step(network, optimizer)

    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size // args.batch_size, 1)
    batches = _ch6.batch_indices(where, args.seed, (args.epochs - 1) * iter_per_epoch + 1, train_size,
                                 args.batch_size)
    print(f"weight decay lambda {args.weight_decay_lambda}; SGD lr {args.lr}, batches of {args.batch_size}, "
          f"{args.epochs} epochs of {iter_per_epoch} steps")
    print(f"{'epoch':>5} {'train acc':>9} {'test acc':>9}")
    train_acc_list: list[float] = []
    test_acc_list: list[float] = []
    started = time.perf_counter()
    for i in range(batches.shape[0]):
        step(x_train, t_train, batches[i, ...])
        if i % iter_per_epoch == 0:
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
            print(f"{len(train_acc_list) - 1:>5} {train_acc_list[-1]:9.4f} {test_acc_list[-1]:9.4f}", flush=True)
    return _ch6.overfit_results(train_acc_list, test_acc_list, time.perf_counter() - started, args.plot,
                                {"train_acc_list": train_acc_list, "test_acc_list": test_acc_list})


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
