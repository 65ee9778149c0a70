"""The CUDA fast path of Convolution and Pooling: CuPy elementwise kernels for the index work, cuBLAS for products.

The layers' generic path builds im2col from filter_h * filter_w strided slices stacked and transposed, and col2im
from as many slice additions: on a GPU each of those is a kernel launch and a full pass over memory, and pooling's
backward adds a one-hot matrix the size of the windows. Here each pass is one kernel or one GEMM:

- im2col is one ElementwiseKernel, one thread per element of the column matrix, which computes where its value
  comes from in the image (or that it lies in the padding: zero). The matrix is laid out (C * FH * FW, N * out_h *
  out_w), a row per filter tap and a column per output position: consecutive threads read consecutive pixels of
  one image row and write consecutive memory, and the forward product is one GEMM, W (FN, C * FH * FW) @ col. The
  kernel reads the input in its own dtype and writes the computing dtype, so uint8 or float64 images are cast on
  the way in instead of by a copy.
- the products are three ``cupy.cublas.gemm`` calls with explicit transposes (forward W @ col; backward dW = dout
  @ col^T and dcol = W^T @ dout, with dout laid out once as the forward product was) into C-ordered outputs
  (without ``out`` CuPy's gemm returns a Fortran-ordered array). cuBLAS takes one dtype, float32 or float64:
  operands are brought to the dtype NumPy's promotion gives the generic path (float64 images with float32 filters
  compute in float64, as ``col @ col_W`` does), and what would compute in another dtype (float16) is refused with
  a TypeError naming the dtypes.
- the forward product comes out (FN, N, out_h, out_w); one kernel adds the bias while writing it as (N, FN, out_h,
  out_w), the contiguous layout the next layers expect.
- col2im is the GATHER form: one thread per input pixel sums the column entries of every window covering it, in the
  generic path's order (filter row, then filter column, from zero). The scatter form (a thread per column entry,
  ``atomicAdd`` into the image) is simpler, but its float sums change with the threads' timing; this one is
  deterministic, needs no zeroed buffer and rounds as the generic col2im does.
- max pooling reads each window directly from the image (no column matrix), keeping the value and the index of
  its first maximum in row-major order, as the book's ``argmax`` finds it (padding counts as zeros, NaN wins as in
  NumPy). Its backward is the gather form again: each input pixel sums ``dout`` of the windows whose maximum it is.

Everything runs on the input's GPU (CuPy allocates and launches on its *current* device, so each function enters
the input's device, after checking that the other arrays are there), nothing is read back to the host, and arrays
a kernel indexes by position are made contiguous first (a no-op for the layers' own outputs).
``tests/test_cuda_conv_logic.py`` runs this module's host logic where there is no GPU, with NumPy versions of the
kernels and with their CUDA code compiled for the host; ``tests/test_kernels.py`` checks it against the generic
path where a GPU is usable.
"""

from __future__ import annotations

from typing import Any

import cupy
import cupy.cublas

from ..util import conv_output_size

# One thread per element of col (taps, columns): tap (c, fy, fx) of output position (image, oy, ox).
_im2col = cupy.ElementwiseKernel(
    "raw X img, int32 channels, int32 height, int32 width, int32 filter_h, int32 filter_w, int32 out_h, "
    "int32 out_w, int32 stride, int32 pad, int32 images",
    "T col",
    """
    const ptrdiff_t positions = (ptrdiff_t)out_h * out_w;
    const ptrdiff_t columns = positions * images;
    const ptrdiff_t tap = i / columns, column = i % columns;
    const int fx = (int)(tap % filter_w), fy = (int)(tap / filter_w % filter_h), c = (int)(tap / filter_w / filter_h);
    const ptrdiff_t image = column / positions;
    const int position = (int)(column % positions);
    const int y = position / out_w * stride + fy - pad, x = position % out_w * stride + fx - pad;
    if (y < 0 || y >= height || x < 0 || x >= width) {
        col = (T)0;
    } else {
        col = (T)img[((image * channels + c) * height + y) * width + x];
    }
    """, "anynet_im2col")

