"""The one device fixture: each test that takes ``device`` runs once per device of the matrix usable here.

Select a subset with ANYNET_DEVICES, e.g. ``ANYNET_DEVICES=cpu,strict:device1 python -m pytest``.
Tests that need float64 take ``device64`` (the devices that have it) or parametrize ``device, dtype`` over
``DEVICE_DTYPES`` (each device with float32, and with float64 where it has it): no test skips itself for lack of it.
"""

import pytest

import anynet
from tests.helpers import _SELECTION_ERROR, DEVICE_NAMES, DEVICE_NAMES_64


def pytest_configure(config):
    if _SELECTION_ERROR is not None:
        raise pytest.UsageError(f"ANYNET_DEVICES names a device this machine cannot use: {_SELECTION_ERROR}")


def pytest_report_header(config):
    return f"anynet devices under test: {', '.join(DEVICE_NAMES)} (choose with ANYNET_DEVICES=a,b)"


@pytest.fixture(params=DEVICE_NAMES, scope="session")
def device(request):
    return anynet.device(request.param)


@pytest.fixture(params=DEVICE_NAMES_64, scope="session")
def device64(request):
    """A device of the matrix that has float64 (gradient checks need it)."""
    return anynet.device(request.param)
