"""The CPU fast path: one whole training step of an Affine stack in NumPy, in preallocated buffers.

The generic path allocates every intermediate, computes the input gradient of the first layer (which nothing
uses), and calls the array API through its wrappers. Here each step gathers its batch into a reused buffer, runs
the GEMMs with ``out=``, applies activations and optimizer updates in place, and skips that unused gradient.
``tests/test_kernels.py`` checks it against the generic path.
"""

from __future__ import annotations

import math

import numpy as np

from ..optimizers import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from ._fused import FusedStepBase

SUPPORTED_OPTIMIZERS = (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)
EPSILON = 1e-7


def _sigmoid_in_place(a):
    """1 / (1 + exp(-a)) in place. exp(-a) overflows to inf for a < -88 in float32, which gives the right 0: the
    callers run this under np.errstate(over="ignore"), which is cheaper than any overflow-free form here."""
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1.0
    np.reciprocal(a, out=a)


class _Buffers:
    """Per-batch-size work arrays, made on first use and kept."""

    def __init__(self, sizes, batch, dtype):
        self.x = np.empty((batch, sizes[0]), dtype=dtype)
        self.z = [None] + [np.empty((batch, n), dtype=dtype) for n in sizes[1:]]  # z[i]: layer i's output
        self.dz = [None] + [np.empty((batch, n), dtype=dtype) for n in sizes[1:]]
        self.scratch = [None] + [np.empty((batch, n), dtype=dtype) for n in sizes[1:]]
        self.mask = [None] + [np.empty((batch, n), dtype=bool) for n in sizes[1:]]
        self.rows = np.arange(batch)
        self.column = np.empty((batch, 1), dtype=dtype)
        self.log = np.empty((batch, 1), dtype=dtype)


