"""The GPU adapters' host logic on a machine without a GPU: CuPy's through a stand-in module, PyTorch's CUDA side
through torch with two pretended CUDA devices. What a GPU run would use (names, checks, placement, memory) is
checked here; tests/test_backend.py covers the adapters of the libraries that run on this machine."""

import importlib.metadata
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from anynet import backend, cli
from anynet._libraries import LIBRARIES
from tests.helpers import matrix_entries


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


class CompileException(Exception):  # noqa: N818 - CuPy's name, which the reason quotes
    """Stands for cupy.cuda.compiler.CompileException: NVRTC's log (and the kernel's source) as the message."""


# What CuPy raises where pip's cupy-cudaXXx came without its [ctk] extra: at the first GEMM (cuBLAS is loaded then),
# and at the first elementwise kernel (NVRTC compiles it then) without the CUDA headers or without NVRTC itself.
MISSING = {
    "cublas": ImportError("libcublas.so.12: cannot open shared object file: No such file or directory"),
    "headers": CompileException('/tmp/tmpk2x/kern.cu(1): catastrophic error: cannot open source file '
                                    '"cuda_fp16.h"\n\n1 catastrophic error detected in the compilation of '
                                    '"/tmp/tmpk2x/kern.cu".\nCompilation terminated.\n'),
    "nvrtc": RuntimeError("CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object "
                          "file: No such file or directory"),
}


class FakeCupyArray:
    """cupy.ndarray: host values on the current device; ``@`` is cuBLAS's GEMM, which may be missing."""

    def __init__(self, host, dtype=None, missing=()):
        self.host = np.array(host, dtype=dtype)
        self.device = FakeCudaDevice()  # CuPy puts new arrays on the current device
        self.missing = missing

    def get(self):
        return self.host

    def __matmul__(self, other):
        FakeCudaDevice.log.append(("gemm", FakeCudaDevice.current))
        if "cublas" in self.missing:
            raise MISSING["cublas"]
        product = np.zeros_like(self.host) if "wrong-gemm" in self.missing else self.host @ other.host
        return FakeCupyArray(product, missing=self.missing)


class FakeElementwiseKernel:
    """cupy.ElementwiseKernel of one input x and one output y: compiled (here: the operation, which reads the same
    in Python, evaluated on the host values) at the first call, as CuPy compiles it with NVRTC then."""

    def __init__(self, in_params, out_params, operation, name, missing=()):
        assert (in_params, out_params) == ("float32 x", "float32 y")
        self.operation, self.missing = operation, missing

    def __call__(self, x):
        FakeCudaDevice.log.append(("kernel", FakeCudaDevice.current))
        for part in ("headers", "nvrtc"):
            if part in self.missing:
                raise MISSING[part]
        values = {"x": x.host}
        exec(self.operation, {}, values)
        return FakeCupyArray(values["y"], missing=self.missing)


class FakeMemoryPool:
    """cupy.get_default_memory_pool(): the bytes it holds cached but unused, of the current device."""

    def free_bytes(self):
        return 500 + 10 * FakeCudaDevice.current


def _fake_cupy(count, missing=(), cuda_version=12080):
    def runtime_version():
        if cuda_version is None:
            raise RuntimeError("cudaErrorUnknown")
        return cuda_version

    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: count,
        memGetInfo=lambda: (1000 + FakeCudaDevice.current, 4000),  # free bytes of the current device
        getDeviceProperties=lambda index: {"name": f"Fake GPU {index}".encode()},
        runtimeGetVersion=runtime_version,
    )
    cuda = types.SimpleNamespace(runtime=runtime, Device=FakeCudaDevice,
                                 compiler=types.SimpleNamespace(CompileException=CompileException))
    return types.SimpleNamespace(
        __version__="14.0.0-fake", cuda=cuda,
        asarray=lambda host, dtype=None: FakeCupyArray(host, dtype, missing),
        ElementwiseKernel=lambda *params: FakeElementwiseKernel(*params, missing=missing),
        get_default_memory_pool=FakeMemoryPool,
    )


@pytest.fixture
def cupy_adapter(monkeypatch):
    adapter = _adapter("cupy")

    def install(count, missing=(), cuda_version=12080):
        module = _fake_cupy(count, missing, cuda_version)
        monkeypatch.setattr(adapter, "import_module", lambda: module)
        monkeypatch.setattr(adapter, "namespace", lambda name: types.SimpleNamespace())  # enough for a Device
        backend._clear_caches()
        FakeCudaDevice.log.clear()
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
    # the driver's free bytes plus what the device's pool holds cached (the driver counts that as used)
    assert adapter.free_memory(native) == 1001 + 510 and adapter.free_memory(adapter.native("cuda:0")) == 1000 + 500
    assert FakeCudaDevice.current == 0
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


