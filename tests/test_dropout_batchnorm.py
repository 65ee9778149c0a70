"""Dropout and BatchNormalization (the book's chapter 6) on every device: their formulas written out in NumPy,
their backward passes against the numerical gradient (float64) and against torch autograd."""

import math

import numpy as np
import pytest

import anynet
from anynet.backend import to_numpy
from anynet.gradient import numerical_gradient
from anynet.layers import BATCH_NORM_EPSILON, BatchNormalization, Dropout
from anynet.masks import keep_mask
from tests.helpers import assert_close
from tests.test_current_device import device1  # noqa: F401 - the fixture giving strict:device1 CuPy's device rule


def _host(shape, seed, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


def _on(device, host, dtype="float32"):
    return device.asarray(host, dtype=dtype)


def relative_error(analytic, numeric):
    a, n = to_numpy(analytic), to_numpy(numeric)
    return float(np.abs(a - n).max() / max(np.abs(a).max(), np.abs(n).max(), 1e-300))


# -- Dropout ---------------------------------------------------------------------------------------------------


def test_dropout_at_train_time_multiplies_by_a_mask_of_zeros_and_ones(device):
    host = _host((8, 50), seed=1, low=0.5, high=2.0)  # no zeros: a dropped element shows as 0
    x = _on(device, host)
    layer = Dropout(0.3, seed=4)
    out = layer.forward(x)  # train_flg defaults to True, as in the book
    mask = to_numpy(layer.mask)
    assert layer.mask.dtype == x.dtype and tuple(layer.mask.shape) == (8, 50)
    assert set(np.unique(mask).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(mask, keep_mask(host, layer._keys, 0.3).astype(np.float32))
    assert_close(out, host.astype(np.float32) * mask, device=device, rtol=0)
    assert abs(mask.mean() - 0.7) < 0.07  # 400 draws at 0.7: a 4.5 sigma band


def test_dropout_at_test_time_scales_by_the_kept_fraction_and_draws_no_mask(device):
    host = _host((4, 6), seed=2)
    layer = Dropout(0.25, seed=9)
    out = layer.forward(_on(device, host), train_flg=False)
    assert_close(out, host.astype(np.float32) * 0.75, device=device, rtol=1e-7)
    assert layer.mask is None
    # no keys were drawn: the first training mask is a fresh layer's first one
    trained = to_numpy(layer.forward(_on(device, np.ones((4, 6)))))
    np.testing.assert_array_equal(trained, to_numpy(Dropout(0.25, seed=9).forward(_on(device, np.ones((4, 6))))))


def test_dropout_backward_is_the_upstream_gradient_times_the_mask(device):
    layer = Dropout(0.5, seed=3)
    layer.forward(_on(device, _host((5, 7), seed=3)))
    upstream = _host((5, 7), seed=4)
    mask = to_numpy(layer.mask)
    assert 0 < mask.sum() < mask.size
    assert_close(layer.backward(_on(device, upstream)), upstream.astype(np.float32) * mask, device=device, rtol=0)


def test_dropout_keeps_nan_input_nan_where_it_drops_it(device):
    """Multiplied by the mask as the book does: a NaN is not hidden by being dropped."""
    layer = Dropout(0.5, seed=0)
    out = to_numpy(layer.forward(_on(device, np.full((4, 8), np.nan))))
    assert (to_numpy(layer.mask) == 0).any() and np.isnan(out).all()


def test_the_same_seed_gives_the_same_masks_on_every_device(device):
    reference, here = Dropout(0.5, seed=11), Dropout(0.5, seed=11)
    host = np.ones((6, 33))
    masks = []
    for _ in range(3):
        expected = to_numpy(reference.forward(host))
        got = here.forward(_on(device, host))
        assert anynet.device_of(got) == device
        np.testing.assert_array_equal(to_numpy(got), expected)
        masks.append(expected)
    # a new mask at every training forward pass
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


def test_different_seeds_give_different_masks(device):
    x = _on(device, np.ones((10, 20)))
    first, second = Dropout(0.5, seed=1).forward(x), Dropout(0.5, seed=2).forward(x)
    agree = np.count_nonzero(to_numpy(first) == to_numpy(second)) / 200
    assert 0.35 < agree < 0.65  # independent masks at 0.5 agree on about half of the elements


def test_a_frozen_dropout_layer_reuses_its_mask(device):
    layer = Dropout(0.5, seed=6)
    layer.frozen = True
    first = to_numpy(layer.forward(_on(device, np.ones((7, 9)))))
    second = to_numpy(layer.forward(_on(device, np.full((7, 9), 3.0))))
    np.testing.assert_array_equal(second, 3.0 * first)
    layer.frozen = False
    third = to_numpy(layer.forward(_on(device, np.ones((7, 9)))))
    assert not np.array_equal(third, first)


@pytest.mark.parametrize("ratio", [1.0, -0.1, math.nan, 1.5, math.inf])
def test_a_dropout_ratio_outside_zero_to_one_is_refused(ratio):
    with pytest.raises(ValueError, match=r"^dropout_ratio must be in \[0, 1\), got .*: the fraction of elements "
                                         r"dropped at train time"):
        Dropout(ratio)


def test_dropout_ratio_zero_is_the_identity_at_train_time(device):
    host = _host((16, 16), seed=5).astype(np.float32)
    layer = Dropout(0.0, seed=1)
    assert_close(layer.forward(_on(device, host)), host, device=device, rtol=0)
    assert_close(layer.backward(_on(device, host)), host, device=device, rtol=0)


def test_dropout_backward_equals_torch_autograd_with_the_same_mask():
    torch = pytest.importorskip("torch")
    where = anynet.device("torch:cpu")
    host, upstream = _host((6, 10), seed=7), _host((6, 10), seed=8)
    layer = Dropout(0.4, seed=12)
    ours = layer.forward(where.asarray(host, dtype="float64"))
    dx = layer.backward(where.asarray(upstream, dtype="float64"))
    x = torch.tensor(host, requires_grad=True)
    out = x * layer.mask  # the same mask, as a constant
    (out * torch.tensor(upstream)).sum().backward()
    np.testing.assert_array_equal(to_numpy(ours), out.detach().numpy())
    np.testing.assert_array_equal(to_numpy(dx), x.grad.numpy())


# -- BatchNormalization ----------------------------------------------------------------------------------------


def _book_batch_norm(x2d, gamma, beta):
    """The book's training forward pass written out: (out, batch mean, biased batch variance)."""
    mu = x2d.mean(axis=0)
    var = ((x2d - mu) ** 2).mean(axis=0)
    return gamma * (x2d - mu) / np.sqrt(var + 1e-6) + beta, mu, var


@pytest.mark.parametrize("shape", [(6, 5), (4, 2, 3, 3)], ids=["2-D", "4-D"])
def test_batch_norm_at_train_time_normalizes_over_the_batch(device, shape):
    features = math.prod(shape[1:])
    host = _host(shape, seed=1, low=-3, high=5).astype(np.float32).astype(np.float64)
    gamma = _host((features,), seed=2, low=0.5, high=2).astype(np.float32).astype(np.float64)
    beta = _host((features,), seed=3).astype(np.float32).astype(np.float64)
    layer = BatchNormalization(_on(device, gamma), _on(device, beta))
    out = layer.forward(_on(device, host), train_flg=True)
    expected, mu, var = _book_batch_norm(host.reshape(shape[0], -1), gamma, beta)
    assert tuple(out.shape) == shape
    assert_close(out, expected.reshape(shape), device=device, rtol=2e-5, atol=2e-5)
    # running statistics start at 0 (the book's), made in the input's dtype on its device, then take 1 - momentum
    # of the batch's
    assert_close(layer.running_mean, 0.1 * mu, device=device, rtol=1e-5, atol=1e-6)
    assert_close(layer.running_var, 0.1 * var, device=device, rtol=1e-5, atol=1e-6)
    per_feature = to_numpy(out).reshape(shape[0], -1)
    np.testing.assert_allclose((per_feature - beta) / gamma, (host.reshape(shape[0], -1) - mu) / np.sqrt(var + 1e-6),
                               rtol=1e-4, atol=1e-4)


def test_running_statistics_follow_the_momentum(device):
    gamma, beta = np.ones(3), np.zeros(3)
    start_mean, start_var = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 1.0])
    layer = BatchNormalization(_on(device, gamma), _on(device, beta), momentum=0.7,
                               running_mean=_on(device, start_mean), running_var=_on(device, start_var))
    mean, var = start_mean, start_var
    for seed in range(3):
        batch = _host((8, 3), seed=seed, low=-4, high=6).astype(np.float32)
        layer.forward(_on(device, batch))
        mean = 0.7 * mean + 0.3 * batch.mean(axis=0)
        var = 0.7 * var + 0.3 * batch.var(axis=0)  # the biased variance, as the book's
    assert_close(layer.running_mean, mean, device=device, rtol=1e-5, atol=1e-6)
    assert_close(layer.running_var, var, device=device, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 2, 1)], ids=["2-D", "4-D"])
