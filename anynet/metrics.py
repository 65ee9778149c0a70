"""Classification metrics computed where the predictions live."""

from __future__ import annotations

from typing import Any

from .backend import device_of, namespace, native_device

__all__ = ["confusion_matrix"]


def confusion_matrix(t: Any, y: Any, num_classes: int) -> Any:
    """Counts[i, j] of samples of true class i predicted as class j, as an int64 array on the inputs' device.

    ``t``: integer labels (N,) or one-hot (N, classes). ``y``: predicted labels (N,) or scores (N, classes).
    """
    xp = namespace(t, y)
    with device_of(t).active():  # CuPy computes on its current GPU, whatever device the inputs are on
        labels = xp.argmax(t, axis=1) if t.ndim == 2 else t
        guesses = xp.argmax(y, axis=1) if y.ndim == 2 else y
        classes = xp.arange(num_classes, device=native_device(labels))
        true_one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == classes, xp.float32)
        guess_one_hot = xp.astype(xp.reshape(guesses, (-1, 1)) == classes, xp.float32)
        # a float32 product counts exactly up to 2**24 samples per cell, and every backend multiplies float32
        return xp.astype(xp.round(true_one_hot.T @ guess_one_hot), xp.int64)