GEMM_MISSING = ('CuPy cannot run a cuBLAS GEMM (ImportError: libcublas.so.12: cannot open shared object file: No such '
                'file or directory): the CUDA libraries are missing; install them with pip install "anynet[cuda12]" '
                '(brings cupy-cuda12x[ctk]) or the CUDA Toolkit')


def test_cupy_is_usable_only_once_a_gemm_and_a_compiled_kernel_ran_on_gpu_0(cupy_adapter):
    FakeCudaDevice.current = 1  # whatever device is current, the probe works on GPU 0 and leaves the current one
    try:
        adapter = cupy_adapter(2)
        assert adapter.probe() == (True, "")
        assert FakeCudaDevice.log == [("gemm", 0), ("kernel", 0), ("synchronize", 0)]
        assert FakeCudaDevice.current == 1
    finally:
        FakeCudaDevice.current = 0
    assert adapter.device_names() == ["cuda:0", "cuda:1"] and backend.device("auto").name == "cuda:0"


def test_cupy_without_cublas_is_unusable_with_the_reason_and_the_fix(cupy_adapter):
    adapter = cupy_adapter(1, missing={"cublas"})
    assert adapter.probe() == (False, GEMM_MISSING)
    assert FakeCudaDevice.log == [("gemm", 0)]
    assert adapter.device_names() == [] and "cuda:0" not in backend.available_devices()
    assert backend.device("auto").name == "cpu"
    with pytest.raises(ValueError) as caught:
        backend.device("cuda:0")
    assert str(caught.value).startswith(f"device 'cuda:0' is not available on this machine: {GEMM_MISSING}. ")
    assert adapter.unusable() == [("cupy", GEMM_MISSING)] and adapter.unusable_reason("cuda:0") == GEMM_MISSING


NO_HEADERS = ('CompileException: /tmp/tmpk2x/kern.cu(1): catastrophic error: cannot open source file '
              '"cuda_fp16.h"')
NO_NVRTC = ("RuntimeError: CuPy failed to load libnvrtc.so.12: OSError: libnvrtc.so.12: cannot open shared object "
            "file: No such file or directory")


# The extra to name comes from CuPy's CUDA runtime version, else from the name of the installed wheel, else both.
@pytest.mark.parametrize("missing, cuda_version, wheels, error, extras", [
    ("headers", 13000, (), NO_HEADERS, 'pip install "anynet[cuda13]" (brings cupy-cuda13x[ctk])'),
    ("nvrtc", 12080, ("cupy-cuda13x",), NO_NVRTC, 'pip install "anynet[cuda12]" (brings cupy-cuda12x[ctk])'),
    ("nvrtc", None, ("cupy-cuda13x",), NO_NVRTC, 'pip install "anynet[cuda13]" (brings cupy-cuda13x[ctk])'),
    ("nvrtc", None, (), NO_NVRTC,
     'pip install "anynet[cuda12]" (CUDA 12) or "anynet[cuda13]" (CUDA 13), which bring CuPy with its CUDA '
     'libraries,'),
])
def test_cupy_that_cannot_compile_a_kernel_is_unusable_with_the_reason_and_the_fix(cupy_adapter, monkeypatch, missing,
                                                                                   cuda_version, wheels, error,
                                                                                   extras):
    def version(distribution):
        if distribution not in wheels:
            raise importlib.metadata.PackageNotFoundError(distribution)
        return "14.0.0"

    monkeypatch.setattr(importlib.metadata, "version", version)
    adapter = cupy_adapter(1, missing={missing}, cuda_version=cuda_version)
    assert adapter.probe() == (False, f"CuPy cannot compile a CUDA kernel ({error}): NVRTC or the CUDA headers are "
                                      f"missing; install them with {extras} or the CUDA Toolkit")
    assert FakeCudaDevice.log == [("gemm", 0), ("kernel", 0)]
    assert "cuda:0" not in backend.available_devices() and backend.device("auto").name == "cpu"


def test_cupy_whose_gemm_gives_wrong_values_is_unusable(cupy_adapter):
    adapter = cupy_adapter(1, missing={"wrong-gemm"})
    assert adapter.probe() == (False, "CuPy's cuBLAS GEMM gave [[0.0, 0.0], [0.0, 0.0]] instead of "
                                      "[[7.0, 10.0], [15.0, 22.0]]")


def _devices_output(capsys):
    assert cli.main(["devices"]) == 0
    return capsys.readouterr().out


def test_anynet_devices_says_why_an_installed_cupy_is_not_usable_and_how_to_fix_it(cupy_adapter, capsys):
    cupy_adapter(1, missing={"cublas"})
    out = _devices_output(capsys)
    usable = out.split("devices usable here (pass one to --device or anynet.device()):\n")[1].split("installed but")[0]
    assert "cuda" not in usable and "  cpu\n" in usable
    assert f"installed but not usable here:\n  cupy: {GEMM_MISSING}\n'auto' picks: cpu\n" in out
    assert "  cupy               14.0.0-fake\n" in out

    cupy_adapter(1)
    out = _devices_output(capsys)
    assert "installed but not usable" not in out and "  cuda:0\n" in out and "'auto' picks: cuda:0\n" in out


