#!/usr/bin/env python3
"""The book's optimizer_compare_mnist.py (chapter 6): SGD, Momentum, AdaGrad and Adam train the same network.

    python scripts/ch6_optimizer_compare.py --device auto --dataset fashion-mnist --plot optimizers.png

Four MultiLayerNets 784-100-100-100-100-10 (ReLU, He initial weights, the same for all four from --seed) take
2000 steps on the same batches of 128, drawn with replacement; each optimizer keeps its book defaults (SGD 0.01,
Momentum 0.01 and 0.9, AdaGrad 0.01, Adam 0.001). Every 100 iterations the losses are printed (the loss of that
step's batch, as the network measured it computing the gradient; the book measures it again after the update).
The figure is the book's: the losses smoothed with smooth_curve, against the iterations.
"""

from __future__ import annotations

import sys

import _ch6

from anynet.networks import MultiLayerNet
from anynet.optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

OPTIMIZERS = {"SGD": SGD, "Momentum": Momentum, "AdaGrad": AdaGrad, "Adam": Adam, "RMSprop": RMSprop,
              "Nesterov": Nesterov}
MARKERS = {"SGD": "o", "Momentum": "x", "AdaGrad": "s", "Adam": "D", "RMSprop": "^", "Nesterov": "v"}
REPORT_EVERY = 100


def run(argv: list[str] | None = None) -> dict:
    parser = _ch6.make_parser(__doc__)
    parser.add_argument("--iters", type=_ch6.positive, default=2000, help="iterations (the book: 2000)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=128)
    parser.add_argument("--optimizers", nargs="+", choices=list(OPTIMIZERS), default=["SGD", "Momentum", "AdaGrad",
                        "Adam"], help="which to compare (the book: SGD Momentum AdaGrad Adam; RMSprop commented out)")
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot, args.iters)
    where, (x_train, t_train), _ = _ch6.load(args)

    # 1: the experiment's settings ==========
    optimizers = {key: OPTIMIZERS[key]() for key in args.optimizers}
    networks = {key: MultiLayerNet(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100],
                                   output_size=10, device=where, seed=args.seed) for key in optimizers}
    steps = {key: _ch6.training_step(networks[key], optimizers[key]) for key in optimizers}

    # 2: training ==========
    batches = _ch6.batch_indices(where, args.seed, args.iters, x_train.shape[0], args.batch_size)
    print(f"{args.iters} iterations of batches of {args.batch_size}; the loss every {REPORT_EVERY}")
    return _ch6.compare_losses(steps, x_train, t_train, batches, args.plot, MARKERS, ylim=(0, 1),
                               report_every=REPORT_EVERY)


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
