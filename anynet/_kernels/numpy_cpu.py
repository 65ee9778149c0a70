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
    np.divide(1.0, a, out=a)  # the same value as np.reciprocal, which NumPy does not vectorise for AVX2


class _Buffers:
    """Per-batch-size work arrays, made on first use and kept.

    The output layer is kept transposed, (classes, batch): softmax then reduces over rows of ``batch`` values,
    which NumPy vectorises, where the (batch, classes) layout reduces ``batch`` rows of a few values one by one.
    """

    def __init__(self, sizes, batch, dtype):
        self.x = np.empty((batch, sizes[0]), dtype=dtype)
        hidden = sizes[1:-1]
        self.z = [None] + [np.empty((batch, n), dtype=dtype) for n in hidden]  # z[i]: hidden layer i's output
        self.dz = [None] + [np.empty((batch, n), dtype=dtype) for n in hidden]
        self.scratch = [None] + [np.empty((batch, n), dtype=dtype) for n in hidden]
        self.mask = [None] + [np.empty((batch, n), dtype=bool) for n in hidden]
        self.logits_t = np.empty((sizes[-1], batch), dtype=dtype)
        self.dy_t = np.empty((sizes[-1], batch), dtype=dtype)
        self.columns = np.arange(batch)
        self.flat = np.empty(batch, dtype=np.intp)
        self.row = np.empty(batch, dtype=dtype)
        self.log = np.empty(batch, dtype=dtype)
        self.ones = np.ones((1, batch), dtype=dtype)  # bias gradients as a GEMM: faster than a column sum


