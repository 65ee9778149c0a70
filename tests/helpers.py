"""What every test shares: the devices under test and one assertion for arrays on a device."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time

import numpy as np
import pytest

import anynet
from anynet._libraries import LIBRARIES
from anynet.backend import available_devices, namespace, to_numpy

# The suite's device matrix, in order: NumPy always; array-api-strict on its default device, on device1 (which
# refuses any hidden host copy or device mix) and on no_float64; torch on the CPU; CuPy and torch on a GPU.
DEVICE_MATRIX = ("cpu", "strict", "strict:device1", "strict:no_float64", "torch:cpu", "cuda:0", "torch:cuda:0")


def matrix_entries(matrix, libraries, usable) -> list[tuple[str, str, str | None]]:
    """(name, library key, why it cannot run or None) for each entry of ``matrix`` the suite takes up: the usable
    ones, and those whose library is installed but cannot run them (the adapter's reason: a CuPy without its CUDA
    libraries), so that a broken install shows as skipped tests instead of vanishing from the run. An entry whose
    library (for torch:cuda, a CUDA build of torch) is not installed at all is left out."""
    entries = []
    for name in matrix:
        library = next((library for library in libraries if library.canonical(name) == name), None)
        if library is None:
            continue
        if name in usable:
            entries.append((name, library.key, None))
        else:
            why = library.unusable_reason(name)
            if why:
                entries.append((name, library.key, why))
    return entries


def devices_under_test() -> list[tuple[str, str, str | None]]:
    """The matrix's entries (see matrix_entries), or the comma-separated devices in ANYNET_DEVICES, which must all be
    usable (ValueError otherwise: naming a device asks for it to be tested)."""
    chosen = os.environ.get("ANYNET_DEVICES", "").strip()
    if chosen:
        return [(where.name, where.library, None) for where in (anynet.device(name) for name in chosen.split(",")
                                                               if name.strip())]
    return matrix_entries(DEVICE_MATRIX, LIBRARIES, available_devices())


def _skipped(name: str, why: str, *values, id: str | None = None):
    """A parameter set for device ``name``, which cannot run here, skipped with the reason."""
    return pytest.param(name, *values, id=id, marks=pytest.mark.skip(reason=f"{name}: {why}"))


try:
    _ENTRIES = devices_under_test()
    _SELECTION_ERROR = None
except ValueError as error:
    _ENTRIES, _SELECTION_ERROR = [], error
# The devices under test that run here, as names; and those that are installed but cannot run, with the reason.
DEVICE_NAMES = [name for name, _, why in _ENTRIES if why is None]
UNUSABLE_DEVICES = {name: why for name, _, why in _ENTRIES if why is not None}
DEVICE_NAMES_64 = [name for name in DEVICE_NAMES if anynet.device(name).supports_float64]
# Parametrize lists (the device fixtures'): the names above, the unusable devices as skipped parameter sets. Whether
# an unusable device has float64 cannot be asked; it is skipped in device64's list too.
DEVICE_PARAMS = [name if why is None else _skipped(name, why) for name, _, why in _ENTRIES]
DEVICE_PARAMS_64 = [name if why is None else _skipped(name, why) for name, _, why in _ENTRIES
                    if why is not None or name in DEVICE_NAMES_64]
# The libraries with a fused fast path (NumPy on the host, CuPy on a GPU), and the devices under test that have one:
# as names, and as a parametrize list with the unusable ones skipped.
FAST_LIBRARIES = ("numpy", "cupy")
FAST_DEVICES = [name for name in DEVICE_NAMES if anynet.device(name).library in FAST_LIBRARIES]
FAST_DEVICE_PARAMS = [name if why is None else _skipped(name, why) for name, library, why in _ENTRIES
                      if library in FAST_LIBRARIES]
# For tests parametrized by (device, dtype) with indirect=["device"]: float64 only where the device has it; an
# unusable device once, skipped.
DEVICE_DTYPES = [pytest.param(name, dtype, id=f"{name}-{dtype}") if why is None else
                 _skipped(name, why, dtype, id=f"{name}-{dtype}")
                 for name, _, why in _ENTRIES for dtype in ("float32", "float64")
                 if dtype == "float32" or name in DEVICE_NAMES_64]


def assert_close(actual, expected, *, device, dtype=None, rtol=1e-6, atol=0.0):
    """Assert that ``actual`` is an array of ``device``'s library, on ``device``, of ``dtype`` (a name such as
    "float32", or None for the device's default float), with values close to ``expected``."""
    assert namespace(actual) is device.xp, f"namespace {namespace(actual).__name__}, expected {device.xp.__name__}"
    assert anynet.device_of(actual) == device, f"on {anynet.device_of(actual)}, expected on {device}"
    wanted = device.dtype(dtype or "float32")
    assert actual.dtype == wanted, f"dtype {actual.dtype}, expected {wanted}"
    np.testing.assert_allclose(to_numpy(actual), np.asarray(expected), rtol=rtol, atol=atol)


def float_name(device) -> str:
    """The widest float the device has: the dtype the seed values are checked in."""
    return "float64" if device.supports_float64 else "float32"


def tolerance(dtype_name: str) -> dict:
    """rtol/atol for values computed in ``dtype_name`` (float32 keeps about 7 digits)."""
    return {"rtol": 1e-12, "atol": 1e-14} if dtype_name == "float64" else {"rtol": 2e-6, "atol": 1e-7}


# Training problems and step comparisons shared by the Trainer, kernel and CLI tests.

# Optimizer settings the fast-path tests train with.
SETTINGS = {"sgd": {"lr": 0.1}, "momentum": {"lr": 0.05}, "nesterov": {"lr": 0.05}, "adagrad": {"lr": 0.05},
            "rmsprop": {"lr": 0.01}, "adam": {"lr": 0.01}}

def blobs(n, features=784, classes=10, seed=0):
    """Separable but noisy classes: each a Gaussian around its own random centre, as float32 in [0, 1]-ish."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, size=(classes, features))
    labels = rng.integers(0, classes, size=n)
    x = centres[labels] + rng.normal(0, 0.6, size=(n, features))
    return x.astype(np.float32), labels


def problem(seed, classes=5, n=64, features=20):
    """Random (x, labels, one-hot) for the fast-path tests."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    labels = rng.integers(0, classes, size=n)
    return x, labels, np.eye(classes, dtype=np.float32)[labels]


def generic_step(where, net, optimizer, x, t, indices):
    """The generic path's step on the samples ``indices`` of (x, t); returns its loss as a float."""
    optimizer.update(net.params, net.gradient(where.xp.take(x, indices, axis=0), where.xp.take(t, indices, axis=0)))
    return float(to_numpy(net.last_loss))


def assert_same_params(fast_net, slow_net, rtol=2e-5, atol=2e-6):
    for name, value in slow_net.params.items():
        np.testing.assert_allclose(to_numpy(fast_net.params[name]), to_numpy(value), rtol=rtol, atol=atol,
                                   err_msg=name)


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "no such file")
            return
        body, behaviour = route
        if behaviour == "slow":
            time.sleep(1.5)
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            # "truncated": promise the whole file, send half, hang up
            self.wfile.write(body[: len(body) // 2] if behaviour == "truncated" else body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # the client hung up first: what the "slow" route is for (the download timed out and moved on)
            self.close_connection = True

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve_files(routes: dict):
    """An HTTP server on 127.0.0.1 serving ``routes``: URL path -> (bytes, "ok" | "truncated" | "slow").

    Yields the base URL. Loopback only; it stops when the block ends.
    """
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
