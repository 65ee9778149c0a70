"""anynet.plot.smooth_curve against the book's common/util.py smooth_curve, written out here in NumPy."""

import numpy as np
import pytest

from anynet.plot import smooth_curve
from tests.helpers import assert_close


def book_smooth_curve(x):
    """The book's code (common/util.py), as it is."""
    window_len = 11
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


@pytest.mark.parametrize("length", [11, 12, 37, 2000])
def test_a_list_of_losses_smooths_as_the_books(length):
    losses = list(2.3 * np.exp(-np.arange(length) / 300) + np.random.default_rng(length).normal(0, 0.1, length))
    smoothed = smooth_curve(losses)
    assert isinstance(smoothed, np.ndarray) and smoothed.dtype == np.float64 and smoothed.shape == (length,)
    np.testing.assert_allclose(smoothed, book_smooth_curve(losses), rtol=1e-13, atol=1e-15)


def test_integers_and_a_constant():
    np.testing.assert_allclose(smooth_curve(list(range(30))), book_smooth_curve(np.arange(30.0)), rtol=1e-13)
    np.testing.assert_allclose(smooth_curve([0.5] * 15), [0.5] * 15, rtol=1e-14)


def test_an_array_stays_on_its_device_in_its_dtype(device):
    curve = np.random.default_rng(0).random(120).astype(np.float32)
    assert_close(smooth_curve(device.asarray(curve)), book_smooth_curve(curve.astype(np.float64)), device=device,
                 rtol=1e-5, atol=1e-6)


def test_too_short_or_not_a_curve():
    with pytest.raises(ValueError, match="at least 11 points"):
        smooth_curve([1.0] * 10)
    with pytest.raises(ValueError, match="1-D curve"):
        smooth_curve(np.ones((20, 2)))