@pytest.fixture
def torch_cuda(monkeypatch):
    """torch with two pretended CUDA devices; with ``works``, what it runs on "cuda" runs on the CPU instead, else
    this CPU-only build fails as it does ("Torch not compiled with CUDA enabled")."""
    torch = pytest.importorskip("torch")
    adapter = _adapter("torch")
    ran = []

    def install(works=True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
        monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
        if works:
            real_tensor = torch.tensor

            def tensor(data, dtype=None, device=None):
                ran.append(("tensor", str(device)))
                return real_tensor(data, dtype=dtype)

            monkeypatch.setattr(torch, "tensor", tensor)
            monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: ran.append(("synchronize", str(device))))
        backend._clear_caches()
        return torch, adapter, ran

    yield install
    monkeypatch.undo()
    backend._clear_caches()


def test_torch_adapter_names_and_checks_cuda_devices(torch_cuda):
    torch, adapter, ran = torch_cuda()
    assert adapter.device_names() == ["torch:cuda:0", "torch:cuda:1", "torch:cpu"]
    assert ran == [("tensor", "cuda:0"), ("synchronize", "cuda:0")]  # the matmul ran on cuda:0, once
    assert adapter.device_names() == ["torch:cuda:0", "torch:cuda:1", "torch:cpu"] and len(ran) == 2
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
    assert adapter.unusable() == [] and adapter.unusable_reason("torch:cuda:0") is None


TORCH_MATMUL_FAILS = ("PyTorch cannot run a matmul on torch:cuda:0 (AssertionError: Torch not compiled with CUDA "
                      "enabled): install a PyTorch build for a CUDA version your NVIDIA driver supports (see "
                      "pytorch.org)")


def test_torch_whose_cuda_cannot_run_a_matmul_keeps_only_the_cpu(torch_cuda, capsys):
    torch, adapter, _ = torch_cuda(works=False)
    assert adapter.probe() == (True, "") and adapter.device_names() == ["torch:cpu"]
    assert adapter.check("torch:cuda:0", "torch:cuda:0") == TORCH_MATMUL_FAILS
    assert adapter.unusable_reason("torch:cuda:0") == TORCH_MATMUL_FAILS
    assert adapter.unusable_reason("torch:cpu") is None
    assert adapter.unusable() == [("torch:cuda", TORCH_MATMUL_FAILS)]
    with pytest.raises(ValueError, match="device 'torch:cuda' is not available on this machine: PyTorch cannot run"):
        backend.device("torch:cuda")
    assert f"installed but not usable here:\n  torch:cuda: {TORCH_MATMUL_FAILS}\n" in _devices_output(capsys)


def test_torch_free_memory_counts_the_allocators_cached_blocks_as_free(torch_cuda, monkeypatch):
    torch, adapter, _ = torch_cuda()
    asked = []

    def per_device(value):
        return lambda device: asked.append(device) or value(device.index)

    monkeypatch.setattr(torch.cuda, "mem_get_info", per_device(lambda i: (1000 + i, 8000)))
    monkeypatch.setattr(torch.cuda, "memory_reserved", per_device(lambda i: 700 + i))
    monkeypatch.setattr(torch.cuda, "memory_allocated", per_device(lambda i: 200))
    # the driver's 1001 free bytes and the 501 the caching allocator holds reserved but unallocated
    assert adapter.free_memory(torch.device("cuda", 1)) == 1001 + 501
    assert asked == [torch.device("cuda", 1)] * 3


def test_a_cpu_only_torch_build_expects_no_cuda_device():
    torch = pytest.importorskip("torch")
    if torch.backends.cuda.is_built():
        pytest.skip("this torch is a CUDA build")
    adapter = _adapter("torch")
    assert adapter.unusable_reason("torch:cuda:0") is None and adapter.unusable() == []
    assert adapter.check("torch:cuda:0", "torch:cuda:0") == ("this PyTorch build has no CUDA support (see pytorch.org "
                                                            "for a CUDA build)")


# -- the suite's device matrix: a broken install shows as skipped, an absent one is left out ------------------------

class FakeLibrary:
    def __init__(self, key, names, why=None):
        self.key, self.names, self.why = key, names, why

    def canonical(self, text):
        return text if text in self.names else None

    def unusable_reason(self, name):
        return self.why


