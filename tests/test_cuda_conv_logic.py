"""The CUDA convolution and pooling path's host side, run where there is no GPU.

``anynet._kernels.cupy_conv`` is imported against the stand-in ``cupy`` of tests/cupy_stand_in.py, with the NumPy
versions below of its elementwise kernels: each computes, for every thread index ``i`` at once, the same indices,
bounds and sums as the CUDA code of that name (C's ``/`` and ``%`` are Python's ``//`` and ``%`` on the non-negative
numbers they meet there). So the index formulas of im2col, col2im and pooling, which GEMM gets which operands, the
layouts, dtypes and placement are all checked against the layers' generic array-API path.

Every test also runs with the kernels' CUDA code itself, compiled for the host by a C++ compiler (its operations
are plain C over flat indices, wrapped here as CuPy wraps them): that ties the NumPy versions to the code the GPU
runs. The same source is compiled for the GPU with nvcc where one is installed; tests/test_kernels.py runs it on a
GPU where one is usable. What only a GPU shows: CuPy's own code generation and NVRTC, the launch, device rounding.
"""

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import anynet.layers
from anynet.layers import Convolution, Pooling, Relu
from anynet.networks import SimpleConvNet
from tests.cupy_stand_in import Array, Device, here, import_against_stand_in, kernels_of

# -- NumPy versions of the CUDA kernels, written from their code ------------------------------------------------


def _flat(raw):
    """A raw argument as CuPy's CArray reads ``a[i]``: the i-th element in C order."""
    return np.asarray(raw).ravel()


def _gather(raw, index, valid):
    """raw[index] where ``valid``, else 0 (the kernels never read there)."""
    return np.where(valid, _flat(raw)[np.where(valid, index, 0)], 0)


def _im2col(img, channels, height, width, filter_h, filter_w, out_h, out_w, stride, pad, images, col):
    i = np.arange(col.size)
    positions = out_h * out_w
    columns = positions * images
    tap, column = i // columns, i % columns
    fx, fy, c = tap % filter_w, tap // filter_w % filter_h, tap // filter_w // filter_h
    image, position = column // positions, column % positions
    y, x = position // out_w * stride + fy - pad, position % out_w * stride + fx - pad
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    values = _gather(img, ((image * channels + c) * height + y) * width + x, inside)
    np.copyto(col, values.astype(col.dtype).reshape(col.shape))


def _bias_to_images(product, bias, filters, images, positions, out):
    i = np.arange(out.size)
    position, filter_, image = i % positions, i // positions % filters, i // positions // filters
    values = _flat(product)[(filter_ * images + image) * positions + position] + _flat(bias)[filter_]
    np.copyto(out, values.reshape(out.shape))


