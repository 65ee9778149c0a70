"""Backend-specific fast paths, chosen by the namespace of the network's parameters.

Each module here is allowed to name its library; each is checked against the generic array-API path by
tests/test_kernels.py. Where none applies (another library, an optimizer or layer without a fast path), the
generic path runs: the fast paths change speed, never results beyond rounding.
"""

from __future__ import annotations

from array_api_compat import is_cupy_namespace, is_numpy_namespace

from ..backend import namespace


def fused_step(network, optimizer):
    """A callable ``step(x, t, indices=None) -> loss`` doing gradient and update in one, or None."""
    from ..networks import _AffineStack

    if not isinstance(network, _AffineStack):
        return None
    xp = namespace(network.params["W1"])
    if is_numpy_namespace(xp):
        from .numpy_cpu import FusedStep
    elif is_cupy_namespace(xp):
        from .cupy_cuda import FusedStep
    else:
        return None
    return FusedStep.create(network, optimizer)


def predict_labels(network):
    """A callable ``labels(x, batch_size) -> predicted classes`` for ``network``, or None (generic path)."""
    xp = namespace(network.params["W1"])
    if network.activation not in ("relu", "sigmoid"):
        return None
    if is_numpy_namespace(xp):
        from .numpy_cpu import predict_labels as labels
    elif is_cupy_namespace(xp):
        from .cupy_cuda import predict_labels as labels
    else:
        return None
    return lambda x, batch_size: labels(network, x, batch_size)
