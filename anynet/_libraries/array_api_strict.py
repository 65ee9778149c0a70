"""array-api-strict: the standard and nothing more; anynet's "strict", "strict:device1", "strict:no_float64".

Its device1 refuses any mix with another device, so a test that passes there proves no hidden host copy. Its devices
without int64 (no_x64) are not offered: anynet's class labels are int64, as the book's load_mnist gives them, and
its counts (accuracy, confusion matrix) are int64 too, so training there fails on the first labels moved.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Library

DEFAULT = "CPU_DEVICE"  # array-api-strict's default device, anynet's plain "strict"


def _native_name(native: Any) -> str:
    match = re.fullmatch(r".*Device\('(.+)'\)", repr(native))
    return match.group(1) if match else str(native)


def _anynet_name(native_name: str) -> str:
    return "strict" if native_name == DEFAULT else f"strict:{native_name}"


class ArrayApiStrict(Library):
    key = "strict"
    module_name = "array_api_strict"
    rank = 3
    spec_forms = ("'strict'", "'strict:device1'", "'strict:no_float64'")
    install_hint = 'install array-api-strict (pip install "anynet[test]")'

    def __init__(self) -> None:
        super().__init__()
        self._names_by_native: dict[Any, str] = {}

    def owns(self, x: Any) -> bool:
        return type(x).__module__.startswith("array_api_strict")

    def _device_names(self) -> list[str]:
        return [name for name, has_int64 in self._devices() if has_int64]

    def _devices(self) -> list[tuple[str, bool]]:
        """(anynet name, whether it has int64) of each of array-api-strict's devices."""
        info = self.import_module().__array_namespace_info__()
        return [(_anynet_name(_native_name(d)), "int64" in info.dtypes(device=d)) for d in info.devices()]

    def _without_int64(self) -> list[str]:
        try:
            return [name for name, has_int64 in self._devices() if not has_int64] if self.probe()[0] else []
        except Exception:
            return []

    @staticmethod
    def _no_int64_reason(name: str) -> str:
        return (f"array-api-strict's {name.removeprefix('strict:')} has no int64, which anynet's class labels and "
                "counts are (as the book's load_mnist gives them); 'strict:no_float64' tests without float64")

    def canonical(self, text: str) -> str | None:
        lowered = text.lower()
        if lowered in ("strict", f"strict:{DEFAULT.lower()}"):
            return "strict"
        if lowered.startswith("strict:"):
            return "strict:" + text[len("strict:"):]
        return None

    def check(self, spec: str, name: str) -> str | None:
        known = self.device_names()
        if name in self._without_int64():
            raise ValueError(f"device {spec!r} cannot run anynet: {self._no_int64_reason(name)}")
        if name not in known:
            raise ValueError(f"unknown array-api-strict device {spec!r}: it has {', '.join(known)}")
        return None

    def native(self, name: str) -> Any:
        return self.import_module().Device(DEFAULT if name == "strict" else name.removeprefix("strict:"))

    def device_name(self, x: Any) -> str:
        native = x.device
        try:
            return self._names_by_native[native]
        except KeyError:
            name = self._names_by_native[native] = _anynet_name(_native_name(native))
            return name

    def namespace(self, name: str) -> ModuleType:
        return self.import_module()  # it is an array-API namespace itself

    def to_host(self, x: Any) -> np.ndarray:
        strict = self.import_module()
        return np.asarray(x.to_device(strict.Device(DEFAULT)))


LIBRARY = ArrayApiStrict()
