"""The GPU adapters' host logic on a machine without a GPU: CuPy's through a stand-in module, PyTorch's CUDA side
through torch with two pretended CUDA devices. What a GPU run would use (names, checks, placement, memory) is
checked here; tests/test_backend.py covers the adapters of the libraries that run on this machine."""

import types

import numpy as np
import pytest

from anynet import backend
from anynet._libraries import LIBRARIES


def _adapter(key):
    return next(library for library in LIBRARIES if library.key == key)


class FakeCudaDevice:
    """cupy.cuda.Device: an id, a context manager making it current, synchronize."""

    current = 0
    log: list = []

    def __init__(self, index=None):
        self.id = FakeCudaDevice.current if index is None else index

    def __enter__(self):
        self._previous, FakeCudaDevice.current = FakeCudaDevice.current, self.id
        return self

    def __exit__(self, *exc):
        FakeCudaDevice.current = self._previous
        return False

    def synchronize(self):
        FakeCudaDevice.log.append(("synchronize", self.id))


class FakeCupyArray:
    def __init__(self, host):
        self.host = np.array(host)
        self.device = FakeCudaDevice()  # CuPy puts new arrays on the current device

    def get(self):
        return self.host


def _fake_cupy(count):
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: count,
        memGetInfo=lambda: (1000 + FakeCudaDevice.current, 4000),  # free bytes of the current device
        getDeviceProperties=lambda index: {"name": f"Fake GPU {index}".encode()},
    )
    return types.SimpleNamespace(__version__="14.0.0-fake", cuda=types.SimpleNamespace(runtime=runtime,
                                                                                        Device=FakeCudaDevice))


@pytest.fixture
def cupy_adapter(monkeypatch):
    adapter = _adapter("cupy")

    def install(count):
        module = _fake_cupy(count)
        monkeypatch.setattr(adapter, "import_module", lambda: module)
        adapter.clear_caches()
        return adapter

    yield install
    monkeypatch.undo()
    backend._clear_caches()


def test_cupy_adapter_names_and_checks_cuda_devices(cupy_adapter):
    adapter = cupy_adapter(2)
    assert adapter.probe() == (True, "")
    assert adapter.device_names() == ["cuda:0", "cuda:1"] and adapter.auto_devices() == ["cuda:0"]
    assert [adapter.canonical(s) for s in ("CUDA", "cuda:1", " cuda:01", "cpu", "torch:cuda")] == \
        ["cuda:0", "cuda:1", None, None, None]
    assert adapter.canonical("cuda:01") == "cuda:1"
    assert adapter.check("cuda:1", "cuda:1") is None
    assert adapter.check("cuda:2", "cuda:2") == "there are 2 CUDA device(s), numbered 0 to 1"
    assert (adapter.platform("cuda:1"), adapter.index("cuda:1")) == ("cuda", 1)
    assert adapter.version() == "14.0.0-fake"


def test_cupy_adapter_places_arrays_and_asks_memory_of_the_right_gpu(cupy_adapter):
    adapter = cupy_adapter(2)
    native = adapter.native("cuda:1")
    assert isinstance(native, FakeCudaDevice) and native.id == 1
    xp = types.SimpleNamespace(asarray=FakeCupyArray)
    moved = adapter.from_host(np.arange(3), xp, native)
    assert moved.device.id == 1 and FakeCudaDevice.current == 0  # made on GPU 1, the current device restored
    assert adapter.device_key(moved) == 1 and adapter.device_name(moved) == "cuda:1"
    assert adapter.to_host(moved).tolist() == [0, 1, 2]
    assert adapter.free_memory(native) == 1001 and adapter.free_memory(adapter.native("cuda:0")) == 1000
    assert adapter.hardware(native) == "Fake GPU 1"
    FakeCudaDevice.log.clear()
    adapter.synchronize(native)
    assert FakeCudaDevice.log == [("synchronize", 1)]


def test_cupy_without_a_gpu_is_unusable_with_the_reason(cupy_adapter):
    adapter = cupy_adapter(0)
    assert adapter.probe() == (False, "CuPy is installed but sees no CUDA device")
    assert adapter.device_names() == [] and "cuda:0" not in backend.available_devices()
    with pytest.raises(ValueError, match=r"device 'cuda' is not available on this machine: CuPy is installed but "
                                         r"sees no CUDA device\. Available devices: cpu.*anynet\[cuda12\]"):
        backend.device("cuda")


def test_torch_adapter_names_and_checks_cuda_devices(monkeypatch):
    torch = pytest.importorskip("torch")
    adapter = _adapter("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    adapter.clear_caches()
    try:
        assert adapter.device_names() == ["torch:cuda:0", "torch:cuda:1", "torch:cpu"]
        assert [adapter.canonical(s) for s in ("torch", "torch:cuda", "TORCH:CUDA:1", "cuda")] == \
            ["torch:cpu", "torch:cuda:0", "torch:cuda:1", None]
        assert adapter.check("torch:cuda:1", "torch:cuda:1") is None
        assert adapter.check("torch:cuda:2", "torch:cuda:2") == "there are 2 CUDA device(s), numbered 0 to 1"
        assert adapter.native("torch:cuda:1") == torch.device("cuda", 1)
        assert (adapter.platform("torch:cuda:1"), adapter.index("torch:cuda:1")) == ("cuda", 1)
        assert (adapter.platform("torch:cpu"), adapter.index("torch:cpu")) == ("cpu", None)
        # a tensor on "cuda" without an index lives on the current device
        on_current = types.SimpleNamespace(device=torch.device("cuda"))
        assert adapter.device_name(on_current) == "torch:cuda:1"
        assert adapter.free_memory(torch.device("cpu")) is None and adapter.hardware(torch.device("cpu")) is None
    finally:
        monkeypatch.undo()
        backend._clear_caches()
