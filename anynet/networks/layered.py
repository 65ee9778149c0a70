"""LayerNet: the book's layered network (an ordered dict of layers ending in SoftmaxWithLoss), for any layers.

The book's networks each wire their layers to ``params`` by hand; LayerNet does it by the book's own numbering,
so any stack of layers gets the book's parameter names: the k-th layer holding a ``W`` holds ``params["W<k>"]``
(likewise ``b``, ``gamma``, ``beta``), and the k-th layer with running statistics holds ``running_mean<k>`` and
``running_var<k>`` (saved with the parameters, not trained). A layer names what it holds in ``param_names`` and
``buffer_names``; a layer written the book's way, without them, is read for the book's attribute names.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._kernels import AffineStackSpec, label_predictor
from .._kernels import fused_step as _kernel_step
from .._kernels._fused import ACTIVATIONS as _FUSED_ACTIVATIONS
from ..backend import Device, device_of, namespace, on_device_of, running_on, same_device, to_numpy
from ..backend import device as make_device
from ..chunking import chunk_bounds
from ..functions import label_dtype_error, label_range_error
from ..gradient import numerical_gradient as _numerical_gradient
from ..io import layer_generators, running_statistics
from ..io import load_params as read_params_file
from ..io import save_params as write_params_file
from ..layers import Affine, Convolution, Dropout, PooledConvolution, Pooling, Relu, Sigmoid, SoftmaxWithLoss
from ..optimizers import check_hyperparameter

__all__ = ["LayerNet"]

# The attribute names a layer written the book's way holds its parameters under.
_BOOK_PARAM_NAMES = ("W", "b", "gamma", "beta")
# Activation layers a fused fast path covers, by the name the kernels use.
_ACTIVATION_NAMES = {Relu: "relu", Sigmoid: "sigmoid"}

# Network methods run with the weights' device active (CuPy's current GPU).
_on_own_device = running_on(lambda self, *args: self.device)


def _held(layer: Any) -> tuple[str, ...]:
    names = getattr(layer, "param_names", None)
    if names is not None:
        return tuple(names)
    return tuple(name for name in _BOOK_PARAM_NAMES if getattr(layer, name, None) is not None)


def _execution_order(layers: list[Any]) -> list[Any]:
    """``layers`` in the order they run: a Relu followed by max Pooling runs after it instead, on a quarter of the
    values (for 2x2 windows). The results are the same, gradients included: max pooling commutes with max(0, x),
    and where a window's maximum is <= 0 both orders give its whole window a gradient of 0. A Convolution then
    directly followed by Pooling (and a Relu) runs with it as one :class:`~anynet.layers.PooledConvolution` step."""
    order = list(layers)
    for index in range(len(order) - 1):
        if type(order[index]) is Relu and type(order[index + 1]) is Pooling:
            order[index], order[index + 1] = order[index + 1], order[index]
    fused: list[Any] = []
    index = 0
    while index < len(order):
        layer = order[index]
        if type(layer) is Convolution and index + 1 < len(order) and type(order[index + 1]) is Pooling:
            relu = order[index + 2] if index + 2 < len(order) and type(order[index + 2]) is Relu else None
            fused.append(PooledConvolution(layer, order[index + 1], relu))
            index += 3 if relu is not None else 2
        else:
            fused.append(layer)
            index += 1
    return fused


def _takes_train_flg(layer: Any) -> bool:
    try:
        return "train_flg" in inspect.signature(layer.forward).parameters
    except (TypeError, ValueError):
        return False


class LayerNet:
    """A network of ``layers`` (an ordered mapping name -> layer, or (name, layer) pairs) and ``last_layer``.

    ``params`` holds each layer's parameters under the book's names (W1, b1, gamma1, beta1, ..., numbered per
    attribute in layer order) and is the one source of truth: layers are re-pointed at it before each forward pass,
    so ``params`` may be updated in place (optimizers) or entry by entry (the book's ``load_params``).
    ``weight_decay_lambda`` adds 0.5 * lambda * sum(W**2) over every ``W`` to the loss (and lambda * W to its
    gradient), as the book's MultiLayerNet does.
    """

    def __init__(self, layers: Mapping[str, Any] | list[tuple[str, Any]], last_layer: Any = None, *,
                 weight_decay_lambda: float = 0.0):
        self.layers: OrderedDict[str, Any] = OrderedDict(layers)
        if not self.layers:
            raise ValueError("a LayerNet needs at least one layer")
        self.last_layer = last_layer if last_layer is not None else SoftmaxWithLoss()
        # a NaN decay made every weight NaN, which then looked like a learning rate too high
        self.weight_decay_lambda = check_hyperparameter(type(self).__name__, "weight_decay_lambda",
                                                        weight_decay_lambda)
        self._param_slots: dict[str, tuple[Any, str]] = {}
        counts: dict[str, int] = {}
        for layer in self.layers.values():
            for attribute in _held(layer):
                counts[attribute] = counts.get(attribute, 0) + 1
                self._param_slots[f"{attribute}{counts[attribute]}"] = (layer, attribute)
        # running statistics, named as checkpoints name those of a network written the book's way
        self._buffer_slots = running_statistics(self)
        self.params: dict[str, Any] = {name: getattr(layer, attribute)
                                       for name, (layer, attribute) in self._param_slots.items()}
        if not self.params:
            raise ValueError(f"none of the layers {', '.join(self.layers)} holds parameters (W, b, gamma, beta or "
                             "those a layer lists in param_names): a LayerNet needs at least one to train")
        self._order = _execution_order(list(self.layers.values()))
        self._forwards = [(layer, _takes_train_flg(layer)) for layer in self._order]
        first = next(iter(self.layers.values()))
        if hasattr(first, "input_gradient"):  # a Convolution: the gradient of the network's input is never read
            first.input_gradient = False
        self.last_loss: Any = None

    # -- structure -------------------------------------------------------------------------------------------

    @property
    def device(self) -> Device:
        """Where the parameters are."""
        return device_of(next(iter(self.params.values())))

    @property
    def lastLayer(self) -> Any:  # noqa: N802 - the book's chapter-5 name
        return self.last_layer

    @property
    def buffers(self) -> dict[str, Any]:
        """The layers' running statistics (running_mean1, running_var1, ...): saved and moved with the parameters,
        never trained. Read from the layers, which replace them at each training forward pass."""
        return {name: getattr(layer, attribute) for name, (layer, attribute) in self._buffer_slots.items()}

    def _bind(self) -> None:
        """Point each layer at its entry of ``params``."""
        for name, (layer, attribute) in self._param_slots.items():
            setattr(layer, attribute, self.params[name])

    def _set_buffers(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            layer, attribute = self._buffer_slots[name]
            setattr(layer, attribute, value)

    def _dropouts(self) -> list[Dropout]:
        return [layer for layer in self.layers.values() if isinstance(layer, Dropout)]

    # -- the book's methods ----------------------------------------------------------------------------------

    @_on_own_device
    def predict(self, x: Any, train_flg: bool = False) -> Any:
        """Scores (logits) for ``x``; ``train_flg`` selects the layers' training behaviour (dropout masks, batch
        statistics). Host input is moved onto the network's device, and floating input of another precision is
        computed in the network's."""
        x = self._input(x)
        self._check_features(x)
        self._bind()
        for layer, takes_flag in self._forwards:
            x = layer.forward(x, train_flg) if takes_flag else layer.forward(x)
        return x

    def _input(self, x: Any) -> Any:
        """``x`` on the weights' device, in their dtype if it is floating: the fast paths' kernels take one dtype,
        and libraries disagree on mixed ones (PyTorch refuses a float64 @ float32 product, NumPy widens it)."""
        weights = next(iter(self.params.values()))
        x = on_device_of(weights, x)
        if same_device(x, weights) and x.dtype != weights.dtype:  # dtypes of two libraries are not compared
            xp = namespace(x)
            if xp.isdtype(x.dtype, "real floating"):
                x = xp.astype(x, weights.dtype)
        return x

    def _check_features(self, x: Any) -> None:
        """A clear error for input that does not fit the first layer (networks that know their input override)."""

    @_on_own_device
    def loss(self, x: Any, t: Any, train_flg: bool = False) -> Any:
        """Cross-entropy of softmax(predict(x, train_flg)) against ``t`` (labels or one-hot), plus the weight decay.

        Labels are checked as :class:`anynet.layers.SoftmaxWithLoss` checks them: float labels and, on a host
        device, labels outside 0..classes-1 raise; on a GPU such labels make the loss NaN (checking them there would
        wait for the GPU at every step). An empty batch raises ValueError.
        """
        _check_not_empty("the loss", x)
        t = on_device_of(next(iter(self.params.values())), t)
        loss = self.last_layer.forward(self.predict(x, train_flg), t)
        if self.weight_decay_lambda:
            xp = namespace(loss)
            decay = sum(xp.sum(self.params[name] ** 2) for name in self._decayed())
            loss = loss + 0.5 * self.weight_decay_lambda * decay
        return loss

    def _decayed(self) -> list[str]:
        return [name for name, (_, attribute) in self._param_slots.items() if attribute == "W"]

    @_on_own_device
    def accuracy(self, x: Any, t: Any, batch_size: int = 10000) -> float:
        """The fraction of samples whose highest score (at test time: ``train_flg=False``) is the label (``t``:
        labels or one-hot), as a float.

        Host input moves onto the device ``batch_size`` rows at a time, so a dataset that does not fit there can
        still be scored. Labels outside 0..classes-1 raise ValueError on every device (their range is read with the
        count of correct answers: no extra wait), float labels TypeError, an empty batch ValueError.
        """
        _check_not_empty("the accuracy", x)
        weights = next(iter(self.params.values()))
        t = on_device_of(weights, t)
        xp = namespace(t)
        n = x.shape[0]
        classes = getattr(self, "output_size", None)
        if t.shape[0] != n or t.ndim not in (1, 2):
            raise ValueError(f"labels t of shape {tuple(t.shape)} do not fit x of shape {tuple(x.shape)}: expected "
                             f"integer labels of shape ({n},) or one-hot targets of shape ({n}, {classes or 'C'})")
        if t.ndim == 1 and not xp.isdtype(t.dtype, "integral"):
            raise label_dtype_error(classes or 0, t.dtype)
        labels = xp.argmax(t, axis=1) if t.ndim != 1 else t
        # read with the count: the range of integer labels, which a comparison would otherwise quietly miss
        ends = [xp.astype(xp.min(t), xp.int64), xp.astype(xp.max(t), xp.int64)] if t.ndim == 1 else []
        self._check_features(x)
        spec = self._kernel_spec()
        fast = label_predictor(spec) if spec is not None else None
        outputs = spec.sizes[-1] if spec is not None else None
        if fast is not None and same_device(x, weights) and x.dtype == weights.dtype:
            # already where the weights are: the fast path goes through it in chunks of its own, and the labels
            # are compared once instead of once per chunk
            correct = xp.sum(xp.astype(fast(x, batch_size) == labels, xp.int64))
        else:
            counts = []
            for start, stop in chunk_bounds(n, batch_size):
                chunk = on_device_of(weights, x[start:stop, ...])
                if fast is not None:
                    guess = fast(chunk, batch_size)
                else:
                    scores = self.predict(chunk, False)
                    outputs = scores.shape[-1]
                    guess = xp.argmax(scores, axis=1)
                counts.append(xp.sum(xp.astype(guess == labels[start:stop], xp.int64)))
            correct = sum(counts[1:], counts[0])
        read = to_numpy(xp.stack([correct, *ends])).tolist()
        classes = classes or outputs
        if ends and classes is not None and (read[1] < 0 or read[2] >= classes):
            raise label_range_error(classes, read[1], read[2])
        return read[0] / n

    @_on_own_device
    def gradient(self, x: Any, t: Any) -> dict[str, Any]:
        """Gradients of the loss at train time by backpropagation, as a dict like ``params``. The loss is kept in
        ``last_loss`` (on the device: reading it is left to the caller)."""
        self.last_loss = self.loss(x, t, train_flg=True)
        dout = self.last_layer.backward(1)
        for layer in reversed(self._order):
            dout = layer.backward(dout)
        grads = {}
        for name, (layer, attribute) in self._param_slots.items():
            grad = getattr(layer, f"d{attribute}")
            if attribute == "W" and self.weight_decay_lambda:
                grad = grad + self.weight_decay_lambda * self.params[name]
            grads[name] = grad
        return grads

    @_on_own_device
    def numerical_gradient(self, x: Any, t: Any, *, dtype: Any = None, h: float | None = None) -> dict[str, Any]:
        """Gradients of the loss at train time by central differences (slow: two forward passes per parameter).

        The differences are taken in ``dtype``: by default float64 on a device that has it (the book's precision,
        whatever the parameters' dtype), else the parameters' own. ``h`` is the step, by default the book's 1e-4
        in float64 and a larger one in float32 (:func:`anynet.gradient.default_step`). So the book's gradient check
        of float32 weights prints differences of the book's size (about 1e-9..1e-7, not the 3e-4..7e-4 of float32
        with h = 1e-4; ``dtype="float32", h=1e-4`` asks for those). The gradients come back in the parameters'
        dtype, on their device.

        Dropout draws one mask for all of them, and its generators are put back afterwards, as are the running
        statistics the forward passes update: the next ``gradient`` draws that same mask, so the book's gradient
        check (``numerical_gradient`` then ``gradient``) compares like with like, with dropout too.
        """
        weights = next(iter(self.params.values()))
        where = device_of(weights)
        x = on_device_of(weights, x)
        t = on_device_of(weights, t)
        if dtype is None:
            dtype = "float64" if where.supports_float64 else weights.dtype
        kind = where.dtype(dtype)
        xp = where.xp
        own = self.params
        buffers, generators = self.buffers, self.random_state()

        def loss_of(_):
            return self.loss(x, t, train_flg=True)

        try:
            # computed on copies in ``kind`` (the layers read ``params``; ``predict`` casts x to their dtype)
            self.params = {name: xp.astype(value, kind) for name, value in own.items()}
            self._set_buffers({name: xp.astype(value, kind) for name, value in buffers.items() if value is not None})
            with self.frozen_dropout():
                return {name: xp.astype(_numerical_gradient(loss_of, value, h), own[name].dtype)
                        for name, value in self.params.items()}
        finally:
            self.params = own
            self._bind()
            self._set_buffers(buffers)
            self.set_random_state(generators)

    @contextlib.contextmanager
    def frozen_dropout(self) -> Iterator[None]:
        """Within, each Dropout layer draws one mask at its first training forward pass and reuses it (for gradient
        checks); nested uses share the outer one's masks."""
        changed = [layer for layer in self._dropouts() if not layer.frozen]
        for layer in changed:
            layer.frozen, layer._keys = True, None
        try:
            yield
        finally:
            for layer in changed:
                layer.frozen = False

    # -- devices and files -----------------------------------------------------------------------------------

    def to(self, device: str | Device, dtype: Any = None) -> LayerNet:
        """Move every parameter and running statistic onto ``device`` (optionally casting to ``dtype``); returns the
        network."""
        where = make_device(device)
        with where.active():
            self.params = {name: where.asarray(value, dtype=dtype) for name, value in self.params.items()}
            self._set_buffers({name: where.asarray(value, dtype=dtype) for name, value in self.buffers.items()
                               if value is not None})
        self._bind()
        return self

    def state_arrays(self) -> dict[str, Any]:
        """Parameters and running statistics by name: what ``save_params`` writes and ``load_params`` reads."""
        return {**self.params, **{name: value for name, value in self.buffers.items() if value is not None}}

    @_on_own_device
    def load_params(self, params: Mapping[str, Any] | str | os.PathLike = "params.pkl") -> LayerNet:
        """Replace the parameters (and running statistics) by ``params``: a dict of the same names and shapes, or a
        file name (the book's argument) read with :func:`anynet.io.load_params`, pickles safely. Moved onto this
        network's device, in its dtype."""
        if not isinstance(params, Mapping):
            # read onto the host: the cast below puts them on the device in this network's dtype (the book's
            # pickles are float64, which a device may not have)
            params = read_params_file(params)
        where = self.device
        current = self.state_arrays()
        expected = {name: tuple(value.shape) for name, value in current.items()}
        dtypes = {name: value.dtype for name, value in current.items()}
        # running statistics a layer makes at its first forward pass (a BatchNormalization built without them, as
        # the book builds it) are taken as saved, in the parameters' dtype
        for name in self._buffer_slots:
            if name not in current and name in params:
                expected[name], dtypes[name] = tuple(params[name].shape), next(iter(self.params.values())).dtype
        given = {name: tuple(value.shape) for name, value in params.items()}
        if given != expected:
            missing = [name for name in expected if name not in given]
            hint = (f" (no {', '.join(missing)}: the running statistics are saved with the parameters by "
                    "save_params)" if missing and all(name in self._buffer_slots for name in missing) else "")
            raise ValueError(f"parameters do not fit this network: expected {expected}, got {given}{hint}")
        # copies: training updates the parameters in place and must not write into the caller's arrays
        loaded = {name: where.xp.asarray(where.asarray(params[name], dtype=dtypes[name]), copy=True)
                  for name in expected}
        self.params = {name: loaded[name] for name in self.params}
        self._set_buffers({name: loaded[name] for name in self._buffer_slots if name in loaded})
        self._bind()
        return self

    def save_params(self, file_name: str | os.PathLike = "params.pkl") -> None:
        """Write the parameters and running statistics to ``file_name`` with :func:`anynet.io.save_params` (an .npz
        with this network's architecture, whatever the name's suffix; ``load_params`` reads it back)."""
        write_params_file(file_name, self)

    # -- fast paths ------------------------------------------------------------------------------------------

    def _kernel_spec(self) -> AffineStackSpec | None:
        """This network as anynet._kernels sees an Affine - activation - ... - Affine stack with one activation
        (relu or sigmoid) and the book's names W1, b1, ...; None for any other stack (the generic path)."""
        layers = list(self.layers.values())
        if (len(layers) % 2 == 0 or type(self.last_layer) is not SoftmaxWithLoss
                or getattr(self.last_layer, "book_loss", False)):  # the fused paths compute the exact loss
            return None
        if any(type(layer) is not Affine for layer in layers[::2]):
            return None
        kinds = {_ACTIVATION_NAMES.get(type(layer)) for layer in layers[1::2]}
        activation = next(iter(kinds)) if len(kinds) == 1 else "relu" if not kinds else None
        if activation is None or activation not in _FUSED_ACTIVATIONS:
            return None
        sizes = [self.params["W1"].shape[0]] + [self.params[f"W{i}"].shape[1] for i in range(1, len(layers) // 2 + 2)]
        return AffineStackSpec(tuple(sizes), activation, lambda: self.weight_decay_lambda,
                               params=lambda: self.params, rebind=self._rebind)

    def _rebind(self, views: dict[str, Any]) -> None:
        """Take ``views`` (same names, same values, new arrays) as the parameters; the layers follow."""
        self.params.update(views)
        self._bind()

    def fused_step(self, optimizer: Any) -> Callable[..., Any] | None:
        """A callable ``step(x, t, indices=None) -> loss`` doing one training step (gradient and ``optimizer``'s
        update) on the samples ``indices`` of (x, t), all of them if None, through a fast path of anynet._kernels;
        the loss (a 0-D array on the device) is also kept in ``last_loss``. None where no fast path applies (the
        generic ``gradient`` + ``optimizer.update`` then does the same, to rounding)."""
        spec = self._kernel_spec()
        step = _kernel_step(spec, optimizer) if spec is not None else None
        if step is None:
            return None

        def fused(x: Any, t: Any, indices: Any = None) -> Any:
            self.last_loss = loss = step(x, t, indices)
            return loss

        return fused

    # -- dropout's generators --------------------------------------------------------------------------------

    def random_state(self) -> list[dict[str, Any]]:
        """The state of each Dropout layer's host generator (JSON-serialisable), as a checkpoint records it."""
        return [dict(generator.bit_generator.state) for generator in layer_generators(self)]

    def set_random_state(self, states: list[dict]) -> None:
        """Restore what :meth:`random_state` returned, so that a resumed run draws the masks it would have."""
        generators = layer_generators(self)
        if len(states) != len(generators):
            raise ValueError(f"{len(states)} dropout generator states for {len(generators)} Dropout layers")
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state


def _check_not_empty(what: str, x: Any) -> None:
    if x.shape[0] == 0:
        raise ValueError(f"cannot compute {what} of an empty batch (x of shape {tuple(x.shape)}): pass at least one "
                         "sample")


def features_of(x: Any) -> int:
    """Features per sample of a batch (N, ...) or of one flat sample."""
    return math.prod(x.shape[1:]) if x.ndim > 1 else x.shape[0]
