"""The CPU fast path of Convolution and Pooling: NumPy, channels-last, one BLAS product per pass.

The book's layers copy images into im2col matrices with Python loops, compute the input gradient of a first
layer nobody reads, and lay every activation out as (N, C, H, W), so each layer transposes it twice. Here:

- images are worked on channels-last (N, H, W, C): a convolution's product comes out as (N*H*W, FN) rows, which
  *are* channels-last, and the layer returns them as an (N, FN, H, W) view of that memory (no transpose copy);
  the next Relu keeps the layout and Pooling reads it in place;
- im2col is one strided copy of an ``as_strided`` window view (columns ordered (fy, fx, c));
- a convolution followed by 2x2 max pooling (``conv_pool_forward``, what ``layers.PooledConvolution`` runs) orders
  the window matrix's rows window corner by window corner, so that pooling compares four contiguous blocks;
- the input gradient is the transposed convolution (the output gradient spread by the stride, padded, against the
  flipped filters): one more window copy and product, no col2im loop; skipped when not asked for;
- pooling compares the pool_h * pool_w strided views of its input (elementwise, no window copy) and keeps which
  of them holds each window's first maximum, as the book's argmax picks it: for 2x2 windows as a tournament of
  two pairs (three comparisons, kept as booleans), otherwise as an index.

``tests/test_conv_layers.py`` checks the layers' functions against the generic path, ``tests/test_conv_fused.py``
the fused pair against the layers (fast and generic) one after the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..util import conv_output_size


def _channels_last(x: np.ndarray, pad: int, workspace: dict | None = None) -> np.ndarray:
    """(N, H + 2 pad, W + 2 pad, C): ``x`` (N, C, H, W) zero-padded, channels-last; a view when ``pad`` is 0. With
    a ``workspace`` the padded buffer is kept there and reused (only its inside is written: the border stays 0)."""
    image = x.transpose(0, 2, 3, 1)
    if pad == 0:
        return image
    n, h, w, c = image.shape
    shape = (n, h + 2 * pad, w + 2 * pad, c)
    padded = _buffer(workspace, "padded", shape, x.dtype, np.zeros)
    padded[:, pad:pad + h, pad:pad + w, :] = image
    return padded


def _buffer(workspace: dict | None, key: str, shape: tuple[int, ...], dtype: Any, make: Any) -> np.ndarray:
    """``workspace[key]`` if it has this shape and dtype, else a new array from ``make`` (kept there)."""
    found = None if workspace is None else workspace.get(key)
    if found is None or found.shape != shape or found.dtype != dtype:
        found = make(shape, dtype=dtype)
        if workspace is not None:
            workspace[key] = found
    return found


def _window_matrix(image: np.ndarray, window_h: int, window_w: int, stride: int, positions: tuple[int, ...],
                   blocks: bool, workspace: dict | None) -> np.ndarray:
    """The (positions, window_h * window_w * C + 1) window matrix of ``image`` (N, H, W, C), columns (fy, fx, c) then
    a column of ones, as one strided copy (kept in ``workspace`` between calls).

    ``positions`` is (N, out_h, out_w) in row order, or with ``blocks`` (N, out_h // 2, out_w // 2): then the rows
    run over the four corners of 2x2 pooling windows, corner (a, b) by corner (rows (a, b, n, i, j) for output
    position (2i + a, 2j + b)), so the product's rows come out as four contiguous blocks, one per window corner.
    With few channels (a first layer) the matrix is made transposed, a row per filter tap, so that the copy moves
    runs of output pixels rather than of window_w * C; the product takes it transposed at no cost.
    """
    n, out_h, out_w = positions
    c = image.shape[3]
    sn, sh, sw, sc = image.strides
    size = window_h * window_w * c
    if blocks:
        shape: tuple[int, ...] = (2, 2, n, out_h, out_w)
        strides: tuple[int, ...] = (stride * sh, stride * sw, sn, 2 * stride * sh, 2 * stride * sw)
    else:
        shape, strides = (n, out_h, out_w), (sn, stride * sh, stride * sw)
    view = as_strided(image, shape + (window_h, window_w, c), strides + (sh, sw, sc), writeable=False)
    rows = int(np.prod(shape))
    if window_w * c < out_w:
        buffer = _buffer(workspace, "taps", (size + 1, rows), image.dtype, np.empty)
        col = buffer.T
        k = len(shape)
        np.copyto(buffer[:size].reshape((window_h, window_w, c) + shape), view.transpose(k, k + 1, k + 2, *range(k)))
    else:
        col = buffer = _buffer(workspace, "col", (rows, size + 1), image.dtype, np.empty)
        np.copyto(col[:, :size].reshape(shape + (window_h, window_w, c)), view)
    if workspace is None or workspace.get("ones") is not buffer:  # a new buffer: its ones column written once
        col[:, size] = 1
        if workspace is not None:
            workspace["ones"] = buffer
    return col


def _filter_matrix(W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(size + 1, FN): the filters in the window matrix's (fy, fx, c) column order, then the biases, so that one
    product with the ones column adds them."""
    fn, c, fh, fw = W.shape
    col_W = np.empty((fh * fw * c + 1, fn), dtype=W.dtype)
    col_W[:-1] = W.transpose(2, 3, 1, 0).reshape(-1, fn)
    col_W[-1] = b
    return col_W


def conv_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int,
                 workspace: dict | None = None) -> tuple[np.ndarray, Any]:
    """(N, FN, out_h, out_w) (a view of channels-last memory) and what ``conv_backward`` needs."""
    n, c, h, w = x.shape
    fn, _, fh, fw = W.shape
    out_h, out_w = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    col = _window_matrix(_channels_last(x, pad, workspace), fh, fw, stride, (n, out_h, out_w), False, workspace)
    col_W = _filter_matrix(W, b)
    out = col @ col_W
    return out.reshape(n, out_h, out_w, fn).transpose(0, 3, 1, 2), (col, col_W, (n, c, h, w))


