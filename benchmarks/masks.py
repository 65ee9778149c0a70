"""Where dropout masks are best made: on the device, per step, or on the host, a block per epoch moved at once.

Both give the same masks (anynet.masks' hash of the same keys, host NumPy computing it for the block); only their
cost differs. One "epoch" is ``steps`` training forward passes of a MultiLayerNetExtend with dropout after each of
``layers`` hidden layers of ``width`` on batches of ``batch``: that many masks of (batch, width).

    python scripts/benchmark.py --masks --device torch:cpu
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import anynet
from anynet.masks import device_mask, keep_mask

RATIO = 0.15


def _keys(steps: int, layers: int, seed: int) -> list[tuple[int, int]]:
    generator = np.random.default_rng(seed)
    return [tuple(generator.integers(0, 2**32, size=2).tolist()) for _ in range(steps * layers)]


def on_device(where: anynet.Device, keys, shape) -> list:
    """Each step's masks made on the device from their keys."""
    like = where.xp.zeros(shape, dtype=where.xp.float32, device=where.native)
    masks = [device_mask(like, pair, RATIO) for pair in keys]
    where.synchronize()
    return masks


def host_block(where: anynet.Device, keys, shape) -> list:
    """The epoch's masks made on the host, moved in one transfer, then cut into each step's."""
    like = np.zeros(shape, dtype=np.float32)
    block = np.stack([keep_mask(like, pair, RATIO) for pair in keys])
    moved = where.asarray(block)
    masks = [moved[index, ...] for index in range(len(keys))]
    where.synchronize()
    return masks


def compare(device: str, steps: int = 600, layers: int = 5, width: int = 100, batch: int = 100,
            repeats: int = 3, seed: int = 0) -> dict:
    """Median seconds per epoch of masks for each way, after a warm-up (the ways take turns)."""
    where = anynet.device(device)
    keys, shape = _keys(steps, layers, seed), (batch, width)
    times: dict[str, list[float]] = {"device": [], "host block": []}
    with where.active():
        for way in (on_device, host_block):  # warm-up: kernels compiled, allocators filled
            way(where, keys[: layers * 2], shape)
        for _ in range(repeats):
            for name, way in (("device", on_device), ("host block", host_block)):
                started = time.perf_counter()
                way(where, keys, shape)
                times[name].append(time.perf_counter() - started)
    return {"device": where.name, "steps": steps, "masks": len(keys), "shape": list(shape),
            "seconds": {name: statistics.median(values) for name, values in times.items()}}


def report(result: dict) -> str:
    seconds = result["seconds"]
    faster = min(seconds, key=seconds.get)
    return (f"dropout masks on {result['device']}: {result['masks']} masks of {tuple(result['shape'])} "
            f"({result['steps']} steps): " + ", ".join(f"{name} {value:.3f} s" for name, value in seconds.items())
            + f"; faster: {faster}")
