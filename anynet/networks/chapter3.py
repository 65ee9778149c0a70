"""The book's chapter-3 networks: the hand-picked 2-3-2-2 network and the sigmoid MNIST network of fixed weights."""

from __future__ import annotations

from typing import Any

from ..backend import Device, namespace, on_device_of
from ..backend import device as make_device
from ..functions import identity_function, sigmoid, softmax

__all__ = ["init_network", "forward", "predict"]

# The book's hand-picked weights for the 2-3-2-2 network of chapter 3.
_CH3_WEIGHTS = {
    "W1": [[0.1, 0.3, 0.5], [0.2, 0.4, 0.6]],
    "b1": [0.1, 0.2, 0.3],
    "W2": [[0.1, 0.4], [0.2, 0.5], [0.3, 0.6]],
    "b2": [0.1, 0.2],
    "W3": [[0.1, 0.3], [0.2, 0.4]],
    "b3": [0.1, 0.2],
}


def init_network(device: str | Device = "cpu", dtype: Any = "float32") -> dict[str, Any]:
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


def predict(network: dict[str, Any], x: Any) -> Any:
    """The book's chapter-3 MNIST predict: class probabilities from sigmoid, sigmoid, softmax layers.

    ``network`` holds W1, b1, W2, b2, W3, b3 (e.g. from ``anynet.io.load_params("sample_weight.pkl")``); ``x``
    is one flattened image or a batch. Host input (NumPy) is moved onto the weights' device.
    """
    W1 = network["W1"]
    x = on_device_of(W1, x)
    if x.shape[-1] != W1.shape[0]:
        raise ValueError(
            f"input has {x.shape[-1]} features per sample, the network's W1 expects {W1.shape[0]} "
            f"(input shape {tuple(x.shape)}, W1 shape {tuple(W1.shape)}); flatten images to (N, {W1.shape[0]})"
        )
    return softmax(forward(network, x))
