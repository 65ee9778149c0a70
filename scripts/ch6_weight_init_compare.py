#!/usr/bin/env python3
"""The book's weight_init_compare.py (chapter 6): initial weights of std 0.01, Xavier's and He's, compared.

    python scripts/ch6_weight_init_compare.py --device auto --dataset fashion-mnist --plot weight_init.png

Three MultiLayerNets 784-100-100-100-100-10 with ReLU (the book's default activation for all three) whose initial
weights are 0.01, sqrt(1 / n) (Xavier, the book's 'sigmoid') and sqrt(2 / n) (He, 'relu') times the same standard
normal draws from --seed, n being each layer's fan-in, take 2000 steps of SGD (lr 0.01) on the same batches of 128,
drawn with replacement. Every 100 iterations the losses are printed (the loss of that step's batch, as the network
measured it computing the gradient; the book measures it again after the update). The figure is the book's: the
losses smoothed with smooth_curve, against the iterations.
"""

from __future__ import annotations

import sys

import _ch6

from anynet.networks import MultiLayerNet
from anynet.optimizers import SGD

WEIGHT_INIT_TYPES = {"std=0.01": 0.01, "Xavier": "sigmoid", "He": "relu"}
MARKERS = {"std=0.01": "o", "Xavier": "s", "He": "D"}
REPORT_EVERY = 100


def run(argv: list[str] | None = None) -> dict:
    parser = _ch6.make_parser(__doc__)
    parser.add_argument("--iters", type=_ch6.positive, default=2000, help="iterations (the book: 2000)")
    parser.add_argument("--batch-size", type=_ch6.positive, default=128)
    parser.add_argument("--lr", type=float, default=0.01, help="SGD's learning rate (the book: 0.01)")
    args = parser.parse_args(argv)
    _ch6.check_plot(args.plot, args.iters)
    where, (x_train, t_train), _ = _ch6.load(args)

    # 1: the experiment's settings ==========
    optimizer = SGD(lr=args.lr)  # one for all three, as in the book: SGD keeps no state
    networks = {key: MultiLayerNet(input_size=x_train.shape[1], hidden_size_list=[100, 100, 100, 100],
                                   output_size=10, weight_init_std=weight_type, device=where, seed=args.seed)
                for key, weight_type in WEIGHT_INIT_TYPES.items()}
    steps = {key: _ch6.training_step(network, optimizer) for key, network in networks.items()}

    # 2: training ==========
    batches = _ch6.batch_indices(where, args.seed, args.iters, x_train.shape[0], args.batch_size)
    print(f"{args.iters} iterations of batches of {args.batch_size}, SGD lr {args.lr}; the loss every "
          f"{REPORT_EVERY}")
    return _ch6.compare_losses(steps, x_train, t_train, batches, args.plot, MARKERS, ylim=(0, 2.5),
                               report_every=REPORT_EVERY)


def main(argv: list[str] | None = None) -> int:
    return _ch6.run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
