"""NumPy: the host library, anynet's "cpu" device."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ._base import Library


class NumPy(Library):
    key = "numpy"
    unsigned_wraps = True
    module_name = "numpy"
    rank = 1
    spec_forms = ("'cpu'",)
    is_host = True
    single_device = True

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_numpy_array(x))

    def _probe(self) -> tuple[bool, str]:
        return True, ""

    def _device_names(self) -> list[str]:
        return ["cpu"]

    def auto_devices(self) -> list[str]:
        return ["cpu"]

    def canonical(self, text: str) -> str | None:
        return "cpu" if text.lower() in ("cpu", "numpy") else None

    def native(self, name: str) -> Any:
        return None  # NumPy's creation functions take device=None (or "cpu")

    def device_key(self, x: Any) -> Any:
        return None

    def device_name(self, x: Any) -> str:
        return "cpu"

    def namespace(self, name: str) -> ModuleType:
        return array_api_compat.array_namespace(np.empty(0))

    def from_host(self, host: np.ndarray, xp: ModuleType, native: Any) -> Any:
        return host


LIBRARY = NumPy()