def test_batch_norm_at_test_time_uses_the_running_statistics(device, shape):
    features = math.prod(shape[1:])
    gamma, beta = _host((features,), seed=4, low=0.5, high=2), _host((features,), seed=5)
    running_mean, running_var = _host((features,), seed=6), _host((features,), seed=7, low=0.1, high=3)
    layer = BatchNormalization(_on(device, gamma), _on(device, beta), running_mean=_on(device, running_mean),
                               running_var=_on(device, running_var))
    host = _host(shape, seed=8).astype(np.float32)
    out = layer.forward(_on(device, host), train_flg=False)
    rm, rv = running_mean.astype(np.float32), running_var.astype(np.float32)
    expected = gamma.astype(np.float32) * (host.reshape(shape[0], -1) - rm) / np.sqrt(rv + 1e-6) + \
        beta.astype(np.float32)
    assert_close(out, expected.reshape(shape), device=device, rtol=1e-5, atol=1e-6)
    # test time neither updates the statistics nor depends on the batch: one sample gives its row of the batch's
    assert_close(layer.running_mean, rm, device=device, rtol=0)
    assert_close(layer.running_var, rv, device=device, rtol=0)
    single = layer.forward(_on(device, host[1:2]), train_flg=False)
    assert_close(single, expected.reshape(shape)[1:2], device=device, rtol=1e-5, atol=1e-6)


