"""The one device fixture: each test that takes ``device`` runs once per device of the matrix usable here.

Select a subset with ANYNET_DEVICES, e.g. ``ANYNET_DEVICES=cpu,strict:device1 python -m pytest``. A device of the
matrix whose library is installed but cannot run (CuPy without its CUDA libraries) is skipped with the reason, which
``-ra`` shows; one whose library is not installed is not in the run.
Tests that need float64 take ``device64`` (the devices that have it) or parametrize ``device, dtype`` over
``DEVICE_DTYPES`` (each device with float32, and with float64 where it has it): no test skips itself for lack of it.
"""

import sys

import pytest

import anynet
from tests.helpers import _SELECTION_ERROR, DEVICE_NAMES, DEVICE_PARAMS, DEVICE_PARAMS_64, UNUSABLE_DEVICES


def pytest_configure(config):
    if _SELECTION_ERROR is not None:
        raise pytest.UsageError(f"ANYNET_DEVICES names a device this machine cannot use: {_SELECTION_ERROR}")


def pytest_report_header(config):
    lines = [f"anynet devices under test: {', '.join(DEVICE_NAMES)} (choose with ANYNET_DEVICES=a,b)"]
    lines += [f"anynet device skipped (installed, not usable): {name}: {why}" for name, why in UNUSABLE_DEVICES.items()]
    return lines


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test draws (the plot functions keep theirs open in pyplot, for plt.show()) end with the test."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(params=DEVICE_PARAMS, scope="session")
def device(request):
    return anynet.device(request.param)


@pytest.fixture(params=DEVICE_PARAMS_64, scope="session")
def device64(request):
    """A device of the matrix that has float64 (gradient checks need it)."""
    return anynet.device(request.param)