# One thread per output element (image, filter, position): the product's (filter, image, position) plus the bias.
_bias_to_images = cupy.ElementwiseKernel(
    "raw T product, raw T bias, int32 filters, int32 images, int32 positions",
    "T out",
    """
    const ptrdiff_t position = i % positions;
    const ptrdiff_t filter = i / positions % filters;
    const ptrdiff_t image = i / positions / filters;
    out = product[(filter * images + image) * positions + position] + bias[filter];
    """, "anynet_conv_bias_to_images")

# One thread per input pixel (image, c, y, x): the sum of dcol over the windows covering it. The window at output
# row oy covers padded rows oy * stride .. oy * stride + filter_h - 1, so pixel row y is its tap fy where
# y + pad - fy = oy * stride; likewise for columns. y + pad - fy only falls as fy grows: stop once it is negative.
_col2im = cupy.ElementwiseKernel(
    "raw T dcol, int32 channels, int32 height, int32 width, int32 filter_h, int32 filter_w, int32 out_h, "
    "int32 out_w, int32 stride, int32 pad, int32 images",
    "T img",
    """
    const int x = (int)(i % width), y = (int)(i / width % height), c = (int)(i / width / height % channels);
    const ptrdiff_t image = i / width / height / channels;
    const ptrdiff_t columns = (ptrdiff_t)out_h * out_w * images;
    T sum = 0;
    for (int fy = 0; fy < filter_h; ++fy) {
        const int row = y + pad - fy;
        if (row < 0) break;
        if (row % stride != 0 || row / stride >= out_h) continue;
        for (int fx = 0; fx < filter_w; ++fx) {
            const int col = x + pad - fx;
            if (col < 0) break;
            if (col % stride != 0 || col / stride >= out_w) continue;
            const ptrdiff_t tap = ((ptrdiff_t)c * filter_h + fy) * filter_w + fx;
            sum += dcol[tap * columns + (image * out_h + row / stride) * out_w + col / stride];
        }
    }
    img = sum;
    """, "anynet_col2im")

# One thread per output (plane = image * C + c, oy, ox): the window's maximum and the row-major index of its first
# occurrence. Padding reads as zero, as in the generic path's padded im2col. A NaN wins and the first NaN stays,
# as NumPy's max and argmax have it: take v when it is larger, or NaN while the best so far is not.
_max_pool = cupy.ElementwiseKernel(
    "raw T img, int32 height, int32 width, int32 pool_h, int32 pool_w, int32 out_h, int32 out_w, int32 stride, "
    "int32 pad",
    "T out, int32 arg",
    """
    const int ox = (int)(i % out_w), oy = (int)(i / out_w % out_h);
    const ptrdiff_t plane = i / out_w / out_h;
    T best = 0;
    int best_at = 0;
    for (int fy = 0; fy < pool_h; ++fy) {
        for (int fx = 0; fx < pool_w; ++fx) {
            const int y = oy * stride + fy - pad, x = ox * stride + fx - pad;
            const bool inside = y >= 0 && y < height && x >= 0 && x < width;
            const T v = inside ? img[(plane * height + y) * width + x] : (T)0;
            const int at = fy * pool_w + fx;
            if (at == 0 || v > best || (v != v && best == best)) {
                best = v;
                best_at = at;
            }
        }
    }
    out = best;
    arg = best_at;
    """, "anynet_max_pool")

# One thread per input pixel (plane, y, x): the sum of dout over the windows whose first maximum it is, in the
# generic path's order (window tap fy, then fx), as _col2im finds the windows covering a pixel.
_max_pool_backward = cupy.ElementwiseKernel(
    "raw T dout, raw int32 arg, int32 height, int32 width, int32 pool_h, int32 pool_w, int32 out_h, int32 out_w, "
    "int32 stride, int32 pad",
    "T dx",
    """
    const int x = (int)(i % width), y = (int)(i / width % height);
    const ptrdiff_t plane = i / width / height;
    T sum = 0;
    for (int fy = 0; fy < pool_h; ++fy) {
        const int row = y + pad - fy;
        if (row < 0) break;
        if (row % stride != 0 || row / stride >= out_h) continue;
        for (int fx = 0; fx < pool_w; ++fx) {
            const int col = x + pad - fx;
            if (col < 0) break;
            if (col % stride != 0 || col / stride >= out_w) continue;
            const ptrdiff_t window = (plane * out_h + row / stride) * out_w + col / stride;
            if (arg[window] == fy * pool_w + fx) sum += dout[window];
        }
    }
    dx = sum;
    """, "anynet_max_pool_backward")