def _windows_covering(y, x, window_h, window_w, out_h, out_w, stride, pad):
    """For each tap (fy, fx) in the kernels' loop order: (fy, fx, valid, oy, ox), the output window of each pixel
    (y, x) whose tap it is. The kernels' ``break`` once a row or column is negative skips only taps that would be
    invalid here too (y + pad - fy falls as fy grows)."""
    for fy in range(window_h):
        row = y + pad - fy
        for fx in range(window_w):
            col = x + pad - fx
            valid = ((row >= 0) & (row % stride == 0) & (row // stride < out_h)
                     & (col >= 0) & (col % stride == 0) & (col // stride < out_w))
            yield fy, fx, valid, row // stride, col // stride


def _col2im(dcol, channels, height, width, filter_h, filter_w, out_h, out_w, stride, pad, images, img):
    i = np.arange(img.size)
    x, y, c = i % width, i // width % height, i // width // height % channels
    image = i // width // height // channels
    columns = out_h * out_w * images
    total = np.zeros(img.size, dtype=img.dtype)
    for fy, fx, valid, oy, ox in _windows_covering(y, x, filter_h, filter_w, out_h, out_w, stride, pad):
        tap = (c * filter_h + fy) * filter_w + fx
        total += _gather(dcol, tap * columns + (image * out_h + oy) * out_w + ox, valid)
    np.copyto(img, total.reshape(img.shape))


def _max_pool(img, height, width, pool_h, pool_w, out_h, out_w, stride, pad, out, arg):
    i = np.arange(out.size)
    ox, oy, plane = i % out_w, i // out_w % out_h, i // out_w // out_h
    best = np.zeros(out.size, dtype=out.dtype)
    best_at = np.zeros(out.size, dtype=np.int32)
    for fy in range(pool_h):
        for fx in range(pool_w):
            y, x = oy * stride + fy - pad, ox * stride + fx - pad
            inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
            v = _gather(img, (plane * height + y) * width + x, inside).astype(out.dtype)
            at = fy * pool_w + fx
            take = (at == 0) | (v > best) | ((v != v) & (best == best))
            best, best_at = np.where(take, v, best), np.where(take, at, best_at)
    np.copyto(out, best.reshape(out.shape))
    np.copyto(arg, best_at.reshape(arg.shape))


def _max_pool_backward(dout, arg, height, width, pool_h, pool_w, out_h, out_w, stride, pad, dx):
    i = np.arange(dx.size)
    x, y, plane = i % width, i // width % height, i // width // height
    total = np.zeros(dx.size, dtype=dx.dtype)
    for fy, fx, valid, oy, ox in _windows_covering(y, x, pool_h, pool_w, out_h, out_w, stride, pad):
        window = (plane * out_h + oy) * out_w + ox
        total += _gather(dout, window, valid & (_gather(arg, window, valid) == fy * pool_w + fx))
    np.copyto(dx, total.reshape(dx.shape))


# name: (number of inputs, number of outputs, NumPy version of the CUDA code of that name)
KERNELS = {
    "anynet_im2col": (11, 1, _im2col),
    "anynet_conv_bias_to_images": (5, 1, _bias_to_images),
    "anynet_col2im": (11, 1, _col2im),
    "anynet_max_pool": (9, 2, _max_pool),
    "anynet_max_pool_backward": (10, 1, _max_pool_backward),
}


@pytest.fixture(scope="module", params=["numpy-versions", "cuda-code-on-host"])
def conv(request):
    """anynet._kernels.cupy_conv on the stand-in, its kernels run by the NumPy versions above or by their CUDA code
    compiled for the host (tests/cupy_stand_in.py puts the real module back afterwards, if one was imported)."""
    table = KERNELS if request.param == "numpy-versions" else request.getfixturevalue("compiled_kernels")
    module = import_against_stand_in("anynet._kernels.cupy_conv", table)
    assert set(kernels_of(module)) == set(KERNELS)
    return module


@pytest.fixture
def generic(monkeypatch):
    """The layers' generic im2col path, on NumPy input."""
    monkeypatch.setattr(anynet.layers, "conv_kernels", lambda xp: None)


def _on(gpu, *arrays):
    """Copies of host ``arrays`` on stand-in GPU ``gpu`` (the current device stays as it was)."""
    with Device(gpu):
        return [here(np.array(a, copy=True)) for a in arrays]


def _tolerance(dtype):
    return {"rtol": 1e-12, "atol": 1e-13} if np.dtype(dtype) == np.float64 else {"rtol": 2e-5, "atol": 2e-6}


def _assert_on(gpu, dtype, actual, expected, exact=False, **tolerance):
    assert isinstance(actual, Array) and actual.device_id == gpu, f"on {getattr(actual, 'device_id', 'the host')}"
    assert actual.dtype == np.dtype(dtype), f"dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape
    if exact:
        np.testing.assert_array_equal(np.asarray(actual), expected)
    else:
        np.testing.assert_allclose(np.asarray(actual), expected, **tolerance)


def _generic_conv(x, W, b, stride, pad, rng):
    """(out, dout, dx, dW, db) of the generic Convolution layer, dout drawn from ``rng``."""
    layer = Convolution(W, b, stride, pad)
    out = layer.forward(x)
    dout = rng.normal(size=out.shape).astype(out.dtype)
    dx = layer.backward(dout)
    return out, dout, dx, layer.dW, layer.db


# (N, C, H, W), (FN, FH, FW), stride, pad
CONV_CASES = [
    ((2, 3, 7, 7), (4, 3, 3), 1, 0),
    ((2, 3, 8, 6), (5, 3, 2), 2, 1),   # a non-square filter, stride and padding
    ((3, 1, 9, 9), (2, 5, 5), 1, 2),   # SimpleConvNet's 5x5 filters, padded
    ((1, 2, 10, 11), (3, 2, 2), 3, 0),  # stride past the filter: pixels no window covers
    ((2, 2, 5, 5), (3, 3, 3), 2, 3),   # windows lying wholly in the padding
    ((4, 16, 6, 6), (8, 1, 1), 1, 0),  # 1x1 filters
]


@pytest.mark.parametrize("gpu", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape, filters, stride, pad", CONV_CASES)
def test_convolution_logic_equals_the_generic_path(conv, generic, gpu, dtype, shape, filters, stride, pad):
    """On each stand-in GPU (the current device stays 0): every buffer and launch lands on the input's GPU, else
    the stand-in refuses the launch as CuPy does."""
    rng = np.random.default_rng(sum(shape) + 7 * stride + pad)
    fn, fh, fw = filters
    x = rng.normal(size=shape).astype(dtype)
    W = rng.normal(size=(fn, shape[1], fh, fw)).astype(dtype)
    b = rng.normal(size=fn).astype(dtype)
    out, dout, dx, dW, db = _generic_conv(x, W, b, stride, pad, rng)
    x_gpu, W_gpu, b_gpu, dout_gpu = _on(gpu, x, W, b, dout)
    fast_out, saved = conv.conv_forward(x_gpu, W_gpu, b_gpu, stride, pad)
    assert fast_out.flags.c_contiguous
    fast_dx, fast_dW, fast_db = conv.conv_backward(dout_gpu, saved, W_gpu, stride, pad, True)
    assert Device.current == 0
    tolerance = _tolerance(dtype)
    for actual, expected in ((fast_out, out), (fast_dx, dx), (fast_dW, dW), (fast_db, db)):
        _assert_on(gpu, dtype, actual, expected, **tolerance)
    no_dx, dW_again, db_again = conv.conv_backward(dout_gpu, saved, W_gpu, stride, pad, False)
    assert no_dx is None
    _assert_on(gpu, dtype, dW_again, dW, **tolerance)
    _assert_on(gpu, dtype, db_again, db, **tolerance)


def test_a_first_layer_launches_no_col2im(conv, monkeypatch):
    """input_gradient False (a network's first layer): no input-gradient GEMM, no col2im."""
    launched = []
    for kernel in kernels_of(conv).values():
        monkeypatch.setattr(kernel, "function", lambda *args, name=kernel.name, run=kernel.function:
                            (launched.append(name), run(*args)))
    rng = np.random.default_rng(0)
    x, W, b = _on(0, rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))
    out, saved = conv.conv_forward(x, W, b, 1, 1)
    conv.conv_backward(out, saved, W, 1, 1, False)
    assert launched == ["anynet_im2col", "anynet_conv_bias_to_images"]
    conv.conv_backward(out, saved, W, 1, 1, True)
    assert launched[2:] == ["anynet_col2im"]


# (N, C, H, W), (pool_h, pool_w), stride, pad
POOL_CASES = [
    ((2, 3, 8, 8), (2, 2), 2, 0),      # the book's pooling
    ((2, 2, 7, 9), (3, 3), 2, 1),      # overlapping windows, padded
    ((1, 2, 6, 6), (3, 2), 1, 0),      # stride 1: most pixels in several windows
    ((2, 1, 5, 5), (2, 2), 3, 0),      # stride past the window: pixels in none
    ((1, 1, 4, 4), (2, 2), 2, 2),      # windows wholly in the padding: their maximum is a padding zero
]


@pytest.mark.parametrize("gpu", [0, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8"])
@pytest.mark.parametrize("shape, window, stride, pad", POOL_CASES)
def test_pooling_logic_equals_the_generic_path_bit_for_bit(conv, generic, gpu, dtype, shape, window, stride, pad):
    """Small integers make ties (and negative ones lose to the padding's zeros): the first maximum in row-major
    order must win, as the book's argmax has it. The gradient is summed in the generic path's order: bit for bit."""
    rng = np.random.default_rng(sum(shape) + stride + pad)
    low = 0 if dtype == "uint8" else -3
    x = rng.integers(low, 4, size=shape).astype(dtype)
    layer = Pooling(*window, stride=stride, pad=pad)
    out = layer.forward(x)
    dout = rng.normal(size=out.shape).astype("float64" if dtype == "float64" else "float32")
    dx = layer.backward(dout)
    x_gpu, dout_gpu = _on(gpu, x, dout)
    fast_out, saved = conv.pool_forward(x_gpu, *window, stride, pad)
    fast_dx = conv.pool_backward(dout_gpu, saved)
    assert Device.current == 0
    _assert_on(gpu, dtype, fast_out, out, exact=True)
    _assert_on(gpu, dout.dtype, fast_dx, dx, exact=True)


def test_pooling_keeps_nan_as_numpy_does(conv, generic):
    """A window holding NaN has the maximum NaN and sends its gradient to its first NaN (NumPy's max and argmax)."""
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(1, 2, 6, 6) % 5
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = np.nan
    x[0, 1, 3, 3] = np.nan
    layer = Pooling(3, 3, stride=1, pad=1)
    out = layer.forward(x)
    dout = np.random.default_rng(1).normal(size=out.shape).astype(np.float32)
    dx = layer.backward(dout)
    assert np.isnan(out).sum() == 8 + 9  # the windows covering either NaN of plane 0, and the NaN of plane 1
    fast_out, saved = conv.pool_forward(*_on(0, x), 3, 3, 1, 1)
    np.testing.assert_array_equal(np.asarray(fast_out), out)
    np.testing.assert_array_equal(np.asarray(conv.pool_backward(*_on(0, dout), saved)), dx)


def test_strided_views_are_made_contiguous_for_the_kernels(conv, generic):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 9, 7)).astype(np.float32)
    W = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=4).astype(np.float32)
    out, dout, dx, dW, db = _generic_conv(x.transpose(0, 1, 3, 2), W.transpose(0, 1, 3, 2), b, 1, 1, rng)
    x_gpu, W_gpu, b_gpu, dout_t = _on(1, x, W, b, np.ascontiguousarray(dout.transpose(0, 1, 3, 2)))
    fast_out, saved = conv.conv_forward(x_gpu.transpose(0, 1, 3, 2), W_gpu.transpose(0, 1, 3, 2), b_gpu, 1, 1)
    fast = conv.conv_backward(dout_t.transpose(0, 1, 3, 2), saved, W_gpu.transpose(0, 1, 3, 2), 1, 1, True)
    for actual, expected in zip((fast_out, *fast), (out, dx, dW, db)):
        _assert_on(1, "float32", actual, expected, **_tolerance("float32"))
    # pooling a reversed view of the convolution's output
    pool = Pooling(3, 2, stride=1)
    pooled = pool.forward(out[:, :, ::-1])
    pool_dout = rng.normal(size=pooled.shape).astype(np.float32)
    fast_pooled, saved = conv.pool_forward(fast_out[:, :, ::-1], 3, 2, 1, 0)
    _assert_on(1, "float32", fast_pooled, pooled, exact=True)
    (pool_dout_gpu,) = _on(1, pool_dout.transpose(1, 0, 2, 3))
    fast_dx = conv.pool_backward(pool_dout_gpu.transpose(1, 0, 2, 3), saved)
    _assert_on(1, "float32", fast_dx, pool.backward(pool_dout), exact=True)


def test_arrays_on_two_gpus_or_on_the_host_are_refused_by_name(conv):
    rng = np.random.default_rng(3)
    host = [rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)]
    x0, W0, b0 = _on(0, *host)
    x1, _, b1 = _on(1, *host)
    with pytest.raises(ValueError, match=r"Convolution: x is on cuda:1 and W on cuda:0; put them on one GPU: "
                                         r"anynet.device\('cuda:1'\)"):
        conv.conv_forward(x1, W0, b0, 1, 0)
    with pytest.raises(ValueError, match="Convolution: x is on cuda:0 and b on cuda:1"):
        conv.conv_forward(x0, W0, b1, 1, 0)
    with pytest.raises(TypeError, match=r"Convolution: x is on cuda:0 and W is a numpy.ndarray; move it there "
                                        r"first: anynet.device\('cuda:0'\)"):
        conv.conv_forward(x0, host[1], b0, 1, 0)
    out, saved = conv.conv_forward(x0, W0, b0, 1, 0)
    (dout1,) = _on(1, np.asarray(out))
    with pytest.raises(ValueError, match="Convolution backward: the forward pass is on cuda:0 and dout on cuda:1"):
        conv.conv_backward(dout1, saved, W0, 1, 0, True)
    pooled, pool_saved = conv.pool_forward(x0, 2, 2, 2, 0)
    (pool_dout1,) = _on(1, np.asarray(pooled))
    with pytest.raises(ValueError, match="Pooling backward: the forward pass is on cuda:0 and dout on cuda:1"):
        conv.pool_backward(pool_dout1, pool_saved)
    with pytest.raises(ValueError, match=r"dout of shape \(2, 3, 2, 2\) does not fit the forward pass, whose "
                                         r"output was \(2, 3, 3, 3\)"):
        conv.pool_backward(*_on(0, np.zeros((2, 3, 2, 2))), pool_saved)
    assert Device.current == 0


def test_float64_input_with_float32_filters_computes_as_the_generic_path(conv, generic):
    """A network casts its input to its weights' dtype before the first layer, so its layers never see this; a
    layer called directly promotes as NumPy's col @ col_W does: float64. The im2col kernel reads the input in its
    own dtype (uint8 images too), so no cast copy is made; a dtype cuBLAS has no GEMM for is refused by name."""
    rng = np.random.default_rng(4)
    net = SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}, 6, 4, seed=0)
    x64 = rng.normal(size=(2, 1, 8, 8))
    assert net.predict(x64).dtype == np.float32
    np.testing.assert_array_equal(net.predict(x64), net.predict(x64.astype(np.float32)))

    W, b = rng.normal(size=(4, 3, 3, 3)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    for x, dtype in ((rng.normal(size=(2, 3, 6, 6)), "float64"),
                     (rng.integers(0, 256, size=(2, 3, 6, 6)).astype(np.uint8), "float32")):
        out, dout, dx, dW, db = _generic_conv(x, W, b, 1, 1, rng)
        assert out.dtype == dW.dtype == dx.dtype == np.dtype(dtype)
        x_gpu, W_gpu, b_gpu, dout_gpu = _on(0, x, W, b, dout)
        fast_out, saved = conv.conv_forward(x_gpu, W_gpu, b_gpu, 1, 1)
        fast = conv.conv_backward(dout_gpu, saved, W_gpu, 1, 1, True)
        for actual, expected in zip((fast_out, *fast), (out, dx, dW, db)):
            _assert_on(0, dtype, actual, expected, **_tolerance(dtype))
        assert W_gpu.dtype == np.float32

    half = [a.astype(np.float16) for a in (rng.normal(size=(2, 3, 6, 6)), W, b)]
    with pytest.raises(TypeError, match="Convolution on the GPU computes in float32 or float64 .*; x float16, "
                                        "W float16, b float16 would compute in float16: cast them"):
        conv.conv_forward(*_on(0, *half), 1, 1)


def test_no_value_is_read_back_to_the_host(conv, monkeypatch):
    """No host synchronisation: nothing converts a device array to a Python number or host array."""
    def refuse(*args, **kwargs):
        pytest.fail("a device value was read on the host")

    rng = np.random.default_rng(5)
    x, W, b = _on(0, rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4))
    for name in ("__float__", "__int__", "__bool__", "__index__", "item", "tolist"):
        monkeypatch.setattr(Array, name, refuse, raising=False)
    out, saved = conv.conv_forward(x, W, b, 1, 1)
    conv.conv_backward(out, saved, W, 1, 1, True)
    pooled, pool_saved = conv.pool_forward(out, 2, 2, 2, 0)
    conv.pool_backward(pooled, pool_saved)


