"""The protocol every array-library adapter follows, with the defaults most of them share."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from types import ModuleType
from typing import Any

import array_api_compat
import numpy

DTYPE_NAMES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float32",
               "float64", "complex64", "complex128")


def describe_error(error: BaseException) -> str:
    """"ImportError: libcublas.so.12: cannot open ..." for an error: its type and the first line of its message,
    shortened (a CuPy compile error carries the whole compiler log and kernel source)."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= 200 else text[:197] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def dtype_name(dtype: Any) -> str:
    """'float32' for numpy.float32, torch.float32, array_api_strict.float32, numpy.dtype('float32'), ..."""
    text = str(dtype).rsplit(".", 1)[-1]
    return text if text in DTYPE_NAMES else numpy.dtype(dtype).name


class Library:
    """What anynet needs to know about one array library.

    Device names are anynet's canonical strings ("cpu", "cuda:0", "torch:cpu", "strict:device1"); ``native`` is the
    library's own device object, as its creation functions take in ``device=``. An adapter never raises while
    probing: a broken install is reported as "not usable" with the reason.
    """

    key: str = ""  # anynet's short name: "numpy", "cupy", "torch", "strict"
    module_name: str = ""  # the module to import
    rank: int = 0  # position in available_devices(), and preference of "auto"
    spec_forms: tuple[str, ...] = ()  # the device strings it accepts, for error messages
    install_hint: str = ""
    # NumPy arrays are the host format: lists and scalars become them, and they move onto other devices.
    is_host: bool = False
    # Arrays of this library can only be on one device, so namespace() need not compare their devices.
    single_device: bool = False
    # Unsigned integer arithmetic wraps modulo 2**bits, with NumPy's in-place ufuncs (``out=``, ``x ^= y``): the
    # array API leaves overflow undefined, so code that relies on it asks this first (anynet.masks).
    unsigned_wraps: bool = False

    def __init__(self) -> None:
        self._probed: tuple[bool, str] | None = None
        self._names: list[str] | None = None

    def __repr__(self) -> str:
        return f"<anynet array library {self.key!r}>"

    # -- what this library is and whether it works here --------------------------------------------------

    def import_module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this library."""
        raise NotImplementedError

    def probe(self) -> tuple[bool, str]:
        """(usable, why not): cached; any error while probing means "not usable"."""
        if self._probed is None:
            try:
                self._probed = self._probe()
            except Exception as error:  # a broken install (missing CUDA libraries, ...) is as good as absent
                self._probed = (False, f"{self.module_name} cannot be used ({type(error).__name__}: {error})")
        return self._probed

    def _probe(self) -> tuple[bool, str]:
        try:
            self.import_module()
        except Exception as error:
            return False, f"{self.module_name} cannot be imported ({type(error).__name__}: {error})"
        return True, ""

    def installed(self) -> bool:
        """Whether the library is installed here, working or not (it imports, or Python finds it)."""
        try:
            self.import_module()
            return True
        except Exception:
            try:
                return importlib.util.find_spec(self.module_name) is not None
            except ValueError:  # already in sys.modules, without a spec: it is there
                return True

    def unusable_reason(self, name: str) -> str | None:
        """Why device ``name`` of this library cannot be used although the library is installed here (the probe's
        reason, or the device check's), or None: when it can be used, or when what it needs is not installed at
        all (nothing is wrong then, it is simply absent)."""
        if not self.installed():
            return None
        usable, why = self.probe()
        if not usable:
            return why
        try:
            return self.check(name, name)
        except ValueError as error:
            return str(error)

    def unusable(self) -> list[tuple[str, str]]:
        """(what, why) for each part of this library that is installed here but cannot be used, the why saying how
        to fix it where the adapter knows; empty when everything installed works."""
        if not self.installed():
            return []
        usable, why = self.probe()
        return [] if usable else [(self.key, why)]

    def device_names(self) -> list[str]:
        """The canonical names of this library's devices usable here (cached; empty if the library is not)."""
        if self._names is None:
            try:
                self._names = self._device_names() if self.probe()[0] else []
            except Exception:
                self._names = []
        return self._names

    def _device_names(self) -> list[str]:
        raise NotImplementedError

    def auto_devices(self) -> list[str]:
        """The devices of this library that "auto" may pick, best first."""
        return []

    def clear_caches(self) -> None:
        self._probed = None
        self._names = None

    def version(self) -> str:
        return str(self.import_module().__version__)

    # -- device names --------------------------------------------------------------------------------------

    def canonical(self, text: str) -> str | None:
        """The canonical name for the device spec ``text`` (stripped), or None if it is not one of this library's."""
        raise NotImplementedError

    def check(self, spec: str, name: str) -> str | None:
        """Why device ``name`` (asked for as ``spec``) cannot be used here, or None when it can; raise ValueError
        for a name this library does not have at all."""
        return None

    # -- what the GPU adapters share -----------------------------------------------------------------------

    @staticmethod
    def _numbered(text: str, prefix: str) -> str | None:
        """``prefix`` or ``prefix:N`` (any case, N with leading zeros) as the canonical ``prefix:N``; else None."""
        lowered = text.lower()
        if lowered == prefix:
            return f"{prefix}:0"
        number = lowered.removeprefix(f"{prefix}:")
        return f"{prefix}:{int(number)}" if number != lowered and number.isdigit() and number.isascii() else None

    def _gpu_index_problem(self, name: str, count: int, none_here: str) -> str | None:
        """Why GPU ``name`` is not among ``count`` GPUs (``none_here`` when there are none), or None."""
        if count == 0:
            return none_here
        if self.index(name) >= count:  # type: ignore[operator]
            return f"there are {count} CUDA device(s), numbered 0 to {count - 1}"
        return None

    def native(self, name: str) -> Any:
        """The library's device object for canonical ``name``."""
        raise NotImplementedError

    def device_key(self, x: Any) -> Any:
        """A cheap hashable key of the device array ``x`` lives on (equal keys: the same device)."""
        return x.device

    def device_name(self, x: Any) -> str:
        """The canonical name of the device array ``x`` lives on."""
        raise NotImplementedError

    def platform(self, name: str) -> str:
        """"cpu" when device ``name`` computes on the host, "cuda" on an NVIDIA GPU."""
        return "cpu"

    def index(self, name: str) -> int | None:
        """The GPU number of device ``name``, None for host devices."""
        return None

    def namespace(self, name: str) -> ModuleType:
        """The array-API namespace of device ``name``'s arrays."""
        return array_api_compat.array_namespace(self.import_module().empty(0))

    def supports_float64(self, xp: ModuleType, native: Any) -> bool:
        """Whether device ``native`` has float64, as the namespace's inspection API says (an older namespace without
        one, or one that does not know this device object, is taken to have it, as the standard's default)."""
        info = getattr(xp, "__array_namespace_info__", None)
        try:
            return info is None or "float64" in info().dtypes(device=native)
        except Exception:
            return True

    # -- moving data ---------------------------------------------------------------------------------------

    def to_host(self, x: Any) -> numpy.ndarray:
        """A NumPy array with the values of ``x``."""
        return numpy.asarray(x)

    def from_host(self, host: numpy.ndarray, xp: ModuleType, native: Any) -> Any:
        """Host array ``host`` as an array of this library on ``native``."""
        return xp.asarray(host, device=native)

    # -- GPU housekeeping ----------------------------------------------------------------------------------

    def free_memory(self, native: Any) -> int | None:
        """Free bytes on a GPU device, None on host devices."""
        return None

    def activate(self, native: Any) -> contextlib.AbstractContextManager:
        """A context in which the library's new arrays and kernels land on ``native``: CuPy places them on its
        *current* device whatever ``device=`` says (array-api-compat's CuPy creation functions ignore it), so
        anynet's networks, optimizers and Trainer run inside this. A no-op for libraries that honour ``device=``."""
        return contextlib.nullcontext()

    def synchronize(self, native: Any) -> None:
        """Wait for queued work on ``native`` (nothing to wait for on the host)."""

    def hardware(self, native: Any) -> str | None:
        """The GPU's model name, None on host devices."""
        return None