_GEMM_DTYPES = ("float32", "float64")


def _gpu_of(layer: str, arrays: dict[str, Any]) -> Any:
    """The GPU (cupy.cuda.Device) of the first CuPy array of ``arrays`` (what each is -> the array), after checking
    that all are CuPy arrays on it: CuPy would otherwise read across GPUs, or fail without peer access, naming
    neither. The layers only get here with a CuPy input."""
    first_name, first = next((name, value) for name, value in arrays.items() if isinstance(value, cupy.ndarray))
    where = first.device
    for name, value in arrays.items():
        if not isinstance(value, cupy.ndarray):
            raise TypeError(f"{layer}: {first_name} is on cuda:{where.id} and {name} is a "
                            f"{type(value).__module__}.{type(value).__qualname__}; move it there first: "
                            f"anynet.device('cuda:{where.id}').asarray(...)")
        if value.device != where:
            raise ValueError(f"{layer}: {first_name} is on cuda:{where.id} and {name} on cuda:{value.device.id}; "
                             f"put them on one GPU: anynet.device('cuda:{where.id}').asarray(...) moves an array, "
                             f"net.to('cuda:{where.id}') a network")
    return where


def _gemm_dtype(layer: str, **arrays: Any) -> Any:
    """The dtype NumPy's promotion gives the generic path's products of ``arrays``, if cuBLAS has a GEMM for it."""
    dtype = cupy.result_type(*(value.dtype for value in arrays.values()))
    if dtype.name not in _GEMM_DTYPES:
        given = ", ".join(f"{name} {value.dtype}" for name, value in arrays.items())
        raise TypeError(f"{layer} on the GPU computes in float32 or float64 (cuBLAS GEMMs); {given} would compute in "
                        f"{dtype}: cast them, e.g. x.astype('float32')")
    return dtype


def _matrix(a: Any, dtype: Any) -> Any:
    """``a`` in ``dtype``, C-contiguous: a view when it already is both, else one copy."""
    return cupy.ascontiguousarray(a.astype(dtype, copy=False))


def conv_forward(x: Any, W: Any, b: Any, stride: int, pad: int, workspace: dict | None = None) -> tuple[Any, Any]:
    """(N, FN, out_h, out_w) and what ``conv_backward`` needs. ``workspace`` (the layer's buffers between calls)
    is not used: CuPy's memory pool already reuses the blocks of the last step."""
    where = _gpu_of("Convolution", {"x": x, "W": W, "b": b})
    n, c, h, w = x.shape
    fn, _, fh, fw = W.shape
    out_h, out_w = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    dtype = _gemm_dtype("Convolution", x=x, W=W, b=b)
    positions = out_h * out_w
    with where:
        col = cupy.empty((c * fh * fw, n * positions), dtype=dtype)
        _im2col(cupy.ascontiguousarray(x), c, h, w, fh, fw, out_h, out_w, stride, pad, n, col)
        col_W = _matrix(W.reshape(fn, c * fh * fw), dtype)
        product = cupy.empty((fn, n * positions), dtype=dtype)
        cupy.cublas.gemm("N", "N", col_W, col, out=product)
        out = cupy.empty((n, fn, out_h, out_w), dtype=dtype)
        _bias_to_images(product, _matrix(b, dtype), fn, n, positions, out)
    return out, (col, col_W, (n, c, h, w))