class FusedStep(FusedStepBase):
    """Gradient and update of ``network`` (TwoLayerNet / MultiLayerNet on NumPy) with ``optimizer``, fused."""

    xp = np
    Buffers = _Buffers
    scratch_flats = ("work",)
    supported = SUPPORTED_OPTIMIZERS

    def __init__(self, network, optimizer):
        super().__init__(network, optimizer)
        self._bias_rows_of = None

    def __call__(self, x, t, indices=None):
        """One step on the samples ``indices`` of (x, t) (all of them if None); returns the loss as a 0-D array.

        ``t`` holds integer labels or one-hot rows.
        """
        if self.relu:  # nothing can overflow: exp only sees logits minus their maximum
            return self._step(x, t, indices)
        with np.errstate(over="ignore"):
            return self._step(x, t, indices)

    def _gradient_scale(self) -> float:
        """The factor folded into the output gradient, which every gradient below is linear in: it saves the
        optimizer a pass over all parameters. SGD and momentum take their learning rate there, Adam the sqrt(1 - beta2)
        that makes its second moment a plain sum of squares."""
        opt = self.optimizer
        kind = type(opt)
        if kind in (SGD, Momentum, Nesterov):
            return opt.lr
        if kind is Adam:
            return math.sqrt(1.0 - opt.beta2)
        return 1.0

    def _bind(self):
        super()._bind()
        if self._bias_rows_of is not self.grads:  # (1, n) views of the bias gradients, for their GEMMs
            self._bias_rows = [None] + [self.grads.views[name][None, :] for name in self.b[1:]]
            self._bias_rows_of = self.grads

    def _step(self, x, t, indices):
        self._bind()
        batch = x.shape[0] if indices is None else indices.shape[0]
        buf = self._buffers(batch)
        params, grads, depth = self.params.views, self.grads.views, self.depth
        W, b = self.W, self.b
        if indices is None:
            xb, tb = np.reshape(x, (batch, -1)), t
        else:
            # mode="clip" lets take write straight into the buffer (the indices are valid by construction)
            xb = np.take(np.reshape(x, (x.shape[0], -1)), indices, axis=0, out=buf.x, mode="clip")
            tb = t[indices]

        # forward: the hidden layers, then the output layer transposed
        h = _hidden_in_place(params, xb, buf.z, self.relu)
        logits, dy, row = buf.logits_t, buf.dy_t, buf.row
        np.matmul(params[W[depth]].T, h.T, out=logits)
        logits += params[b[depth]][:, None]

        # softmax and cross-entropy from the logits, and their gradient (softmax - t) * scale
        np.maximum.reduce(logits, axis=0, out=row)
        logits -= row
        np.exp(logits, out=dy)
        np.add.reduce(dy, axis=0, out=row)
        log_sums = np.add.reduce(np.log(row, out=buf.log))
        if tb.ndim == 1:  # flat positions of (label, sample) in the (classes, batch) arrays
            flat = np.multiply(tb, batch, out=buf.flat, dtype=np.intp)  # in intp: uint8 labels would wrap
            flat += buf.columns
            picked = np.add.reduce(logits.reshape(-1).take(flat))
        else:
            picked = np.vdot(tb.T, logits)
        loss = (log_sums - picked) / batch
        gscale = self._gradient_scale()
        scale = gscale / batch
        np.divide(scale, row, out=row)
        dy *= row
        if tb.ndim == 1:
            dy.reshape(-1)[flat] -= scale
        else:
            dy -= tb.T * scale

        # backward; dy is (classes, batch) for the output layer, (batch, n) below it
        decay = self.network.weight_decay_lambda
        for i in range(depth, 0, -1):
            below = xb if i == 1 else buf.z[i - 1]
            dy_rows = dy.T if i == depth else dy
            np.matmul(below.T, dy_rows, out=grads[W[i]])
            if i == depth:
                np.add.reduce(dy, axis=1, out=grads[b[i]])
            else:
                np.matmul(buf.ones, dy, out=self._bias_rows[i])
            if decay:
                grads[W[i]] += (decay * gscale) * params[W[i]]
            if i == 1:
                break  # nothing needs the gradient of the input
            d_below = buf.dz[i - 1]
            np.matmul(dy_rows, params[W[i]].T, out=d_below)
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
            loss = loss + 0.5 * decay * sum(np.vdot(params[W[i]], params[W[i]]) for i in range(1, depth + 1))
        self._update(gscale)
        loss = np.asarray(loss, dtype=self.dtype)
        self.network.last_loss = loss
        return loss

    def _update(self, gscale):
        """The optimizer's update over the flat buffers at once; the gradients arrive multiplied by ``gscale``."""
        opt = self.optimizer
        p, g, w = self.params.buffer, self.grads.buffer, self.scratch["work"].buffer
        kind = type(opt)
        if kind is SGD:
            p -= g  # the learning rate is in g already
        elif kind is Adam:
            m, v = self.slots["m"].buffer, self.slots["v"].buffer
            opt.iter += 1
            lr_t = opt.lr * math.sqrt(1.0 - opt.beta2**opt.iter) / (1.0 - opt.beta1**opt.iter)
            # m = b1 m + (1 - b1) grad and v = b2 v + (1 - b2) grad^2, where g = sqrt(1 - b2) grad
            np.multiply(g, (1.0 - opt.beta1) / gscale, out=w)
            m *= opt.beta1
            m += w
            np.multiply(g, g, out=w)
            v *= opt.beta2
            v += w
            np.sqrt(v, out=w)
            w += EPSILON
            np.divide(m, w, out=w)
            w *= lr_t
            p -= w
        elif kind in (Momentum, Nesterov):  # g = lr grad
            velocity = self.slots["v"].buffer
            velocity *= opt.momentum
            velocity -= g
            if kind is Momentum:
                p += velocity
            else:
                np.multiply(velocity, opt.momentum * opt.momentum, out=w)
                p += w
                g *= 1 + opt.momentum
                p -= g
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
    depth = network.depth
    outputs = [None] + [layer[:h.shape[0]] for layer in layers]
    h = _hidden_in_place(network.params, h, outputs[:depth], network.activation == "relu")
    scores = outputs[depth]
    np.matmul(h, network.params[f"W{depth}"], out=scores)
    scores += network.params[f"b{depth}"]
    np.argmax(scores, axis=1, out=labels)


def _hidden_in_place(params, h, outputs, relu):
    """``h`` through the hidden layers of the Affine stack ``params``, hidden layer i writing into ``outputs[i]``
    (index 0 unused) with its activation applied in place; returns the last hidden layer's output (``h`` itself
    when there is none)."""
    for i in range(1, len(outputs)):
        z = outputs[i]
        np.matmul(h, params[f"W{i}"], out=z)
        z += params[f"b{i}"]
        if relu:
            np.maximum(z, 0, out=z)
        else:
            _sigmoid_in_place(z)
        h = z
    return h