def conv_backward(dout: np.ndarray, saved: Any, W: np.ndarray, stride: int, pad: int,
                  input_gradient: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, dW, db) from ``dout`` (N, FN, out_h, out_w) and ``conv_forward``'s ``saved``."""
    col, col_W, (n, c, h, w) = saved
    fn, _, fh, fw = W.shape
    grad = dout.transpose(0, 2, 3, 1)  # channels-last: a view when dout came from conv_forward's layout
    out_h, out_w = grad.shape[1], grad.shape[2]
    dW, db = _filter_gradients(grad.reshape(n * out_h * out_w, fn), col, W)
    if not input_gradient:
        return None, dW, db
    return _input_gradient(grad, W, (n, c, h, w), stride, pad), dW, db


def _filter_gradients(rows: np.ndarray, col: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dW (FN, C, FH, FW) and db from the output gradient's (positions, FN) ``rows`` and the window matrix ``col``
    (ones column last) of the same positions: one product."""
    fn, c, fh, fw = W.shape
    # (size + 1, FN): the filters' gradient, then the biases' (the ones column times the rows); this orientation of
    # the product runs 15-20% faster than rows.T @ col for both layouts of col
    both = col.T @ rows
    dW = np.ascontiguousarray(both[:-1].reshape(fh, fw, c, fn).transpose(3, 2, 0, 1))
    return dW, np.ascontiguousarray(both[-1])


def _input_gradient(grad: np.ndarray, W: np.ndarray, x_shape: tuple[int, int, int, int], stride: int,
                    pad: int) -> np.ndarray:
    """dx (N, C, H, W) from the output gradient ``grad`` (N, out_h, out_w, FN), channels-last."""
    n, c, h, w = x_shape
    fn, _, fh, fw = W.shape
    out_h, out_w = grad.shape[1], grad.shape[2]
    # dx[u] = sum_k spread[u + k] * W[fh - 1 - k], where spread holds dout[i] at fh - 1 - pad + stride * i
    spread = np.zeros((n, h + fh - 1, w + fw - 1, fn), dtype=grad.dtype)
    rows_at, grad_rows = _placement(out_h, fh, h, stride, pad)
    cols_at, grad_cols = _placement(out_w, fw, w, stride, pad)
    spread[:, rows_at, cols_at, :] = grad[:, grad_rows, grad_cols, :]
    flipped = W[:, :, ::-1, ::-1].transpose(2, 3, 0, 1).reshape(fh * fw * fn, c)
    dx = _window_matrix(spread, fh, fw, 1, (n, h, w), False, None)[:, :-1] @ flipped  # no bias: no ones column
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2)


def _placement(out_size: int, window: int, size: int, stride: int, pad: int) -> tuple[slice, slice]:
    """Where output positions 0..out_size-1 land in the spread gradient of length size + window - 1 (position
    window - 1 - pad + stride * i), and which of them land inside it (those outside only reach the padding)."""
    offset = window - 1 - pad
    first = max(0, -(offset // stride)) if offset < 0 else 0
    last = min(out_size - 1, (size + window - 2 - offset) // stride)
    return (slice(offset + stride * first, offset + stride * last + 1, stride), slice(first, last + 1))


def _tournament(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, Any]:
    """The maximum of a 2x2 window's corners a, b (top row), c, d, and which holds it, as a tournament of two pairs:
    each comparison is strict, so a tie keeps the earlier corner (the book's argmax's choice)."""
    second, fourth = b > a, d > c
    low, high = np.maximum(a, b), np.maximum(c, d)
    upper = high > low
    return np.maximum(low, high), (second, fourth, upper)


def conv_pool_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int,
                      workspace: dict | None = None, relu: bool = False) -> tuple[np.ndarray, Any]:
    """A convolution, then 2x2 max pooling of stride 2, then max(0, x) if ``relu``: (N, FN, out_h // 2,
    out_w // 2) (a view of channels-last memory) and what ``conv_pool_backward`` needs.

    The window matrix's rows go window corner by window corner, so the product is four contiguous blocks and the
    pooling compares whole blocks: pooling strided views of the (N, H, W, FN) output moves runs of FN values, four
    to five times slower. Output rows or columns no window covers (an odd size) are not computed. The ReLU's
    gradient mask is folded into the choice of the window's pair, so it costs the backward pass nothing.
    """
    n, c, h, w = x.shape
    fn, _, fh, fw = W.shape
    out_h, out_w = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    pooled = (n, out_h // 2, out_w // 2)
    col = _window_matrix(_channels_last(x, pad, workspace), fh, fw, stride, pooled, True, workspace)
    corners = (col @ _filter_matrix(W, b)).reshape(4, -1)
    out, (second, fourth, upper) = _tournament(*corners)
    lower = None  # the lower pair's choice: the complement of upper's
    if relu:
        np.maximum(out, 0, out=out)  # NaN stays NaN, and passes its gradient, as Relu's does
        passes = np.logical_not(out <= 0)
        lower = np.less(upper, passes)  # not upper, and passes
        upper &= passes
    choice = (second, fourth, upper, lower)
    return out.reshape(pooled + (fn,)).transpose(0, 3, 1, 2), (col, choice, (n, c, h, w), (out_h, out_w))


def conv_pool_backward(dout: np.ndarray, saved: Any, W: np.ndarray, stride: int, pad: int,
                       input_gradient: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(dx or None, dW, db) from ``dout`` (N, FN, out_h // 2, out_w // 2) and ``conv_pool_forward``'s ``saved``:
    each output's gradient goes to its window's chosen corner (times the 0/1 choices, then the rest by
    subtraction, which is exact: one of the two terms is 0), then one product gives the filters' gradients."""
    col, (second, fourth, upper, lower), x_shape, (out_h, out_w) = saved
    fn = W.shape[0]
    grad = np.ascontiguousarray(dout.transpose(0, 2, 3, 1))
    if grad.size != upper.size or grad.shape[3] != fn:
        raise ValueError(f"Convolution and Pooling backward: dout of shape {tuple(dout.shape)} does not fit the "
                         f"forward pass, whose output had {upper.size} values over {fn} filters")
    n, ph, pw = grad.shape[:3]
    flat = grad.reshape(-1)
    corners = np.empty((4, flat.size), dtype=grad.dtype)
    high = np.multiply(flat, upper, out=corners[2])
    # the lower pair's share: the rest of the gradient, or (with a ReLU) its own choice
    low = np.subtract(flat, high, out=corners[0]) if lower is None else np.multiply(flat, lower, out=corners[0])
    np.multiply(low, second, out=corners[1])
    np.subtract(low, corners[1], out=corners[0])
    np.multiply(high, fourth, out=corners[3])
    np.subtract(high, corners[3], out=corners[2])
    dW, db = _filter_gradients(corners.reshape(-1, fn), col, W)
    if not input_gradient:
        return None, dW, db
    full = np.zeros((n, out_h, out_w, fn), dtype=grad.dtype)  # rows and columns no window covers: 0
    for index, corner in enumerate(corners):
        a, b = divmod(index, 2)
        full[:, a:2 * ph:2, b:2 * pw:2, :] = corner.reshape(n, ph, pw, fn)
    return _input_gradient(full, W, x_shape, stride, pad), dW, db


def pool_forward(x: np.ndarray, pool_h: int, pool_w: int, stride: int, pad: int) -> tuple[np.ndarray, Any]:
    """Max pooling: (N, C, out_h, out_w) (a view of channels-last memory) and what ``pool_backward`` needs."""
    n, c, h, w = x.shape
    out_h, out_w = conv_output_size(h, pool_h, stride, pad), conv_output_size(w, pool_w, stride, pad)
    image = _channels_last(x, pad)
    views = [image[:, fy:fy + stride * (out_h - 1) + 1:stride, fx:fx + stride * (out_w - 1) + 1:stride, :]
             for fy in range(pool_h) for fx in range(pool_w)]
    if len(views) == 4:
        out, choice = _tournament(*views)
    else:
        out = views[0].copy()
        choice = np.zeros(out.shape, dtype=np.int32)
        for index, view in enumerate(views[1:], 1):
            np.copyto(choice, index, where=view > out)
            np.maximum(out, view, out=out)
    return out.transpose(0, 3, 1, 2), (choice, (n, c, h, w), pool_h, pool_w, stride, pad)


def pool_backward(dout: np.ndarray, saved: Any) -> np.ndarray:
    """dx: each output's gradient at its window's first maximum, summed where windows overlap.

    The gradient is multiplied by each position's 0/1 choice (NumPy's ``where`` is several times slower here), so
    a NaN in ``dout`` reaches the whole window rather than its maximum only: the weights' gradients are NaN either
    way.
    """
    choice, (n, c, h, w), pool_h, pool_w, stride, pad = saved
    grad = np.ascontiguousarray(dout.transpose(0, 2, 3, 1))  # channels-last, as the choices are
    out_h, out_w = grad.shape[1], grad.shape[2]
    tiled = stride == pool_h == pool_w and pad == 0 and h == stride * out_h and w == stride * out_w
    make = np.empty if tiled else np.zeros  # windows that tile the image write every element
    dx = make((n, h + 2 * pad, w + 2 * pad, c), dtype=grad.dtype)

    def window_position(index: int) -> np.ndarray:
        fy, fx = divmod(index, pool_w)
        return dx[:, fy:fy + stride * (out_h - 1) + 1:stride, fx:fx + stride * (out_w - 1) + 1:stride, :]

    if isinstance(choice, tuple):
        second, fourth, upper = choice
        low, high = grad * ~upper, grad * upper
        masks = [(low, ~second), (low, second), (high, ~fourth), (high, fourth)]
    else:
        masks = [(grad, choice == index) for index in range(pool_h * pool_w)]
    for index, (part, chosen) in enumerate(masks):
        if tiled:
            np.multiply(part, chosen, out=window_position(index))
        else:
            window_position(index)[...] += part * chosen
    return dx[:, pad:pad + h, pad:pad + w, :].transpose(0, 3, 1, 2)
