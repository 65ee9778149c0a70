"""Saving and loading weights and training checkpoints: .npz archives, and the book's pickles read safely.

``save_params`` writes host copies of arrays from any device into an .npz, atomically; given a network, it also
records the network's architecture. ``load_params`` reads an .npz (never unpickling) or a pickle of the book's kind
(a dict of NumPy arrays, any protocol, NumPy 1.x or 2.x) through an unpickler that can only rebuild arrays: a
pickled object or function is refused before it can run. ``read_network_file`` reads a network's weights file (a
fully connected or a convolutional network's) and checks it (names, shapes, finite values, metadata) before anything
is built from it.
``save_checkpoint`` / ``load_checkpoint``: a network's parameters, its optimizer's state and a training loop's
own state (epoch, generator, history) in one such .npz.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy

from ._atomic import atomic_write
from .backend import Device, HostGenerator, to_numpy
from .backend import device as make_device
from .util import conv_output_size, is_whole

__all__ = ["save_params", "load_params", "read_metadata", "read_network_file", "NetworkFile", "save_checkpoint",
           "load_checkpoint", "architecture_of", "UnsafePickleError"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle referenced something other than NumPy arrays and plain containers."""


# The .npz entry holding a file's JSON metadata (architecture, training state); never a parameter.
METADATA_KEY = "__anynet__"


def save_params(path: str | os.PathLike, params: Any, metadata: dict | None = None) -> Path:
    """Save a network's parameters, or a dict of arrays (from any device), to ``path`` as an uncompressed .npz of
    host copies.

    ``params``: a network (anything with a ``params`` dict), or a dict of name -> array. A network's
    ``architecture()`` (anynet's networks have one) is recorded in the metadata as "architecture", which is what
    ``anynet evaluate`` rebuilds the network from. ``metadata``, a JSON-serialisable dict, is stored beside the
    arrays (read it back with :func:`read_metadata`); ``anynet train --save`` also records "dataset" and
    "preprocessing" there, e.g. ``metadata={"dataset": "fashion-mnist"}``.
    The write is atomic: the file is complete or, if anything fails, the previous file is left as it was.
    """
    if not isinstance(params, Mapping) and isinstance(getattr(params, "params", None), Mapping):
        params, metadata = network_arrays(params), _with_architecture(params, metadata)
    if not isinstance(params, Mapping) or not params:
        raise TypeError(
            f"save_params takes a network or a non-empty dict of name -> array, got {type(params).__name__}"
        )
    host = {}
    for name, value in params.items():
        if not isinstance(name, str) or not name or name == METADATA_KEY:
            raise TypeError(f"parameter names must be non-empty strings other than {METADATA_KEY!r}, got {name!r}")
        try:
            host[name] = to_numpy(value)
        except Exception as error:
            raise TypeError(f"parameter {name!r} is not an array ({type(value).__name__}): {error}") from None
        if host[name].dtype == object:
            raise TypeError(f"parameter {name!r} is not a numeric array ({type(value).__name__})")
    if metadata is not None:
        host[METADATA_KEY] = numpy.asarray(json.dumps(metadata))  # a unicode scalar: no pickle needed to read it
    path = Path(path)
    with atomic_write(path) as sink:
        numpy.savez(sink, **host)  # type: ignore[arg-type]  # the stub reads **kwds as its allow_pickle
    return path


def network_arrays(network: Any) -> Mapping[str, Any]:
    """What is saved of ``network``: its parameters and running statistics (``state_arrays()``, anynet's layered
    networks), else its ``params`` and the running statistics its ``layers`` hold (:func:`running_statistics`)."""
    state = getattr(network, "state_arrays", None)
    if state is not None:
        return state()
    statistics = {name: getattr(layer, attribute) for name, (layer, attribute) in running_statistics(network).items()}
    return {**network.params, **{name: value for name, value in statistics.items() if value is not None}}


# The attributes a layer written the book's way keeps its running statistics in (BatchNormalization's).
_BOOK_BUFFER_NAMES = ("running_mean", "running_var")


def running_statistics(network: Any) -> dict[str, tuple[Any, str]]:
    """Where a network written the book's way (its own ``layers``, no ``state_arrays``) keeps its layers' running
    statistics: name -> (layer, attribute), named as LayerNet names them (``running_mean<k>`` for the k-th layer
    holding some), including those still None (the book's BatchNormalization makes them at its first forward pass,
    and a resumed run sets them before that)."""
    slots: dict[str, tuple[Any, str]] = {}
    holders = 0
    for layer in getattr(network, "layers", {}).values():
        held = [name for name in getattr(layer, "buffer_names", _BOOK_BUFFER_NAMES) if hasattr(layer, name)]
        holders += bool(held)
        slots.update({f"{name}{holders}": (layer, name) for name in held})
    return slots


