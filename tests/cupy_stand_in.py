"""A stand-in ``cupy`` for running the CUDA fast paths' host logic where there is no GPU.

Each ``ElementwiseKernel`` is looked up by its name in a table the test gives (name -> (number of inputs, number of
outputs, NumPy version of that kernel's CUDA code)), and ``cublas.gemm`` computes ``alpha * op(a) @ op(b) + beta *
out``. The stand-in keeps CuPy's rules where they can bite: two GPUs, new arrays on the *current* one, every kernel
refusing an array of another GPU (CuPy without peer access) or a host array, ``Type is mismatched`` for kernel
arguments of one type letter with different dtypes (or of a named type with another dtype), non-raw arguments that
do not broadcast to the outputs' shape, ``take`` refusing an output of another dtype, gemm's asserts (2-D operands of
one float dtype, an output of the product's shape and dtype). Raw arguments are read as CuPy's ``CArray`` reads
``a[i]``: the i-th element in C order, whatever the strides. It does not run the CUDA code: tests/test_kernels.py
does that where a GPU is usable.
"""

from __future__ import annotations

import importlib
import re
import sys
import types

import numpy as np

GPUS = 2  # two GPUs, so that work landing on GPU 0 instead of GPU 1 fails


class Device:
    """cupy.cuda.Device: an id; as a context manager it makes itself the current device."""

    current = 0

    def __init__(self, index=None):
        self.id = Device.current if index is None else int(index)
        assert 0 <= self.id < GPUS
        self._previous: list = []

    def __enter__(self):
        self._previous.append(Device.current)
        Device.current = self.id
        return self

    def __exit__(self, *exc):
        Device.current = self._previous.pop()
        return False

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class Array(np.ndarray):
    """A CuPy array: NumPy's values, plus the GPU it lives on (views keep their base's)."""

    def __array_finalize__(self, obj):
        self.device_id = getattr(obj, "device_id", Device.current)

    @property
    def device(self):
        return Device(self.device_id)


def here(host):
    """A new array on the current device, as every CuPy creation function and result is."""
    made = np.asarray(host).view(Array)
    made.device_id = Device.current
    return made


def check(*values):
    """CuPy's refusal of host arrays and of arrays on another GPU (without peer access) in a kernel launch."""
    for value in values:
        if isinstance(value, np.ndarray) and not isinstance(value, Array):
            raise TypeError(f"Unsupported type {type(value)}")
        if isinstance(value, Array) and value.device_id != Device.current:
            raise ValueError(f"The device where the array resides ({value.device_id}) is different from the current "
                             f"device ({Device.current}). Peer access is unavailable between these devices.")


def _parse_params(text):
    """ElementwiseKernel's "raw T logits, int64 label" as [(raw, type, name), ...]."""
    params = []
    for part in text.split(","):
        words = part.split()
        params.append((words[0] == "raw", words[-2], words[-1]))
    return params


class ElementwiseKernel:
    """cupy.ElementwiseKernel: checks its arguments as CuPy does, then runs the NumPy version of its CUDA code from
    ``table`` (set per stand-in). Keeps its parameter lists and code, for a compile check of the CUDA source."""

    table: dict = {}

    def __init__(self, in_params, out_params, operation, name):
        self.name, self.in_params, self.out_params, self.operation = name, in_params, out_params, operation
        self.nin, self.nout, self.function = self.table[name]
        self.params = _parse_params(in_params) + _parse_params(out_params)
        assert (len(_parse_params(in_params)), len(_parse_params(out_params))) == (self.nin, self.nout), name

    def __call__(self, *args):
        assert len(args) == self.nin + self.nout, f"{self.name} takes {self.nin} inputs and {self.nout} outputs"
        check(*args)
        # CuPy's type rule: every array bound to one type letter has one dtype; a named type must match exactly
        bound: dict = {}
        for (_, kind, _), value in zip(self.params, args):
            if not isinstance(value, np.ndarray):
                continue
            if re.fullmatch(r"[A-Z]", kind):
                bound.setdefault(kind, set()).add(value.dtype)
            elif value.dtype != np.dtype(kind):
                raise TypeError(f"Type is mismatched. {self.name} {kind} {value.dtype}")
        for kind, dtypes in bound.items():
            if len(dtypes) > 1:
                raise TypeError(f"Type is mismatched. {self.name} {kind} {' '.join(sorted(map(str, dtypes)))}")
        # the launch covers the outputs' shape, to which every non-raw input must broadcast
        looped = [value for (raw, _, _), value in zip(self.params, args) if not raw and isinstance(value, np.ndarray)]
        outputs = [value for (raw, _, _), value in zip(self.params[self.nin:], args[self.nin:]) if not raw]
        if outputs and np.broadcast_shapes(*(value.shape for value in looped)) != outputs[0].shape:
            raise ValueError(f"{self.name}: arguments of shapes {[value.shape for value in looped]} do not broadcast "
                             f"to the output's {outputs[0].shape}")
        with np.errstate(over="ignore", invalid="ignore"):
            self.function(*args)