# -- the CUDA source itself ------------------------------------------------------------------------------------

_C_TYPES = {"float32": "float", "float64": "double", "int32": "int", "uint8": "unsigned char"}
# The kernel wrappers of a GPU build (CuPy's grid-stride loop) and of a host build (a plain loop over i)
_PRELUDES = {
    "device": """
#define KERNEL extern "C" __global__ void
#define FOR_EACH(i, n) \\
    for (ptrdiff_t i = (ptrdiff_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \\
         i += (ptrdiff_t)blockDim.x * gridDim.x)
""",
    "host": """
#include <cstddef>
#define __device__
#define KERNEL extern "C" void
#define FOR_EACH(i, n) for (ptrdiff_t i = 0; i < (n); ++i)
""",
}
# CuPy's CArray as the kernels use it: a[i] is the i-th element (of a C-contiguous array, which the callers make);
# a raw input is const, so writing into it does not compile, as with CuPy
_CARRAY = """
template <typename T> struct CArray {
    T* data_;
    __device__ T& operator[](ptrdiff_t i) { return data_[i]; }
    __device__ const T& operator[](ptrdiff_t i) const { return data_[i]; }
};
"""
# The dtypes each kernel is built for: those the layers give it (T the computing dtype, X the input's)
INSTANCES = {
    "anynet_im2col": [{"T": t, "X": x} for t in ("float32", "float64") for x in ("uint8", "float32", "float64")],
    "anynet_conv_bias_to_images": [{"T": t} for t in ("float32", "float64")],
    "anynet_col2im": [{"T": t} for t in ("float32", "float64")],
    "anynet_max_pool": [{"T": t} for t in ("float32", "float64", "int32", "uint8")],
    "anynet_max_pool_backward": [{"T": t} for t in ("float32", "float64")],
}