def layer_generators(network: Any) -> list[Any]:
    """The host generators of a network's layers (anynet's Dropout), in layer order: a checkpoint keeps their state
    so that a resumed run draws the masks it would have."""
    return [layer.generator for layer in getattr(network, "layers", {}).values()
            if isinstance(getattr(layer, "generator", None), HostGenerator)]


def _with_architecture(network: Any, metadata: dict | None) -> dict | None:
    """``metadata`` with ``network``'s architecture added (networks without ``architecture()``: unchanged)."""
    describe = getattr(network, "architecture", None)
    if describe is None:
        return metadata
    architecture = describe()
    given = (metadata or {}).get("architecture", architecture)
    if given != architecture:
        raise ValueError(f"metadata 'architecture' {given} contradicts the network's own {architecture}; "
                         "leave it out, save_params records the network's")
    return {"architecture": architecture, **(metadata or {})}


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict saved with ``save_params(..., metadata=...)`` in .npz ``path`` ({} if there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    raw = path.read_bytes()
    if not _is_npz(raw):
        return {}
    with numpy.load(io.BytesIO(raw), allow_pickle=False) as archive:
        if METADATA_KEY not in archive.files:
            return {}
        return json.loads(str(archive[METADATA_KEY]))


def load_params(path: str | os.PathLike, device: str | Device = "cpu", dtype: Any = None) -> dict[str, Any]:
    """The dict of arrays saved in ``path``, on ``device`` (cast to ``dtype`` if given).

    ``path`` is an .npz (read with allow_pickle=False) or a pickle holding a dict of NumPy arrays, such as the
    book's ``sample_weight.pkl`` (protocol 3, written by NumPy 1.x). Pickles that reference anything beyond
    arrays and plain containers raise UnsafePickleError without running it.
    """
    where = make_device(device)
    host, _ = _read_file(path)
    return {name: where.asarray(value, dtype=dtype) for name, value in host.items()}


def _read_file(path: str | os.PathLike) -> tuple[dict[str, numpy.ndarray], dict]:
    """The host arrays and the metadata ({} for a pickle or an .npz without) of weights file ``path``, read once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    raw = path.read_bytes()
    return _read_npz(path, raw) if _is_npz(raw) else (_read_pickle(path, raw), {})


def _is_npz(raw: bytes) -> bool:
    """Whether a file's bytes are a zip archive (an .npz): a file entry first, or the end record of an empty one."""
    return raw[:4] in (b"PK\x03\x04", b"PK\x05\x06")


# -- a network's weights file, checked ----------------------------------------------------------------------------

# What "preprocessing" may record: the load_mnist options the training data was loaded with.
PREPROCESSING_KEYS = ("normalize", "flatten", "one_hot_label")


# The architecture "model" of MultiLayerNetExtend, whose file may hold batch norm's entries beside W and b; a file
# recording no model holds a MultiLayerNet's (or TwoLayerNet's) W1, b1, ..., Wn, bn.
EXTEND_MODEL = "mlp-extend"
# What an mlp-extend architecture records beside "sizes" and "activation" (MultiLayerNetExtend's own names).
EXTEND_KEYS = ("use_batchnorm", "use_dropout", "dropout_ration")
# A batch-norm hidden layer's entries, numbered like its Affine layer: parameters, then running statistics.
BATCHNORM_PARAMS, RUNNING_STATISTICS = ("gamma", "beta"), ("running_mean", "running_var")

# The convolutional networks' architecture "model"s and the classes they rebuild; their W1, ... begin with 4-D filters.
CONV_MODELS = {"cnn": "SimpleConvNet", "deep-cnn": "DeepConvNet"}
# What each one's architecture() records beside "model", and the keys of a convolution's settings (the book's
# conv_param).
CONV_KEYS = {"cnn": ("input_dim", "conv_param", "hidden_size", "output_size"),
             "deep-cnn": ("input_dim", *(f"conv_param_{i}" for i in range(1, 7)), "hidden_size", "output_size")}
CONV_PARAM_KEYS = ("filter_num", "filter_size", "pad", "stride")
# The convolutions after which a 2x2 max pooling of stride 2 halves the images (1-based): SimpleConvNet pools after
# its one convolution, DeepConvNet after every second one.
_POOLED_AFTER = {"cnn": (1,), "deep-cnn": (2, 4, 6)}
# What a file without an architecture (the book's params.pkl, deep_convnet_params.pkl) does not show in its shapes:
# each convolution's (stride, pad) as the book's chapters 7 and 8 set them, for its 28x28 MNIST images.
BOOK_CONV_WINDOWS = {"cnn": ((1, 0),), "deep-cnn": ((1, 1), (1, 1), (1, 1), (1, 2), (1, 1), (1, 1))}
BOOK_IMAGE_SIZE = 28
# The book's (filter_num, filter_size) of each convolution and its hidden and output sizes, taken where a damaged
# file's shapes do not give them (its check then names the entry).
_BOOK_FILTERS = {"cnn": ((30, 5),), "deep-cnn": ((16, 3), (16, 3), (32, 3), (32, 3), (64, 3), (64, 3))}
_BOOK_SIZES = {"cnn": (100, 10), "deep-cnn": (50, 10)}
_WEIGHT = re.compile(r"W([1-9][0-9]*)")


@dataclass(frozen=True)
class NetworkFile:
    """A network's weights file (anynet's .npz or the book's pickle), checked for use."""

    path: Path
    # W1, b1, ..., Wn, bn (with batch norm also gamma<k>, beta<k>, running_mean<k>, running_var<k> for each hidden
    # layer k): host arrays of finite numbers, shapes that chain; a convolutional network's W1.. begin with 4-D filters
    params: dict[str, numpy.ndarray]
    # the sizes of the fully connected layers the weights' shapes give, e.g. [784, 100, 10] (for a convolutional
    # network those after its last pooling, e.g. [4320, 100, 10])
    sizes: list[int]
    metadata: dict  # as saved: "architecture", "dataset", "preprocessing" checked where present ({} for a pickle)
    pickle: bool  # the book's format, which records nothing beside the arrays
    # for a convolutional network's file that records no architecture (the book's pickles): the architecture its
    # shapes were recognised as, with the book's strides and pads
    recognised: dict | None = None

    @property
    def architecture(self) -> dict | None:
        """The recorded architecture (checked), else the one recognised from a convolutional network's shapes, or
        None."""
        return self.metadata.get("architecture") or self.recognised

    @property
    def model(self) -> str:
        """What network the file holds: "cnn" (SimpleConvNet), "deep-cnn" (DeepConvNet), "mlp-extend"
        (MultiLayerNetExtend) or "mlp" (a fully connected MultiLayerNet or TwoLayerNet)."""
        architecture = self.architecture
        return (architecture or {}).get("model") or "mlp"


def read_network_file(path: str | os.PathLike, model: str | None = None) -> NetworkFile:
    """Read and check a network's weights from ``path``: a fully connected network's Affine layers W1, b1, ..., Wn,
    bn, or the book's convolutional SimpleConvNet or DeepConvNet.

    Everything is checked before anything is built from it: the names, 2-D weights and 1-D biases whose shapes
    chain (W2 has as many rows as W1 has columns), finite numbers, and the metadata that anynet records
    ("architecture" with "sizes" and "activation", "dataset", "preprocessing"). A file whose architecture records
    model "mlp-extend" (a MultiLayerNetExtend) with "use_batchnorm" must also hold, for each hidden layer k,
    gamma<k> and beta<k> and the running statistics running_mean<k> and running_var<k> (variances >= 0), one entry
    per output of W<k>. A file whose architecture records model "cnn" or "deep-cnn" must hold exactly the entries,
    of exactly the shapes, of the network that architecture builds (4-D filters, then 2-D Affine weights). A file
    that records no architecture and holds 4-D filters (the book's ``params.pkl``, ``deep_convnet_params.pkl``) is
    recognised as the book's SimpleConvNet (one convolution) or DeepConvNet (six) by its shapes, with the book's
    strides and pads; ``model`` ("mlp", "cnn" or "deep-cnn") says which network a file without an architecture holds
    instead of recognising it. A problem raises ValueError naming the file, the entry and what was expected.
    """
    if model is not None and model not in ("mlp", *CONV_MODELS):
        raise ValueError(f"unknown model {model!r}: expected 'mlp', {', '.join(map(repr, CONV_MODELS))} or None")
    path = Path(path)
    host, metadata = _read_file(path)
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: its metadata is a {type(metadata).__name__}, expected a JSON object")
    if metadata.get("kind") == CHECKPOINT_KIND:
        raise ValueError(f"{path}: a training checkpoint, not a weights file; continue the run with "
                         f"anynet train --resume {path}, whose --save FILE.npz writes the weights")
    architecture = _check_architecture(path, metadata.get("architecture"))
    recognised = None
    if architecture is None and host:
        recognised = _recognise_conv(path, host, model)
    conv = architecture if architecture is not None and architecture.get("model") in CONV_MODELS else recognised
    if conv is not None:
        how = ("model " + conv["model"] if recognised is None else "named " + conv["model"] if model is not None else
               "recognised by its shapes")
        sizes = _check_conv_layers(path, host, conv, how, recognised=recognised is not None)
    else:
        sizes = _check_layers(path, host, architecture)
    _check_metadata(path, metadata, sizes)
    with open(path, "rb") as source:
        is_pickle = not _is_npz(source.read(4))
    return NetworkFile(path, host, sizes, metadata, pickle=is_pickle, recognised=recognised)


def _batchnorm(architecture: dict | None) -> bool:
    """Whether a (checked) architecture has batch norm layers, hence gamma, beta and running statistics."""
    return architecture is not None and architecture.get("model") == EXTEND_MODEL and architecture["use_batchnorm"]


def _expected_names(depth: int, batchnorm: bool) -> list[str]:
    """The entries of a network of ``depth`` Affine layers, in layer order."""
    names = []
    for i in range(1, depth + 1):
        names += [f"W{i}", f"b{i}"]
        if batchnorm and i < depth:
            names += [f"{kind}{i}" for kind in BATCHNORM_PARAMS + RUNNING_STATISTICS]
    return names


def _check_layers(path: Path, params: dict[str, numpy.ndarray], architecture: dict | None = None) -> list[int]:
    """The layer sizes of Affine weights W1, b1, ..., Wn, bn (with batch norm's entries where ``architecture``
    records them), or ValueError naming the first entry that is wrong."""
    batchnorm = _batchnorm(architecture)
    layout = ("W1, b1, gamma1, beta1, running_mean1, running_var1, ..., Wn, bn" if batchnorm else
              "W1, b1, ..., Wn, bn")
    if not params:
        raise ValueError(f"{path}: holds no arrays; expected a network's weights {layout}")
    depth = max((int(m.group(1)) for m in map(_WEIGHT.fullmatch, params) if m), default=0)
    expected = _expected_names(depth, batchnorm)
    if set(params) != set(expected):
        missing = [name for name in expected if name not in params]
        unexpected = sorted(name for name in params if name not in expected)
        problems = ([f"no {', '.join(missing)}"] if missing else []) + \
                   ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        what = ("the weights of fully connected layers with batch norm (the file's architecture records "
                f"use_batchnorm): {layout}" if batchnorm else f"the weights of fully connected layers: {layout}")
        raise ValueError(f"{path}: {'; '.join(problems)}; expected {what}"
                         + _entries_hint(missing, unexpected, architecture))
    sizes: list[int] = []
    for i in range(1, depth + 1):
        W, b = params[f"W{i}"], params[f"b{i}"]
        if W.ndim != 2 or 0 in W.shape:
            filters = ("; a 4-D W holds a convolution's filters, and this file records a fully connected network: a "
                       "convolutional network's file records \"model\": \"cnn\" or \"deep-cnn\" (save the network "
                       "itself: anynet.save_params(path, network))" if W.ndim == 4 else "")
            raise ValueError(f"{path}: W{i} has shape {W.shape}, expected a 2-D weight matrix (inputs, outputs)"
                             + filters)
        if sizes and W.shape[0] != sizes[-1]:
            raise ValueError(f"{path}: W{i} has shape {W.shape}, expected {sizes[-1]} rows to take W{i - 1}'s "
                             f"{sizes[-1]} outputs")
        if b.shape != (W.shape[1],):
            raise ValueError(f"{path}: b{i} has shape {b.shape}, expected ({W.shape[1]},): one bias per output of "
                             f"W{i}")
        if batchnorm and i < depth:
            for kind in BATCHNORM_PARAMS + RUNNING_STATISTICS:
                value = params[f"{kind}{i}"]
                if value.shape != (W.shape[1],):
                    raise ValueError(f"{path}: {kind}{i} has shape {value.shape}, expected ({W.shape[1]},): one per "
                                     f"output of W{i} (batch norm of hidden layer {i})")
        sizes = sizes or [W.shape[0]]
        sizes.append(W.shape[1])
    _check_values(path, params, expected)
    return sizes


def _check_values(path: Path, params: dict[str, numpy.ndarray], names: list[str]) -> None:
    """ValueError naming the first of ``names`` that holds no numbers, NaN or infinity, or (running variances)
    negative values."""
    for name in names:
        value = params[name]
        if value.dtype.kind not in "fiu":
            raise ValueError(f"{path}: {name} holds {value.dtype}, expected floating-point numbers")
        bad = int(value.size - numpy.count_nonzero(numpy.isfinite(value)))
        if bad:
            raise ValueError(f"{path}: {name} holds {bad} NaN or infinite values (of {value.size}), expected finite "
                             "numbers; the weights are damaged (a diverged training?) and cannot be evaluated")
        if name.startswith("running_var"):
            negative = int(numpy.count_nonzero(value < 0))
            if negative:
                raise ValueError(f"{path}: {name} holds {negative} negative values (of {value.size}), expected "
                                 "variances >= 0; the running statistics are damaged and cannot be evaluated")


def _entries_hint(missing: list[str], unexpected: list[str], architecture: dict | None) -> str:
    """Why entries are missing or unexpected, where batch norm explains it."""
    statistics = re.compile(rf"({'|'.join(RUNNING_STATISTICS)})[1-9][0-9]*")
    batchnorm_names = re.compile(rf"({'|'.join(BATCHNORM_PARAMS + RUNNING_STATISTICS)})[1-9][0-9]*")
    if missing and all(statistics.fullmatch(name) for name in missing):
        return ("; the running statistics are saved with the parameters by anynet.save_params(path, network) and "
                "anynet train --save (a dict of network.params leaves them out)")
    if unexpected and any(batchnorm_names.fullmatch(name) for name in unexpected) and not _batchnorm(architecture):
        recorded = ("records no architecture" if architecture is None else
                    "records an architecture without batch norm")
        return (f"; batch norm's entries need an architecture with \"model\": \"{EXTEND_MODEL}\" and "
                f"\"use_batchnorm\": true, and the file {recorded}: save the network itself, "
                "anynet.save_params(path, network)")
    return ""


# -- convolutional networks ---------------------------------------------------------------------------------------


def conv_layout(architecture: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, what it is) of each parameter of the convolutional network ``architecture`` describes (as
    SimpleConvNet.architecture() or DeepConvNet.architecture() gives it), in layer order: each convolution's 4-D
    filters (filter_num, channels, filter_size, filter_size) and biases, then the two Affine layers'. ValueError
    where a convolution's or pooling's window does not fit the images it gets."""
    model = architecture["model"]
    channels, height, width = architecture["input_dim"]
    convolutions = ([architecture["conv_param"]] if model == "cnn" else
                    [architecture[f"conv_param_{i}"] for i in range(1, 7)])
    layout: list[tuple[str, tuple[int, ...], str]] = []
    source, pools = "the input images", 0
    for i, param in enumerate(convolutions, 1):
        size, filter_num = param["filter_size"], param["filter_num"]
        layout.append((f"W{i}", (filter_num, channels, size, size),
                       f"Conv{i}'s filters (filter_num, channels, filter_size, filter_size), over the {channels} "
                       f"channels of {source}"))
        layout.append((f"b{i}", (filter_num,), f"one bias per filter of Conv{i}"))
        channels = filter_num
        height = conv_output_size(height, size, param["stride"], param["pad"])
        width = conv_output_size(width, size, param["stride"], param["pad"])
        source = f"Conv{i}"
        if i in _POOLED_AFTER[model]:
            pools += 1
            height, width = conv_output_size(height, 2, 2), conv_output_size(width, 2, 2)
            source = f"Pool{pools}"
    k = len(convolutions)
    hidden, outputs = architecture["hidden_size"], architecture["output_size"]
    layout += [(f"W{k + 1}", (channels * height * width, hidden),
                f"Affine1's weights (inputs, outputs), its inputs the {channels} x {height} x {width} outputs of "
                f"{source}"),
               (f"b{k + 1}", (hidden,), "one bias per output of Affine1"),
               (f"W{k + 2}", (hidden, outputs), "Affine2's weights (inputs, outputs)"),
               (f"b{k + 2}", (outputs,), "one bias per output of Affine2")]
    return layout


def _layout_names(model: str) -> str:
    """The entries of a convolutional network's file, as an error message lists them."""
    if model == "cnn":
        return "W1, b1 (Conv1's filters and biases), W2, b2, W3, b3 (Affine1, Affine2)"
    return "W1, b1, ..., W6, b6 (Conv1..Conv6's filters and biases), W7, b7, W8, b8 (Affine1, Affine2)"


def _recognise_conv(path: Path, params: dict[str, numpy.ndarray], model: str | None) -> dict | None:
    """The architecture of a file that records none: None for a fully connected network (no 4-D weights, or
    ``model`` "mlp"), else the book's SimpleConvNet (one 4-D W, or ``model`` "cnn") or DeepConvNet (six, or
    ``model`` "deep-cnn") with the sizes its shapes give and the book's strides, pads and 28x28 images."""
    weights = sorted((name for name in params if _WEIGHT.fullmatch(name)), key=lambda name: int(name[1:]))
    filters = [name for name in weights if params[name].ndim == 4]
    if model == "mlp" or (model is None and not filters):
        return None
    kind = model or {1: "cnn", 6: "deep-cnn"}.get(len(filters)) or {3: "cnn", 8: "deep-cnn"}.get(len(weights))
    if kind is None:
        raise ValueError(f"{path}: holds convolution filters (4-D {', '.join(filters)}) among {len(weights)} weights "
                         "and records no architecture; anynet recognises the book's SimpleConvNet "
                         f"({_layout_names('cnn')}) and DeepConvNet ({_layout_names('deep-cnn')}). Save the network "
                         "with anynet.save_params(path, network), which records its architecture")

    def shape(name: str, ndim: int) -> tuple[int, ...] | None:
        value = params.get(name)
        return tuple(value.shape) if value is not None and value.ndim == ndim else None

    windows = BOOK_CONV_WINDOWS[kind]
    convolutions = []
    channels = None
    for i, ((stride, pad), book) in enumerate(zip(windows, _BOOK_FILTERS[kind]), 1):
        filters_shape = shape(f"W{i}", 4)
        filter_num, size = (filters_shape[0], filters_shape[2]) if filters_shape else book
        if i == 1 and filters_shape:
            channels = filters_shape[1]
        convolutions.append({"filter_num": filter_num, "filter_size": size, "pad": pad, "stride": stride})
    k = len(windows)
    hidden, outputs = _BOOK_SIZES[kind]
    first, second = shape(f"W{k + 1}", 2), shape(f"W{k + 2}", 2)
    hidden = first[1] if first else second[0] if second else hidden
    outputs = second[1] if second else outputs
    architecture: dict[str, Any] = {"model": kind, "input_dim": [channels or 1, BOOK_IMAGE_SIZE, BOOK_IMAGE_SIZE]}
    if kind == "cnn":
        architecture["conv_param"] = convolutions[0]
    else:
        architecture.update({f"conv_param_{i}": param for i, param in enumerate(convolutions, 1)})
    architecture.update({"hidden_size": hidden, "output_size": outputs})
    try:
        conv_layout(architecture)
    except ValueError as error:
        raise ValueError(f"{path}: records no architecture, and its shapes read as the book's {CONV_MODELS[kind]} "
                         f"on {BOOK_IMAGE_SIZE}x{BOOK_IMAGE_SIZE} images do not fit them: {error}. Save the network "
                         "with anynet.save_params(path, network), which records its architecture") from None
    return architecture


def _check_conv_layers(path: Path, params: dict[str, numpy.ndarray], architecture: dict, how: str,
                       recognised: bool) -> list[int]:
    """The sizes of the Affine layers of the convolutional network ``architecture`` (checked) describes, or
    ValueError naming the first entry of ``params`` that is missing, unexpected, of another shape or damaged.
    ``how``: how the architecture was found, as the message says it ("model cnn", "recognised by its shapes")."""
    model = architecture["model"]
    network = f"{CONV_MODELS[model]}'s ({how})"
    if not params:
        raise ValueError(f"{path}: holds no arrays; expected {network} weights {_layout_names(model)}")
    layout = conv_layout(architecture)
    expected = [name for name, _, _ in layout]
    if set(params) != set(expected):
        missing = [name for name in expected if name not in params]
        unexpected = sorted(name for name in params if name not in expected)
        problems = ([f"no {', '.join(missing)}"] if missing else []) + \
                   ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
        raise ValueError(f"{path}: {'; '.join(problems)}; expected {network} weights {_layout_names(model)}")
    for name, shape, what in layout:
        value = params[name]
        if tuple(value.shape) == shape:
            continue
        if value.ndim == 4 and len(shape) == 2:
            kind = (f"a 2-D weight matrix {shape}: {what}; a 4-D W holds a convolution's filters, and "
                    f"{CONV_MODELS[model]} has them in {'W1' if model == 'cnn' else 'W1..W6'} only")
        elif len(shape) == 4 and value.ndim != 4:
            kind = f"4-D filters {shape}: {what}"
        else:
            kind = f"{shape}: {what}"
        elsewhere = [other for other, other_shape, _ in layout if other_shape == tuple(value.shape) and other != name]
        if elsewhere:
            kind += f"; that is {elsewhere[0]}'s shape: are the entries out of place?"
        if recognised:
            kind += (f" (the file records no architecture: its shapes were read as the book's {CONV_MODELS[model]} on "
                     f"{BOOK_IMAGE_SIZE}x{BOOK_IMAGE_SIZE} images with the book's strides and pads; a file saved by "
                     "anynet.save_params(path, network) records its own)")
        raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, expected {kind}")
    _check_values(path, params, expected)
    return [shape[0] for name, shape, _ in layout[-4::2]] + [layout[-2][1][1]]


ARCHITECTURE_FORM = '{"sizes": [...], "activation": "relu" or "sigmoid"} as anynet train --save writes'
MODELS_REBUILT = ("expected 'mlp-extend' (MultiLayerNetExtend), 'cnn' (SimpleConvNet), 'deep-cnn' (DeepConvNet) or "
                  "no model (MultiLayerNet)")


def _check_architecture(path: Path, architecture: Any) -> dict | None:
    """The metadata's "architecture" if anynet can rebuild a network from it (None if absent), else ValueError
    naming the entry."""
    if architecture is None:
        return None
    expected = f"expected {ARCHITECTURE_FORM}"
    if not isinstance(architecture, dict):
        raise ValueError(f"{path}: metadata 'architecture' is {architecture!r}; {expected}")
    model = architecture.get("model")
    if model is not None and model != EXTEND_MODEL and model not in CONV_MODELS:
        raise ValueError(f"{path}: metadata 'architecture' model {model!r} is not one anynet can rebuild; "
                         f"{MODELS_REBUILT}")
    if model in CONV_MODELS:
        return _check_conv_architecture(path, architecture, model)
    for key in ("sizes", "activation"):
        if key not in architecture:
            raise ValueError(f"{path}: metadata 'architecture' has no {key!r}; {expected}")
    recorded = architecture["sizes"]
    if not isinstance(recorded, list) or not all(isinstance(n, int) for n in recorded):
        raise ValueError(f"{path}: metadata 'architecture' sizes {recorded!r}, expected a list of layer sizes")
    if not isinstance(architecture["activation"], str):
        raise ValueError(f"{path}: metadata 'architecture' activation {architecture['activation']!r}, "
                         "expected a name such as \"relu\"")
    if model is None:
        return architecture
    for key in EXTEND_KEYS:
        if key not in architecture:
            raise ValueError(f"{path}: metadata 'architecture' of model {EXTEND_MODEL} has no {key!r}; expected "
                             f"{', '.join(map(repr, EXTEND_KEYS))} as MultiLayerNetExtend.architecture() gives them")
    for key in ("use_batchnorm", "use_dropout"):
        if not isinstance(architecture[key], bool):
            raise ValueError(f"{path}: metadata 'architecture' {key} is {architecture[key]!r}, expected true or false")
    ratio = architecture["dropout_ration"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:  # NaN fails too
        raise ValueError(f"{path}: metadata 'architecture' dropout_ration is {ratio!r}, expected a number in [0, 1): "
                         "the fraction of hidden units dropout drops at train time")
    return architecture


def _check_conv_architecture(path: Path, architecture: dict, model: str) -> dict:
    """A "cnn" or "deep-cnn" architecture if it describes a network anynet can build, else ValueError naming the
    entry."""
    keys = CONV_KEYS[model]
    for key in keys:
        if key not in architecture:
            raise ValueError(f"{path}: metadata 'architecture' of model {model} has no {key!r}; expected "
                             f"{', '.join(map(repr, keys))} as {CONV_MODELS[model]}.architecture() gives them")
    unknown = sorted(set(architecture) - {"model", *keys})
    if unknown:
        raise ValueError(f"{path}: metadata 'architecture' of model {model} has {', '.join(map(repr, unknown))}, "
                         f"which {CONV_MODELS[model]} does not take; expected {', '.join(map(repr, keys))} as "
                         f"{CONV_MODELS[model]}.architecture() gives them")
    dims = architecture["input_dim"]
    if not isinstance(dims, list) or len(dims) != 3 or not all(is_whole(n, 1) for n in dims):
        raise ValueError(f"{path}: metadata 'architecture' input_dim is {dims!r}, expected [channels, height, width] "
                         "of positive integers, e.g. [1, 28, 28]")
    for key in ("hidden_size", "output_size"):
        if not is_whole(architecture[key], 1):
            raise ValueError(f"{path}: metadata 'architecture' {key} is {architecture[key]!r}, expected a positive "
                             "integer")
    for key in keys[1:-2]:
        param = architecture[key]
        least = {"filter_num": 1, "filter_size": 1, "stride": 1, "pad": 0}
        if (not isinstance(param, dict) or set(param) != set(CONV_PARAM_KEYS)
                or not all(is_whole(param[name], least[name]) for name in CONV_PARAM_KEYS)):
            raise ValueError(f"{path}: metadata 'architecture' {key} is {param!r}, expected the book's conv_param: "
                             '{"filter_num": ..., "filter_size": ..., "pad": ..., "stride": ...}, integers (pad >= 0, '
                             "the others >= 1)")
    try:
        conv_layout(architecture)
    except ValueError as error:
        raise ValueError(f"{path}: metadata 'architecture' describes no {CONV_MODELS[model]} that can be built: "
                         f"{error}") from None
    return architecture


def _check_metadata(path: Path, metadata: dict, sizes: list[int]) -> None:
    """ValueError naming the metadata entry that anynet could not use, if any (the architecture's form is checked
    by _check_architecture)."""
    from .datasets import DATASETS  # the names a "dataset" entry may have

    architecture = metadata.get("architecture")
    if architecture is not None and "sizes" in architecture and architecture["sizes"] != sizes:
        raise ValueError(f"{path}: metadata 'architecture' sizes {'-'.join(map(str, architecture['sizes']))} do not "
                         f"match the weights' {'-'.join(map(str, sizes))}")
    dataset = metadata.get("dataset")
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"{path}: metadata 'dataset' is {dataset!r}, expected one of {', '.join(DATASETS)}")
    preprocessing = metadata.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict) or set(preprocessing) - set(PREPROCESSING_KEYS):
            raise ValueError(f"{path}: metadata 'preprocessing' is {preprocessing!r}, expected true/false for "
                             f"some of {', '.join(PREPROCESSING_KEYS)}")
        for key, value in preprocessing.items():
            if not isinstance(value, bool):
                raise ValueError(f"{path}: metadata 'preprocessing' {key!r} is {value!r}, expected true or false")


