"""CuPy: anynet's "cuda:N" devices."""

from __future__ import annotations

import importlib.metadata
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ._base import Library, describe_error

# The extras anynet[cuda12] and anynet[cuda13] (pyproject.toml) bring cupy-cuda12x[ctk] / cupy-cuda13x[ctk]: CuPy
# with the CUDA libraries (cuBLAS, NVRTC, ...) it loads at its first GEMM and first kernel, not at import.
INSTALL_HINT = (
    'install CuPy for your CUDA version: pip install "anynet[cuda12]" (CUDA 12) or pip install "anynet[cuda13]" '
    "(CUDA 13)"
)
# What the probe runs on device 0: [[1, 2], [3, 4]] squared by cuBLAS, and doubled plus one by a compiled kernel.
_PROBE_MATRIX = [[1.0, 2.0], [3.0, 4.0]]
_PROBE_SQUARE = [[7.0, 10.0], [15.0, 22.0]]
_PROBE_KERNEL = [[3.0, 5.0], [7.0, 9.0]]


def _cuda_libraries_hint(cupy: ModuleType) -> str:
    """How to install the CUDA libraries for the CUDA version of this CuPy (both extras when it cannot tell)."""
    major: int | None = None
    try:
        major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000  # 12080 for CUDA 12.8
    except Exception:  # then the wheel's name says it: cupy-cuda12x, cupy-cuda13x
        for candidate in (12, 13):
            try:
                importlib.metadata.version(f"cupy-cuda{candidate}x")
            except Exception:
                continue
            major = candidate
            break
    if major in (12, 13):
        return f'pip install "anynet[cuda{major}]" (brings cupy-cuda{major}x[ctk]) or the CUDA Toolkit'
    return ('pip install "anynet[cuda12]" (CUDA 12) or "anynet[cuda13]" (CUDA 13), which bring CuPy with its CUDA '
            "libraries, or the CUDA Toolkit")


def _missing_library(error: BaseException) -> bool:
    """Whether ``error`` says a CUDA library could not be loaded (CuPy loads cuBLAS and NVRTC on first use)."""
    text = str(error)
    return isinstance(error, (ImportError, OSError)) or "failed to load" in text or "cannot open shared" in text


class CuPy(Library):
    key = "cupy"
    unsigned_wraps = True
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
            why = f"CuPy found no usable CUDA driver ({describe_error(error)})"
            return False, f"{why}: install or update the NVIDIA driver"
        if count < 1:
            return False, "CuPy is installed but sees no CUDA device"
        return self._run_on_device_0(self.import_module())

    @staticmethod
    def _run_on_device_0(cupy: ModuleType) -> tuple[bool, str]:
        """A driver and a GPU are not enough: pip's cupy-cudaXXx without its [ctk] extra imports and counts devices,
        then fails at the first GEMM (no libcublas) and the first elementwise kernel (no NVRTC or CUDA headers).
        So "usable" means a tiny cuBLAS GEMM and a freshly compiled kernel ran on device 0 and gave the right values."""
        device = cupy.cuda.Device(0)
        with device:
            try:
                matrix = cupy.asarray(np.array(_PROBE_MATRIX, dtype=np.float32))
            except Exception as error:
                return False, f"CuPy cannot put an array on cuda:0 ({describe_error(error)})"
            try:
                square = (matrix @ matrix).get().tolist()  # float32 matmul: cuBLAS's SGEMM
            except Exception as error:
                why = f"CuPy cannot run a cuBLAS GEMM ({describe_error(error)})"
                if _missing_library(error):
                    why += f": the CUDA libraries are missing; install them with {_cuda_libraries_hint(cupy)}"
                return False, why
            if square != _PROBE_SQUARE:
                return False, f"CuPy's cuBLAS GEMM gave {square} instead of {_PROBE_SQUARE}"
            compile_error = getattr(getattr(cupy.cuda, "compiler", None), "CompileException", ())
            try:
                kernel = cupy.ElementwiseKernel("float32 x", "float32 y", "y = 2 * x + 1", "anynet_probe")
                result = kernel(matrix).get().tolist()  # compiled by NVRTC at this first call
                device.synchronize()
            except Exception as error:
                if isinstance(error, compile_error) or _missing_library(error):
                    return False, (f"CuPy cannot compile a CUDA kernel ({describe_error(error)}): NVRTC or the CUDA "
                                   f"headers are missing; install them with {_cuda_libraries_hint(cupy)}")
                return False, f"CuPy cannot run a CUDA kernel ({describe_error(error)})"
            if result != _PROBE_KERNEL:
                return False, f"CuPy's CUDA kernel gave {result} instead of {_PROBE_KERNEL}"
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
        cupy = self.import_module()
        with native:  # both the driver's count and the memory pool's are of the current device
            free = int(cupy.cuda.runtime.memGetInfo()[0])
            # Blocks CuPy's pool keeps after arrays are freed are "used" for the driver, yet free for new arrays.
            cached = int(cupy.get_default_memory_pool().free_bytes())
        return free + cached

    def synchronize(self, native: Any) -> None:
        native.synchronize()

    def hardware(self, native: Any) -> str | None:
        name = self.import_module().cuda.runtime.getDeviceProperties(native.id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)


LIBRARY = CuPy()