def _params(kernel):
    """[(raw, type, name, is_input), ...] of a kernel, inputs first."""
    parts = f"{kernel.in_params}, {kernel.out_params}".split(",")
    return [(words[0] == "raw", words[-2], words[-1], index < kernel.nin)
            for index, words in enumerate(part.split() for part in parts)]


def _symbol(kernel, types):
    return "_".join([kernel.name, *(f"{letter}{dtype}" for letter, dtype in sorted(types.items()))])


def _kernel_source(kernel, types):
    """The kernel for the dtypes ``types`` (type letter -> dtype) as CuPy wraps its operation: type letters
    typedef'd, raw arguments as CArrays, every other array bound by reference to the thread's element, int32
    arguments as scalars; the arrays come as pointers."""
    params, setup, bind = [], [], []
    for raw, kind, name, is_input in _params(kernel):
        ctype = kind if kind in types else _C_TYPES[kind]
        if is_input and not raw:
            assert kind == "int32", f"{kernel.name}: {name} is neither raw nor a scalar"
            params.append(f"const int {name}")
            continue
        params.append(f"{ctype}* _ptr_{name}")
        if raw:
            setup.append(f"{'const ' if is_input else ''}CArray<{ctype}> {name} = {{_ptr_{name}}};")
        else:
            setup.append(f"CArray<{ctype}> _raw_{name} = {{_ptr_{name}}};")
            bind.append(f"{ctype} &{name} = _raw_{name}[i];")
    typedefs = " ".join(f"typedef {_C_TYPES[dtype]} {letter};" for letter, dtype in types.items())
    symbol = _symbol(kernel, types)
    return (f"namespace {symbol}_types {{ {typedefs}\n"
            f"KERNEL {symbol}({', '.join(params)}, ptrdiff_t size) {{\n  {' '.join(setup)}\n"
            f"  FOR_EACH(i, size) {{ {' '.join(bind)}\n{kernel.operation}\n  }}\n}}\n}}\n")


