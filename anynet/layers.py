"""Backprop layers of the book's chapter 5, each with ``forward`` and ``backward``, for any array library.

A layer keeps what its backward pass needs from the last forward pass. Weights are held by reference, so an
optimizer that updates the network's ``params`` in place updates the layers too.
"""

from __future__ import annotations

import math
from typing import Any

from .backend import device_of, namespace, native_device
from .functions import _check_batch, _floating, _log_softmax, _mean_nll, _nan_where_invalid, _sigmoid, check_labels

__all__ = ["Affine", "Sigmoid", "Relu", "SoftmaxWithLoss"]


class Relu:
    """max(0, x); backward passes the gradient where x > 0.

    ``mask`` is the book's ``x <= 0``, the positions set to 0: NaN is not among them, so NaN input stays NaN (as
    with the book's layer) instead of silently becoming 0.
    """

    def __init__(self):
        self.mask: Any = None

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        self.mask = x <= 0
        return xp.where(self.mask, xp.zeros_like(x), x)

    def backward(self, dout: Any) -> Any:
        xp = namespace(dout)
        return xp.where(self.mask, xp.zeros_like(dout), dout)


class Sigmoid:
    """1 / (1 + exp(-x)), overflow-free; backward is dout * y * (1 - y)."""

    def __init__(self):
        self.out: Any = None

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        self.out = _sigmoid(xp, x)
        return self.out

    def backward(self, dout: Any) -> Any:
        return dout * (1.0 - self.out) * self.out


class Affine:
    """x @ W + b. Input of any shape (N, ...) is flattened to (N, features); dx has the input's shape."""

    def __init__(self, W: Any, b: Any):
        self.W = W
        self.b = b
        self.x: Any = None
        self.original_x_shape: Any = None
        self.dW: Any = None
        self.db: Any = None

    def forward(self, x: Any) -> Any:
        xp = namespace(x, self.W)
        self.original_x_shape = tuple(x.shape)
        # the feature count spelled out: -1 cannot be inferred for an empty batch
        x = xp.reshape(x, (x.shape[0], math.prod(x.shape[1:]))) if x.ndim != 2 else x
        self.x = x
        return x @ self.W + self.b

    def backward(self, dout: Any) -> Any:
        xp = namespace(dout)
        dx = dout @ self.W.T
        self.dW = self.x.T @ dout
        self.db = xp.sum(dout, axis=0)
        return xp.reshape(dx, self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy loss (mean over the batch).

    ``t`` is integer labels (N,) or one-hot / probability targets (N, classes). The loss is computed in
    log-sum-exp form and the backward pass is (softmax(x) - t) / N, both without an epsilon.

    Labels must be integers in 0..classes-1: float labels raise TypeError; out-of-range ones raise ValueError on a
    host device, and on a GPU (where checking would wait for it at every step) make the loss and their rows of the
    gradient NaN instead (see :func:`anynet.functions.check_labels`). An empty batch raises ValueError.
    """

    def __init__(self):
        self.loss: Any = None
        self.y: Any = None
        self.t: Any = None
        self.valid: Any = None

    def forward(self, x: Any, t: Any) -> Any:
        xp = namespace(x, t)
        x = _floating(xp, x)
        _check_batch(x)
        if t.ndim != x.ndim:
            if t.ndim != 1 or t.shape[0] != x.shape[0]:
                raise ValueError(f"labels t of shape {tuple(t.shape)} do not fit scores x of shape "
                                 f"{tuple(x.shape)}: expected integer labels of shape ({x.shape[0]},) or one-hot "
                                 f"targets of shape {tuple(x.shape)}")
            t, self.valid = check_labels(xp, t, x.shape[-1])
        else:
            self.valid = None
        log_p = _log_softmax(xp, x)
        self.y = xp.exp(log_p)
        self.t = t
        self.loss = _nan_where_invalid(xp, _mean_nll(xp, log_p, t), self.valid)
        return self.loss

    def backward(self, dout: Any = 1) -> Any:
        xp = namespace(self.y)
        batch = self.y.shape[0]
        if self.t.ndim == self.y.ndim:
            target = self.t
        else:
            with device_of(self.y).active():  # CuPy's arange goes to its current GPU, whatever device= says
                classes = xp.arange(self.y.shape[1], device=native_device(self.y))
            target = xp.astype(xp.reshape(self.t, (-1, 1)) == classes, self.y.dtype)
        dx = (self.y - target) * (dout / batch)
        if self.valid is not None:  # a GPU's bad labels: their rows NaN, as the CUDA kernel makes them
            dx = xp.where(xp.reshape(self.valid, (-1, 1)), dx, dx * math.nan)
        return dx
