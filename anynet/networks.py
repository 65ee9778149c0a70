"""Networks: the book's chapter-3 three-layer network with fixed weights."""

from __future__ import annotations

from typing import Any

from .backend import Device, device as make_device, namespace
from .functions import identity_function, sigmoid

__all__ = ["init_network", "forward"]

# The book's hand-picked weights for the 2-3-2-2 network of chapter 3.
_CH3_WEIGHTS = {
    "W1": [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]],
    "b1": [0.1, 0.2, 0.3],
    "W2": [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]],
    "b2": [0.1, 0.2],
    "W3": [[0.1, 0.3], [0.2, 0.4]],
    "b3": [0.1, 0.2],
}


def init_network(device: "str | Device" = "cpu", dtype: Any = "float32") -> dict[str, Any]:
    """The book's chapter-3 network: a dict W1, b1, W2, b2, W3, b3 of fixed weights on ``device``."""
    where = make_device(device)
    return {name: where.asarray(value, dtype=dtype) for name, value in _CH3_WEIGHTS.items()}


def forward(network: dict[str, Any], x: Any) -> Any:
    """The chapter-3 forward pass: two sigmoid layers and an identity output, for one input or a batch."""
    W1, W2, W3 = network["W1"], network["W2"], network["W3"]
    b1, b2, b3 = network["b1"], network["b2"], network["b3"]
    namespace(x, W1)  # a clear error if x and the weights live on different devices
    z1 = sigmoid(x @ W1 + b1)
    z2 = sigmoid(z1 @ W2 + b2)
    return identity_function(z2 @ W3 + b3)
