"""PooledConvolution: a Convolution, 2x2 max Pooling of stride 2 and optionally a Relu as one step (NumPy fuses
them: anynet/_kernels/numpy_conv.py's conv_pool_forward / conv_pool_backward). On every device it must give what
the layers give one after the other, and LayerNet must run the book's conv networks through it."""

import contextlib

import numpy as np
import pytest

import anynet.layers
from anynet._kernels import numpy_conv
from anynet.backend import to_numpy
from anynet.layers import Convolution, PooledConvolution, Pooling, Relu
from anynet.networks import DeepConvNet, SimpleConvNet
from tests.helpers import assert_close

# (N, C, H, W), (FN, FH, FW), stride, pad
CASES = [
    ((3, 1, 20, 20), (6, 5, 5), 1, 0),   # SimpleConvNet's: one channel, the window matrix a row per filter tap
    ((2, 1, 16, 15), (4, 3, 3), 2, 1),   # a row per tap, strided and padded, an odd output width
    ((2, 4, 7, 7), (5, 3, 3), 1, 1),     # DeepConvNet's third pool: a 7x7 output, its last row and column unpooled
    ((2, 3, 9, 11), (4, 3, 2), 2, 2),    # stride 2, padding, a non-square filter, odd and even output sizes
    ((2, 16, 6, 6), (8, 3, 3), 1, 1),    # many channels: the window matrix a row per position
]
IDS = ["first-layer", "taps-strided-padded", "odd-output", "strided-padded", "many-channels"]


@contextlib.contextmanager
def _generic_path():
    """The layers' generic im2col path on every library (the reference: the book's formulation)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(anynet.layers, "conv_kernels", lambda xp: None)
        yield


def _layers(device, W, b, stride, pad, relu):
    conv = Convolution(device.asarray(W), device.asarray(b), stride, pad)
    return conv, Pooling(2, 2, stride=2), (Relu() if relu else None)


def _one_after_the_other(device, x, W, b, stride, pad, relu, dout, input_gradient):
    """The layers in the book's order (Convolution, Relu, Pooling) on the generic path: out, dx, dW, db."""
    conv, pool, act = _layers(device, W, b, stride, pad, relu)
    conv.input_gradient = input_gradient
    with _generic_path():
        out = conv.forward(device.asarray(x))
        out = pool.forward(act.forward(out) if act else out)
        grad = pool.backward(device.asarray(dout))
        dx = conv.backward(act.backward(grad) if act else grad)
    return out, dx, conv.dW, conv.db


@pytest.mark.parametrize("relu", [False, True], ids=["pool", "pool-relu"])
@pytest.mark.parametrize("input_gradient", [False, True], ids=["no-dx", "dx"])
@pytest.mark.parametrize("shape, filters, stride, pad", CASES, ids=IDS)
def test_the_step_gives_what_the_layers_give_one_after_the_other(device, shape, filters, stride, pad, relu,
                                                                 input_gradient):
    rng = np.random.default_rng(sum(shape) + stride + pad)
    fn, fh, fw = filters
    x = rng.integers(-2, 3, size=shape).astype(np.float32)  # small integers: ties within windows, zeros for Relu
    x[0, 0] = 0.5  # a constant patch: windows whose four corners tie
    W = rng.normal(scale=0.5, size=(fn, shape[1], fh, fw)).astype(np.float32)
    W[0] = 0.0  # a filter whose outputs are all its bias: ties everywhere
    b = rng.normal(size=fn).astype(np.float32)
    b[0] = 0.0  # ... at zero, where Relu's gradient stops
    conv, pool, act = _layers(device, W, b, stride, pad, relu)
    conv.input_gradient = input_gradient
    step = PooledConvolution(conv, pool, act)
    out = step.forward(device.asarray(x))
    dout = rng.normal(size=tuple(out.shape)).astype(np.float32)
    dx = step.backward(device.asarray(dout))
    expected = _one_after_the_other(device, x, W, b, stride, pad, relu, dout, input_gradient)

    # on the CPU the fused kernels ran; elsewhere the layers one after the other
    assert (step._backward is numpy_conv.conv_pool_backward) == (device.name == "cpu")
    assert_close(out, to_numpy(expected[0]), device=device, rtol=1e-6, atol=1e-6)
    if act is not None:
        assert act.out is out and np.array_equal(to_numpy(act.mask), to_numpy(out) <= 0)
    if input_gradient:
        assert_close(dx, to_numpy(expected[1]), device=device, rtol=1e-5, atol=1e-6)
    else:
        assert dx is None and expected[1] is None
    # the filters' gradients sum the same products in another order
    assert_close(conv.dW, to_numpy(expected[2]), device=device, rtol=1e-5, atol=1e-5)
    assert_close(conv.db, to_numpy(expected[3]), device=device, rtol=1e-5, atol=1e-5)


