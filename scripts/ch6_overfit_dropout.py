#!/usr/bin/env python3
"""The book's overfit_dropout.py (chapter 6): overfitting on 300 images, held back by dropout, with the Trainer.

    python scripts/ch6_overfit_dropout.py --device auto --dataset fashion-mnist --plot dropout.png

A MultiLayerNetExtend 784-100-100-100-100-100-100-10 (ReLU, He initial weights) with dropout of ratio 0.2 after
each hidden layer (--no-dropout for the overfitting it starts from) is trained by the Trainer on the first 300
training images: SGD (lr 0.01), batches of 100 drawn with replacement as the book's Trainer draws them, 301 epochs
of 3 steps. Weights, batches and dropout masks all come from --seed. The Trainer prints each epoch's loss and train
and test accuracy; the figure shows both accuracies against the epochs.
"""

from __future__ import annotations

import sys

import _ch6

from anynet.networks import MultiLayerNetExtend
from anynet.trainer import Trainer


def run(argv: list[str] | None = None) -> dict:
    parser = _ch6.make_parser(__doc__)
    parser.add_argument("--train-size", type=_ch6.positive, default=300, help="training images (the book: 300)")
    parser.add_argument("--epochs", type=_ch6.positive, default=301, help="epochs (the book: 301)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=100)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD's learning rate (the book: 0.01)")
    parser.add_argument("--dropout-ratio", type=float, default=0.2, help="the book: 0.2")
    parser.add_argument("--no-dropout", dest="use_dropout", action="store_false",
                        help="train without dropout (the book's use_dropout = False)")
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot)
    where, (x_train, t_train), (x_test, t_test) = _ch6.load(args, train_size=args.train_size)

    network = MultiLayerNetExtend(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100, 100, 100],
                                  output_size=10, use_dropout=args.use_dropout, dropout_ration=args.dropout_ratio,
                                  device=where, seed=args.seed)
    print(f"dropout: {f'ratio {args.dropout_ratio}' if args.use_dropout else 'none'}")
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer="sgd", optimizer_param={"lr": args.lr}, verbose=True,
                      device=where, seed=args.seed, sampling="replacement")
    history = trainer.train()

    return _ch6.overfit_results(trainer.train_acc_list, trainer.test_acc_list, sum(trainer.epoch_seconds),
                                args.plot, history)


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
