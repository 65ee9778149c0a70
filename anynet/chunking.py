"""The one rule for cutting N samples into chunks: prediction, scoring and evaluation all go through it."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["chunk_bounds"]


def chunk_bounds(n: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of consecutive chunks of at most ``size`` (at least 1) rows covering ``range(n)``.

    Stops are clipped to ``n`` because the array API leaves out-of-range slice ends unspecified.
    """
    size = max(1, int(size))
    for start in range(0, n, size):
        yield start, min(start + size, n)
