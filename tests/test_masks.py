"""Dropout's keep masks (anynet.masks): the two forms of the hash agree bit for bit, the hash is the documented
mixer, the kept fraction is 1 - ratio, and one pair of keys gives one mask on every device."""

import numpy as np
import pytest

import anynet
from anynet.backend import to_numpy
from anynet.masks import MULTIPLIERS, _hash_int64, _hash_uint32, device_mask, keep_mask, threshold

KEYS = [(0, 0), (1, 2), (2**32 - 1, 2**32 - 1), (2**31, 2**31 - 1), (123456789, 4000000000), (0xDEADBEEF, 7)]


def _mix_by_hand(value: int) -> int:
    """The 32-bit mixer of anynet.masks, on one Python int (exact arithmetic, masked to 32 bits)."""
    first, second = MULTIPLIERS
    value ^= value >> 16
    value = (value * first) & 0xFFFFFFFF
    value ^= value >> 15
    value = (value * second) & 0xFFFFFFFF
    value ^= value >> 15
    return value


@pytest.mark.parametrize("count", [1, 7, 1000, 65537])
@pytest.mark.parametrize("keys", KEYS, ids=str)
def test_the_uint32_form_equals_the_int64_form_bit_for_bit(count, keys):
    wide = _hash_int64(np, count, keys, "cpu")
    narrow = _hash_uint32(np, count, keys, "cpu")
    assert wide.dtype == np.int64 and narrow.dtype == np.uint32
    assert wide.min() >= 0 and wide.max() <= 2**32 - 1  # the int64 form stays within 32 bits
    np.testing.assert_array_equal(wide, narrow.astype(np.int64))


@pytest.mark.parametrize("keys", KEYS, ids=str)
def test_the_hash_is_the_documented_mixer_applied_once_per_key(keys):
    indices = [0, 1, 2, 3, 255, 256, 65535, 65536, 99999]
    expected = [_mix_by_hand(_mix_by_hand(i ^ keys[0]) ^ keys[1]) for i in indices]
    assert _hash_int64(np, 100000, keys, "cpu")[indices].tolist() == expected
    assert _hash_uint32(np, 100000, keys, "cpu")[indices].tolist() == expected


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9])
def test_the_kept_fraction_is_one_minus_the_ratio(ratio):
    n = 1_000_000
    kept = keep_mask(np.zeros((1000, 1000), dtype=np.float32), (2024, 77), ratio)
    assert kept.dtype == np.bool_ and kept.shape == (1000, 1000)
    fraction = np.count_nonzero(kept) / n
    sigma = (ratio * (1 - ratio) / n) ** 0.5
    assert abs(fraction - (1 - ratio)) < 5 * sigma, fraction
    # no stripes: each row and each column keeps about as many (a hash that ignored low index bits would not)
    for per_line in (kept.mean(axis=0), kept.mean(axis=1)):
        assert abs(per_line - (1 - ratio)).max() < 6 * (ratio * (1 - ratio) / 1000) ** 0.5


def test_masks_of_other_keys_are_independent():
    like = np.zeros((200, 500), dtype=np.float32)
    a, b = keep_mask(like, (1, 2), 0.5), keep_mask(like, (1, 3), 0.5)
    c = keep_mask(like, (2, 2), 0.5)
    for other in (b, c):
        assert abs(np.count_nonzero(a & other) / a.size - 0.25) < 0.005


@pytest.mark.parametrize("keys", [(0, 0), (5, 6), (2**32 - 1, 12345)], ids=str)
def test_the_same_keys_give_the_same_mask_on_every_device(device, keys):
    host = np.zeros((37, 3, 11), dtype=np.float32)
    expected = keep_mask(host, keys, 0.3)
    here = keep_mask(device.asarray(host), keys, 0.3)
    assert anynet.device_of(here) == device and tuple(here.shape) == (37, 3, 11)
    assert here.dtype == device.xp.bool
    np.testing.assert_array_equal(to_numpy(here), expected)


def test_a_mask_made_on_the_host_and_moved_equals_one_made_on_the_device(device):
    """keep_mask makes PyTorch's and array-api-strict's CPU masks with NumPy and moves them; device_mask computes
    them there (the int64 form): the same bits, on the same device."""
    like = device.asarray(np.zeros((13, 17), dtype=np.float32))
    for keys, ratio in [((9, 10), 0.5), ((2**32 - 1, 0), 0.2), ((0, 0), 0.0)]:
        made, moved = device_mask(like, keys, ratio), keep_mask(like, keys, ratio)
        assert anynet.device_of(made) == device and anynet.device_of(moved) == device
        assert made.dtype == moved.dtype == device.xp.bool
        np.testing.assert_array_equal(to_numpy(made), to_numpy(moved))


def test_ratio_zero_keeps_everything(device):
    # keys (0, 0) hash index 0 to 0, the smallest hash there is: it must be kept all the same
    like = device.asarray(np.zeros((64, 64), dtype=np.float32))
    for keys in [(0, 0), (3, 4), (2**32 - 1, 2**32 - 1)]:
        assert to_numpy(keep_mask(like, keys, 0.0)).all(), keys
        assert to_numpy(device_mask(like, keys, 0.0)).all(), keys


def test_a_hash_equal_to_the_threshold_is_dropped_as_the_book_drops_rand_equal_to_ratio():
    """The book keeps an element when rand() > ratio; hash / 2**32 stands for rand()."""
    hashed = _hash_int64(np, 1000, (1, 2), "cpu")
    ratio = float(hashed[10]) / 2**32  # exactly representable: the hash of element 10 is the threshold
    assert threshold(ratio) == hashed[10]
    kept = keep_mask(np.zeros(1000), (1, 2), ratio)
    np.testing.assert_array_equal(kept, hashed > hashed[10])
    assert not kept[10]
