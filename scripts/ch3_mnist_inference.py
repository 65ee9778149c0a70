#!/usr/bin/env python3
"""Chapter 3's MNIST inference (the book's neuralnet_mnist.py and neuralnet_mnist_batch.py) on any device.

    python scripts/ch3_mnist_inference.py --weights sample_weight.pkl --device auto --batch-size 100

Runs the book's three-layer sigmoid network over the MNIST test set one image at a time, then in batches,
and prints the accuracy and time of each. The weights file is the book's pickle or an .npz with W1..b3.
"""

from __future__ import annotations

import argparse
import sys
import time

import anynet
from anynet.datasets import load_mnist
from anynet.io import load_params
from anynet.networks import predict


def run(weights: str, device: str, batch_size: int, limit: int | None, root: str | None) -> dict:
    where = anynet.device(device)
    network = load_params(weights, device=where, dtype="float32")
    missing = {"W1", "b1", "W2", "b2", "W3", "b3"} - set(network)
    if missing:
        raise ValueError(f"{weights}: no {', '.join(sorted(missing))}; expected the chapter-3 network's W1..b3")
    x_host, t_host = load_mnist(normalize=True, flatten=True, one_hot_label=False, split="test", data_dir=root)
    if limit:
        x_host, t_host = x_host[:limit], t_host[:limit]
    x, t = where.asarray(x_host), where.asarray(t_host)
    xp = where.xp
    n = x.shape[0]

    where.synchronize()
    start = time.perf_counter()
    # one image at a time, as the book does; predictions stay on the device until the end
    per_sample = xp.stack([xp.argmax(predict(network, x[i, ...])) for i in range(n)])
    correct_one = int(anynet.to_numpy(xp.sum(xp.astype(per_sample == t, xp.int64))))
    where.synchronize()
    one_seconds = time.perf_counter() - start

    start = time.perf_counter()
    batched = xp.concat([xp.argmax(predict(network, x[i:min(i + batch_size, n), ...]), axis=1)
                         for i in range(0, n, batch_size)])
    correct_batch = int(anynet.to_numpy(xp.sum(xp.astype(batched == t, xp.int64))))
    where.synchronize()
    batch_seconds = time.perf_counter() - start
    return {"device": where.name, "n": n, "one_accuracy": correct_one / n, "one_seconds": one_seconds,
            "batch_accuracy": correct_batch / n, "batch_seconds": batch_seconds, "batch_size": batch_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the book's sample_weight.pkl, or an .npz with W1..b3")
    parser.add_argument("--device", default="auto", help="cpu, cuda, torch:cuda, strict, ... or auto (default)")
    parser.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--data-dir", default=None,
                        help="the folder that holds mnist/ (as ANYNET_DATA; else the usual places)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    try:
        result = run(args.weights, args.device, args.batch_size, args.limit, args.data_dir)
    except (OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"device: {result['device']}, {result['n']} MNIST test images")
    rows = [("one image at a time", result["one_accuracy"], result["one_seconds"]),
            (f"batches of {result['batch_size']}", result["batch_accuracy"], result["batch_seconds"])]
    for label, accuracy, seconds in rows:
        print(f"{label + ':':<22} accuracy {accuracy:.4f}  in {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
