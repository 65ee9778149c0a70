import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anynet import functions as F
from anynet.backend import to_numpy
from tests.helpers import DEVICE_DTYPES, assert_close, float_name, tolerance

ONE_HOT_2 = [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
Y_RIGHT = [0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0]
Y_WRONG = [0.1, 0.05, 0.1, 0.0, 0.05, 0.1, 0.0, 0.6, 0.0, 0.0]


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_sigmoid_seed_values(device):
    x = device.asarray([-1.0, 1.0, 2.0])
    assert_close(F.sigmoid(x), [0.26894142, 0.73105858, 0.88079708], device=device)


def test_step_function_is_integer(device):
    y = F.step_function(device.asarray([-1.0, 1.0, 2.0]))
    assert_close(y, [0, 1, 1], device=device, dtype="int64")


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, indirect=["device"])
def test_sigmoid_tails_are_exact_and_silent(device, dtype, no_warnings):
    y = F.sigmoid(device.asarray([-1e4, -1000.0, -100.0, 0.0, 100.0, 1000.0, 1e4], dtype=dtype))
    values = to_numpy(y)
    assert values[0] == 0.0 and values[1] == 0.0 and values[-1] == 1.0 and values[-2] == 1.0
    assert values[3] == 0.5
    if dtype == "float64":
        assert values[2] == pytest.approx(np.exp(-100.0), rel=1e-12)  # tiny, yet not rounded away
    else:
        assert 0.0 <= values[2] < 1e-37  # below float32's smallest normal number
    assert y.dtype == device.dtype(dtype)


def test_relu_identity_and_gradients(device):
    x = device.asarray([[-2.0, 0.0, 3.0], [1.5, -0.5, 0.25]])
    assert_close(F.relu(x), [[0.0, 0.0, 3.0], [1.5, 0.0, 0.25]], device=device)
    assert F.identity_function(x) is x
    assert_close(F.relu_grad(x), [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]], device=device)
    s = 1 / (1 + np.exp(-np.array([[-2.0, 0.0, 3.0], [1.5, -0.5, 0.25]])))
    assert_close(F.sigmoid_grad(x), s * (1 - s), device=device, rtol=1e-6)


def test_relu_keeps_nan_as_the_books_maximum_does(device):
    """The book's relu is np.maximum(0, x): NaN in, NaN out. Turning it into 0 hid NaN data from every check."""
    x = [[np.nan, -1.0, 0.0], [2.0, np.inf, -np.inf]]
    assert_close(F.relu(device.asarray(x)), np.maximum(0, np.array(x)), device=device)
    assert_close(F.relu(device.asarray(x)), [[np.nan, 0.0, 0.0], [2.0, np.inf, 0.0]], device=device)


def test_integer_input_is_computed_in_float32(device):
    assert_close(F.sigmoid(device.asarray([0, 1])), [0.5, 0.7310586], device=device)
    assert_close(F.relu(device.asarray([-1, 2])), [0.0, 2.0], device=device)


def test_softmax_seed_values(device, no_warnings):
    assert_close(F.softmax(device.asarray([0.3, 2.9, 4.0])), [0.01821127, 0.24519181, 0.73659691], device=device)
    big = F.softmax(device.asarray([1010.0, 1000.0, 990.0]))
    assert_close(big, [9.99954600e-01, 4.53978686e-05, 2.06106005e-09], device=device, rtol=1e-6)


def test_softmax_and_log_softmax_work_per_row(device, no_warnings):
    dtype = float_name(device)
    rows = [[0.3, 2.9, 4.0], [1010.0, 1000.0, 990.0], [0.0, 0.0, 0.0]]
    x = device.asarray(rows, dtype=dtype)
    expected = np.array([[0.01821127, 0.24519181, 0.73659691], [9.99954600e-01, 4.53978686e-05, 2.06106005e-09],
                         [1 / 3, 1 / 3, 1 / 3]])
    assert_close(F.softmax(x), expected, device=device, dtype=dtype, rtol=1e-6)
    # log_softmax stays finite where softmax underflows to 0
    log_p = F.log_softmax(device.asarray([[0.0, -1000.0]], dtype=dtype))
    assert_close(log_p, [[0.0, -1000.0]], device=device, dtype=dtype, rtol=1e-6)


def test_sum_squared_error_seed_values(device):
    dtype = float_name(device)
    t = device.asarray(ONE_HOT_2, dtype=dtype)
    close = tolerance(dtype)
    assert_close(F.sum_squared_error(device.asarray(Y_RIGHT, dtype=dtype), t), 0.0975, device=device, dtype=dtype,
                 rtol=close["rtol"] * 10)
    assert_close(F.mean_squared_error(device.asarray(Y_WRONG, dtype=dtype), t), 0.5975, device=device, dtype=dtype,
                 rtol=close["rtol"] * 10)
    # a batch is the book's sum over every element
    batch = device.asarray([Y_RIGHT, Y_WRONG], dtype=dtype)
    both = device.asarray([ONE_HOT_2, ONE_HOT_2], dtype=dtype)
    assert_close(F.sum_squared_error(batch, both), 0.0975 + 0.5975, device=device, dtype=dtype,
                 rtol=close["rtol"] * 10)


def test_cross_entropy_error_seed_values(device):
    dtype = float_name(device)
    close = {"rtol": 1e-12} if dtype == "float64" else {"rtol": 1e-6}
    right, wrong = device.asarray(Y_RIGHT, dtype=dtype), device.asarray(Y_WRONG, dtype=dtype)
    one_hot = device.asarray(ONE_HOT_2, dtype=dtype)
    for t in (one_hot, device.asarray(2), 2):
        assert_close(F.cross_entropy_error(right, t), 0.510825457099338, device=device, dtype=dtype, **close)
        assert_close(F.cross_entropy_error(wrong, t), 2.302584092994546, device=device, dtype=dtype, **close)
    batch = device.asarray([Y_RIGHT, Y_WRONG], dtype=dtype)
    for t in (device.asarray([ONE_HOT_2, ONE_HOT_2], dtype=dtype), device.asarray([2, 2])):
        assert_close(F.cross_entropy_error(batch, t), 1.406704775046942, device=device, dtype=dtype, **close)