def test_nan_stays_nan_and_passes_its_gradient_as_relu_does(device):
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 0] = np.nan
    W, b = np.ones((1, 1, 3, 3), np.float32), np.zeros(1, np.float32)
    step = PooledConvolution(*_layers(device, W, b, 1, 0, relu=True))
    out = to_numpy(step.forward(device.asarray(x)))
    expected = _one_after_the_other(device, x, W, b, 1, 0, True, np.ones((1, 1, 2, 2), np.float32), True)
    assert np.isnan(out[0, 0, 0, 0]) and np.array_equal(out, to_numpy(expected[0]), equal_nan=True)
    step.conv.input_gradient = True
    dx = to_numpy(step.backward(device.asarray(np.ones((1, 1, 2, 2), np.float32))))
    assert np.array_equal(np.isnan(dx), np.isnan(to_numpy(expected[1])))
    assert np.isnan(to_numpy(step.conv.dW)).any() and np.isnan(to_numpy(expected[2])).any()


def test_the_layers_own_backward_asks_for_their_own_forward_pass():
    """After the fused step the convolution and pooling hold none of it: their backward refuses rather than use
    an older pass."""
    conv, pool, act = _layers(_cpu(), np.ones((2, 1, 3, 3), np.float32), np.zeros(2, np.float32), 1, 0, True)
    conv.forward(np.ones((1, 1, 6, 6), np.float32))  # an older pass of the layer itself
    step = PooledConvolution(conv, pool, act)
    out = step.forward(np.ones((1, 1, 6, 6), np.float32))
    for layer in (conv, pool):
        with pytest.raises(RuntimeError, match=rf"{type(layer).__name__}.backward needs the input of a forward pass"):
            layer.backward(np.ones((1, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"dout of shape \(1, 2, 3, 3\) does not fit the forward pass"):
        step.backward(np.ones((1, 2, 3, 3), np.float32))
    assert step.backward(np.ones(out.shape, np.float32)) is not None  # the step's own pass is still there


def _cpu():
    import anynet

    return anynet.device("cpu")


def test_other_pooling_and_too_small_outputs_run_the_layers_themselves(device):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 2, 8, 8)).astype(np.float32)
    W, b = rng.normal(size=(3, 2, 3, 3)).astype(np.float32), np.zeros(3, np.float32)
    conv = Convolution(device.asarray(W), device.asarray(b))
    overlapping = PooledConvolution(conv, Pooling(3, 3, stride=2))
    reference = Pooling(3, 3, stride=2).forward(Convolution(device.asarray(W), device.asarray(b)).forward(
        device.asarray(x)))
    assert_close(overlapping.forward(device.asarray(x)), to_numpy(reference), device=device, rtol=0)
    one_pixel = PooledConvolution(Convolution(device.asarray(W), device.asarray(b)), Pooling(2, 2, stride=2))
    with pytest.raises(ValueError, match=r"a window of 2 with pad 0 does not fit an input of size 1"):
        one_pixel.forward(device.asarray(x[:, :, :3, :3]))  # a 1x1 convolution output: the Pooling layer's message


def _conv5x5(device):
    return Convolution(device.asarray(np.ones((2, 1, 5, 5), np.float32)), device.asarray(np.zeros(2, np.float32)))


@pytest.mark.parametrize("layer, size, message", [
    (lambda device: Pooling(2, 2, stride=2), 1, r"a window of 2 with pad 0 does not fit an input of size 1: .*1 < 2"),
    (lambda device: Pooling(3, 2, stride=1, pad=1), 0, r"a window of 3 with pad 1 does not fit an input of size 0"),
    (_conv5x5, 4, r"a window of 5 with pad 0 does not fit an input of size 4"),
], ids=["pool", "padded-pool", "conv"])
def test_a_window_larger_than_the_input_is_an_error_on_every_device(device, layer, size, message):
    """The NumPy fast path gave an empty output here where the generic path raised."""
    with pytest.raises(ValueError, match=message):
        layer(device).forward(device.asarray(np.ones((2, 1, size, size), np.float32)))


def test_layernet_runs_the_book_conv_networks_through_the_step():
    simple, deep = SimpleConvNet(seed=0), DeepConvNet(seed=0)
    assert [type(step).__name__ for step in simple._order] == ["PooledConvolution", "Affine", "Relu", "Affine"]
    steps = [step for step in deep._order if isinstance(step, PooledConvolution)]
    assert [(step.conv, step.pool, step.relu) for step in steps] == [
        (deep.layers[f"Conv{2 * k}"], deep.layers[f"Pool{k}"], deep.layers[f"Relu{2 * k}"]) for k in (1, 2, 3)]