# -- checkpoints -------------------------------------------------------------------------------------------------

# The metadata "kind" of a checkpoint; parameters are stored as "param/<name>", optimizer state as "optimizer/<key>".
CHECKPOINT_KIND = "anynet-checkpoint"
_PARAM, _OPTIMIZER = "param/", "optimizer/"


def architecture_of(network: Any) -> dict:
    """What a checkpoint records of how ``network`` is built: its ``architecture()`` (anynet's networks), else,
    for a network of the book's kind, the names and shapes of its parameters."""
    describe = getattr(network, "architecture", None)
    if describe is not None:
        return describe()
    return {"shapes": {name: list(value.shape) for name, value in network.params.items()}}


def save_checkpoint(path: str | os.PathLike, network: Any, optimizer: Any, state: Mapping[str, Any]) -> Path:
    """Write ``network``'s parameters, ``optimizer``'s state and a training loop's ``state`` to ``path`` (atomically).

    ``state`` is JSON-serialisable: the Trainer's is "epoch", "iter", "batch_size", "sampling", "rng" (the batch
    generator's state) and "history" (its lists). Read it back with :func:`load_checkpoint`.
    """
    optimizer_state = optimizer.state_dict()
    arrays = {f"{_PARAM}{k}": v for k, v in network_arrays(network).items()}
    arrays.update({f"{_OPTIMIZER}{k}": v for k, v in optimizer_state["arrays"].items()})
    state = dict(state)
    metadata = {"kind": CHECKPOINT_KIND, "epoch": state.pop("epoch"), "iter": state.pop("iter"),
                "architecture": architecture_of(network),
                "optimizer": {"name": type(optimizer).__name__, "iter": optimizer_state["iter"],
                              "hyperparameters": optimizer.hyperparameters()},
                **state}
    # dropout's generators: a resumed run draws the same masks
    states = [dict(generator.bit_generator.state) for generator in layer_generators(network)]
    if states:
        metadata["network_random_state"] = states
    return save_params(path, arrays, metadata=metadata)


