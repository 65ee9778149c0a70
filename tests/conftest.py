"""The one device fixture: each test that takes ``device`` runs once per device of the matrix usable here.

Select a subset with ANYNET_DEVICES, e.g. ``ANYNET_DEVICES=cpu,strict:device1 python -m pytest``.
"""

import pytest

import anynet
from tests.helpers import device_names_under_test

try:
    DEVICE_NAMES = device_names_under_test()
    _SELECTION_ERROR = None
except ValueError as error:
    DEVICE_NAMES, _SELECTION_ERROR = [], error


def pytest_configure(config):
    if _SELECTION_ERROR is not None:
        raise pytest.UsageError(f"ANYNET_DEVICES names a device this machine cannot use: {_SELECTION_ERROR}")


def pytest_report_header(config):
    return f"anynet devices under test: {', '.join(DEVICE_NAMES)} (choose with ANYNET_DEVICES=a,b)"


@pytest.fixture(params=DEVICE_NAMES, scope="session")
def device(request):
    return anynet.device(request.param)
