"""Devices and array namespaces.

Everything else in anynet takes its namespace from its inputs (``xp = namespace(x, W)``) and writes array-API code
against ``xp``. What differs between array libraries (device names, moves to and from the host, GPU memory) is
asked of that library's adapter in ``anynet._libraries``; this module never names a library itself.

A device is one object made once from a string ("cpu", "cuda:1", "torch:cuda", "strict:device1", "auto"); it
knows its namespace and moves arrays of any supported library onto itself.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_compat
import numpy

from ._libraries import LIBRARIES, Library, available_devices, library_versions, resolve_spec
from ._libraries import library_of as _library_of
from ._libraries._base import DTYPE_NAMES as _DTYPE_NAMES
from ._libraries._base import dtype_name as _dtype_name

__all__ = ["Device", "device", "device_of", "same_device", "available_devices", "namespace", "to_numpy",
           "on_device_of", "native_device", "running_on", "host_generator", "library_versions"]

_NAMESPACE_BY_TYPE: dict[type, ModuleType] = {}  # array_namespace walks isinstance checks: once per type


def _describe(x: Any, library: Library) -> str:
    return f"{library.module_name} {type(x).__qualname__} on device {library.device_name(x)!r}"


def namespace(*arrays: Any) -> ModuleType:
    """The array-API namespace of ``arrays`` (array-api-compat's wrapped namespace for NumPy, CuPy and PyTorch).

    Python scalars and ``None`` are ignored, so ``namespace(x, 0.5)`` is the namespace of ``x``. Arrays of
    different libraries, or of one library on different devices, raise a TypeError that names each input's
    library and device and says how to move one onto the other's device.
    """
    first = first_library = None
    for position, x in enumerate(arrays):
        library = None if x is None else _library_of(x)
        if library is None:
            if x is None or isinstance(x, numbers.Number):
                continue
            raise TypeError(f"argument {position} is a {type(x).__module__}.{type(x).__qualname__}, not an array: "
                            "anynet functions take arrays of NumPy, CuPy, PyTorch or array-api-strict. Make one "
                            "with anynet.device('cpu').asarray(value).")
        if first is None:
            first, first_library = x, library
        elif library is not first_library or not library.single_device and x.device != first.device:
            _raise_mixed(arrays)
    if first is None:
        raise TypeError("expected at least one array, got only Python scalars or None; make an array with "
                        "anynet.device('cpu').asarray(value).")
    xp = _NAMESPACE_BY_TYPE.get(type(first))
    if xp is None:
        xp = _NAMESPACE_BY_TYPE[type(first)] = array_api_compat.array_namespace(first)
    return xp


def _raise_mixed(arrays: tuple) -> None:
    found = [(position, x, library) for position, x in enumerate(arrays)
             if x is not None and (library := _library_of(x)) is not None]
    described = "; ".join(f"argument {position}: {_describe(x, library)}" for position, x, library in found)
    # the first argument and the first one not on its device: one of them is moved onto the other's device
    first, stranger = found[0], next(entry for entry in found[1:] if not same_device(entry[1], found[0][1]))
    names = {position: library.device_name(x) for position, x, library in (first, stranger)}

    def pull(entry):  # where the work is meant to run: a GPU over the host, any other array over plain NumPy data
        position, _, library = entry
        return (library.platform(names[position]) != "cpu", not library.is_host)

    # The array with less pull moves onto the other's device (suggesting the device an array is already on would
    # fix nothing); between equals, the later argument joins the first.
    moved, kept = (first, stranger) if pull(stranger) > pull(first) else (stranger, first)
    raise TypeError(f"arrays from different libraries or devices cannot be combined: {described}. Move argument "
                    f"{moved[0]} onto argument {kept[0]}'s device {names[kept[0]]!r} first: "
                    f"anynet.device({names[kept[0]]!r}).asarray(<argument {moved[0]}>).")


def unsigned_wraps(x: Any) -> bool:
    """Whether the library of array ``x`` wraps unsigned integer arithmetic and takes NumPy's in-place ufuncs."""
    library = _library_of(x)
    return library is not None and library.unsigned_wraps


def same_device(a: Any, b: Any) -> bool:
    """Whether arrays ``a`` and ``b`` are of one library on one device (cheap: no Device is made)."""
    library = _library_of(a)
    return library is _library_of(b) and library is not None and (library.single_device or a.device == b.device)


# Devices already met, by (library, the library's cheap device key): device_of parses no string.
_DEVICE_BY_KEY: dict[tuple[Library, Any], Device] = {}


def device_of(x: Any) -> Device:
    """The :class:`Device` an array lives on."""
    library = _library_of(x)
    if library is None:
        raise TypeError(f"expected an array of NumPy, CuPy, PyTorch or array-api-strict, got {type(x).__name__}")
    key = (library, library.device_key(x))
    found = _DEVICE_BY_KEY.get(key)
    if found is None:
        # the first array met on a device: its name goes through device(), which refuses what anynet does not
        # support (a torch "meta" or "mps" tensor) and keeps one Device per name
        found = _DEVICE_BY_KEY[key] = device(library.device_name(x))
    return found


def on_device_of(reference: Any, x: Any) -> Any:
    """``x`` moved onto ``reference``'s device if it is host data (a NumPy array, list or scalar); floating host
    data also takes ``reference``'s floating dtype.

    Arrays of other devices are returned untouched, so that the next :func:`namespace` call names the mismatch
    instead of copying silently between GPUs or libraries.
    """
    library = _library_of(x)
    if library is not None and not library.is_host:
        return x
    host = numpy.asarray(x)
    floating = host.dtype.kind == "f"
    reference_library = _library_of(reference)
    if reference_library is not None and reference_library.is_host:
        return host.astype(reference.dtype, copy=False) if floating else host
    return device_of(reference).asarray(host, dtype=reference.dtype if floating else None)


def running_on(device_for: Callable[..., Device]) -> Callable[[Callable], Callable]:
    """A decorator running a method with ``device_for(self, *args)`` active (:meth:`Device.active`): CuPy puts new
    arrays and kernels on its current GPU, not the one the method's arrays are on (a no-op on other libraries)."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def on_device(self, *args, **kwargs):
            with device_for(self, *args).active():
                return method(self, *args, **kwargs)

        return on_device

    return decorate


def native_device(x: Any) -> Any:
    """The library's own device object of array ``x``, as its creation functions take in ``device=``."""
    return array_api_compat.device(x)


# Host-side types, for annotations elsewhere (the host format is NumPy; only this layer and below name it).
HostArray = numpy.ndarray
HostGenerator = numpy.random.Generator


def host_generator(seed: int | None = None) -> numpy.random.Generator:
    """A seeded host random generator: weights and batch orders are drawn on the host, then moved, so that one
    seed gives the same numbers on every device."""
    return numpy.random.default_rng(seed)


def to_numpy(x: Any) -> numpy.ndarray:
    """A host NumPy array with the values of ``x`` (an array of any supported library, a list or a scalar).

    This is the edge of the device world: use it for printing, saving and plotting, never inside a step.
    """
    library = _library_of(x)
    return numpy.asarray(x) if library is None else library.to_host(x)


class Device:
    """One place arrays live: a library (its array-API namespace ``xp``) and a device of that library.

    Make one with :func:`anynet.device`. Devices compare equal by ``name``; ``asarray`` moves an array of any
    supported library (or a list or scalar) onto this device. ``platform`` is "cpu" or "cuda", ``index`` the GPU
    number (None on the host).
    """

    __slots__ = ("name", "library", "xp", "native", "supports_float64", "platform", "index", "_adapter")

    def __init__(self, name: str, adapter: Library):
        self.name = name
        self._adapter = adapter
        self.library = adapter.key
        self.xp = adapter.namespace(name)
        # The library's own device object, as its creation functions take it (None for NumPy).
        self.native = adapter.native(name)
        self.supports_float64 = adapter.supports_float64(self.xp, self.native)
        self.platform = adapter.platform(name)
        self.index = adapter.index(name)

    def __repr__(self) -> str:
        return f"anynet.device({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):  # anynet.device("cuda") == "cuda:0"
            try:
                other = device(other)
            except ValueError:
                return False
        return other is self or isinstance(other, Device) and other.name == self.name

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
            raise ValueError(f"device {self.name!r} does not support {name}; use dtype='float32' (the default) here")
        return resolved

    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` on this device, as an array of this device's library.

        ``x`` may be an array of NumPy, CuPy, PyTorch or array-api-strict on any device, or a list or scalar.
        Arrays keep their dtype unless ``dtype`` is given; Python floats become float32, anynet's default.
        The result is ``x`` itself when it is already here (as ``numpy.asarray`` does); an array of another
        library never shares memory with the result, even where both could (NumPy and PyTorch on the CPU, CuPy
        and PyTorch on one GPU through DLPack): training updates parameters in place, and moving a network must
        not leave its old arrays changing with the new ones.
        """
        dtype = self.dtype(dtype)
        source = _library_of(x)
        if source is None:
            host = numpy.asarray(x)
            if dtype is None and host.dtype == numpy.float64:
                dtype = self.xp.float32
            return self._from_host(host, dtype)
        if source is self._adapter:
            moved = x if device_of(x) == self else array_api_compat.to_device(x, self.native)
        elif self.platform != "cpu" and device_of(x).platform != "cpu":
            # Both live on a GPU: the buffer goes over with DLPack, not through host memory, and is then copied on
            # the GPU, since DLPack shares it.
            with self.active():
                moved = self.xp.from_dlpack(x)
                if device_of(moved) != self:
                    moved = array_api_compat.to_device(moved, self.native)
                else:
                    moved = self.xp.asarray(moved, copy=True)
        else:
            host = source.to_host(x)
            if device_of(x).platform == "cpu" and self.platform == "cpu":
                # host memory to host memory: to_host and from_host may both just wrap the buffer
                host = numpy.array(host, dtype=None if dtype is None else _dtype_name(dtype), copy=True)
            elif dtype is not None:
                host = host.astype(_dtype_name(dtype), copy=False)
            return self._from_host(host, dtype)
        if dtype is not None and moved.dtype != dtype:
            moved = self.xp.astype(moved, dtype)
        self._check_float64(moved.dtype)
        return moved

    def active(self) -> Any:
        """A context manager in which new arrays and kernels of this device's library land on this device.

        Only CuPy needs it (it places work on its *current* GPU, whatever ``device=`` says); anynet's networks,
        optimizers and Trainer enter it themselves. Use it around your own CuPy code on ``cuda:N`` with N >= 1::

            with anynet.device("cuda:1").active():
                p = anynet.functions.softmax(x)
        """
        return self._adapter.activate(self.native)

    def free_memory(self) -> int | None:
        """Free bytes on this device if it is a GPU, None for host devices (whose data is in host memory already)."""
        return self._adapter.free_memory(self.native)

    def synchronize(self) -> None:
        """Wait until queued work on this device is done (a no-op on host devices); for timing only."""
        self._adapter.synchronize(self.native)

    def hardware(self) -> str | None:
        """The GPU's model name, or None for host devices."""
        return self._adapter.hardware(self.native)

    def _check_float64(self, dtype: Any) -> None:
        if not self.supports_float64 and _dtype_name(dtype) in ("float64", "complex128"):
            raise ValueError(f"device {self.name!r} does not support float64 and got a float64 array; pass "
                             f"dtype='float32' (anynet.device({self.name!r}).asarray(x, dtype='float32'))")

    def _from_host(self, host: numpy.ndarray, dtype: Any) -> Any:
        if dtype is not None:
            host = host.astype(_dtype_name(dtype), copy=False)
        self._check_float64(host.dtype)
        return self._adapter.from_host(host, self.xp, self.native)


_DEVICE_BY_NAME: dict[str, Device] = {}  # the one Device of each canonical name


def _make_device(library: Library, name: str) -> Device:
    made = _DEVICE_BY_NAME.get(name)
    if made is None:
        made = _DEVICE_BY_NAME[name] = Device(name, library)
    return made


def _clear_caches() -> None:
    """Probe every library again, forgetting the devices of those no longer usable (tests of a broken install)."""
    for library in LIBRARIES:
        library.clear_caches()
    for cache in (_DEVICE_BY_NAME, _DEVICE_BY_KEY):
        for key, made in list(cache.items()):
            if not made._adapter.probe()[0]:
                del cache[key]  # type: ignore[arg-type]


def device(spec: str | Device = "cpu") -> Device:
    """The :class:`Device` for ``spec``: "cpu" (NumPy), "cuda" / "cuda:N" (CuPy), "torch:cpu", "torch:cuda[:N]",
    "strict" / "strict:device1" / "strict:no_float64" (array-api-strict), or "auto" (CUDA if usable, else cpu).

    An unknown or unavailable device raises ValueError naming it, the devices available here and how to install
    what is missing. The same spec always gives the same object.
    """
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a device is given as a string such as 'cpu' or 'cuda:0', got {spec!r}")
    made = _DEVICE_BY_NAME.get(spec)  # a canonical name met before: nothing to parse or probe
    return made if made is not None else _make_device(*resolve_spec(spec))
