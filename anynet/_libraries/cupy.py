"""CuPy: anynet's "cuda:N" devices."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ._base import Library

INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install "anynet[cuda12]" (CUDA 12) or pip install "anynet[cuda13]" '
    "(CUDA 13)"
)


class CuPy(Library):
    key = "cupy"
    module_name = "cupy"
    rank = 0  # "auto" picks a CUDA GPU through CuPy first
    spec_forms = ("'cuda'", "'cuda:N'")
    install_hint = INSTALL_HINT

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_cupy_array(x))

    def _probe(self) -> tuple[bool, str]:
        usable, why = super()._probe()
        if not usable:
            return usable, why
        try:
            count = self.import_module().cuda.runtime.getDeviceCount()
        except Exception as error:
            return False, f"CuPy found no usable CUDA driver ({type(error).__name__}: {error})"
        if count < 1:
            return False, "CuPy is installed but sees no CUDA device"
        return True, ""

    def _device_names(self) -> list[str]:
        return [f"cuda:{i}" for i in range(int(self.import_module().cuda.runtime.getDeviceCount()))]

    def auto_devices(self) -> list[str]:
        return self.device_names()[:1]

    def canonical(self, text: str) -> str | None:
        return self._numbered(text, "cuda")

    def check(self, spec: str, name: str) -> str | None:
        return self._gpu_index_problem(name, len(self.device_names()), "CuPy sees no CUDA device")

    def native(self, name: str) -> Any:
        return self.import_module().cuda.Device(self.index(name))

    def device_key(self, x: Any) -> Any:
        return x.device.id  # CuPy's Device objects are not to be hashed or put in sets

    def device_name(self, x: Any) -> str:
        return f"cuda:{x.device.id}"

    def platform(self, name: str) -> str:
        return "cuda"

    def index(self, name: str) -> int | None:
        return int(name.rsplit(":", 1)[1])

    def to_host(self, x: Any) -> np.ndarray:
        return x.get()

    def from_host(self, host: np.ndarray, xp: ModuleType, native: Any) -> Any:
        with native:  # CuPy's creation functions place arrays on the current device
            return xp.asarray(host)

    def activate(self, native: Any) -> Any:
        return native  # cupy.cuda.Device is a (re-entrant) context manager that makes it the current device

    def free_memory(self, native: Any) -> int | None:
        with native:
            return int(self.import_module().cuda.runtime.memGetInfo()[0])

    def synchronize(self, native: Any) -> None:
        native.synchronize()

    def hardware(self, native: Any) -> str | None:
        name = self.import_module().cuda.runtime.getDeviceProperties(native.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


LIBRARY = CuPy()