class FusedStep(FusedStepBase):
    """Gradient and update of ``network`` (TwoLayerNet / MultiLayerNet on NumPy) with ``optimizer``, fused."""

    xp = np
    Buffers = _Buffers
    scratch_flats = ("work",)
    supported = SUPPORTED_OPTIMIZERS

    def __init__(self, network, optimizer):
        super().__init__(network, optimizer)
        self.sgd = type(optimizer) is SGD

    def __call__(self, x, t, indices=None):
        """One step on the samples ``indices`` of (x, t) (all of them if None); returns the loss as a 0-D array.

        ``t`` holds integer labels or one-hot rows.
        """
        if self.relu:  # nothing can overflow: exp only sees logits minus their maximum
            return self._step(x, t, indices)
        with np.errstate(over="ignore"):
            return self._step(x, t, indices)

    def _step(self, x, t, indices):
        self._bind()
        batch = x.shape[0] if indices is None else indices.shape[0]
        buf = self._buffers(batch)
        params, grads = self.params.views, self.grads.views
        W, b = self.W, self.b
        if indices is None:
            xb, tb = np.reshape(x, (batch, -1)), t
        else:
            # mode="clip" lets take write straight into the buffer (the indices are valid by construction)
            xb = np.take(np.reshape(x, (x.shape[0], -1)), indices, axis=0, out=buf.x, mode="clip")
            tb = t[indices]

        # forward
        _forward_in_place(params, xb, buf.z, self.relu)

        # softmax and cross-entropy from the logits, and their gradient (softmax - t) / batch
        logits, dy, column = buf.z[self.depth], buf.dz[self.depth], buf.column
        np.maximum.reduce(logits, axis=1, keepdims=True, out=column)
        logits -= column
        np.exp(logits, out=dy)
        np.add.reduce(dy, axis=1, keepdims=True, out=column)
        log_sums = np.log(column, out=buf.log).sum()
        picked = logits[buf.rows, tb].sum() if tb.ndim == 1 else np.vdot(tb, logits)
        loss = (log_sums - picked) / batch
        # plain SGD without decay: every gradient below is linear in dy, so scaling dy by lr here leaves
        # "params -= grads" as the whole update
        decay = self.network.weight_decay_lambda
        scale = (self.optimizer.lr if self.sgd and not decay else 1.0) / batch
        np.divide(scale, column, out=column)
        dy *= column
        if tb.ndim == 1:
            dy[buf.rows, tb] -= scale
        else:
            dy -= tb * scale

        # backward
        for i in range(self.depth, 0, -1):
            below = xb if i == 1 else buf.z[i - 1]
            np.matmul(below.T, dy, out=grads[W[i]])
            np.add.reduce(dy, axis=0, out=grads[b[i]])
            if decay:
                grads[W[i]] += decay * params[W[i]]
            if i == 1:
                break  # nothing needs the gradient of the input
            d_below = buf.dz[i - 1]
            np.matmul(dy, params[W[i]].T, out=d_below)
            if self.relu:
                mask = buf.mask[i - 1]
                np.greater(below, 0, out=mask)
                np.multiply(d_below, mask, out=d_below)
            else:  # sigmoid'(a) = z (1 - z)
                scratch = buf.scratch[i - 1]
                np.subtract(1.0, below, out=scratch)
                scratch *= below
                d_below *= scratch
            dy = d_below

        if decay:
            loss = loss + 0.5 * decay * sum(np.vdot(params[W[i]], params[W[i]]) for i in range(1, self.depth + 1))
        self._update()
        loss = np.asarray(loss, dtype=self.dtype)
        self.network.last_loss = loss
        return loss

    def _update(self):
        """The optimizer's update, over the flat buffers at once."""
        opt = self.optimizer
        p, g, w = self.params.buffer, self.grads.buffer, self.scratch["work"].buffer
        kind = type(opt)
        if kind is SGD:
            if self.network.weight_decay_lambda:
                g *= opt.lr
            p -= g  # else the learning rate is in g already
        elif kind is Adam:
            m, v = self.slots["m"].buffer, self.slots["v"].buffer
            opt.iter += 1
            lr_t = opt.lr * math.sqrt(1.0 - opt.beta2**opt.iter) / (1.0 - opt.beta1**opt.iter)
            # m = b1 m + (1 - b1) g and v = b2 v + (1 - b2) g^2: the book's increments, one pass fewer
            m *= opt.beta1
            np.multiply(g, 1 - opt.beta1, out=w)
            m += w
            v *= opt.beta2
            np.multiply(g, g, out=w)
            w *= 1 - opt.beta2
            v += w
            np.sqrt(v, out=w)
            w += EPSILON
            np.divide(m, w, out=w)
            w *= lr_t
            p -= w
        elif kind in (Momentum, Nesterov):
            velocity = self.slots["v"].buffer
            velocity *= opt.momentum
            np.multiply(g, opt.lr, out=w)
            velocity -= w
            if kind is Momentum:
                p += velocity
            else:
                np.multiply(velocity, opt.momentum * opt.momentum, out=g)  # g's value is in w now
                p += g
                w *= 1 + opt.momentum
                p -= w
        else:  # AdaGrad, RMSprop
            h = self.slots["h"].buffer
            np.multiply(g, g, out=w)
            if kind is RMSprop:
                h *= opt.decay_rate
                w *= 1 - opt.decay_rate
            h += w
            np.sqrt(h, out=w)
            w += EPSILON
            np.divide(g, w, out=w)
            w *= opt.lr
            p -= w


def predict_labels(network, x, batch_size: int = 10000):
    """The argmax of ``network``'s scores for each row of ``x``, as int64.

    Rows go through in chunks of at most 2048 so that each chunk's activations stay in cache between the layers.
    """
    params = network.params
    n = x.shape[0]
    flat = np.reshape(x, (n, -1))
    chunk = max(1, min(batch_size, 2048))
    layers = [np.empty((chunk, size), dtype=params["W1"].dtype) for size in network.sizes[1:]]
    labels = np.empty(n, dtype=np.int64)
    with np.errstate(over="ignore"):
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            _predict_chunk(network, flat[start:stop], layers, labels[start:stop])
    return labels


def _predict_chunk(network, h, layers, labels):
    outputs = [None] + [layer[:h.shape[0]] for layer in layers]
    scores = _forward_in_place(network.params, h, outputs, network.activation == "relu")
    np.argmax(scores, axis=1, out=labels)


def _forward_in_place(params, h, outputs, relu):
    """``h`` through the Affine stack ``params``, layer i writing into ``outputs[i]`` (index 0 unused), the hidden
    layers with their activation applied in place; returns the last layer's scores."""
    depth = len(outputs) - 1
    for i in range(1, depth + 1):
        z = outputs[i]
        np.matmul(h, params[f"W{i}"], out=z)
        z += params[f"b{i}"]
        if i < depth:
            if relu:
                np.maximum(z, 0, out=z)
            else:
                _sigmoid_in_place(z)
        h = z
    return h
