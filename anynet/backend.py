"""Devices and array namespaces.

This is the only module that knows NumPy, CuPy, PyTorch and array-api-strict by name. Everything else takes
its namespace from its inputs (``xp = namespace(x, W)``) and writes array-API code against ``xp``.

A device is one object made once from a string ("cpu", "cuda:1", "torch:cuda", "strict:device1", "auto"); it
knows its namespace and moves arrays of any supported library onto itself.
"""

from __future__ import annotations

import functools
import importlib
import numbers
import re
from types import ModuleType
from typing import Any

import array_api_compat
import numpy

__all__ = [
    "Device",
    "device",
    "device_of",
    "same_device",
    "available_devices",
    "namespace",
    "to_numpy",
    "on_device_of",
    "native_device",
    "host_generator",
    "library_versions",
]

CUDA_INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install "anynet[cuda12]" (CUDA 12) or pip install "anynet[cuda13]" '
    "(CUDA 13)"
)
SPEC_FORMS = (
    "'cpu', 'cuda', 'cuda:N', 'torch:cpu', 'torch:cuda', 'torch:cuda:N', 'strict', 'strict:device1', "
    "'strict:no_float64', 'auto'"
)

# The libraries an array can come from, as anynet names them, with the module that defines them.
_LIBRARY_MODULES = {"numpy": "numpy", "cupy": "cupy", "torch": "torch", "strict": "array_api_strict"}


# --------------------------------------------------------------------------------------------------------------
# Which library an array belongs to, and on which device it lives
# --------------------------------------------------------------------------------------------------------------

# Keyed by array type: array_api_compat's detection walks a chain of isinstance checks, so it is done once per type.
_LIBRARY_BY_TYPE: dict[type, str | None] = {}
_NAMESPACE_BY_TYPE: dict[type, ModuleType] = {}


def _library_of(x: Any) -> str | None:
    """'numpy', 'cupy', 'torch', 'strict', or None for anything that is not an array of a supported library."""
    kind = type(x)
    try:
        return _LIBRARY_BY_TYPE[kind]
    except KeyError:
        pass
    if array_api_compat.is_numpy_array(x):
        library = "numpy"
    elif array_api_compat.is_cupy_array(x):
        library = "cupy"
    elif array_api_compat.is_torch_array(x):
        library = "torch"
    elif type(x).__module__.startswith("array_api_strict"):
        library = "strict"
    else:
        library = None
    _LIBRARY_BY_TYPE[kind] = library
    return library


def _device_name_of(x: Any, library: str) -> str:
    """The canonical device name (as accepted by :func:`device`) of an array of ``library``."""
    if library == "numpy":
        return "cpu"
    if library == "cupy":
        return f"cuda:{x.device.id}"
    if library == "torch":
        where = x.device
        if where.type == "cuda":
            index = where.index if where.index is not None else _torch().cuda.current_device()
            return f"torch:cuda:{index}"
        return f"torch:{where}"
    # array-api-strict: its devices are named objects; the default one is plain "strict".
    name = _strict_device_name(x.device)
    return "strict" if name == "CPU_DEVICE" else f"strict:{name}"


def _strict_device_name(native: Any) -> str:
    match = re.fullmatch(r".*Device\('(.+)'\)", repr(native))
    return match.group(1) if match else str(native)


def _describe(x: Any, library: str) -> str:
    return f"{_LIBRARY_MODULES[library]} {type(x).__qualname__} on device {_device_name_of(x, library)!r}"


