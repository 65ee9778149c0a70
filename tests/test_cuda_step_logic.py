"""The CUDA fast path's host side, run where there is no GPU.

``anynet._kernels.cupy_cuda`` is imported against a stand-in ``cupy`` whose elementwise kernels are NumPy versions of
the formulas in their CUDA code and whose ``cublas.gemm`` computes ``alpha * op(a) @ op(b) + beta * out``. The
stand-in keeps CuPy's rules where they can bite: two GPUs, new arrays on the *current* one, every kernel refusing an
array of another GPU (CuPy without peer access) or a host array, ``Type is mismatched`` for kernel arguments of one
type letter with different dtypes, ``take`` refusing an output of another dtype. That runs the step's logic (which
GEMM with which alpha and beta into which buffer, the bias gradients, weight decay, the optimizer dispatch,
prediction, placement, dtypes) against the generic array-API path on every machine. It does not run the CUDA code:
tests/test_kernels.py does that where a GPU is usable.
"""

import importlib
import re
import sys
import types

import numpy as np
import pytest

import anynet._kernels
from anynet._kernels import AffineStackSpec
from anynet.networks import MultiLayerNet
from anynet.optimizers import OPTIMIZERS, make_optimizer
from tests.helpers import SETTINGS, generic_step, problem


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _xent_labels(logits, label, classes, scale, row_loss, dy):
    valid = (label >= 0) & (label < classes)  # the kernel's guard: a row with a bad label becomes NaN
    safe = np.where(valid, label, 0)
    log_p = _log_softmax(np.asarray(logits))
    target = np.eye(classes, dtype=logits.dtype)[safe]
    row_loss[...] = np.where(valid, -log_p[np.arange(len(label)), safe], np.nan)
    dy[...] = np.where(valid[:, None], (np.exp(log_p) - target) * scale, np.nan)


def _xent_targets(logits, target, classes, scale, row_loss, dy):
    log_p = _log_softmax(np.asarray(logits))
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
    "anynet_bias_relu": (2, 1, lambda a, b, z: np.copyto(z, np.where(a + b < 0, 0, a + b))),
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


GPUS = 2  # the stand-in has two GPUs, so that work landing on GPU 0 instead of GPU 1 fails


class _Device:
    """cupy.cuda.Device: an id; as a context manager it makes itself the current device."""

    current = 0

    def __init__(self, index=None):
        self.id = _Device.current if index is None else int(index)
        assert 0 <= self.id < GPUS
        self._previous: list = []

    def __enter__(self):
        self._previous.append(_Device.current)
        _Device.current = self.id
        return self

    def __exit__(self, *exc):
        _Device.current = self._previous.pop()
        return False

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


class _Array(np.ndarray):
    """A CuPy array: NumPy's values, plus the GPU it lives on (views keep their base's)."""

    def __array_finalize__(self, obj):
        self.device_id = getattr(obj, "device_id", _Device.current)

    @property
    def device(self):
        return _Device(self.device_id)


def _here(host):
    """A new array on the current device, as every CuPy creation function and result is."""
    made = np.asarray(host).view(_Array)
    made.device_id = _Device.current
    return made


def _check(*values):
    """CuPy's refusal of host arrays and of arrays on another GPU (without peer access) in a kernel launch."""
    for value in values:
        if isinstance(value, np.ndarray) and not isinstance(value, _Array):
            raise TypeError(f"Unsupported type {type(value)}")
        if isinstance(value, _Array) and value.device_id != _Device.current:
            raise ValueError(f"The device where the array resides ({value.device_id}) is different from the current "
                             f"device ({_Device.current}). Peer access is unavailable between these devices.")


def _parse_params(text):
    """ElementwiseKernel's "raw T logits, int64 label" as [(raw, type), ...]."""
    params = []
    for part in text.split(","):
        words = part.split()
        params.append((words[0] == "raw", words[-2]))
    return params


