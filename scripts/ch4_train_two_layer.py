#!/usr/bin/env python3
"""The book's train_neuralnet.py (chapter 4): a 784-50-10 TwoLayerNet, SGD, 10000 steps, on any device.

    python scripts/ch4_train_two_layer.py --device auto --dataset fashion-mnist

Batches of 100 are drawn with replacement, as the book's np.random.choice does, but from a seeded host
generator, so every device trains on the same batches. Train and test accuracy are printed every 600 steps.
"""

from __future__ import annotations

import argparse
import sys
import time

import anynet
from anynet.datasets import load_dataset
from anynet.networks import TwoLayerNet
from anynet.optimizers import SGD


def train(device: str, dataset: str, iters_num: int, batch_size: int, lr: float, seed: int, data_dir) -> dict:
    (x_train, t_train), (x_test, t_test) = load_dataset(dataset, normalize=True, one_hot_label=True, data_dir=data_dir)
    where = anynet.device(device)
    x_train, t_train = where.asarray(x_train), where.asarray(t_train)  # moved once; batches are sliced there
    x_test, t_test = where.asarray(x_test), where.asarray(t_test)
    xp = where.xp
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10, device=where, seed=seed)
    optimizer = SGD(lr=lr)
    rng = anynet.backend.host_generator(seed)

    train_size = x_train.shape[0]
    iter_per_epoch = max(train_size // batch_size, 1)
    train_loss_list, train_acc_list, test_acc_list, losses = [], [], [], []
    print(f"device: {where.name}, {dataset}: {train_size} training images; {iters_num} steps of {batch_size}, "
          f"lr {lr}")
    print(f"{'step':>6} {'loss':>8} {'train acc':>10} {'test acc':>9}")
    started = time.perf_counter()
    for i in range(iters_num):
        batch_mask = where.asarray(rng.integers(0, train_size, size=batch_size))
        x_batch, t_batch = xp.take(x_train, batch_mask, axis=0), xp.take(t_train, batch_mask, axis=0)
        grad = network.gradient(x_batch, t_batch)
        optimizer.update(network.params, grad)
        losses.append(network.last_loss)  # stays on the device until the next report
        if i % iter_per_epoch == 0 or i == iters_num - 1:
            train_loss_list += anynet.to_numpy(xp.stack(losses)).tolist()
            losses = []
            train_acc_list.append(network.accuracy(x_train, t_train))
            test_acc_list.append(network.accuracy(x_test, t_test))
            print(f"{i:>6} {train_loss_list[-1]:8.4f} {train_acc_list[-1]:10.4f} {test_acc_list[-1]:9.4f}",
                  flush=True)
    seconds = time.perf_counter() - started
    print(f"{iters_num} steps in {seconds:.1f} s; final train acc {train_acc_list[-1]:.4f}, "
          f"test acc {test_acc_list[-1]:.4f}")
    return {"train_loss_list": train_loss_list, "train_acc_list": train_acc_list, "test_acc_list": test_acc_list,
            "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, torch:cuda, strict, ... or auto (default)")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion-mnist"])
    parser.add_argument("--steps", type=int, default=10000, help="training steps (the book: 10000)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None,
                        help="the folder that holds mnist/ and fashion-mnist/ (as ANYNET_DATA; else the usual places)")
    args = parser.parse_args(argv)
    try:
        train(args.device, args.dataset, args.steps, args.batch_size, args.lr, args.seed, args.data_dir)
    except (OSError, ValueError, TypeError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
