"""PyTorch tensors: anynet's "torch:cpu" and "torch:cuda:N" devices."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ._base import Library, describe_error

# What the CUDA probe squares on torch:cuda:0, and the square it must get.
_PROBE_MATRIX = [[1.0, 2.0], [3.0, 4.0]]
_PROBE_SQUARE = [[7.0, 10.0], [15.0, 22.0]]


class Torch(Library):
    key = "torch"
    module_name = "torch"
    rank = 2
    spec_forms = ("'torch:cpu'", "'torch:cuda'", "'torch:cuda:N'")
    install_hint = "install PyTorch, with CUDA support for torch:cuda (see pytorch.org for the command)"

    def __init__(self) -> None:
        super().__init__()
        self._cuda: tuple[int, str] | None = None

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_torch_array(x))

    def cuda_built(self) -> bool:
        """Whether this PyTorch has CUDA support compiled in (a CPU-only wheel has no torch:cuda devices to offer)."""
        try:
            return bool(self.import_module().backends.cuda.is_built())
        except Exception:
            return False

    def _cuda_devices(self) -> tuple[int, str]:
        """(the number of usable CUDA devices, why there are none): cached, never raises."""
        if self._cuda is None:
            try:
                self._cuda = self._find_cuda()
            except Exception as error:
                self._cuda = (0, f"PyTorch cannot use CUDA ({describe_error(error)})")
        return self._cuda

    def _find_cuda(self) -> tuple[int, str]:
        torch = self.import_module()
        try:
            count = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        except Exception as error:
            return 0, f"PyTorch cannot reach the CUDA driver ({describe_error(error)})"
        if count == 0:
            if not self.cuda_built():
                return 0, "this PyTorch build has no CUDA support (see pytorch.org for a CUDA build)"
            return 0, "this PyTorch build sees no CUDA device"
        why = self._run_matmul(torch, torch.device("cuda", 0))
        return (0, why) if why else (count, "")

    def _run_matmul(self, torch: Any, where: Any) -> str:
        """"" when a float32 matmul (cuBLAS's SGEMM) runs on ``where`` and gives the right values, else why not: a
        driver too old for the wheel's CUDA, or a GPU the wheel has no kernels for, passes the device count and
        fails at the first real work."""
        try:
            matrix = torch.tensor(_PROBE_MATRIX, dtype=torch.float32, device=where)
            square = (matrix @ matrix).cpu().tolist()
            self.synchronize(where)
        except Exception as error:
            return (f"PyTorch cannot run a matmul on torch:{where} ({describe_error(error)}): install a PyTorch "
                    "build for a CUDA version your NVIDIA driver supports (see pytorch.org)")
        if square != _PROBE_SQUARE:
            return f"PyTorch's matmul on torch:{where} gave {square} instead of {_PROBE_SQUARE}"
        return ""

    def clear_caches(self) -> None:
        super().clear_caches()
        self._cuda = None

    def _device_names(self) -> list[str]:
        return [f"torch:cuda:{i}" for i in range(self._cuda_devices()[0])] + ["torch:cpu"]

    def unusable_reason(self, name: str) -> str | None:
        if self.platform(name) == "cuda" and not self.cuda_built():
            return None  # a CPU-only build: torch:cuda is absent, not broken
        return super().unusable_reason(name)

    def unusable(self) -> list[tuple[str, str]]:
        problems = super().unusable()
        if not problems and self.cuda_built() and self._cuda_devices()[0] == 0:
            problems.append(("torch:cuda", self._cuda_devices()[1]))
        return problems

    def canonical(self, text: str) -> str | None:
        lowered = text.lower()
        if lowered in ("torch", "torch:cpu"):
            return "torch:cpu"
        if not lowered.startswith("torch:"):
            return None
        numbered = self._numbered(lowered[len("torch:"):], "cuda")
        return None if numbered is None else f"torch:{numbered}"

    def check(self, spec: str, name: str) -> str | None:
        if self.platform(name) != "cuda":
            return None
        count = sum(self.platform(n) == "cuda" for n in self.device_names())
        return self._gpu_index_problem(name, count, self._cuda_devices()[1])

    def native(self, name: str) -> Any:
        return self.import_module().device(name.removeprefix("torch:"))

    def device_name(self, x: Any) -> str:
        where = x.device
        if where.type == "cuda":
            index = where.index if where.index is not None else self.import_module().cuda.current_device()
            return f"torch:cuda:{index}"
        return f"torch:{where}"

    def platform(self, name: str) -> str:
        return "cuda" if name.startswith("torch:cuda") else "cpu"

    def index(self, name: str) -> int | None:
        return int(name.rsplit(":", 1)[1]) if self.platform(name) == "cuda" else None

    def to_host(self, x: Any) -> np.ndarray:
        return x.detach().cpu().resolve_conj().resolve_neg().numpy()

    def free_memory(self, native: Any) -> int | None:
        if native.type != "cuda":
            return None
        cuda = self.import_module().cuda
        free = int(cuda.mem_get_info(native)[0])
        # Blocks PyTorch's caching allocator keeps after tensors are freed are "used" for the driver, yet free for
        # new tensors.
        cached = int(cuda.memory_reserved(native)) - int(cuda.memory_allocated(native))
        return free + max(cached, 0)

    def synchronize(self, native: Any) -> None:
        if native.type == "cuda":
            self.import_module().cuda.synchronize(native)

    def hardware(self, native: Any) -> str | None:
        return str(self.import_module().cuda.get_device_name(native)) if native.type == "cuda" else None


LIBRARY = Torch()