def test_batch_norm_names_a_feature_mismatch(device):
    layer = BatchNormalization(_on(device, np.ones(5)), _on(device, np.zeros(5)))
    with pytest.raises(ValueError, match=r"BatchNormalization of 5 features got input of shape \(2, 2, 3\) "
                                         r"\(6 features per sample\)"):
        layer.forward(_on(device, np.zeros((2, 2, 3))))


@pytest.mark.parametrize("shape", [(5, 4), (3, 2, 2, 2)], ids=["2-D", "4-D"])
def test_batch_norm_backward_equals_the_numerical_gradient(device64, shape):
    xp = device64.xp
    features = math.prod(shape[1:])
    x = _on(device64, _host(shape, seed=1, low=-3, high=3), "float64")
    gamma = _on(device64, _host((features,), seed=2, low=0.5, high=2), "float64")
    beta = _on(device64, _host((features,), seed=3), "float64")
    upstream = _on(device64, _host(shape, seed=4), "float64")
    layer = BatchNormalization(gamma, beta)

    def loss(_):
        return xp.sum(layer.forward(x, train_flg=True) * upstream)

    loss(None)
    dx = layer.backward(upstream)
    assert tuple(dx.shape) == shape
    for name, analytic, wrt in (("x", dx, x), ("gamma", layer.dgamma, gamma), ("beta", layer.dbeta, beta)):
        assert relative_error(analytic, numerical_gradient(loss, wrt)) < 1e-6, name


@pytest.mark.parametrize("shape", [(6, 4), (4, 2, 2, 3)], ids=["2-D", "4-D"])
def test_batch_norm_equals_torch_autograd(shape):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    where = anynet.device("torch:cpu")
    features = math.prod(shape[1:])
    host, upstream = _host(shape, seed=1, low=-3, high=4), _host(shape, seed=2)
    gamma_host, beta_host = _host((features,), seed=3, low=0.5, high=2), _host((features,), seed=4)
    layer = BatchNormalization(where.asarray(gamma_host, dtype="float64"), where.asarray(beta_host, dtype="float64"))
    ours = layer.forward(where.asarray(host, dtype="float64"), train_flg=True)
    dx = layer.backward(where.asarray(upstream, dtype="float64"))

    # the book normalizes each of the C*H*W elements over the batch: torch's per-feature batch norm of (N, C*H*W)
    x = torch.tensor(host.reshape(shape[0], features), requires_grad=True)
    gamma, beta = torch.tensor(gamma_host, requires_grad=True), torch.tensor(beta_host, requires_grad=True)
    running_mean, running_var = torch.zeros(features, dtype=torch.float64), torch.zeros(features, dtype=torch.float64)
    out = functional.batch_norm(x, running_mean, running_var, gamma, beta, training=True, momentum=0.1,
                                eps=BATCH_NORM_EPSILON)
    (out * torch.tensor(upstream.reshape(shape[0], features))).sum().backward()
    np.testing.assert_allclose(to_numpy(ours).reshape(shape[0], -1), out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_numpy(dx).reshape(shape[0], -1), x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.dgamma), gamma.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(to_numpy(layer.dbeta), beta.grad.numpy(), rtol=1e-12, atol=1e-12)
    # torch's momentum is the weight of the batch (1 - the book's); its running variance is the unbiased one
    np.testing.assert_allclose(to_numpy(layer.running_mean), running_mean.numpy(), rtol=1e-12)
    n = shape[0]
    np.testing.assert_allclose(to_numpy(layer.running_var), running_var.numpy() * (n - 1) / n, rtol=1e-12)


# -- CuPy's current device -------------------------------------------------------------------------------------


def test_dropout_and_batch_norm_make_their_arrays_on_the_inputs_device(device1):  # noqa: F811
    """A standalone layer on cuda:1 must not put its mask or its first running statistics on CuPy's current GPU
    (strict:device1 with CuPy's rule stands in for it: mixing devices raises)."""
    x = device1.asarray(np.ones((4, 6)), dtype="float32")
    layer = Dropout(0.5, seed=1)
    out = layer.forward(x)
    assert anynet.device_of(out) == device1 and anynet.device_of(layer.mask) == device1
    assert anynet.device_of(Dropout(0.0).forward(x)) == device1
    norm = BatchNormalization(device1.asarray(np.ones(6), dtype="float32"),
                              device1.asarray(np.zeros(6), dtype="float32"))
    norm.forward(x)
    assert anynet.device_of(norm.running_mean) == device1 and anynet.device_of(norm.running_var) == device1
