import itertools

import numpy as np
import pytest

import anynet
from anynet import backend
from anynet._libraries import LIBRARIES
from anynet.backend import to_numpy
from tests.helpers import DEVICE_NAMES, assert_close


def test_device_names_are_canonical_and_compare_equal():
    assert anynet.device("cpu") is anynet.device(" CPU ")
    assert anynet.device("cpu") == "cpu" and anynet.device("cpu") != "strict"
    assert anynet.device("strict") == anynet.device("strict:CPU_DEVICE")
    assert anynet.device("strict:device1").name == "strict:device1"
    assert anynet.device("cpu") != anynet.device("strict:device1")
    assert anynet.device(anynet.device("strict")) is anynet.device("strict")
    assert repr(anynet.device("strict:no_float64")) == "anynet.device('strict:no_float64')"
    assert not anynet.device("strict:no_float64").supports_float64 and anynet.device("strict").supports_float64


def test_auto_is_cuda_when_cupy_sees_a_gpu_else_cpu():
    expected = "cuda:0" if "cuda:0" in anynet.available_devices() else "cpu"
    assert anynet.device("auto").name == expected


def test_available_devices_lists_what_this_machine_can_use():
    names = anynet.available_devices()
    assert "cpu" in names and {"strict", "strict:device1", "strict:no_float64"} <= set(names)
    for name in names:
        assert anynet.device(name).name == name


def test_unknown_device_names_the_accepted_forms():
    with pytest.raises(ValueError) as caught:
        anynet.device("gpu")
    message = str(caught.value)
    assert "unknown device 'gpu'" in message and "'cuda:N'" in message and "Available here: cpu" in message
    with pytest.raises(ValueError, match="unknown array-api-strict device 'strict:device9'"):
        anynet.device("strict:device9")
    with pytest.raises(TypeError, match="a device is given as a string"):
        anynet.device(0)


def test_unavailable_cuda_says_why_and_how_to_install(monkeypatch):
    cupy_adapter = next(library for library in LIBRARIES if library.module_name == "cupy")

    def no_cuda_driver():
        raise RuntimeError("CUDA driver library not found")

    monkeypatch.setattr(cupy_adapter, "import_module", no_cuda_driver)
    backend._clear_caches()
    try:
        names = anynet.available_devices()  # a broken CuPy means "not available", never a crash
        assert not any(name.startswith("cuda") for name in names)
        assert anynet.device("auto") == "cpu"
        with pytest.raises(ValueError) as caught:
            anynet.device("cuda:1")
        message = str(caught.value)
        assert "device 'cuda:1' is not available" in message and "CUDA driver library not found" in message
        assert 'pip install "anynet[cuda12]"' in message and "Available devices: cpu" in message
    finally:
        monkeypatch.undo()
        backend._clear_caches()


def test_unavailable_torch_cuda_says_why():
    if "torch:cpu" not in anynet.available_devices():
        pytest.skip("torch is not installed")
    count = sum(name.startswith("torch:cuda") for name in anynet.available_devices())
    with pytest.raises(ValueError, match=rf"device 'torch:cuda:{count}' is not available"):
        anynet.device(f"torch:cuda:{count}")


def test_asarray_makes_float32_from_python_floats_and_keeps_integers(device):
    assert_close(device.asarray([1.0, 2.5]), [1.0, 2.5], device=device)
    assert_close(device.asarray(3.0), 3.0, device=device)
    assert_close(device.asarray([1, 2]), [1, 2], device=device, dtype="int64")
    assert_close(device.asarray([1, 2], dtype="float32"), [1.0, 2.0], device=device)


def test_float64_on_a_device_without_it_is_refused_with_the_fix():
    no64 = anynet.device("strict:no_float64")
    with pytest.raises(ValueError, match=r"does not support float64 .* pass dtype='float32'"):
        no64.asarray(np.zeros(3))
    assert_close(no64.asarray(np.zeros(3), dtype="float32"), [0.0, 0.0, 0.0], device=no64)
    with pytest.raises(ValueError, match="unknown dtype 'float16x'"):
        anynet.device("cpu").asarray([1.0], dtype="float16x")


@pytest.mark.parametrize("source, target", list(itertools.product(DEVICE_NAMES, DEVICE_NAMES)))
def test_asarray_round_trips_between_every_pair_of_devices(source, target):
    src, dst = anynet.device(source), anynet.device(target)
    values = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    there = dst.asarray(src.asarray(values))
    assert_close(there, values, device=dst, rtol=0)
    back = src.asarray(there)
    assert_close(back, values, device=src, rtol=0)
    labels = dst.asarray(src.asarray(np.array([3, 1, 4])))
    assert_close(labels, [3, 1, 4], device=dst, dtype="int64", rtol=0)
    if src.supports_float64 and dst.supports_float64:
        assert_close(dst.asarray(src.asarray(values, dtype="float64")), values, device=dst, dtype="float64", rtol=0)


def test_device_of_refuses_devices_anynet_does_not_support():
    torch = pytest.importorskip("torch")
    for _ in range(2):  # the refusal is not forgotten once the array has been seen
        with pytest.raises(ValueError, match="unknown device 'torch:meta'"):
            anynet.device_of(torch.empty(2, device="meta"))
    with pytest.raises(ValueError, match="unknown device 'torch:meta'"):
        anynet.device("torch:meta")


