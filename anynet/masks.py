"""Dropout masks that are the same on every device: a counter-based hash drawn where the data is.

A mask is a function of two 32-bit keys (drawn per step from a seeded host generator) and of each element's index:
``keep[i] = hash(hash(i ^ key1) ^ key2) > ratio * 2**32``, the hash being a 32-bit integer mixer. Integer arithmetic
is exact on every library, so one seed gives the same masks on NumPy, CuPy, PyTorch and array-api-strict, and on a
GPU the mask is made on the device in a few elementwise operations: no host draw or transfer per step.

The generic form holds 32-bit values in int64, whose products stay below 2**63 (both multipliers are below 2**31):
no overflow, which the array API leaves undefined. Libraries whose uint32 arithmetic wraps by definition (NumPy,
CuPy: ``backend.unsigned_wraps``) take the same steps in place on uint32, about twice as fast; both forms give the
same bits (tests/test_masks.py).
"""

from __future__ import annotations

import math
from typing import Any

from .backend import device as make_device
from .backend import device_of, namespace, native_device, unsigned_wraps

__all__ = ["keep_mask", "device_mask", "threshold", "MULTIPLIERS"]

# A 32-bit mixer (x ^= x >> 16; x *= M1; x ^= x >> 15; x *= M2; x ^= x >> 15) with multipliers below 2**31, chosen
# by hash-prospector's search for low bias.
MULTIPLIERS = (0x21F0AAAD, 0x735A2D97)
_LOW32 = 0xFFFFFFFF


def threshold(ratio: float) -> int:
    """The largest 32-bit value dropped at ``ratio``: an element is kept when its hash exceeds it, as the book keeps
    one when ``rand() > ratio`` (``hash / 2**32`` standing for ``rand()``)."""
    return math.floor(ratio * 2.0**32)


def keep_mask(like: Any, keys: tuple[int, int], ratio: float) -> Any:
    """A boolean array of ``like``'s shape, library and device: True where an element is kept at dropout ``ratio``
    (in [0, 1)), for the 32-bit ``keys``.

    Made on the device on a GPU and with libraries that wrap unsigned arithmetic (NumPy); made by NumPy on the host
    and moved for other libraries on the CPU (PyTorch, array-api-strict), where the move is a copy in memory and
    the int64 form costs 4 to 7 times more (``scripts/benchmark.py --masks``, docs/performance.md).
    """
    where = device_of(like)
    if unsigned_wraps(like) or where.platform != "cpu":
        return device_mask(like, keys, ratio)
    host = make_device("cpu")
    return where.asarray(device_mask(host.xp.empty(tuple(like.shape), dtype=host.xp.bool), keys, ratio))


def device_mask(like: Any, keys: tuple[int, int], ratio: float) -> Any:
    """:func:`keep_mask` computed on ``like``'s device, whatever it is."""
    shape = tuple(like.shape)
    count = math.prod(shape)
    if count > 2**32:
        raise ValueError(f"a dropout mask of shape {shape} has {count} elements, more than the 2**32 its element "
                         "counter can number; use smaller batches")
    xp, device = namespace(like), native_device(like)
    with device_of(like).active():  # CuPy's arange goes to its current GPU, whatever device= says
        if ratio == 0.0:
            # nothing dropped: the book's rand() > 0 fails only for a draw of exactly 0 (one in 2**53); a hash of 0
            # (one in 2**32, index 0 for keys (0, 0)) would drop an element
            return xp.ones(shape, dtype=xp.bool, device=device)
        hashed = (_hash_uint32 if unsigned_wraps(like) else _hash_int64)(xp, count, keys, device)
        return xp.reshape(hashed > xp.asarray(threshold(ratio), dtype=hashed.dtype, device=device), shape)


def _hash_int64(xp: Any, count: int, keys: tuple[int, int], device: Any) -> Any:
    x = xp.arange(count, dtype=xp.int64, device=device)
    first, second = MULTIPLIERS
    for key in keys:
        x = x ^ key
        x = x ^ (x >> 16)
        x = (x * first) & _LOW32
        x = x ^ (x >> 15)
        x = (x * second) & _LOW32
        x = x ^ (x >> 15)
    return x


def _hash_uint32(xp: Any, count: int, keys: tuple[int, int], device: Any) -> Any:
    x = xp.arange(count, dtype=xp.uint32, device=device)
    shifted = xp.empty_like(x)
    first, second = (xp.asarray(m, dtype=xp.uint32, device=device) for m in MULTIPLIERS)
    for key in keys:
        x ^= xp.asarray(key, dtype=xp.uint32, device=device)
        xp.right_shift(x, 16, out=shifted)
        x ^= shifted
        x *= first
        xp.right_shift(x, 15, out=shifted)
        x ^= shifted
        x *= second
        xp.right_shift(x, 15, out=shifted)
        x ^= shifted
    return x