def _translation_unit(kernels, where):
    return _PRELUDES[where] + _CARRAY + "".join(_kernel_source(kernels[name], types)
                                                 for name, variants in INSTANCES.items() for types in variants)


def _host_kernel(library, kernel):
    """A KERNELS entry running ``kernel``'s CUDA code compiled for the host, for the dtypes of its arguments."""
    params = _params(kernel)

    def run(*args):
        types = {}
        for (_, kind, name, _), value in zip(params, args):
            if isinstance(value, np.ndarray):
                assert value.flags.c_contiguous, f"{kernel.name}: {name} is not contiguous"
                if len(kind) == 1:
                    types[kind] = value.dtype.name
        function = getattr(library, _symbol(kernel, types))
        size = next(value.size for (raw, _, _, is_input), value in zip(params, args) if not raw and not is_input)
        function(*(ctypes.c_void_p(value.ctypes.data) if isinstance(value, np.ndarray) else ctypes.c_int(value)
                   for value in args), ctypes.c_ssize_t(size))

    return (kernel.nin, kernel.nout, run)


@pytest.fixture(scope="module")
def compiled_kernels(tmp_path_factory):
    """KERNELS with the module's CUDA code compiled for the host by a C++ compiler (skipped without one)."""
    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler (g++) to run the CUDA code on the host")
    kernels = kernels_of(import_against_stand_in("anynet._kernels.cupy_conv", KERNELS))
    folder = tmp_path_factory.mktemp("host_kernels")
    (folder / "kernels.cpp").write_text(_translation_unit(kernels, "host"))
    # no fused multiply-adds, so that the sums round as the generic path's; v != v is false for integers on purpose
    flags = ["-O1", "-ffp-contract=off", "-Wall", "-Werror", "-Wno-tautological-compare", "-shared", "-fPIC"]
    done = subprocess.run(["g++", *flags, "-o", "kernels.so", "kernels.cpp"], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    library = ctypes.CDLL(str(folder / "kernels.so"))
    return {name: _host_kernel(library, kernel) for name, kernel in kernels.items()}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA compiler) is not installed here")