def conv_backward(dout: Any, saved: Any, W: Any, stride: int, pad: int,
                  input_gradient: bool) -> tuple[Any | None, Any, Any]:
    """(dx or None, dW, db) from ``dout`` (N, FN, out_h, out_w) and ``conv_forward``'s ``saved``."""
    col, col_W, (n, c, h, w) = saved
    where = _gpu_of("Convolution backward", {"the forward pass": col, "dout": dout})
    fn, _, fh, fw = W.shape
    out_h, out_w = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    if tuple(dout.shape) != (n, fn, out_h, out_w):
        raise ValueError(f"Convolution backward: dout of shape {tuple(dout.shape)} does not fit the forward pass, "
                         f"whose output was {(n, fn, out_h, out_w)}")
    dtype = _gemm_dtype("Convolution backward", saved=col, dout=dout)
    positions = out_h * out_w
    with where:
        col, col_W = col.astype(dtype, copy=False), col_W.astype(dtype, copy=False)
        # the gradient as the forward product was laid out: (filter, image, position)
        grad = cupy.empty((fn, n, positions), dtype=dtype)
        cupy.copyto(grad, dout.reshape(n, fn, positions).transpose(1, 0, 2))
        grad = grad.reshape(fn, n * positions)
        db = cupy.sum(grad, axis=1)
        dW = cupy.empty((fn, c * fh * fw), dtype=dtype)
        cupy.cublas.gemm("N", "T", grad, col, out=dW)
        dW = dW.reshape(fn, c, fh, fw)
        if not input_gradient:
            return None, dW, db
        dcol = cupy.empty((c * fh * fw, n * positions), dtype=dtype)
        cupy.cublas.gemm("T", "N", col_W, grad, out=dcol)
        dx = cupy.empty((n, c, h, w), dtype=dtype)
        _col2im(dcol, c, h, w, fh, fw, out_h, out_w, stride, pad, n, dx)
    return dx, dW, db


def pool_forward(x: Any, pool_h: int, pool_w: int, stride: int, pad: int) -> tuple[Any, Any]:
    """Max pooling: (N, C, out_h, out_w) in ``x``'s dtype, and what ``pool_backward`` needs."""
    where = _gpu_of("Pooling", {"x": x})
    n, c, h, w = x.shape
    out_h, out_w = conv_output_size(h, pool_h, stride, pad), conv_output_size(w, pool_w, stride, pad)
    with where:
        out = cupy.empty((n, c, out_h, out_w), dtype=x.dtype)
        arg = cupy.empty((n, c, out_h, out_w), dtype=cupy.int32)
        _max_pool(cupy.ascontiguousarray(x), h, w, pool_h, pool_w, out_h, out_w, stride, pad, out, arg)
    return out, (arg, (n, c, h, w), pool_h, pool_w, stride, pad)


def pool_backward(dout: Any, saved: Any) -> Any:
    """dx: each output's gradient at its window's first maximum, summed where windows overlap."""
    arg, (n, c, h, w), pool_h, pool_w, stride, pad = saved
    where = _gpu_of("Pooling backward", {"the forward pass": arg, "dout": dout})
    if tuple(dout.shape) != tuple(arg.shape):
        raise ValueError(f"Pooling backward: dout of shape {tuple(dout.shape)} does not fit the forward pass, whose "
                         f"output was {tuple(arg.shape)}")
    out_h, out_w = arg.shape[2], arg.shape[3]
    with where:
        dx = cupy.empty((n, c, h, w), dtype=dout.dtype)
        _max_pool_backward(cupy.ascontiguousarray(dout), arg, h, w, pool_h, pool_w, out_h, out_w, stride, pad, dx)
    return dx


def conv_pool_forward(x: Any, W: Any, b: Any, stride: int, pad: int, workspace: dict | None = None,
                      relu: bool = False) -> tuple[Any, Any]:
    """A convolution, 2x2 max pooling of stride 2, then max(0, x) if ``relu``: the kernels one after the other (on
    the GPU the elementwise kernels read any layout at full speed: nothing to fuse for). The NumPy module fuses
    them."""
    out, conv_saved = conv_forward(x, W, b, stride, pad, workspace)
    pooled, pool_saved = pool_forward(out, 2, 2, 2, 0)
    if relu:
        with pooled.device:  # conv_forward checked the placement
            pooled = cupy.maximum(pooled, 0)  # NaN stays NaN, as Relu's maximum keeps it
    return pooled, (conv_saved, pool_saved, pooled if relu else None)


def conv_pool_backward(dout: Any, saved: Any, W: Any, stride: int, pad: int,
                       input_gradient: bool) -> tuple[Any, Any, Any]:
    """(dx or None, dW, db) from ``dout`` and ``conv_pool_forward``'s ``saved``."""
    conv_saved, pool_saved, relu_out = saved
    if relu_out is not None:
        with _gpu_of("Convolution backward", {"the forward pass": relu_out, "dout": dout}):
            dout = cupy.where(relu_out <= 0, cupy.zeros((), dtype=dout.dtype), dout)
    return conv_backward(pool_backward(dout, pool_saved), conv_saved, W, stride, pad, input_gradient)