def test_to_numpy_and_device_of(device):
    x = device.asarray([[1.0, 2.0]])
    host = to_numpy(x)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32 and host.tolist() == [[1.0, 2.0]]
    assert anynet.device_of(x) is device
    with pytest.raises(TypeError, match="expected an array"):
        anynet.device_of([1.0])


def test_namespace_ignores_scalars_and_detects_each_library(device):
    x = device.asarray([1.0])
    assert anynet.namespace(x, 2.0, None, 3) is device.xp
    with pytest.raises(TypeError, match="expected at least one array"):
        anynet.namespace(1.0, None)
    with pytest.raises(TypeError, match=r"argument 1 is a builtins.list, not an array.*asarray\(value\)"):
        anynet.namespace(x, [1.0])


@pytest.mark.parametrize("mine, other", [(a, b) for a in DEVICE_NAMES for b in ("cpu", "strict", "strict:device1",
                                                                                   "torch:cpu")
                                          if b in DEVICE_NAMES and a != b])
def test_namespace_refuses_mixed_libraries_and_devices(mine, other):
    device, theirs = anynet.device(mine), anynet.device(other)
    mine = device.asarray([1.0])
    with pytest.raises(TypeError) as caught:
        anynet.namespace(mine, 0.5, theirs.asarray([2.0]))
    message = str(caught.value)
    module = next(library.module_name for library in LIBRARIES if library.key == device.library)
    assert f"argument 0: {module}" in message
    assert f"on device {device.name!r}" in message and "argument 2: " in message
    assert f"on device {theirs.name!r}" in message
    # host devices both: plain NumPy data joins the other array's device; otherwise the later argument joins the
    # first one's; never the device an array is already on
    if device.library == "numpy":
        assert message.endswith(f"Move argument 0 onto argument 2's device {theirs.name!r} first: "
                                f"anynet.device({theirs.name!r}).asarray(<argument 0>).")
    else:
        assert message.endswith(f"Move argument 2 onto argument 0's device {device.name!r} first: "
                                f"anynet.device({device.name!r}).asarray(<argument 2>).")


@pytest.mark.skipif("strict:device1" not in DEVICE_NAMES, reason="needs array-api-strict")
def test_host_data_meeting_a_gpu_array_is_moved_to_the_gpu_in_the_suggestion(monkeypatch):
    """forward(network, np.ones(2)) with the weights on a GPU: the fix is to move the data there, whichever argument
    comes first (strict:device1 poses as the GPU)."""
    strict = next(library for library in LIBRARIES if library.key == "strict")
    monkeypatch.setattr(strict, "platform", lambda name: "cuda" if name == "strict:device1" else "cpu")
    host, gpu = np.ones(2, dtype=np.float32), anynet.device("strict:device1").asarray([1.0, 2.0])
    for arrays, moved, kept in (((host, gpu), 0, 1), ((gpu, host), 1, 0)):
        with pytest.raises(TypeError) as caught:
            anynet.namespace(*arrays)
        message = str(caught.value)
        assert f"argument {moved}: numpy ndarray on device 'cpu'" in message
        assert f"argument {kept}: array_api_strict Array on device 'strict:device1'" in message
        assert message.endswith(f"Move argument {moved} onto argument {kept}'s device 'strict:device1' first: "
                                f"anynet.device('strict:device1').asarray(<argument {moved}>).")


@pytest.mark.parametrize("source, target", [pair for pair in itertools.permutations(DEVICE_NAMES, 2)
                                            if anynet.device(pair[0]).library != anynet.device(pair[1]).library])
def test_a_move_between_libraries_never_shares_memory(source, target):
    """NumPy <-> PyTorch on the CPU could share the buffer; a moved network's old arrays must not change with it."""
    original = anynet.device(source).asarray(np.arange(4, dtype=np.float32))
    moved = anynet.device(target).asarray(original)
    original[...] = 9.0
    np.testing.assert_array_equal(to_numpy(moved), [0, 1, 2, 3])
    moved[...] = -1.0
    np.testing.assert_array_equal(to_numpy(original), [9, 9, 9, 9])


@pytest.mark.skipif("torch:cpu" not in DEVICE_NAMES, reason="needs PyTorch")
def test_a_move_between_gpu_libraries_copies_after_dlpack(monkeypatch):
    """CuPy <-> torch:cuda hand buffers over with DLPack, which shares them; the move copies on the GPU. Run here
    with NumPy and torch:cpu posing as GPU devices (DLPack works between them on the CPU too)."""
    for name in ("cpu", "torch:cpu"):
        monkeypatch.setattr(anynet.device(name), "platform", "cuda")
    original = anynet.device("cpu").asarray(np.arange(4, dtype=np.float32))
    moved = anynet.device("torch:cpu").asarray(original)
    original[...] = 9.0
    np.testing.assert_array_equal(to_numpy(moved), [0, 1, 2, 3])


def test_a_strict_device_without_int64_is_not_offered_and_says_why():
    pytest.importorskip("array_api_strict")
    strict = next(library for library in LIBRARIES if library.key == "strict")
    why = ("array-api-strict's no_x64 has no int64, which anynet's class labels and counts are (as the book's "
           "load_mnist gives them); 'strict:no_float64' tests without float64")
    assert "strict:no_x64" not in anynet.available_devices() and "strict:no_float64" in anynet.available_devices()
    assert strict.unusable_reason("strict:no_x64") == f"device 'strict:no_x64' cannot run anynet: {why}"
    with pytest.raises(ValueError) as caught:
        anynet.device("strict:no_x64")
    assert str(caught.value) == f"device 'strict:no_x64' cannot run anynet: {why}"