def test_the_cuda_source_compiles_for_the_gpu(tmp_path):
    """The operation strings compile as CuPy wraps them, for every dtype the layers give them, with warnings as
    errors. nvcc on the PATH is enough: no GPU is needed (CuPy itself compiles with NVRTC, the same front end)."""
    kernels = kernels_of(import_against_stand_in("anynet._kernels.cupy_conv", KERNELS))
    assert set(INSTANCES) == set(kernels)
    (tmp_path / "kernels.cu").write_text(_translation_unit(kernels, "device"))
    done = subprocess.run(["nvcc", "-ptx", "-arch=compute_80", "--Werror", "all-warnings", "-o", "kernels.ptx",
                           "kernels.cu"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / "kernels.ptx").read_text()
    assert all(f".entry {_symbol(kernels[name], variants[0])}(" in ptx for name, variants in INSTANCES.items())


def test_the_cuda_functions_take_what_the_layers_pass(conv):
    """The layers call both kernel modules the same way (Convolution passes its workspace): a CUDA function of
    another signature would fail only on a GPU."""
    import inspect

    from anynet._kernels import numpy_conv

    for name in ("conv_forward", "conv_backward", "pool_forward", "pool_backward", "conv_pool_forward",
                 "conv_pool_backward"):
        assert (list(inspect.signature(getattr(conv, name)).parameters)
                == list(inspect.signature(getattr(numpy_conv, name)).parameters)), name


@pytest.mark.parametrize("gpu", [0, 1])
@pytest.mark.parametrize("relu", [False, True], ids=["pool", "pool-relu"])
def test_the_pooled_convolution_step_is_the_kernels_one_after_the_other(conv, generic, gpu, relu):
    """conv_pool_forward / conv_pool_backward (what PooledConvolution calls) against the generic layers, on the
    input's stand-in GPU; small integers make ties and zeros for the ReLU."""
    rng = np.random.default_rng(11)
    x = rng.integers(-2, 3, size=(2, 3, 9, 9)).astype(np.float32)
    W = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    layers = [Convolution(W, b, 1, 1), Pooling(2, 2, stride=2)] + ([Relu()] if relu else [])
    out = x
    for layer in layers:
        out = layer.forward(out)
    dout = rng.normal(size=out.shape).astype(np.float32)
    grad = dout
    for layer in reversed(layers):
        grad = layer.backward(grad)
    x_gpu, W_gpu, b_gpu, dout_gpu = _on(gpu, x, W, b, dout)
    fast_out, saved = conv.conv_pool_forward(x_gpu, W_gpu, b_gpu, 1, 1, {}, relu)
    fast_dx, fast_dW, fast_db = conv.conv_pool_backward(dout_gpu, saved, W_gpu, 1, 1, True)
    assert Device.current == 0
    _assert_on(gpu, "float32", fast_out, out, exact=True)
    tolerance = _tolerance("float32")
    for actual, expected in ((fast_dx, grad), (fast_dW, layers[0].dW), (fast_db, layers[0].db)):
        _assert_on(gpu, "float32", actual, expected, **tolerance)
