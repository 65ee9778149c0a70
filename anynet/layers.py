"""Backprop layers of the book's chapters 5-7, each with ``forward`` and ``backward``, for any array library.

A layer keeps what its backward pass needs from the last forward pass. Weights are held by reference, so an
optimizer that updates the network's ``params`` in place updates the layers too. A layer with parameters names
them in ``param_names`` (their gradients are the attributes ``d<name>`` after ``backward``), and the running state
that is saved with them but not trained in ``buffer_names``; :class:`anynet.networks.LayerNet` numbers them as the
book does (the k-th layer holding ``W`` holds ``W<k>``). Layers that behave differently in training take
``train_flg`` in ``forward``.
"""

from __future__ import annotations

import math
from typing import Any

from ._kernels import conv_kernels
from .backend import device_of, host_generator, namespace, native_device
from .functions import (
    _book_cross_entropy,
    _check_batch,
    _floating,
    _log_softmax,
    _mean_nll,
    _nan_where_invalid,
    _sigmoid,
    check_labels,
)
from .masks import keep_mask
from .util import _check_images, col2im, conv_output_size, im2col

__all__ = ["Affine", "Sigmoid", "Relu", "SoftmaxWithLoss", "Dropout", "BatchNormalization", "Convolution", "Pooling",
           "PooledConvolution"]


class Relu:
    """max(0, x); backward passes the gradient where x > 0.

    ``mask`` is the book's ``x <= 0``, the positions set to 0 (read from the output: it is 0 exactly there). NaN is
    not among them, so NaN input stays NaN (as with the book's layer) instead of silently becoming 0, and its
    gradient passes.
    """

    def __init__(self):
        self.out: Any = None

    @property
    def mask(self) -> Any:
        return None if self.out is None else self.out <= 0

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        # one pass: maximum keeps NaN, and the mask is recomputed from the output when backward needs it
        self.out = xp.maximum(x, _zero(xp, x))
        return self.out

    def backward(self, dout: Any) -> Any:
        xp = namespace(dout)
        return xp.where(self.out <= 0, _zero(xp, dout), dout)