def load_checkpoint(path: str | os.PathLike, device: str | Device = "cpu") -> tuple[dict[str, Any], dict]:
    """``(arrays, metadata)`` of a checkpoint written by :func:`save_checkpoint`, its arrays on ``device``.

    ``arrays`` = {"params": name -> array, "optimizer": the optimizer's ``state_dict()`` (its "iter" and "arrays")};
    ``metadata`` holds everything else ("epoch", "architecture", "optimizer", the loop's state). A file that is
    not such a checkpoint raises ValueError.
    """
    try:
        host, metadata = _read_file(path)
    except (UnsafePickleError, ValueError):  # not even a weights file: the error below says what was expected
        host, metadata = {}, {}
    if metadata.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path}: not a checkpoint written by anynet's Trainer (checkpoint=PATH writes one)")
    where = make_device(device)
    saved = {name: where.asarray(value) for name, value in host.items()}
    arrays = {"params": {k[len(_PARAM):]: v for k, v in saved.items() if k.startswith(_PARAM)},
              "optimizer": {"iter": metadata["optimizer"]["iter"],
                            "arrays": {k[len(_OPTIMIZER):]: v for k, v in saved.items() if k.startswith(_OPTIMIZER)}}}
    return arrays, metadata


def _read_npz(path: Path, raw: bytes) -> tuple[dict[str, numpy.ndarray], dict]:
    try:
        with numpy.load(io.BytesIO(raw), allow_pickle=False) as archive:
            metadata = json.loads(str(archive[METADATA_KEY])) if METADATA_KEY in archive.files else {}
            return {name: archive[name] for name in archive.files if name != METADATA_KEY}, metadata
    except ValueError as error:  # object arrays need pickle, which .npz loading never allows
        raise ValueError(f"{path}: holds object arrays, which anynet does not unpickle ({error})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"{path}: damaged .npz archive ({error})") from None


def _safe_globals() -> dict[tuple[str, str], Any]:
    """What a pickle of NumPy arrays may reference, under NumPy 1.x and 2.x module names alike."""
    reconstruct = numpy.ndarray((0,)).__reduce__()[0]
    scalar = numpy.float32(0).__reduce__()[0]
    frombuffer = numpy.arange(1).__reduce_ex__(5)[0]
    allowed = {
        ("numpy", "ndarray"): numpy.ndarray,
        ("numpy", "dtype"): numpy.dtype,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): __import__("codecs").encode,  # protocols 0-2 spell bytes this way
    }
    for core in ("numpy.core", "numpy._core"):  # NumPy 2 renamed numpy.core to numpy._core
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, source: Path):
        super().__init__(io.BytesIO(data))
        self._source = source
        self._allowed = _safe_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}: a weights file holds only arrays, and "
                "loading anything else would run code from the file. If you trust it, re-save it as .npz with "
                "the code that wrote it, e.g. anynet.io.save_params('weights.npz', network)."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refusing a pickle with persistent references ({pid!r})")


def _read_pickle(path: Path, raw: bytes) -> dict[str, numpy.ndarray]:
    try:
        loaded = _ArraysOnlyUnpickler(raw, path).load()
    except UnsafePickleError:
        raise
    except Exception as error:
        raise ValueError(
            f"{path}: neither an .npz archive nor a readable pickle ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: the pickle holds a {type(loaded).__name__}, expected a dict of name -> array")
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, numpy.ndarray) or value.dtype == object:
            raise ValueError(
                f"{path}: entry {name!r} is a {type(value).__name__}, expected a numeric NumPy array under a name"
            )
    return dict(loaded)