def test_matrix_skips_the_devices_of_broken_libraries_and_leaves_out_absent_ones():
    libraries = [FakeLibrary("numpy", ["cpu"]), FakeLibrary("cupy", ["cuda:0"], "CuPy cannot run a cuBLAS GEMM"),
                 FakeLibrary("torch", ["torch:cpu", "torch:cuda:0"]), FakeLibrary("jax", ["jax:gpu"])]
    matrix = ("cpu", "torch:cpu", "cuda:0", "torch:cuda:0", "jax:gpu", "tpu")
    assert matrix_entries(matrix, libraries, ["cpu", "torch:cpu"]) == [
        ("cpu", "numpy", None), ("torch:cpu", "torch", None), ("cuda:0", "cupy", "CuPy cannot run a cuBLAS GEMM")]


# A cupy package as pip's cupy-cuda12x without [ctk] behaves on a machine with a GPU: it imports, counts one device,
# and cannot load cuBLAS at the first GEMM.
BROKEN_CUPY = """
import types

__version__ = "14.0.0-broken"


class ndarray:
    def __matmul__(self, other):
        raise ImportError("libcublas.so.12: cannot open shared object file: No such file or directory")


class Device:
    def __init__(self, index=0):
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def asarray(host, dtype=None):
    return ndarray()


cuda = types.SimpleNamespace(Device=Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 1,
                                                                            runtimeGetVersion=lambda: 12080))
"""


def test_the_suite_shows_a_broken_cupy_as_skipped_tests_with_the_reason(tmp_path):
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(BROKEN_CUPY)
    env = {key: value for key, value in os.environ.items() if key != "ANYNET_DEVICES"}
    env["PYTHONPATH"] = str(tmp_path)
    command = [sys.executable, "-m", "pytest", "tests/test_functions.py", "-k", "sigmoid_seed or sigmoid_tails", "-v",
               "-rs", "-p", "no:cacheprovider"]
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"anynet device skipped (installed, not usable): cuda:0: {GEMM_MISSING}" in done.stdout
    # through the device fixture, and through DEVICE_DTYPES; each with the reason in the -rs summary
    for test in ("test_sigmoid_seed_values[cuda:0]", "test_sigmoid_tails_are_exact_and_silent[cuda:0-float32]"):
        assert f"{test} SKIPPED" in done.stdout
    summary = done.stdout.split("short test summary info")[1]
    assert summary.count(f": cuda:0: {GEMM_MISSING}\n") == 2 and "2 skipped" in summary
    assert "test_sigmoid_seed_values[cpu] PASSED" in done.stdout
    # naming it still asks for it: a usage error with the reason, not a skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, env={**env, "ANYNET_DEVICES": "cuda:0"},
                          timeout=300)
    assert done.returncode == 4 and GEMM_MISSING in done.stderr, done.stdout + done.stderr


def test_matrix_with_the_real_adapters_skips_a_cupy_without_cublas(cupy_adapter):
    cupy_adapter(1, missing={"cublas"})
    entries = matrix_entries(("cpu", "cuda:0", "torch:cuda:0"), LIBRARIES, backend.available_devices())
    expected = [("cpu", "numpy", None), ("cuda:0", "cupy", GEMM_MISSING)]
    torch = _adapter("torch")
    if torch.installed() and torch.cuda_built() and "torch:cuda:0" not in backend.available_devices():
        expected.append(("torch:cuda:0", "torch", torch.unusable_reason("torch:cuda:0")))
    assert entries == expected
    cupy_adapter(1)
    assert matrix_entries(("cpu", "cuda:0"), LIBRARIES, backend.available_devices()) == [
        ("cpu", "numpy", None), ("cuda:0", "cupy", None)]


def test_the_cuda_extras_bring_cupy_with_its_cuda_libraries_as_the_hints_say(cupy_adapter):
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    # 14.0 is the first CuPy whose cupy-cuda12x / cupy-cuda13x wheels declare the ctk extra
    assert (extras["cuda12"], extras["cuda13"]) == (["cupy-cuda12x[ctk]>=14.0"], ["cupy-cuda13x[ctk]>=14.0"])
    for major in (12, 13):
        adapter = cupy_adapter(1, missing={"cublas"}, cuda_version=major * 1000)
        assert f'pip install "anynet[cuda{major}]" (brings {extras[f"cuda{major}"][0].split(">=")[0]})' in \
            adapter.probe()[1]
        assert f'"anynet[cuda{major}]"' in adapter.install_hint


def test_a_reason_with_its_own_fix_is_not_followed_by_the_generic_hint(cupy_adapter, monkeypatch):
    adapter = cupy_adapter(1)
    monkeypatch.setattr(adapter, "_probed", (False, GEMM_MISSING))
    with pytest.raises(ValueError) as raised:
        backend.device("cuda")
    assert str(raised.value).count('pip install "anynet[cuda12]"') == 1
    assert GEMM_MISSING in str(raised.value)