def _zero(xp: Any, x: Any) -> Any:
    """A 0-d zero of ``x``'s dtype on its device (Python scalars in maximum / where are not in every library)."""
    with device_of(x).active():  # CuPy's zeros go to its current GPU, whatever device= says
        return xp.zeros((), dtype=x.dtype, device=native_device(x))


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

    param_names = ("W", "b")

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

    The log-sum-exp loss is exact where the book's ``cross_entropy_error(softmax(x), t)`` adds 1e-7 inside the
    log: the two differ when a true-class probability is tiny (one sample's 25.0 is the book's 16.1), and a
    batch's mean by up to about 1e-2. ``book_loss=True`` gives the book's value (``cross_entropy_error``
    semantics); the gradient is the same either way, and a network with such a last layer trains on the generic
    path (the fused fast paths compute the exact loss).
    """

    def __init__(self, book_loss: bool = False):
        self.book_loss = book_loss
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
        if self.book_loss:
            # the book's cross_entropy_error(y, t): one-hot targets reduced with argmax, log(y + 1e-7)
            labels = xp.argmax(t, axis=-1) if t.ndim == x.ndim else t
            self.loss = _nan_where_invalid(xp, _book_cross_entropy(xp, self.y, labels), self.valid)
        else:
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


class Dropout:
    """The book's dropout: at train time each element is kept when a uniform draw exceeds ``dropout_ratio`` (and
    dropped, set to 0, otherwise); at test time every element is scaled by ``1 - dropout_ratio``.

    The masks come from ``seed`` (a host generator draws two keys per training forward pass, and
    :func:`anynet.masks.keep_mask` expands them on the input's device), so one seed gives the same masks on every
    device. While ``frozen`` (see :meth:`anynet.networks.LayerNet.frozen_dropout`), every forward pass reuses one
    mask, as a numerical gradient check needs.
    """

    def __init__(self, dropout_ratio: float = 0.5, *, seed: Any = None):
        ratio = float(dropout_ratio)
        if not 0.0 <= ratio < 1.0:  # NaN fails this too
            raise ValueError(f"dropout_ratio must be in [0, 1), got {dropout_ratio!r}: the fraction of elements "
                             "dropped at train time (the book uses 0.15 to 0.5)")
        self.dropout_ratio = ratio
        self.generator = host_generator(seed)
        self.mask: Any = None
        self.frozen = False
        self._keys: tuple[int, int] | None = None

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace(x)
        if not train_flg:
            return x * (1.0 - self.dropout_ratio)
        if not self.frozen or self._keys is None:
            first, second = self.generator.integers(0, 2**32, size=2).tolist()
            self._keys = (first, second)
        keep = keep_mask(x, self._keys, self.dropout_ratio)
        # multiplied, as the book does, so that a NaN input stays NaN where it is dropped too
        self.mask = xp.astype(keep, x.dtype)
        return x * self.mask

    def backward(self, dout: Any) -> Any:
        return dout * self.mask


# The book's epsilon (written 10e-7 there) under the square root of the variance.
BATCH_NORM_EPSILON = 1e-6


class BatchNormalization:
    """The book's batch normalization: over the batch axis for 2-D input (N, D); 4-D input (N, C, H, W) is
    normalized per element as (N, C*H*W), as the book does (gamma and beta then have C*H*W entries).

    At train time the batch's mean and variance normalize it and update ``running_mean`` / ``running_var``
    (``momentum`` times the old value plus ``1 - momentum`` times the batch's); at test time those are used. Both
    start at 0 as in the book (made on the first forward pass, in the input's dtype and device, when not given).
    """

    param_names = ("gamma", "beta")
    buffer_names = ("running_mean", "running_var")

    def __init__(self, gamma: Any, beta: Any, momentum: float = 0.9, running_mean: Any = None,
                 running_var: Any = None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape: Any = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size: Any = None
        self.xc: Any = None
        self.xn: Any = None
        self.std: Any = None
        self.dgamma: Any = None
        self.dbeta: Any = None

    def forward(self, x: Any, train_flg: bool = True) -> Any:
        xp = namespace(x, self.gamma)
        self.input_shape = tuple(x.shape)
        if x.ndim != 2:
            x = xp.reshape(x, (x.shape[0], math.prod(x.shape[1:])))
        if x.shape[1] != self.gamma.shape[0]:
            raise ValueError(f"BatchNormalization of {self.gamma.shape[0]} features got input of shape "
                             f"{self.input_shape} ({x.shape[1]} features per sample)")
        if self.running_mean is None:
            with device_of(x).active():  # CuPy's zeros go to its current GPU, whatever device= says
                self.running_mean = xp.zeros((x.shape[1],), dtype=x.dtype, device=native_device(x))
                self.running_var = xp.zeros((x.shape[1],), dtype=x.dtype, device=native_device(x))
        if train_flg:
            _check_batch(x)
            mu = xp.mean(x, axis=0)
            xc = x - mu
            var = xp.mean(xc**2, axis=0)
            std = xp.sqrt(var + BATCH_NORM_EPSILON)
            xn = xc / std
            self.batch_size, self.xc, self.xn, self.std = x.shape[0], xc, xn, std
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
        else:
            xn = (x - self.running_mean) / xp.sqrt(self.running_var + BATCH_NORM_EPSILON)
        return xp.reshape(self.gamma * xn + self.beta, self.input_shape)

    def backward(self, dout: Any) -> Any:
        xp = namespace(dout)
        if dout.ndim != 2:
            dout = xp.reshape(dout, (dout.shape[0], math.prod(dout.shape[1:])))
        self.dbeta = xp.sum(dout, axis=0)
        self.dgamma = xp.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        dxc = dxn / self.std
        dstd = -xp.sum((dxn * self.xc) / (self.std * self.std), axis=0)
        dvar = 0.5 * dstd / self.std
        dxc = dxc + (2.0 / self.batch_size) * self.xc * dvar
        dmu = xp.sum(dxc, axis=0)
        dx = dxc - dmu / self.batch_size
        return xp.reshape(dx, self.input_shape)


class Convolution:
    """The book's convolution: filters ``W`` (FN, C, FH, FW) and biases ``b`` (FN,) over images (N, C, H, W), as
    one matrix product of the im2col windows; output (N, FN, out_h, out_w).

    NumPy and CuPy arrays take a fast path of anynet._kernels (equal to this one to rounding); other libraries run
    the book's im2col / col2im formulation. ``input_gradient`` False skips the input's gradient in ``backward``
    (which then returns None): :class:`anynet.networks.LayerNet` sets it on a first layer, whose input gradient
    nobody reads.
    """

    param_names = ("W", "b")

    def __init__(self, W: Any, b: Any, stride: int = 1, pad: int = 0):
        if W.ndim != 4 or b.ndim != 1 or b.shape[0] != W.shape[0]:
            raise ValueError(f"Convolution takes filters W of shape (FN, C, FH, FW) and biases b of shape (FN,), got "
                             f"{tuple(W.shape)} and {tuple(b.shape)}")
        conv_output_size(W.shape[2], W.shape[2], stride, pad)  # checks stride and pad
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.input_gradient = True
        self.x: Any = None
        self.col: Any = None
        self.col_W: Any = None
        self.dW: Any = None
        self.db: Any = None
        self._kernels: Any = None
        self._saved: Any = None
        self._workspace: dict = {}  # the fast path's buffers, reused from one forward pass to the next

    def _output_size(self, x: Any) -> tuple[int, int]:
        """(out_h, out_w) for input ``x``, after checking that it fits the filters (on every path, the fast ones
        too: a filter larger than the padded input is an error, not an empty output)."""
        _check_images("Convolution input", x)
        c, fh, fw = self.W.shape[1:]
        if x.shape[1] != c:
            raise ValueError(f"Convolution with filters of shape {tuple(self.W.shape)} takes images of {c} "
                             f"channel(s), got input of shape {tuple(x.shape)}")
        out_h = conv_output_size(x.shape[2], fh, self.stride, self.pad)
        return out_h, conv_output_size(x.shape[3], fw, self.stride, self.pad)

    def forward(self, x: Any) -> Any:
        xp = namespace(x, self.W)
        out_h, out_w = self._output_size(x)
        fn, c, fh, fw = self.W.shape
        self.x = x
        self._kernels = conv_kernels(xp)
        if self._kernels is not None:
            out, self._saved = self._kernels.conv_forward(x, self.W, self.b, self.stride, self.pad,
                                                          self._workspace)
            return out
        n = x.shape[0]
        self.col = im2col(x, fh, fw, self.stride, self.pad)
        self.col_W = xp.reshape(self.W, (fn, c * fh * fw)).T
        out = self.col @ self.col_W + self.b
        return xp.permute_dims(xp.reshape(out, (n, out_h, out_w, fn)), (0, 3, 1, 2))

    def backward(self, dout: Any) -> Any:
        _check_forward_ran(self)
        if self._kernels is not None:
            dx, self.dW, self.db = self._kernels.conv_backward(dout, self._saved, self.W, self.stride, self.pad,
                                                               self.input_gradient)
            return dx
        xp = namespace(dout)
        fn, c, fh, fw = self.W.shape
        dout = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (-1, fn))
        self.db = xp.sum(dout, axis=0)
        self.dW = xp.reshape((self.col.T @ dout).T, (fn, c, fh, fw))
        if not self.input_gradient:
            return None
        dcol = dout @ self.col_W.T
        return col2im(dcol, tuple(self.x.shape), fh, fw, self.stride, self.pad)


class Pooling:
    """The book's max pooling over ``pool_h`` x ``pool_w`` windows of images (N, C, H, W), ``stride`` apart, on
    input padded by ``pad`` zeros; backward sends each output's gradient to its window's (first) maximum.

    NumPy and CuPy arrays take a fast path of anynet._kernels (equal to this one); other libraries run the book's
    im2col formulation.
    """

    def __init__(self, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0):
        conv_output_size(pool_h, pool_h, stride, pad)  # checks the window, stride and pad
        conv_output_size(pool_w, pool_w, stride, pad)
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x: Any = None
        self.arg_max: Any = None
        self._kernels: Any = None
        self._saved: Any = None

    def forward(self, x: Any) -> Any:
        xp = namespace(x)
        _check_images("Pooling input", x)
        # on every path, the fast ones too: a window larger than the padded input is an error, not an empty output
        out_h = conv_output_size(x.shape[2], self.pool_h, self.stride, self.pad)
        out_w = conv_output_size(x.shape[3], self.pool_w, self.stride, self.pad)
        self.x = x
        self._kernels = conv_kernels(xp)
        if self._kernels is not None:
            out, self._saved = self._kernels.pool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
            return out
        n, c = x.shape[:2]
        col = im2col(x, self.pool_h, self.pool_w, self.stride, self.pad)
        col = xp.reshape(col, (-1, self.pool_h * self.pool_w))
        self.arg_max = xp.argmax(col, axis=1)
        out = xp.max(col, axis=1)
        return xp.permute_dims(xp.reshape(out, (n, out_h, out_w, c)), (0, 3, 1, 2))

    def backward(self, dout: Any) -> Any:
        _check_forward_ran(self)
        if self._kernels is not None:
            return self._kernels.pool_backward(dout, self._saved)
        xp = namespace(dout)
        pool_size = self.pool_h * self.pool_w
        flat = xp.reshape(xp.permute_dims(dout, (0, 2, 3, 1)), (-1, 1))
        with device_of(dout).active():  # CuPy's arange goes to its current GPU, whatever device= says
            positions = xp.arange(pool_size, device=native_device(dout))
        # the one-hot of each window's maximum times its gradient: the book's dmax without an indexed assignment
        dcol = xp.where(xp.reshape(self.arg_max, (-1, 1)) == positions, flat, xp.zeros_like(flat))
        dcol = xp.reshape(dcol, (-1, self.x.shape[1] * pool_size))
        return col2im(dcol, tuple(self.x.shape), self.pool_h, self.pool_w, self.stride, self.pad)


def _check_forward_ran(layer: Any) -> None:
    if layer.x is None:
        raise RuntimeError(f"{type(layer).__name__}.backward needs the input of a forward pass of this layer, and "
                           "there is none (none yet, or the last one ran in a PooledConvolution, which keeps its "
                           "own): call forward first")


class PooledConvolution:
    """A :class:`Convolution` followed by 2x2 max :class:`Pooling` of stride 2 without padding (the book's conv
    networks' pattern), and optionally a :class:`Relu` (max pooling commutes with it), as one step: where a fast path
    fuses them (NumPy), the convolution's product comes out window corner by window corner, the pooling compares
    contiguous blocks and the ReLU's mask joins the pooling's choices; elsewhere the layers run one after the other.
    The values and gradients are those of the layers (the filters' gradients to rounding), and the gradients land
    in the convolution's ``dW`` and ``db``.

    :class:`anynet.networks.LayerNet` runs such layers this way. The fused step clears the convolution's and the
    pooling's input (their own ``backward`` then asks for their own forward pass rather than use an older one); the
    Relu's ``out`` (and ``mask``) is the step's output, as it would be.
    """

    def __init__(self, conv: Convolution, pool: Pooling, relu: Relu | None = None):
        self.conv = conv
        self.pool = pool
        self.relu = relu
        self._backward: Any = None
        self._saved: Any = None

    def _fused(self, x: Any) -> Any:
        """The fast path's fused functions, when they exist for ``x``'s library and the layers fit them."""
        conv, pool = self.conv, self.pool
        kernels = conv_kernels(namespace(x, conv.W))
        window = (pool.pool_h, pool.pool_w, pool.stride, pool.pad)
        if getattr(kernels, "conv_pool_forward", None) is None or window != (2, 2, 2, 0):
            return None
        # fewer than 2 output rows or columns: the Pooling layer itself says what is wrong
        return kernels if min(conv._output_size(x)) >= 2 else None

    def forward(self, x: Any) -> Any:
        kernels = self._fused(x)
        if kernels is None:
            self._backward = None
            out = self.pool.forward(self.conv.forward(x))
            return out if self.relu is None else self.relu.forward(out)
        conv = self.conv
        out, self._saved = kernels.conv_pool_forward(x, conv.W, conv.b, conv.stride, conv.pad, conv._workspace,
                                                     self.relu is not None)
        self._backward = kernels.conv_pool_backward
        conv.x = self.pool.x = None  # their state is this step's
        if self.relu is not None:
            self.relu.out = out
        return out

    def backward(self, dout: Any) -> Any:
        if self._backward is None:
            if self.relu is not None:
                dout = self.relu.backward(dout)
            return self.conv.backward(self.pool.backward(dout))
        conv = self.conv
        dx, conv.dW, conv.db = self._backward(dout, self._saved, conv.W, conv.stride, conv.pad, conv.input_gradient)
        return dx
