"""Saving and loading weights and training checkpoints: .npz archives, and the book's pickles read safely.

``save_params`` writes host copies of arrays from any device into an .npz, atomically. ``load_params`` reads an
.npz (never unpickling) or a pickle of the book's kind (a dict of NumPy arrays, any protocol, NumPy 1.x or 2.x)
through an unpickler that can only rebuild arrays: a pickled object or function is refused before it can run.
``save_checkpoint`` / ``load_checkpoint``: a network's parameters, its optimizer's state and a training loop's
own state (epoch, generator, history) in one such .npz.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy

from ._atomic import atomic_write
from .backend import Device, to_numpy
from .backend import device as make_device

__all__ = ["save_params", "load_params", "read_metadata", "save_checkpoint", "load_checkpoint", "architecture_of",
           "UnsafePickleError"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle referenced something other than NumPy arrays and plain containers."""


# The .npz entry holding a file's JSON metadata (architecture, training state); never a parameter.
METADATA_KEY = "__anynet__"


def save_params(path: str | os.PathLike, params: Mapping[str, Any], metadata: dict | None = None) -> Path:
    """Save a dict of arrays (from any device) to ``path`` as an uncompressed .npz of host copies.

    ``metadata``, a JSON-serialisable dict, is stored beside them (read it back with :func:`read_metadata`).
    The write is atomic: the file is complete or, if anything fails, the previous file is left as it was.
    """
    if not isinstance(params, Mapping) or not params:
        raise TypeError(f"save_params takes a non-empty dict of name -> array, got {type(params).__name__}")
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


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict saved with ``save_params(..., metadata=...)`` in .npz ``path`` ({} if there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    raw = path.read_bytes()
    if raw[:4] != b"PK\x03\x04":
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
    return _read_npz(path, raw) if raw[:4] == b"PK\x03\x04" else (_read_pickle(path, raw), {})


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
    arrays = {f"{_PARAM}{k}": v for k, v in network.params.items()}
    arrays.update({f"{_OPTIMIZER}{k}": v for k, v in optimizer_state["arrays"].items()})
    state = dict(state)
    metadata = {"kind": CHECKPOINT_KIND, "epoch": state.pop("epoch"), "iter": state.pop("iter"),
                "architecture": architecture_of(network),
                "optimizer": {"name": type(optimizer).__name__, "iter": optimizer_state["iter"],
                              "hyperparameters": optimizer.hyperparameters()},
                **state}
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
                "the code that wrote it, e.g. anynet.io.save_params('weights.npz', network.params)."
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