class _ElementwiseKernel:
    def __init__(self, in_params, out_params, operation, name):
        self.name = name
        self.nin, self.nout, self.function = KERNELS[name]
        self.params = _parse_params(in_params) + _parse_params(out_params)
        assert (len(_parse_params(in_params)), len(_parse_params(out_params))) == (self.nin, self.nout), name

    def __call__(self, *args):
        assert len(args) == self.nin + self.nout, f"{self.name} takes {self.nin} inputs and {self.nout} outputs"
        _check(*args)
        # CuPy's type rule: every array bound to one type letter has one dtype; a named type must match exactly
        bound: dict = {}
        for (_, kind), value in zip(self.params, args):
            if not isinstance(value, np.ndarray):
                continue
            if re.fullmatch(r"[A-Z]", kind):
                bound.setdefault(kind, set()).add(value.dtype)
            elif value.dtype != np.dtype(kind):
                raise TypeError(f"Type is mismatched. {self.name} {kind} {value.dtype}")
        for kind, dtypes in bound.items():
            if len(dtypes) > 1:
                raise TypeError(f"Type is mismatched. {self.name} {kind} {' '.join(sorted(map(str, dtypes)))}")
        with np.errstate(over="ignore", invalid="ignore"):
            self.function(*args)


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """cupy.cublas.gemm: out = alpha * op(a) @ op(b) + beta * out, with CuPy's checks of its arguments."""
    _check(a, b, out)
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype:
        raise TypeError(f"gemm takes two matrices of one dtype, got {a.dtype} {a.shape} and {b.dtype} {b.shape}")
    product = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
    if out is None or out.shape != product.shape or out.dtype != a.dtype:
        raise ValueError(f"gemm output {None if out is None else (out.shape, out.dtype)} for {product.shape}")
    out[...] = alpha * product + beta * out
    return out


def _take(a, indices, axis=None, out=None):
    _check(a, indices, out)
    if out is not None and out.dtype != a.dtype:
        raise TypeError("Output dtype mismatch")
    result = np.take(np.asarray(a), np.asarray(indices), axis=axis)
    if out is None:
        return _here(result)
    out[...] = result
    return out


def _matmul(a, b, out=None):
    _check(a, b, out)
    result = np.asarray(a) @ np.asarray(b)
    if out is None:
        return _here(result)
    if out.dtype != result.dtype:
        raise TypeError(f"matmul output dtype {out.dtype} for a {result.dtype} product")
    out[...] = result
    return out


def _sum(a, axis=None, out=None):
    _check(a, out)
    result = np.sum(np.asarray(a), axis=axis)
    if out is None:
        return _here(result)
    out[...] = result
    return out


