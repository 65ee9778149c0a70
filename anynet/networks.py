"""Networks: the book's chapter-3 network with fixed weights, and the trainable TwoLayerNet / MultiLayerNet."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from ._kernels import AffineStackSpec, label_predictor
from ._kernels import fused_step as _kernel_step
from .backend import Device, device_of, host_generator, namespace, on_device_of, running_on, same_device, to_numpy
from .backend import device as make_device
from .chunking import chunk_bounds
from .functions import identity_function, label_dtype_error, label_range_error, sigmoid, softmax
from .gradient import numerical_gradient as _numerical_gradient
from .layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from .optimizers import check_hyperparameter

__all__ = ["init_network", "forward", "predict", "TwoLayerNet", "MultiLayerNet"]

# The book's hand-picked weights for the 2-3-2-2 network of chapter 3.
_CH3_WEIGHTS = {
    "W1": [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]],
    "b1": [0.1, 0.2, 0.3],
    "W2": [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]],
    "b2": [0.1, 0.2],
    "W3": [[0.1, 0.3], [0.2, 0.4]],
    "b3": [0.1, 0.2],
}


def init_network(device: str | Device = "cpu", dtype: Any = "float32") -> dict[str, Any]:
    """The book's chapter-3 network: a dict W1, b1, W2, b2, W3, b3 of fixed weights on ``device``."""
    where = make_device(device)
    return {name: where.asarray(value, dtype=dtype) for name, value in _CH3_WEIGHTS.items()}


def forward(network: dict[str, Any], x: Any) -> Any:
    """The chapter-3 forward pass: two sigmoid layers and an identity output, for one input or a batch."""
    W1, W2, W3 = network["W1"], network["W2"], network["W3"]
    b1, b2, b3 = network["b1"], network["b2"], network["b3"]
    namespace(x, W1)  # a clear error if x and the weights live on different devices
    z1 = sigmoid(x @ W1 + b1)
    z2 = sigmoid(z1 @ W2 + b2)
    return identity_function(z2 @ W3 + b3)


def predict(network: dict[str, Any], x: Any) -> Any:
    """The book's chapter-3 MNIST predict: class probabilities from sigmoid, sigmoid, softmax layers.

    ``network`` holds W1, b1, W2, b2, W3, b3 (e.g. from ``anynet.io.load_params("sample_weight.pkl")``); ``x``
    is one flattened image or a batch. Host input (NumPy) is moved onto the weights' device.
    """
    W1 = network["W1"]
    x = on_device_of(W1, x)
    if x.shape[-1] != W1.shape[0]:
        raise ValueError(
            f"input has {x.shape[-1]} features per sample, the network's W1 expects {W1.shape[0]} "
            f"(input shape {tuple(x.shape)}, W1 shape {tuple(W1.shape)}); flatten images to (N, {W1.shape[0]})"
        )
    return softmax(forward(network, x))


ACTIVATIONS = {"sigmoid": Sigmoid, "relu": Relu}


# Network methods run with the weights' device active (CuPy's current GPU).
_on_own_device = running_on(lambda self, *args: self.device)


