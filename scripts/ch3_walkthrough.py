#!/usr/bin/env python3
"""Chapter 3 of "Deep Learning from Scratch", computed on any device.

    python scripts/ch3_walkthrough.py --device auto      # cuda if CuPy sees a GPU, else cpu
    python scripts/ch3_walkthrough.py --device strict:device1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import anynet


def show(label, value) -> None:
    print(f"  {label:<34} {np.array2string(anynet.to_numpy(value), precision=8, separator=', ')}")


def walkthrough(where: anynet.Device, dtype: str) -> None:
    print(f"device: {where.name}  (array library: {where.xp.__name__}, dtype: {dtype})")
    x = where.asarray([-1.0, 1.0, 2.0], dtype=dtype)
    print("3.2 activation functions, x = [-1, 1, 2]")
    show("step_function(x)", anynet.step_function(x))
    show("sigmoid(x)", anynet.sigmoid(x))
    show("relu(x)", anynet.relu(x))

    print("3.4 three-layer network, x = [1.0, 0.5]")
    network = anynet.init_network(where, dtype=dtype)
    x = where.asarray([1.0, 0.5], dtype=dtype)
    a1 = x @ network["W1"] + network["b1"]
    show("a1 = x @ W1 + b1", a1)
    show("z1 = sigmoid(a1)", anynet.sigmoid(a1))
    show("y = forward(network, x)", anynet.forward(network, x))

    print("3.5 softmax")
    show("softmax([0.3, 2.9, 4.0])", anynet.softmax(where.asarray([0.3, 2.9, 4.0], dtype=dtype)))
    show("softmax([1010, 1000, 990])", anynet.softmax(where.asarray([1010.0, 1000.0, 990.0], dtype=dtype)))
    print("  (the naive exp(a) / sum(exp(a)) gives [nan, nan, nan] there; subtracting the max avoids it)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, torch:cpu, torch:cuda, strict, "
                        "strict:device1, ... or auto (default); `anynet devices` lists them")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args(argv)
    try:
        walkthrough(anynet.device(args.device), args.dtype)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
