"""Backend-specific fast paths, chosen by the namespace of the arrays: a stack of Affine layers (training step,
label predictor) and the convolution and pooling layers.

A layer under the model: a network describes itself with an ``AffineStackSpec`` and gets back a training step or
a label predictor; nothing here imports or touches a network. Each module here is allowed to name its library;
each is checked against the generic array-API path by tests/test_kernels.py. Where none applies (another library,
an optimizer or activation without a fast path), these return None and the generic path runs: the fast paths
change speed, never results beyond rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from array_api_compat import is_cupy_namespace, is_numpy_namespace

from ..backend import namespace
from ._fused import ACTIVATIONS

__all__ = ["AffineStackSpec", "fused_step", "label_predictor", "conv_kernels"]


@dataclass(frozen=True)
class AffineStackSpec:
    """What a kernel needs to know of Affine - activation - ... - Affine - softmax cross-entropy.

    - sizes: the layer widths, input first.
    - activation: "relu" or "sigmoid" (others have no fast path).
    - weight_decay_lambda: returns the L2 decay lambda (0.5 * lambda * sum(W**2) in the loss); read on every step,
      as the generic path reads it.
    - params: returns the current dict of W1, b1, W2, ...; read on every step, so whatever replaced the parameters
      since is seen.
    - rebind: called with views of flat buffers after the kernel moved the parameters into them; the owner puts
      them in its dict and rebuilds whatever holds the old arrays.
    """

    sizes: tuple[int, ...]
    activation: str
    weight_decay_lambda: Callable[[], float]
    params: Callable[[], dict[str, Any]]
    rebind: Callable[[dict[str, Any]], None]

    @property
    def depth(self) -> int:
        """The number of Affine layers."""
        return len(self.sizes) - 1


def _module_for(spec: AffineStackSpec) -> ModuleType | None:
    """The kernel module for the library of ``spec``'s parameters, or None."""
    xp = namespace(spec.params()["W1"])
    if is_numpy_namespace(xp):
        from . import numpy_cpu

        return numpy_cpu
    if is_cupy_namespace(xp):
        from . import cupy_cuda

        return cupy_cuda
    return None


def fused_step(spec: AffineStackSpec, optimizer: Any) -> Callable[..., Any] | None:
    """A callable ``step(x, t, indices=None) -> loss`` (a 0-D array on the device) doing gradient and update in
    one, or None where there is no fast path for these parameters, this activation or this optimizer."""
    module = _module_for(spec)
    return None if module is None else module.FusedStep.create(spec, optimizer)


def label_predictor(spec: AffineStackSpec) -> Callable[[Any, int], Any] | None:
    """A callable ``labels(x, batch_size) -> predicted classes`` (integers, on the device), or None (generic path)."""
    if spec.activation not in ACTIVATIONS:
        return None
    module = _module_for(spec)
    if module is None:
        return None
    predict = module.predict_labels
    return lambda x, batch_size: predict(spec, x, batch_size)



def conv_kernels(xp: ModuleType) -> ModuleType | None:
    """The module of convolution and pooling kernels for namespace ``xp`` (``conv_forward``, ``conv_backward``,
    ``pool_forward``, ``pool_backward``, and ``conv_pool_forward`` / ``conv_pool_backward`` for
    ``layers.PooledConvolution``), or None: the layers' generic im2col path."""
    if is_numpy_namespace(xp):
        from . import numpy_conv

        return numpy_conv
    if is_cupy_namespace(xp):
        from . import cupy_conv

        return cupy_conv
    return None
