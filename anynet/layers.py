"""Backprop layers of the book's chapter 5, each with ``forward`` and ``backward``, for any array library.

A layer keeps what its backward pass needs from the last forward pass. Weights are held by reference, so an
optimizer that updates the network's ``params`` in place updates the layers too.
"""

from __future__ import annotations

from typing import Any

from .backend import device_of, namespace, native_device
from .functions import _floating, _log_softmax, _mean_nll, _sigmoid

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
        x = xp.reshape(x, (x.shape[0], -1)) if x.ndim != 2 else x
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
    """

    def __init__(self):
        self.loss: Any = None
        self.y: Any = None
        self.t: Any = None

    def forward(self, x: Any, t: Any) -> Any:
        xp = namespace(x, t)
        x = _floating(xp, x)
        log_p = _log_softmax(xp, x)
        self.y = xp.exp(log_p)
        self.t = t
        self.loss = _mean_nll(xp, log_p, t)
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
        return (self.y - target) * (dout / batch)