def namespace(*arrays: Any) -> ModuleType:
    """The array-API namespace of ``arrays`` (array-api-compat's wrapped namespace for NumPy, CuPy and PyTorch).

    Python scalars and ``None`` are ignored, so ``namespace(x, 0.5)`` is the namespace of ``x``. Arrays of
    different libraries, or of one library on different devices, raise a TypeError that names each input's
    library and device and says how to move one onto the other's device.
    """
    first = None
    first_library = None
    for position, x in enumerate(arrays):
        library = None if x is None else _library_of(x)
        if library is None:
            if x is None or isinstance(x, numbers.Number):
                continue
            raise TypeError(
                f"argument {position} is a {type(x).__module__}.{type(x).__qualname__}, not an array: anynet "
                "functions take arrays of NumPy, CuPy, PyTorch or array-api-strict. Make one with "
                "anynet.device('cpu').asarray(value)."
            )
        if first is None:
            first, first_library = x, library
        elif library != first_library or library != "numpy" and x.device != first.device:
            _raise_mixed(arrays)
    if first is None:
        raise TypeError(
            "expected at least one array, got only Python scalars or None; make an array with "
            "anynet.device('cpu').asarray(value)."
        )
    kind = type(first)
    try:
        return _NAMESPACE_BY_TYPE[kind]
    except KeyError:
        xp = array_api_compat.array_namespace(first)
        _NAMESPACE_BY_TYPE[kind] = xp
        return xp


def _raise_mixed(arrays: tuple) -> None:
    described = []
    target = None
    for position, x in enumerate(arrays):
        library = None if x is None else _library_of(x)
        if library is None:
            continue
        described.append(f"argument {position}: {_describe(x, library)}")
        target = target or _device_name_of(x, library)
    raise TypeError(
        "arrays from different libraries or devices cannot be combined: "
        + "; ".join(described)
        + f". Move them onto one device first, e.g. x = anynet.device({target!r}).asarray(x)."
    )


def same_device(a: Any, b: Any) -> bool:
    """Whether arrays ``a`` and ``b`` are of one library on one device (cheap: no Device is made)."""
    library = _library_of(a)
    return library == _library_of(b) and (library == "numpy" or a.device == b.device)


def device_of(x: Any) -> "Device":
    """The :class:`Device` an array lives on."""
    library = _library_of(x)
    if library is None:
        raise TypeError(f"expected an array of NumPy, CuPy, PyTorch or array-api-strict, got {type(x).__name__}")
    return device(_device_name_of(x, library))


def on_device_of(reference: Any, x: Any) -> Any:
    """``x`` moved onto ``reference``'s device if it is host data (a NumPy array, list or scalar); floating host
    data also takes ``reference``'s floating dtype.

    Arrays of other devices are returned untouched, so that the next :func:`namespace` call names the mismatch
    instead of copying silently between GPUs or libraries.
    """
    library = _library_of(x)
    if library not in (None, "numpy"):
        return x
    host = numpy.asarray(x)
    floating = host.dtype.kind == "f"
    if _library_of(reference) == "numpy":
        return host.astype(reference.dtype, copy=False) if floating else host
    return device_of(reference).asarray(host, dtype=reference.dtype if floating else None)


def native_device(x: Any) -> Any:
    """The library's own device object of array ``x``, as its creation functions take in ``device=``."""
    return array_api_compat.device(x)


def host_generator(seed: "int | None" = None) -> numpy.random.Generator:
    """A seeded host random generator: weights and batch orders are drawn on the host, then moved, so that one
    seed gives the same numbers on every device."""
    return numpy.random.default_rng(seed)


def to_numpy(x: Any) -> numpy.ndarray:
    """A host NumPy array with the values of ``x`` (an array of any supported library, a list or a scalar).

    This is the edge of the device world: use it for printing, saving and plotting, never inside a step.
    """
    library = _library_of(x)
    if library == "numpy" or library is None:
        return numpy.asarray(x)
    if library == "cupy":
        return x.get()
    if library == "torch":
        return x.detach().cpu().resolve_conj().resolve_neg().numpy()
    strict = _import("strict")
    return numpy.asarray(x.to_device(strict.Device("CPU_DEVICE")))


# --------------------------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------------------------


