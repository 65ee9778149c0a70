"""PyTorch tensors: anynet's "torch:cpu" and "torch:cuda:N" devices."""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from ._base import Library


class Torch(Library):
    key = "torch"
    module_name = "torch"
    rank = 2
    spec_forms = ("'torch:cpu'", "'torch:cuda'", "'torch:cuda:N'")
    install_hint = "install PyTorch, with CUDA support for torch:cuda (see pytorch.org for the command)"

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_torch_array(x))

    def _cuda_count(self) -> int:
        torch = self.import_module()
        try:
            return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
        except Exception:
            return 0

    def _device_names(self) -> list[str]:
        return [f"torch:cuda:{i}" for i in range(self._cuda_count())] + ["torch:cpu"]

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
        return self._gpu_index_problem(name, count, "this PyTorch build sees no CUDA device")

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
        return int(self.import_module().cuda.mem_get_info(native)[0])

    def synchronize(self, native: Any) -> None:
        if native.type == "cuda":
            self.import_module().cuda.synchronize(native)

    def hardware(self, native: Any) -> str | None:
        return str(self.import_module().cuda.get_device_name(native)) if native.type == "cuda" else None


LIBRARY = Torch()
