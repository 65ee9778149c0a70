"""The CUDA fast path's host side, run where there is no GPU.

``anynet._kernels.cupy_cuda`` is imported against a stand-in ``cupy`` whose elementwise kernels are NumPy versions of
the formulas in their CUDA code and whose ``cublas.gemm`` computes ``alpha * op(a) @ op(b) + beta * out`` with
CuPy's argument checks. That runs the step's logic (which GEMM with which alpha and beta into which buffer, the bias
gradients, weight decay, the optimizer dispatch, prediction) against the generic array-API path on every machine.
It does not run the CUDA code: tests/test_kernels.py does that where a GPU is usable.
"""

import importlib
import sys
import types

import numpy as np
import pytest

import anynet._kernels
from anynet.networks import MultiLayerNet
from anynet.optimizers import OPTIMIZERS, make_optimizer
from tests.helpers import SETTINGS, assert_same_params, generic_step, problem


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _xent_labels(logits, label, classes, scale, row_loss, dy):
    log_p = _log_softmax(logits)
    target = np.eye(classes, dtype=logits.dtype)[label]
    row_loss[...] = -log_p[np.arange(len(label)), label]
    dy[...] = (np.exp(log_p) - target) * scale


def _xent_targets(logits, target, classes, scale, row_loss, dy):
    log_p = _log_softmax(logits)
    row_loss[...] = -(target * log_p).sum(axis=1)
    dy[...] = (np.exp(log_p) - target) * scale


def _adam(g, lr_t, beta1, beta2, eps, p, m, v):
    m += (1 - beta1) * (g - m)
    v += (1 - beta2) * (g * g - v)
    p -= lr_t * m / (np.sqrt(v) + eps)


def _momentum(g, lr, momentum, p, v):
    v[...] = momentum * v - lr * g
    p += v


def _nesterov(g, lr, momentum, p, v):
    v[...] = momentum * v - lr * g
    p += momentum * momentum * v
    p -= (1 + momentum) * lr * g


def _adagrad(g, lr, eps, p, h):
    h += g * g
    p -= lr * g / (np.sqrt(h) + eps)


def _rmsprop(g, lr, decay, eps, p, h):
    h[...] = decay * h + (1 - decay) * g * g
    p -= lr * g / (np.sqrt(h) + eps)


# name: (number of inputs, number of outputs, NumPy version of the CUDA code of that name)
KERNELS = {
    "anynet_bias_sigmoid": (2, 1, lambda a, b, z: np.copyto(z, 1 / (1 + np.exp(-(a + b))))),
    "anynet_bias_relu": (2, 1, lambda a, b, z: np.copyto(z, np.maximum(a + b, 0))),
    "anynet_bias": (2, 1, lambda a, b, z: np.copyto(z, a + b)),
    "anynet_sigmoid_backward": (2, 1, lambda z, d_in, d: np.copyto(d, d_in * z * (1 - z))),
    "anynet_relu_backward": (2, 1, lambda z, d_in, d: np.copyto(d, np.where(z > 0, d_in, 0))),
    "anynet_softmax_xent_labels": (4, 2, _xent_labels),
    "anynet_softmax_xent_targets": (4, 2, _xent_targets),
    "anynet_adam": (5, 3, _adam),
    "anynet_momentum": (3, 2, _momentum),
    "anynet_nesterov": (3, 2, _nesterov),
    "anynet_adagrad": (3, 2, _adagrad),
    "anynet_rmsprop": (4, 2, _rmsprop),
}


class _ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name):
        self.name = name
        self.nin, self.nout, self.function = KERNELS[name]
        assert (in_params.count(",") + 1, out_params.count(",") + 1) == (self.nin, self.nout), name

    def __call__(self, *args):
        assert len(args) == self.nin + self.nout, f"{self.name} takes {self.nin} inputs and {self.nout} outputs"
        with np.errstate(over="ignore"):
            self.function(*args)


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """cupy.cublas.gemm: out = alpha * op(a) @ op(b) + beta * out, with CuPy's checks of its arguments."""
    assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
    product = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
    assert out is not None and out.shape == product.shape and out.dtype == a.dtype, (out.shape, product.shape)
    out[...] = alpha * product + beta * out
    return out


def _stand_in_cupy():
    cupy = types.ModuleType("cupy")
    for name in ("argmax", "concatenate", "copyto", "empty", "float32", "float64", "int64", "matmul", "ones", "sum",
                 "take", "vdot", "zeros"):
        setattr(cupy, name, getattr(np, name))
    cupy.ElementwiseKernel = _ElementwiseKernel
    cupy.cublas = types.ModuleType("cupy.cublas")
    cupy.cublas.gemm = _gemm
    return cupy


@pytest.fixture(scope="module")
def cuda_path():
    """anynet._kernels.cupy_cuda on the stand-in; the real module (if one was imported) is put back afterwards."""
    name = "anynet._kernels.cupy_cuda"
    saved = {key: sys.modules.get(key) for key in ("cupy", "cupy.cublas", name)}
    stand_in = _stand_in_cupy()
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
        if saved[name] is None and hasattr(anynet._kernels, "cupy_cuda"):
            delattr(anynet._kernels, "cupy_cuda")
        elif saved[name] is not None:
            anynet._kernels.cupy_cuda = saved[name]
    assert {kernel.name for kernel in vars(module).values() if isinstance(kernel, _ElementwiseKernel)} == set(KERNELS)
    return module


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("decay", [0.0, 0.05])
@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_cuda_step_logic_equals_the_generic_path(cuda_path, optimizer, activation, decay, targets):
    nets = [MultiLayerNet(20, [16, 12], 5, activation=activation, weight_init_std=0.3, weight_decay_lambda=decay,
                          seed=3) for _ in range(2)]
    fast_opt, slow_opt = (make_optimizer(optimizer, SETTINGS[optimizer]) for _ in range(2))
    step = cuda_path.FusedStep.create(nets[0]._kernel_spec(), fast_opt)
    assert step is not None
    x, labels, one_hot = problem(0)
    t = labels if targets == "labels" else one_hot
    where = nets[1].device
    for k in range(4):
        indices = np.random.default_rng(k).integers(0, 64, size=16)
        fast_loss = step(x, t, indices)
        assert float(fast_loss) == pytest.approx(generic_step(where, nets[1], slow_opt, x, t, indices), rel=1e-5)
    assert_same_params(nets[0], nets[1])


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_cuda_prediction_logic_equals_the_generic_one(cuda_path, activation):
    net = MultiLayerNet(20, [16, 12], 5, activation=activation, weight_init_std=0.5, seed=4)
    x = np.random.default_rng(5).normal(size=(500, 20)).astype(np.float32) * 3
    generic = np.argmax(net.predict(x), axis=1)
    for batch in (100, 500):
        assert np.array_equal(cuda_path.predict_labels(net._kernel_spec(), x, batch), generic)


def test_cuda_updates_cover_every_optimizer_and_only_those(cuda_path):
    assert set(cuda_path.UPDATES) == set(OPTIMIZERS.values())