class _AffineStack:
    """Affine - activation - ... - Affine - SoftmaxWithLoss, with parameters W1, b1, W2, b2, ... in ``params``."""

    def __init__(self, sizes: Sequence[int], scales: Sequence[float], activation: str, weight_decay_lambda: float,
                 device: str | Device, dtype: Any, seed: int | None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        _check_sizes(sizes)
        where = make_device(device)
        rng = host_generator(seed)
        self.sizes = list(sizes)
        self.activation = activation
        # a NaN decay made every weight NaN, which then looked like a learning rate too high
        self.weight_decay_lambda = check_hyperparameter(type(self).__name__, "weight_decay_lambda",
                                                        weight_decay_lambda)
        self.params: dict[str, Any] = {}
        for index, (fan_in, fan_out) in enumerate(zip(self.sizes, self.sizes[1:]), 1):
            # drawn on the host in float64, rounded to dtype there: the same weights on every device
            self.params[f"W{index}"] = where.asarray(scales[index - 1] * rng.standard_normal((fan_in, fan_out)),
                                                     dtype=dtype)
            with where.active():  # where CuPy's zeros go: its current device, whatever device= says
                self.params[f"b{index}"] = where.xp.zeros((fan_out,), dtype=where.dtype(dtype), device=where.native)
        self.last_loss = None
        self._build_layers()

    @property
    def input_size(self) -> int:
        return self.sizes[0]

    @property
    def output_size(self) -> int:
        return self.sizes[-1]

    @property
    def depth(self) -> int:
        """The number of Affine layers."""
        return len(self.sizes) - 1

    @property
    def device(self) -> Device:
        return device_of(self.params["W1"])

    def _build_layers(self) -> None:
        self.layers: OrderedDict[str, Any] = OrderedDict()
        for index in range(1, self.depth + 1):
            self.layers[f"Affine{index}"] = Affine(self.params[f"W{index}"], self.params[f"b{index}"])
            if index < self.depth:
                self.layers[f"{self.activation.capitalize()}{index}"] = ACTIVATIONS[self.activation]()
        self.last_layer = SoftmaxWithLoss()

    def _kernel_spec(self) -> AffineStackSpec:
        """This stack as anynet._kernels sees it: sizes, activation, decay, and how to read and rebind the
        parameters (read through ``self`` on every step, so ``to``/``load_params`` are seen)."""
        return AffineStackSpec(tuple(self.sizes), self.activation, lambda: self.weight_decay_lambda,
                               params=lambda: self.params, rebind=self._rebind)

    def _rebind(self, views: dict[str, Any]) -> None:
        """Take ``views`` (same names, same values, new arrays) as the parameters; the layers follow."""
        self.params.update(views)
        self._build_layers()

    def fused_step(self, optimizer: Any) -> Callable[..., Any] | None:
        """A callable ``step(x, t, indices=None) -> loss`` doing one training step (gradient and ``optimizer``'s
        update) on the samples ``indices`` of (x, t), all of them if None, through a fast path of anynet._kernels;
        the loss (a 0-D array on the device) is also kept in ``last_loss``. None where no fast path applies (the
        generic ``gradient`` + ``optimizer.update`` then does the same, to rounding)."""
        step = _kernel_step(self._kernel_spec(), optimizer)
        if step is None:
            return None

        def fused(x: Any, t: Any, indices: Any = None) -> Any:
            self.last_loss = loss = step(x, t, indices)
            return loss

        return fused

    @property
    def lastLayer(self) -> SoftmaxWithLoss:  # noqa: N802 - the book's chapter-5 name
        return self.last_layer

    def to(self, device: str | Device, dtype: Any = None) -> _AffineStack:
        """Move every parameter onto ``device`` (optionally casting to ``dtype``); returns the network."""
        where = make_device(device)
        with where.active():
            self.params = {name: where.asarray(value, dtype=dtype) for name, value in self.params.items()}
        self._build_layers()
        return self

    @_on_own_device
    def load_params(self, params: dict[str, Any]) -> _AffineStack:
        """Replace the parameters by ``params`` (same names and shapes), moved onto this network's device."""
        where = self.device
        expected = {name: tuple(value.shape) for name, value in self.params.items()}
        given = {name: tuple(value.shape) for name, value in params.items()}
        if given != expected:
            raise ValueError(f"parameters do not fit this network: expected {expected}, got {given}")
        # copies: training updates the parameters in place and must not write into the caller's arrays
        self.params = {name: where.xp.asarray(where.asarray(params[name], dtype=self.params[name].dtype), copy=True)
                       for name in expected}
        self._build_layers()
        return self

    @_on_own_device
    def predict(self, x: Any) -> Any:
        """Scores (logits) for ``x``; host input is moved onto the network's device, and floating input of another
        precision is computed in the network's (as ``net.to(dtype=...)`` sets it)."""
        x = self._input(x)
        self._check_features(x)
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def _input(self, x: Any) -> Any:
        """``x`` on the weights' device, in their dtype if it is floating: the fast paths' kernels take one dtype,
        and libraries disagree on mixed ones (PyTorch refuses a float64 @ float32 product, NumPy widens it)."""
        weights = self.params["W1"]
        x = on_device_of(weights, x)
        if same_device(x, weights) and x.dtype != weights.dtype:  # dtypes of two libraries are not compared
            xp = namespace(x)
            if xp.isdtype(x.dtype, "real floating"):
                x = xp.astype(x, weights.dtype)
        return x

    def _check_features(self, x: Any) -> None:
        features = math.prod(x.shape[1:]) if x.ndim > 1 else x.shape[0]
        if features != self.input_size:
            raise ValueError(
                f"input of shape {tuple(x.shape)} has {features} features per sample, the network takes "
                f"{self.input_size}; pass a batch of shape (N, {self.input_size})"
            )

    @_on_own_device
    def loss(self, x: Any, t: Any) -> Any:
        """Cross-entropy of softmax(predict(x)) against ``t`` (labels or one-hot), plus the L2 weight decay.

        Labels are checked as :class:`anynet.layers.SoftmaxWithLoss` checks them: float labels and, on a host
        device, labels outside 0..classes-1 raise; on a GPU such labels make the loss NaN (checking them there would
        wait for the GPU at every step). An empty batch raises ValueError.
        """
        _check_not_empty("the loss", x)
        t = on_device_of(self.params["W1"], t)
        loss = self.last_layer.forward(self.predict(x), t)
        if self.weight_decay_lambda:
            xp = namespace(loss)
            decay = sum(xp.sum(self.params[f"W{i}"] ** 2) for i in range(1, self.depth + 1))
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    @_on_own_device
    def accuracy(self, x: Any, t: Any, batch_size: int = 10000) -> float:
        """The fraction of samples whose highest score is the label (``t``: labels or one-hot), as a float.

        Host input moves onto the device ``batch_size`` rows at a time, so a dataset that does not fit there can
        still be scored. Labels outside 0..classes-1 raise ValueError on every device (their range is read with the
        count of correct answers: no extra wait), float labels TypeError, an empty batch ValueError.
        """
        _check_not_empty("the accuracy", x)
        t = on_device_of(self.params["W1"], t)
        xp = namespace(t)
        n = x.shape[0]
        if t.shape[0] != n or t.ndim not in (1, 2):
            raise ValueError(f"labels t of shape {tuple(t.shape)} do not fit x of shape {tuple(x.shape)}: expected "
                             f"integer labels of shape ({n},) or one-hot targets of shape ({n}, {self.output_size})")
        if t.ndim == 1 and not xp.isdtype(t.dtype, "integral"):
            raise label_dtype_error(self.output_size, t.dtype)
        labels = xp.argmax(t, axis=1) if t.ndim != 1 else t
        # read with the count: the range of integer labels, which a comparison would otherwise quietly miss
        ends = [xp.astype(xp.min(t), xp.int64), xp.astype(xp.max(t), xp.int64)] if t.ndim == 1 else []
        self._check_features(x)
        fast = label_predictor(self._kernel_spec())
        weights = self.params["W1"]
        if fast is not None and same_device(x, weights) and x.dtype == weights.dtype:
            # already where the weights are: the fast path goes through it in chunks of its own, and the labels
            # are compared once instead of once per chunk
            correct = xp.sum(xp.astype(fast(x, batch_size) == labels, xp.int64))
        else:
            counts = []
            for start, stop in chunk_bounds(n, batch_size):
                chunk = on_device_of(self.params["W1"], x[start:stop, ...])
                guess = fast(chunk, batch_size) if fast is not None else xp.argmax(self.predict(chunk), axis=1)
                counts.append(xp.sum(xp.astype(guess == labels[start:stop], xp.int64)))
            correct = sum(counts[1:], counts[0])
        read = to_numpy(xp.stack([correct, *ends])).tolist()
        if ends and (read[1] < 0 or read[2] >= self.output_size):
            raise label_range_error(self.output_size, read[1], read[2])
        return read[0] / n

    @_on_own_device
    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of the loss by backpropagation, as a dict like ``params``. The loss is kept in ``last_loss``
        (on the device: reading it is left to the caller)."""
        self.last_loss = self.loss(x, t)
        dout = self.last_layer.backward(1)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for index in range(1, self.depth + 1):
            affine = self.layers[f"Affine{index}"]
            grads[f"W{index}"] = affine.dW + self.weight_decay_lambda * affine.W if self.weight_decay_lambda \
                else affine.dW
            grads[f"b{index}"] = affine.db
        return grads

    @_on_own_device
    def numerical_gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of the loss by central differences (slow: two forward passes per parameter)."""
        x = on_device_of(self.params["W1"], x)
        t = on_device_of(self.params["W1"], t)

        def loss_of(_):
            return self.loss(x, t)

        return {name: _numerical_gradient(loss_of, value) for name, value in self.params.items()}

    def architecture(self) -> dict:
        """What it takes to rebuild this network (saved beside the weights by ``anynet train --save``)."""
        return {"sizes": self.sizes, "activation": self.activation}


class TwoLayerNet(_AffineStack):
    """The book's TwoLayerNet (chapters 4-5): Affine - activation - Affine - SoftmaxWithLoss.

    Weights are ``weight_init_std`` times standard normal draws from a host generator seeded by ``seed`` (the
    same weights on every device); biases are zero.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, weight_init_std: float = 0.01, *,
                 activation: str = "sigmoid", device: str | Device = "cpu", dtype: Any = "float32",
                 seed: int | None = None):
        super().__init__([input_size, hidden_size, output_size], [weight_init_std] * 2, activation, 0.0, device,
                         dtype, seed)


def _check_not_empty(what: str, x: Any) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"cannot compute {what} of an empty batch (x of shape {tuple(x.shape)}): pass at least one "
                         "sample")


def _check_sizes(sizes: Sequence[int]) -> None:
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"layer sizes must be positive integers, got {list(sizes)}")


def _init_scale(weight_init_std: float | str, fan_in: int) -> float:
    name = str(weight_init_std).lower()
    if name in ("relu", "he"):
        return math.sqrt(2.0 / fan_in)
    if name in ("sigmoid", "xavier"):
        return math.sqrt(1.0 / fan_in)
    try:
        return float(weight_init_std)
    except ValueError:
        raise ValueError(
            f"unknown weight_init_std {weight_init_std!r}: a number, 'relu'/'he' or 'sigmoid'/'xavier'"
        ) from None


class MultiLayerNet(_AffineStack):
    """The book's chapter-6 MultiLayerNet: fully connected layers of ``hidden_size_list`` with ``activation``.

    weight_init_std: "relu"/"he" (sqrt(2 / fan_in)), "sigmoid"/"xavier" (sqrt(1 / fan_in)) or a number.
    weight_decay_lambda: L2 weight decay, 0.5 * lambda * sum(W**2) added to the loss.
    """

    def __init__(self, input_size: int, hidden_size_list: Sequence[int], output_size: int, activation: str = "relu",
                 weight_init_std: float | str = "relu", weight_decay_lambda: float = 0, *,
                 device: str | Device = "cpu", dtype: Any = "float32", seed: int | None = None):
        sizes = [input_size, *hidden_size_list, output_size]
        _check_sizes(sizes)
        scales = [_init_scale(weight_init_std, fan_in) for fan_in in sizes[:-1]]
        super().__init__(sizes, scales, activation, weight_decay_lambda, device, dtype, seed)
        self.hidden_size_list = list(hidden_size_list)
