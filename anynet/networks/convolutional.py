"""The book's convolutional networks: SimpleConvNet (chapter 7) and DeepConvNet (chapter 8).

Each is a :class:`LayerNet` with the book's layers, parameter names (W1, b1, ... numbered in layer order) and
defaults, so the book's own trained pickles (``params.pkl``, ``deep_convnet_params.pkl``) load into them. Weights
are drawn on the host from ``seed`` (the same on every device); images are (N, C, H, W), as
``load_mnist(flatten=False)`` gives them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..backend import Device, host_generator
from ..backend import device as make_device
from ..layers import Affine, Convolution, Dropout, Pooling, Relu
from ..util import conv_output_size, is_whole
from .layered import LayerNet
from .multi_layer import _init_scale

__all__ = ["SimpleConvNet", "DeepConvNet"]

_CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")


def _conv_param(conv_param: Mapping[str, int], name: str) -> dict[str, int]:
    missing = [key for key in _CONV_KEYS if key not in conv_param]
    unknown = [key for key in conv_param if key not in _CONV_KEYS]
    if missing or unknown:
        raise ValueError(f"{name} needs the keys {', '.join(_CONV_KEYS)} (the book's conv_param), "
                         f"{'missing ' + ', '.join(missing) if missing else 'unknown ' + ', '.join(unknown)}")
    values = {key: conv_param[key] for key in _CONV_KEYS}
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values.values()) or values["filter_num"] < 1:
        raise ValueError(f"{name} takes positive integers (pad >= 0), got {dict(conv_param)}")
    return values


def _input_dim(input_dim: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(input_dim) if isinstance(input_dim, Sequence) else ()
    if len(dims) != 3 or not all(is_whole(n, 1) for n in dims):
        raise ValueError(f"input_dim must be (channels, height, width) of positive integers, got {input_dim!r}")
    return dims


def _layer_sizes(hidden_size: int, output_size: int) -> tuple[int, int]:
    for name, value in (("hidden_size", hidden_size), ("output_size", output_size)):
        if not is_whole(value, 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return hidden_size, output_size


class _ConvNet(LayerNet):
    """What the two convolutional networks share: their input check, batch size and description."""

    input_dim: tuple[int, ...]
    output_size: int

    def _check_features(self, x: Any) -> None:
        if tuple(x.shape[1:]) != self.input_dim:
            flat = " (flat rows: load the images with flatten=False, or reshape them)" if x.ndim == 2 else ""
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit {type(self).__name__}: it takes images "
                             f"of shape (N, {', '.join(map(str, self.input_dim))}){flat}")

    @property
    def input_size(self) -> int:
        return math.prod(self.input_dim)

    def accuracy(self, x: Any, t: Any, batch_size: int = 100) -> float:
        """As :meth:`LayerNet.accuracy`, 100 images at a time by default (the book's): a convolution's im2col
        matrix of 10000 images would take gigabytes."""
        return super().accuracy(x, t, batch_size)


class SimpleConvNet(_ConvNet):
    """The book's chapter-7 network: Conv1 - Relu1 - Pool1 - Affine1 - Relu2 - Affine2 - SoftmaxWithLoss.

    ``conv_param`` holds ``filter_num``, ``filter_size``, ``pad`` and ``stride``; pooling is 2x2 with stride 2.
    Weights are ``weight_init_std`` times standard normal draws (W1 the filters, W2 and W3 the Affine layers),
    biases zero.
    """

    def __init__(self, input_dim: Sequence[int] = (1, 28, 28), conv_param: Mapping[str, int] | None = None,
                 hidden_size: int = 100, output_size: int = 10, weight_init_std: float = 0.01, *,
                 device: str | Device = "cpu", dtype: Any = "float32", seed: int | None = None):
        self.input_dim = _input_dim(input_dim)
        self.conv_param = _conv_param(conv_param if conv_param is not None else
                                      {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}, "conv_param")
        self.hidden_size, self.output_size = _layer_sizes(hidden_size, output_size)
        self.weight_init_std = float(weight_init_std)
        channels, height, width = self.input_dim
        filter_num, filter_size = self.conv_param["filter_num"], self.conv_param["filter_size"]
        stride, pad = self.conv_param["stride"], self.conv_param["pad"]
        conv_h = conv_output_size(height, filter_size, stride, pad)
        conv_w = conv_output_size(width, filter_size, stride, pad)
        pooled = filter_num * conv_output_size(conv_h, 2, 2) * conv_output_size(conv_w, 2, 2)
        where = make_device(device)
        rng = host_generator(seed)
        shapes = [(filter_num, channels, filter_size, filter_size), (pooled, hidden_size),
                  (hidden_size, output_size)]
        with where.active():  # where CuPy's zeros go: its current device, whatever device= says
            W = [where.asarray(self.weight_init_std * rng.standard_normal(shape), dtype=dtype) for shape in shapes]
            b = [where.xp.zeros((shape[-1] if i else filter_num,), dtype=where.dtype(dtype), device=where.native)
                 for i, shape in enumerate(shapes)]
        super().__init__([
            ("Conv1", Convolution(W[0], b[0], stride, pad)),
            ("Relu1", Relu()),
            ("Pool1", Pooling(pool_h=2, pool_w=2, stride=2)),
            ("Affine1", Affine(W[1], b[1])),
            ("Relu2", Relu()),
            ("Affine2", Affine(W[2], b[2])),
        ])

    def architecture(self) -> dict:
        """What it takes to rebuild this network (saved beside the weights)."""
        return {"model": "cnn", "input_dim": list(self.input_dim), "conv_param": dict(self.conv_param),
                "hidden_size": self.hidden_size, "output_size": self.output_size}


# The book's DeepConvNet: six 3x3 convolutions (the fourth padded by 2), pooling after every second one.
DEEP_CONV_PARAMS = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


class DeepConvNet(_ConvNet):
    """The book's chapter-8 network: (Conv - Relu - Conv - Relu - Pool) x 3 - Affine - Relu - Dropout - Affine -
    Dropout - SoftmaxWithLoss, with He initialisation; parameters W1..W6 (filters), W7, W8 (Affine) and b1..b8.

    ``conv_param_1`` .. ``conv_param_6`` default to the book's; dropout (ratio 0.5, as the book's) masks come from
    ``seed`` like the weights, so one seed gives one loss curve on every device.
    """

    def __init__(self, input_dim: Sequence[int] = (1, 28, 28),
                 conv_param_1: Mapping[str, int] = DEEP_CONV_PARAMS[0],
                 conv_param_2: Mapping[str, int] = DEEP_CONV_PARAMS[1],
                 conv_param_3: Mapping[str, int] = DEEP_CONV_PARAMS[2],
                 conv_param_4: Mapping[str, int] = DEEP_CONV_PARAMS[3],
                 conv_param_5: Mapping[str, int] = DEEP_CONV_PARAMS[4],
                 conv_param_6: Mapping[str, int] = DEEP_CONV_PARAMS[5],
                 hidden_size: int = 50, output_size: int = 10, *, device: str | Device = "cpu",
                 dtype: Any = "float32", seed: int | None = None):
        self.input_dim = _input_dim(input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        self.conv_params = [_conv_param(param, f"conv_param_{i}") for i, param in enumerate(given, 1)]
        self.hidden_size, self.output_size = _layer_sizes(hidden_size, output_size)
        channels, height, width = self.input_dim
        shapes: list[tuple[int, ...]] = []
        for index, param in enumerate(self.conv_params):
            size = param["filter_size"]
            shapes.append((param["filter_num"], channels, size, size))
            channels = param["filter_num"]
            height = conv_output_size(height, size, param["stride"], param["pad"])
            width = conv_output_size(width, size, param["stride"], param["pad"])
            if index % 2:
                height, width = conv_output_size(height, 2, 2), conv_output_size(width, 2, 2)
        shapes += [(channels * height * width, hidden_size), (hidden_size, output_size)]
        where = make_device(device)
        rng = host_generator(seed)
        with where.active():  # where CuPy's zeros go: its current device, whatever device= says
            # He: sqrt(2 / inputs of a unit), the book's pre_node_nums
            W = [where.asarray(_init_scale("he", math.prod(shape[1:]) if len(shape) == 4 else shape[0])
                               * rng.standard_normal(shape), dtype=dtype) for shape in shapes]
            b = [where.xp.zeros((shape[0] if len(shape) == 4 else shape[1],), dtype=where.dtype(dtype),
                                device=where.native) for shape in shapes]
        dropout_seeds = rng.integers(0, 2**63, size=2).tolist()
        layers: list[tuple[str, Any]] = []
        for index, param in enumerate(self.conv_params):
            layers.append((f"Conv{index + 1}", Convolution(W[index], b[index], param["stride"], param["pad"])))
            layers.append((f"Relu{index + 1}", Relu()))
            if index % 2:
                layers.append((f"Pool{index // 2 + 1}", Pooling(pool_h=2, pool_w=2, stride=2)))
        layers += [("Affine1", Affine(W[6], b[6])), ("Relu7", Relu()),
                   ("Dropout1", Dropout(0.5, seed=dropout_seeds[0])),
                   ("Affine2", Affine(W[7], b[7])), ("Dropout2", Dropout(0.5, seed=dropout_seeds[1]))]
        super().__init__(layers)

    def architecture(self) -> dict:
        """What it takes to rebuild this network (saved beside the weights)."""
        return {"model": "deep-cnn", "input_dim": list(self.input_dim),
                **{f"conv_param_{i}": dict(param) for i, param in enumerate(self.conv_params, 1)},
                "hidden_size": self.hidden_size, "output_size": self.output_size}