def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """cupy.cublas.gemm: out = alpha * op(a) @ op(b) + beta * out, with CuPy's checks of its arguments (2-D operands
    of one float dtype, an output of the product's shape and dtype: without one CuPy returns a Fortran-ordered
    array, which no caller here wants)."""
    check(a, b, out)
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype.name not in ("float32", "float64"):
        raise TypeError(f"gemm takes two matrices of one dtype, got {a.dtype} {a.shape} and {b.dtype} {b.shape}")
    product = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
    if out is None or out.shape != product.shape or out.dtype != a.dtype:
        raise ValueError(f"gemm output {None if out is None else (out.shape, out.dtype)} for {product.shape}")
    # as cuBLAS: with beta 0 the output is not read (it may hold anything, NaN included)
    out[...] = alpha * product if beta == 0 else alpha * product + beta * out
    return out


def _take(a, indices, axis=None, out=None):
    check(a, indices, out)
    if out is not None and out.dtype != a.dtype:
        raise TypeError("Output dtype mismatch")
    result = np.take(np.asarray(a), np.asarray(indices), axis=axis)
    if out is None:
        return here(result)
    out[...] = result
    return out


def _matmul(a, b, out=None):
    check(a, b, out)
    result = np.asarray(a) @ np.asarray(b)
    if out is None:
        return here(result)
    if out.dtype != result.dtype:
        raise TypeError(f"matmul output dtype {out.dtype} for a {result.dtype} product")
    out[...] = result
    return out


def _sum(a, axis=None, out=None):
    check(a, out)
    result = np.sum(np.asarray(a), axis=axis)
    if out is None:
        return here(result)
    out[...] = result
    return out


def _checked(function):
    """A NumPy function with CuPy's placement: arguments on the current device, the result made there."""
    def on_device(*args, **kwargs):
        check(*args, *kwargs.values())
        plain = [np.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        return here(function(*plain, **kwargs))
    return on_device


def _create(function):
    return lambda *args, **kwargs: here(function(*args, **kwargs))


def _copyto(dst, src):
    check(dst, src)
    np.copyto(dst, src)


def _concatenate(arrays):
    check(*arrays)
    return here(np.concatenate([np.asarray(a) for a in arrays]))


def _ascontiguousarray(a, dtype=None):
    """The same array when it is C-contiguous (and of ``dtype``), else a copy on the current device."""
    check(a)
    if a.flags.c_contiguous and (dtype is None or a.dtype == np.dtype(dtype)):
        return a
    return here(np.ascontiguousarray(np.asarray(a), dtype=dtype))


def _result_type(*arrays_and_dtypes):
    return np.result_type(*arrays_and_dtypes)


def stand_in_cupy(kernels):
    """A new stand-in ``cupy`` module whose ElementwiseKernels are the NumPy versions in ``kernels``."""
    cupy = types.ModuleType("cupy")
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"):
        setattr(cupy, name, getattr(np, name))
    for name in ("empty", "zeros", "ones", "asarray", "arange"):
        setattr(cupy, name, _create(getattr(np, name)))
    for name in ("argmax", "vdot", "min", "max", "reshape", "maximum", "where"):
        setattr(cupy, name, _checked(getattr(np, name)))
    cupy.concatenate, cupy.ascontiguousarray, cupy.result_type = _concatenate, _ascontiguousarray, _result_type
    cupy.take, cupy.matmul, cupy.sum, cupy.copyto = _take, _matmul, _sum, _copyto
    cupy.ndarray = Array
    cupy.ElementwiseKernel = type("ElementwiseKernel", (ElementwiseKernel,), {"table": kernels})
    cupy.cuda = types.SimpleNamespace(Device=Device)
    cupy.cublas = types.ModuleType("cupy.cublas")
    cupy.cublas.gemm = gemm
    return cupy


def import_against_stand_in(name, kernels):
    """The module ``name`` (say anynet._kernels.cupy_cuda) imported against a stand-in cupy with ``kernels``; the
    real modules (where they were imported) are put back afterwards, so that other tests see the real CuPy."""
    package, _, attribute = name.rpartition(".")
    saved = {key: sys.modules.get(key) for key in ("cupy", "cupy.cublas", name)}
    stand_in = stand_in_cupy(kernels)
    sys.modules.update({"cupy": stand_in, "cupy.cublas": stand_in.cublas})
    sys.modules.pop(name, None)
    try:
        module = importlib.import_module(name)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
        parent = sys.modules[package]
        if saved[name] is None and hasattr(parent, attribute):
            delattr(parent, attribute)
        elif saved[name] is not None:
            setattr(parent, attribute, saved[name])
    return module


def kernels_of(module):
    """The stand-in ElementwiseKernels a module made at import, by name."""
    return {kernel.name: kernel for kernel in vars(module).values() if isinstance(kernel, ElementwiseKernel)}