class Device:
    """One place arrays live: a library (its array-API namespace ``xp``) and a device of that library.

    Make one with :func:`anynet.device`. Devices compare equal by ``name``; ``asarray`` moves an array of any
    supported library (or a list or scalar) onto this device.
    """

    __slots__ = ("name", "library", "xp", "native", "supports_float64")

    def __init__(self, name: str, library: str, xp: ModuleType, native: Any, supports_float64: bool):
        self.name = name
        self.library = library
        self.xp = xp
        # The library's own device object, as its creation functions take it (None for NumPy).
        self.native = native
        self.supports_float64 = supports_float64

    def __repr__(self) -> str:
        return f"anynet.device({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:
                return False
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def dtype(self, dtype: Any) -> Any:
        """``dtype`` ("float32", "float64", "int64", ... or a dtype object) as this device's library spells it."""
        if dtype is None:
            return None
        name = dtype if isinstance(dtype, str) else _dtype_name(dtype)
        resolved = getattr(self.xp, name, None)
        if resolved is None or name not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(_DTYPE_NAMES)}")
        if name in ("float64", "complex128") and not self.supports_float64:
            raise ValueError(
                f"device {self.name!r} does not support {name}; use dtype='float32' (anynet's default) here"
            )
        return resolved

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` on this device, as an array of this device's library.

        ``x`` may be an array of NumPy, CuPy, PyTorch or array-api-strict on any device, or a list or scalar.
        Arrays keep their dtype unless ``dtype`` is given; Python floats become float32, anynet's default.
        The result may share memory with ``x`` when no move is needed (as ``numpy.asarray`` does).
        """
        dtype = self.dtype(dtype)
        library = _library_of(x)
        if library is None:
            host = numpy.asarray(x)
            if dtype is None and host.dtype == numpy.float64:
                dtype = self.xp.float32
            return self._from_host(host, dtype)
        if library == self.library:
            moved = x if _device_name_of(x, library) == self.name else array_api_compat.to_device(x, self.native)
        elif {library, self.library} == {"cupy", "torch"} and "torch:cpu" not in (
            self.name, _device_name_of(x, library)
        ):
            # Both live on CUDA: hand the buffer over with DLPack instead of a trip through host memory.
            moved = self.xp.from_dlpack(x)
            if _device_name_of(moved, self.library) != self.name:
                moved = array_api_compat.to_device(moved, self.native)
        else:
            host = to_numpy(x)
            if dtype is not None:
                host = host.astype(_dtype_name(dtype), copy=False)
            self._check_float64(host.dtype)
            return self._from_host(host, dtype)
        if dtype is not None and moved.dtype != dtype:
            moved = self.xp.astype(moved, dtype)
        self._check_float64(moved.dtype)
        return moved

    def free_memory(self) -> "int | None":
        """Free bytes on this device if it is a GPU, None for host devices (whose data is in host memory already)."""
        if self.library == "cupy":
            with self.native:
                return int(_import("cupy").cuda.runtime.memGetInfo()[0])
        if self.name.startswith("torch:cuda"):
            return int(_torch().cuda.mem_get_info(self.native)[0])
        return None

    def synchronize(self) -> None:
        """Wait until queued work on this device is done (a no-op on host devices); for timing only."""
        if self.library == "cupy":
            self.native.synchronize()
        elif self.name.startswith("torch:cuda"):
            _torch().cuda.synchronize(self.native)

    def _check_float64(self, dtype: Any) -> None:
        if not self.supports_float64 and _dtype_name(dtype) in ("float64", "complex128"):
            raise ValueError(
                f"device {self.name!r} does not support float64 and got a float64 array; pass dtype='float32' "
                f"(anynet.device({self.name!r}).asarray(x, dtype='float32'))"
            )

    def _from_host(self, host: numpy.ndarray, dtype: Any) -> Any:
        if dtype is not None:
            host = host.astype(_dtype_name(dtype), copy=False)
        self._check_float64(host.dtype)
        if self.library == "numpy":
            return host
        if self.library == "cupy":
            with self.native:
                return self.xp.asarray(host)
        return self.xp.asarray(host, device=self.native)


_DTYPE_NAMES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
)


def _dtype_name(dtype: Any) -> str:
    """'float32' for numpy.float32, torch.float32, array_api_strict.float32, numpy.dtype('float32'), ..."""
    text = str(dtype)
    for prefix in ("torch.", "array_api_strict."):
        text = text.removeprefix(prefix)
    if text not in _DTYPE_NAMES:
        text = numpy.dtype(dtype).name
    return text


def _import(library: str) -> ModuleType:
    return importlib.import_module(_LIBRARY_MODULES[library])


def _torch() -> ModuleType:
    return _import("torch")


@functools.lru_cache(maxsize=None)
def _probe(library: str) -> tuple[bool, str]:
    """Whether ``library`` can be used here, and why not. Any error while probing means "not available"."""
    try:
        module = _import(library)
    except Exception as error:  # a broken install (missing CUDA libraries, ...) is as good as absent
        return False, f"{_LIBRARY_MODULES[library]} cannot be imported ({type(error).__name__}: {error})"
    if library == "cupy":
        try:
            count = module.cuda.runtime.getDeviceCount()
        except Exception as error:
            return False, f"CuPy found no usable CUDA driver ({type(error).__name__}: {error})"
        if count < 1:
            return False, "CuPy is installed but sees no CUDA device"
    return True, ""


@functools.lru_cache(maxsize=None)
def _cuda_device_count(library: str) -> int:
    try:
        if library == "cupy":
            return int(_import("cupy").cuda.runtime.getDeviceCount()) if _probe("cupy")[0] else 0
        torch = _torch() if _probe("torch")[0] else None
        return int(torch.cuda.device_count()) if torch is not None and torch.cuda.is_available() else 0
    except Exception:
        return 0


def _strict_device_names() -> list[str]:
    strict = _import("strict")
    return [_strict_device_name(d) for d in strict.__array_namespace_info__().devices()]


def available_devices() -> list[str]:
    """The device names usable on this machine, in the order "auto" would prefer the CUDA ones."""
    names = []
    names += [f"cuda:{i}" for i in range(_cuda_device_count("cupy"))]
    names.append("cpu")
    if _probe("torch")[0]:
        names += [f"torch:cuda:{i}" for i in range(_cuda_device_count("torch"))]
        names.append("torch:cpu")
    if _probe("strict")[0]:
        names += ["strict" if n == "CPU_DEVICE" else f"strict:{n}" for n in _strict_device_names()]
    return names


def library_versions() -> dict[str, str]:
    """Versions of anynet's array libraries, "not installed" (or the import error) for the absent ones."""
    versions = {"array_api_compat": array_api_compat.__version__}
    for module_name in _LIBRARY_MODULES.values():
        try:
            versions[module_name] = importlib.import_module(module_name).__version__
        except ImportError:
            versions[module_name] = "not installed"
        except Exception as error:  # e.g. CuPy built for another CUDA version
            versions[module_name] = f"broken install ({type(error).__name__}: {error})"
    return versions


def _canonical(spec: str) -> str:
    """The canonical name of a device spec ("cuda" -> "cuda:0", "strict:CPU_DEVICE" -> "strict", ...)."""
    text = spec.strip()
    lowered = text.lower()
    if lowered == "auto":
        return "cuda:0" if _cuda_device_count("cupy") > 0 else "cpu"
    if lowered in ("cpu", "numpy"):
        return "cpu"
    if lowered == "cuda":
        return "cuda:0"
    if re.fullmatch(r"cuda:\d+", lowered):
        return f"cuda:{int(lowered[5:])}"
    if lowered in ("torch", "torch:cpu"):
        return "torch:cpu"
    if lowered == "torch:cuda":
        return "torch:cuda:0"
    if re.fullmatch(r"torch:cuda:\d+", lowered):
        return f"torch:cuda:{int(lowered[11:])}"
    if lowered in ("strict", "strict:cpu_device"):
        return "strict"
    if lowered.startswith("strict:"):
        return "strict:" + text[len("strict:") :]
    raise ValueError(
        f"unknown device {spec!r}: expected one of {SPEC_FORMS}. Available here: {', '.join(available_devices())}"
    )


def _unavailable(name: str, library: str, why: str) -> ValueError:
    hint = ""
    if library == "cupy":
        hint = f"; {CUDA_INSTALL_HINT}"
    elif library == "torch":
        hint = "; install PyTorch, with CUDA support for torch:cuda (see pytorch.org for the command)"
    elif library == "strict":
        hint = '; install array-api-strict (pip install "anynet[test]")'
    return ValueError(
        f"device {name!r} is not available on this machine: {why}. Available devices: "
        f"{', '.join(available_devices())}{hint}"
    )


def device(spec: "str | Device" = "cpu") -> Device:
    """The :class:`Device` for ``spec``: "cpu" (NumPy), "cuda" / "cuda:N" (CuPy), "torch:cpu", "torch:cuda[:N]",
    "strict" / "strict:device1" / "strict:no_float64" (array-api-strict), or "auto" (CUDA if usable, else cpu).

    An unknown or unavailable device raises ValueError naming it, the devices available here and how to install
    what is missing. The same spec always gives the same object.
    """
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a device is given as a string such as 'cpu' or 'cuda:0', got {spec!r}")
    name = _canonical(spec)
    _check_available(spec, name)
    return _make_device(name)


def _strict_native_name(name: str) -> str:
    """array-api-strict's own name for the device anynet calls ``name`` ("strict" is its CPU_DEVICE)."""
    return "CPU_DEVICE" if name == "strict" else name.removeprefix("strict:")


def _library_of_name(name: str) -> str:
    return "numpy" if name == "cpu" else "cupy" if name.startswith("cuda") else name.split(":")[0]


def _check_available(spec: str, name: str) -> None:
    """Raise the ValueError that says why device ``name`` (asked for as ``spec``) cannot be used here."""
    library = _library_of_name(name)
    if library == "numpy":
        return
    usable, why = _probe(library)
    if not usable:
        raise _unavailable(spec, library, why)
    if library == "strict":
        known = _strict_device_names()
        if _strict_native_name(name) not in known:
            raise ValueError(
                f"unknown array-api-strict device {spec!r}: it has "
                + ", ".join("strict" if n == "CPU_DEVICE" else f"strict:{n}" for n in known)
            )
    elif library == "cupy" or name.startswith("torch:cuda"):
        count = _cuda_device_count(library)
        if count == 0:
            why = "CuPy sees no CUDA device" if library == "cupy" else "this PyTorch build sees no CUDA device"
            raise _unavailable(spec, library, why)
        index = int(name.rsplit(":", 1)[1])
        if index >= count:
            raise _unavailable(spec, library, f"there are {count} CUDA device(s), numbered 0 to {count - 1}")


@functools.lru_cache(maxsize=None)
def _make_device(name: str) -> Device:
    library = _library_of_name(name)
    if library == "numpy":
        return Device(name, library, array_api_compat.array_namespace(numpy.empty(0)), None, True)
    module = _import(library)
    if library == "strict":
        native = module.Device(_strict_native_name(name))
        float64 = "float64" in module.__array_namespace_info__().dtypes(device=native)
        return Device(name, library, module, native, float64)
    if library == "cupy":
        index = int(name.rsplit(":", 1)[1])
        xp = array_api_compat.array_namespace(module.empty(0))
        return Device(name, library, xp, module.cuda.Device(index), True)
    xp = array_api_compat.array_namespace(module.empty(0))
    return Device(name, library, xp, module.device(name[len("torch:") :]), True)
