"""im2col / col2im: the book's ``common/util.py``, for any array library.

A convolution over (N, C, H, W) input becomes one matrix product once every filter window is laid out as a row:
``im2col`` makes the (N * out_h * out_w, C * filter_h * filter_w) matrix of windows, rows ordered (n, y, x) and
columns (c, fy, fx) as the book orders them; ``col2im`` adds such a matrix back into an image (overlapping windows
summed), which is the backward pass of ``im2col``.

Both loop over the filter window (filter_h * filter_w slices, never over output positions), so they need only the
standard's slicing: im2col stacks the strided slices, col2im adds each into a zero image slice by slice (each slice
is one non-overlapping assignment, so no scatter-add is needed).
"""

from __future__ import annotations

from typing import Any

from .backend import device_of, namespace, native_device

__all__ = ["im2col", "col2im", "conv_output_size"]


def conv_output_size(size: int, filter_size: int, stride: int = 1, pad: int = 0) -> int:
    """Output positions along one axis: (size + 2 * pad - filter_size) // stride + 1; ValueError if none."""
    _check_window(filter_size, stride, pad)
    out = (size + 2 * pad - filter_size) // stride + 1
    if out < 1:
        raise ValueError(f"a window of {filter_size} with pad {pad} does not fit an input of size {size}: the padded "
                         f"input must be at least as large as the window ({size + 2 * pad} < {filter_size})")
    return out


def is_whole(value: Any, least: int) -> bool:
    """Whether ``value`` is an integer >= ``least`` (True and False are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_window(filter_size: int, stride: int, pad: int) -> None:
    for name, value, least in (("filter size", filter_size, 1), ("stride", stride, 1), ("pad", pad, 0)):
        if not is_whole(value, least):
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def pad_images(xp: Any, x: Any, pad: int) -> Any:
    """``x`` (N, C, H, W) with ``pad`` zeros around H and W (concatenation: the standard has no pad)."""
    if pad == 0:
        return x
    n, c, h, w = x.shape
    with device_of(x).active():
        rows = xp.zeros((n, c, pad, w), dtype=x.dtype, device=native_device(x))
        x = xp.concat([rows, x, rows], axis=2)
        cols = xp.zeros((n, c, h + 2 * pad, pad), dtype=x.dtype, device=native_device(x))
    return xp.concat([cols, x, cols], axis=3)


def im2col(input_data: Any, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> Any:
    """Windows of ``input_data`` (N, C, H, W) as rows: (N * out_h * out_w, C * filter_h * filter_w)."""
    xp = namespace(input_data)
    _check_images("input_data", input_data)
    n, c, h, w = input_data.shape
    out_h = conv_output_size(h, filter_h, stride, pad)
    out_w = conv_output_size(w, filter_w, stride, pad)
    img = pad_images(xp, input_data, pad)
    # stops inside the array: the standard leaves out-of-bounds slice stops unspecified
    windows = [img[:, :, y:y + stride * (out_h - 1) + 1:stride, x:x + stride * (out_w - 1) + 1:stride]
               for y in range(filter_h) for x in range(filter_w)]
    col = xp.stack(windows, axis=2)  # (N, C, FH*FW, out_h, out_w)
    col = xp.permute_dims(col, (0, 3, 4, 1, 2))
    return xp.reshape(col, (n * out_h * out_w, c * filter_h * filter_w))


def col2im(col: Any, input_shape: tuple[int, int, int, int], filter_h: int, filter_w: int, stride: int = 1,
           pad: int = 0) -> Any:
    """The image (``input_shape``) whose im2col's backward pass is ``col``: each row added back into its window."""
    xp = namespace(col)
    n, c, h, w = input_shape
    out_h = conv_output_size(h, filter_h, stride, pad)
    out_w = conv_output_size(w, filter_w, stride, pad)
    expected = (n * out_h * out_w, c * filter_h * filter_w)
    if tuple(col.shape) != expected:
        raise ValueError(f"col of shape {tuple(col.shape)} does not fit images of shape {tuple(input_shape)} with a "
                         f"{filter_h}x{filter_w} window, stride {stride}, pad {pad}: expected {expected}")
    col = xp.permute_dims(xp.reshape(col, (n, out_h, out_w, c, filter_h, filter_w)), (0, 3, 4, 5, 1, 2))
    with device_of(col).active():
        img = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=col.dtype, device=native_device(col))
    for y in range(filter_h):
        for x in range(filter_w):
            window = (slice(None), slice(None), slice(y, y + stride * (out_h - 1) + 1, stride),
                      slice(x, x + stride * (out_w - 1) + 1, stride))
            img[window] = img[window] + col[:, :, y, x, :, :]
    return img[:, :, pad:h + pad, pad:w + pad]


def _check_images(name: str, x: Any) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} of shape {tuple(x.shape)} is not a batch of images: expected (N, C, H, W), e.g. "
                         "MNIST as (N, 1, 28, 28) (load_mnist(flatten=False))")