def _checked(function):
    """A NumPy function with CuPy's placement: arguments on the current device, the result made there."""
    def on_device(*args, **kwargs):
        _check(*args, *kwargs.values())
        plain = [np.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        return _here(function(*plain, **kwargs))
    return on_device


def _create(function):
    return lambda *args, **kwargs: _here(function(*args, **kwargs))


def _copyto(dst, src):
    _check(dst, src)
    np.copyto(dst, src)


def _stand_in_cupy():
    cupy = types.ModuleType("cupy")
    for name in ("float32", "float64", "int32", "int64"):
        setattr(cupy, name, getattr(np, name))
    for name in ("empty", "zeros", "ones", "asarray", "arange"):
        setattr(cupy, name, _create(getattr(np, name)))
    for name in ("argmax", "vdot", "min", "max", "reshape"):
        setattr(cupy, name, _checked(getattr(np, name)))
    cupy.concatenate = _concatenate
    cupy.take, cupy.matmul, cupy.sum, cupy.copyto = _take, _matmul, _sum, _copyto
    cupy.ndarray = _Array
    cupy.ElementwiseKernel = _ElementwiseKernel
    cupy.cuda = types.SimpleNamespace(Device=_Device)
    cupy.cublas = types.ModuleType("cupy.cublas")
    cupy.cublas.gemm = _gemm
    return cupy


def _concatenate(arrays):
    _check(*arrays)
    return _here(np.concatenate([np.asarray(a) for a in arrays]))


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


def _on_gpu(cupy, net, gpu):
    """``net``'s parameters copied onto stand-in GPU ``gpu``, as the spec a network on cuda:``gpu`` hands the
    kernels; returns (spec, the parameters by name)."""
    with cupy.cuda.Device(gpu):
        store = {name: cupy.asarray(value) for name, value in net.params.items()}
    spec = AffineStackSpec(tuple(net.sizes), net.activation, lambda: net.weight_decay_lambda, params=lambda: store,
                           rebind=store.update)
    return spec, store


def _to_gpu(cupy, gpu, *arrays):
    with cupy.cuda.Device(gpu):
        return [cupy.asarray(a) for a in arrays]


def _assert_same(store, slow_net, rtol=2e-5, atol=2e-6):
    for name, value in slow_net.params.items():
        assert store[name].device.id == store["W1"].device.id, name
        np.testing.assert_allclose(np.asarray(store[name]), value, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("gpu", range(GPUS))
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("decay", [0.0, 0.05])
@pytest.mark.parametrize("targets", ["labels", "one-hot"])
def test_cuda_step_logic_equals_the_generic_path(cuda_path, gpu, optimizer, activation, decay, targets):
    """On each stand-in GPU (the current device stays 0): every buffer, launch and result lands on the parameters'
    GPU, else the stand-in refuses the launch as CuPy does."""
    cupy = cuda_path.cupy
    nets = [MultiLayerNet(20, [16, 12], 5, activation=activation, weight_init_std=0.3, weight_decay_lambda=decay,
                          seed=3) for _ in range(2)]
    fast_opt, slow_opt = (make_optimizer(optimizer, SETTINGS[optimizer]) for _ in range(2))
    spec, store = _on_gpu(cupy, nets[0], gpu)
    step = cuda_path.FusedStep.create(spec, fast_opt)
    assert step is not None
    x, labels, one_hot = problem(0)
    t = labels if targets == "labels" else one_hot
    x_gpu, t_gpu = _to_gpu(cupy, gpu, x, t)
    where = nets[1].device
    for k in range(4):
        indices = np.random.default_rng(k).integers(0, 64, size=16)
        fast_loss = step(x_gpu, t_gpu, *_to_gpu(cupy, gpu, indices))
        assert float(fast_loss) == pytest.approx(generic_step(where, nets[1], slow_opt, x, t, indices), rel=1e-5)
    assert cupy.cuda.Device().id == 0  # the step put the current device back
    _assert_same(store, nets[1])
    for slot in fast_opt.state.values():
        assert {value.device.id for value in slot.values()} == {gpu}


@pytest.mark.parametrize("gpu", range(GPUS))
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_cuda_prediction_logic_equals_the_generic_one(cuda_path, gpu, activation):
    cupy = cuda_path.cupy
    net = MultiLayerNet(20, [16, 12], 5, activation=activation, weight_init_std=0.5, seed=4)
    x = np.random.default_rng(5).normal(size=(500, 20)).astype(np.float32) * 3
    generic = np.argmax(net.predict(x), axis=1)
    spec, _ = _on_gpu(cupy, net, gpu)
    (x_gpu,) = _to_gpu(cupy, gpu, x)
    for batch in (100, 500):
        labels = cuda_path.predict_labels(spec, x_gpu, batch)
        assert labels.device.id == gpu
        assert np.array_equal(np.asarray(labels), generic)


def test_float64_device_data_with_float32_weights_is_cast_for_the_kernels(cuda_path):
    """The kernels take one dtype (CuPy: "Type is mismatched"; take: "Output dtype mismatch"): float64 data already
    on the GPU is computed in the weights' float32, as the generic path computes host data."""
    cupy = cuda_path.cupy
    nets = [MultiLayerNet(20, [16, 12], 5, weight_init_std=0.3, seed=3) for _ in range(2)]
    spec, store = _on_gpu(cupy, nets[0], 0)
    x, labels, _ = problem(1)
    x64 = x.astype(np.float64)
    x_gpu, t_gpu = _to_gpu(cupy, 0, x64, labels)
    assert np.array_equal(np.asarray(cuda_path.predict_labels(spec, x_gpu, 64)),
                          np.argmax(nets[1].predict(x64), axis=1))
    fast_opt, slow_opt = make_optimizer("adam", {"lr": 0.01}), make_optimizer("adam", {"lr": 0.01})
    step = cuda_path.FusedStep.create(spec, fast_opt)
    for k in range(3):
        indices = np.random.default_rng(k).integers(0, 64, size=16)
        fast_loss = step(x_gpu, t_gpu, *_to_gpu(cupy, 0, indices))
        slow_loss = generic_step(nets[1].device, nets[1], slow_opt, x, labels, indices)
        assert float(fast_loss) == pytest.approx(slow_loss, rel=1e-5)
    assert float(step(x_gpu[:16], t_gpu[:16])) == pytest.approx(
        generic_step(nets[1].device, nets[1], slow_opt, x, labels, np.arange(16)), rel=1e-5)
    _assert_same(store, nets[1])
    assert store["W1"].dtype == np.float32


def test_inputs_on_another_gpu_are_refused_by_name(cuda_path):
    cupy = cuda_path.cupy
    net = MultiLayerNet(20, [16], 5, seed=3)
    spec, _ = _on_gpu(cupy, net, 1)
    x, labels, _ = problem(2)
    x0, t0 = _to_gpu(cupy, 0, x, labels)
    step = cuda_path.FusedStep.create(spec, make_optimizer("sgd", {"lr": 0.1}))
    with pytest.raises(ValueError, match=r"parameters are on cuda:1 and an input is on cuda:0.*device\('cuda:1'\)"):
        step(x0, t0)
    with pytest.raises(ValueError, match="parameters are on cuda:1 and an input is on cuda:0"):
        cuda_path.predict_labels(spec, x0, 64)


@pytest.mark.parametrize("bad", [5, -1, 1000])
def test_labels_out_of_range_make_the_loss_nan_without_waiting_for_a_check(cuda_path, bad, monkeypatch):
    """A range check would read the labels back and make the step wait: on the GPU the kernel makes a bad label's
    row NaN instead (never another row's score), so the loss is NaN, not wrong. Float labels are refused."""
    cupy = cuda_path.cupy
    for name in ("min", "max"):
        monkeypatch.setattr(cupy, name, lambda *args, **kwargs: pytest.fail("the fused step read the labels"))
    spec, _ = _on_gpu(cupy, MultiLayerNet(20, [16], 5, seed=3), 0)
    x, labels, _ = problem(3)
    labels = labels.copy()
    step = cuda_path.FusedStep.create(spec, make_optimizer("sgd", {"lr": 0.1}))
    assert np.isfinite(float(step(*_to_gpu(cupy, 0, x, labels, np.arange(16)))))
    labels[7] = bad
    assert np.isnan(float(step(*_to_gpu(cupy, 0, x, labels, np.arange(16)))))
    with pytest.raises(TypeError, match="labels must be integers"):
        step(*_to_gpu(cupy, 0, x, labels.astype(np.float32)))


def test_host_input_to_the_gpu_path_is_refused_by_name(cuda_path):
    cupy = cuda_path.cupy
    spec, _ = _on_gpu(cupy, MultiLayerNet(20, [16], 5, seed=3), 1)
    x, labels, _ = problem(3)
    step = cuda_path.FusedStep.create(spec, make_optimizer("sgd", {"lr": 0.1}))
    message = r"parameters are on cuda:1 and an input is a numpy.ndarray; move it there first: "
    message += r"anynet.device\('cuda:1'\)"
    with pytest.raises(TypeError, match=message):
        step(x, labels)
    with pytest.raises(TypeError, match=message):
        cuda_path.predict_labels(spec, x, 64)


def test_cuda_updates_cover_every_optimizer_and_only_those(cuda_path):
    assert set(cuda_path.UPDATES) == set(OPTIMIZERS.values())