def test_cross_entropy_rejects_labels_that_do_not_fit(device):
    batch = device.asarray([Y_RIGHT, Y_WRONG])
    with pytest.raises(ValueError, match=r"labels t of shape \(3,\) do not fit predictions y of shape \(2, 10\)"):
        F.cross_entropy_error(batch, device.asarray([2, 2, 2]))


def test_softmax_cross_entropy_matches_the_two_step_loss(device, no_warnings):
    dtype = float_name(device)
    logits = np.array([[0.3, 2.9, 4.0], [1.0, -2.0, 0.5]])
    labels = [2, 0]
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    expected = -(log_p[0, 2] + log_p[1, 0]) / 2
    x = device.asarray(logits, dtype=dtype)
    assert_close(F.softmax_cross_entropy(x, device.asarray(labels)), expected, device=device, dtype=dtype, rtol=1e-6)
    one_hot = device.asarray(np.eye(3)[labels], dtype=dtype)
    assert_close(F.softmax_cross_entropy(x, one_hot), expected, device=device, dtype=dtype, rtol=1e-6)
    single = F.softmax_cross_entropy(device.asarray(logits[0], dtype=dtype), 2)
    assert_close(single, -log_p[0, 2], device=device, dtype=dtype, rtol=1e-6)
    # Logits far apart: the two-step loss saturates at -log(1e-7); the log-sum-exp form stays exact.
    far = F.softmax_cross_entropy(device.asarray([[1000.0, 0.0]], dtype=dtype), device.asarray([1]))
    assert_close(far, 1000.0, device=device, dtype=dtype, rtol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Properties, for any finite input, in float32 and float64
# ------------------------------------------------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


SMALL_SHAPES = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=8)


def finite_arrays(dtype, shape=SMALL_SHAPES, bound=None):
    width = 32 if dtype == "float32" else 64
    elements = st.floats(-bound if bound else None, bound, width=width, allow_nan=False, allow_infinity=False)
    return hnp.arrays(np.dtype(dtype), shape, elements=elements)


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, indirect=["device"])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # x - max(x) when the span > float max
def test_softmax_rows_sum_to_one_without_nan(device, dtype):

    @PROPERTY_SETTINGS
    @given(finite_arrays(dtype))
    def check(host):
        p = to_numpy(F.softmax(device.asarray(host)))
        assert not np.isnan(p).any()
        assert ((p >= 0) & (p <= 1)).all()
        np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-5 if dtype == "float32" else 1e-12)

    check()


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, indirect=["device"])
def test_softmax_is_shift_invariant(device, dtype):

    @PROPERTY_SETTINGS
    @given(finite_arrays(dtype, bound=100.0), st.floats(-50.0, 50.0))
    def check(host, shift):
        shifted = (host + np.asarray(shift, dtype=dtype)).astype(dtype)
        p, q = to_numpy(F.softmax(device.asarray(host))), to_numpy(F.softmax(device.asarray(shifted)))
        # float32 rounding of x + shift moves each input by up to an ulp of 150, hence the looser bound
        np.testing.assert_allclose(q, p, rtol=1e-3 if dtype == "float32" else 1e-9, atol=1e-30)

    check()


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES, indirect=["device"])
def test_sigmoid_is_bounded_monotone_and_never_nan(device, dtype):

    @PROPERTY_SETTINGS
    @given(finite_arrays(dtype, shape=hnp.array_shapes(min_dims=1, max_dims=1, min_side=1, max_side=32)))
    def check(host):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            s = to_numpy(F.sigmoid(device.asarray(np.sort(host))))
        assert s.dtype == np.dtype(dtype)
        assert not np.isnan(s).any()
        assert ((s >= 0) & (s <= 1)).all()
        assert (np.diff(s) >= 0).all(), f"not monotone: {np.sort(host)} -> {s}"

    check()


def test_cross_entropy_refuses_float_and_out_of_range_labels(device):
    """The functions took float labels by truncating them (1.5 was class 1) and -1 as the last class."""
    y = device.asarray([Y_RIGHT, Y_WRONG])
    with pytest.raises(TypeError, match=r"labels must be integers \(class numbers 0\.\.9\), got dtype"):
        F.cross_entropy_error(y, device.asarray([2.0, 1.5], dtype="float32"))
    with pytest.raises(TypeError, match=r"labels must be integers \(class numbers 0\.\.9\), got dtype"):
        F.softmax_cross_entropy(y, device.asarray([2.0, 1.5], dtype="float32"))
    if device.platform == "cuda":
        assert np.isnan(float(to_numpy(F.cross_entropy_error(y, device.asarray([2, -1])))))
        return
    for function in (F.cross_entropy_error, F.softmax_cross_entropy):
        with pytest.raises(ValueError, match=r"^labels must be class numbers 0\.\.9 for 10 classes, got labels from "
                                             r"-1 to 2$"):
            function(y, device.asarray([2, -1]))
        with pytest.raises(ValueError, match=r"got labels from 2 to 10$"):
            function(y, device.asarray([2, 10]))
    assert_close(F.cross_entropy_error(y, device.asarray([2, 2])), 0.5 * (-np.log(0.6 + 1e-7) - np.log(0.1 + 1e-7)),
                 device=device, rtol=1e-6)
