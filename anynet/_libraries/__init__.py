"""One adapter per array library: the only modules (besides ``anynet._kernels``) that name NumPy, CuPy, PyTorch
or array-api-strict.

Each module here defines ``LIBRARY``, an :class:`~anynet._libraries._base.Library`; ``backend.py`` dispatches
through :data:`LIBRARIES`. Adding an array library (JAX, dpnp, ...) is one new module with a ``LIBRARY``: it is
found by name, nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import array_api_compat

from ._base import Library

__all__ = ["LIBRARIES", "Library", "SPEC_FORMS", "resolve_spec", "available_devices", "unusable_devices",
           "library_versions", "library_of"]


def _discover() -> tuple[Library, ...]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            found.append(importlib.import_module(f"{__name__}.{module.name}").LIBRARY)
    return tuple(sorted(found, key=lambda library: library.rank))


# In the order ``available_devices`` lists them and ``"auto"`` prefers them.
LIBRARIES: tuple[Library, ...] = _discover()
_LIBRARY_BY_TYPE: dict[type, Library | None] = {}  # finding the library takes isinstance checks: once per type


def library_of(x: Any) -> Library | None:
    """The adapter of the library ``x`` is an array of, or None for anything else (lists, scalars, ...)."""
    kind = type(x)
    if kind not in _LIBRARY_BY_TYPE:
        _LIBRARY_BY_TYPE[kind] = next((library for library in LIBRARIES if library.owns(x)), None)
    return _LIBRARY_BY_TYPE[kind]


SPEC_FORMS = ", ".join([form for library in LIBRARIES for form in library.spec_forms] + ["'auto'"])


def available_devices() -> list[str]:
    """The device names usable on this machine, in the order "auto" would prefer the CUDA ones."""
    return [name for library in LIBRARIES for name in library.device_names()]


def unusable_devices() -> list[tuple[str, str]]:
    """(what, why) for each library, or part of one (torch:cuda), installed here but not usable: a broken install
    shows with its reason and fix, where a library that is not installed at all is just absent."""
    return [problem for library in LIBRARIES for problem in library.unusable()]


def _parse(spec: str) -> tuple[Library, str]:
    text = spec.strip()
    if text.lower() == "auto":  # the first device of the first usable library that offers one
        for library in LIBRARIES:
            if library.probe()[0] and library.auto_devices():
                return library, library.auto_devices()[0]
    for library in LIBRARIES:
        name = library.canonical(text)
        if name is not None:
            return library, name
    raise ValueError(f"unknown device {spec!r}: expected one of {SPEC_FORMS}. Available here: "
                     f"{', '.join(available_devices())}")


def resolve_spec(spec: str) -> tuple[Library, str]:
    """The library and canonical name of device ``spec`` ("cuda" -> "cuda:0", "strict:CPU_DEVICE" -> "strict"),
    or a ValueError that says why it cannot be used here, what can, and how to install what is missing."""
    library, name = _parse(spec)
    usable, why = library.probe()
    reason = why if not usable else library.check(spec, name)
    if reason:
        # a reason that names its own fix (a missing CUDA library, say) is not followed by the generic one
        hint = f"; {library.install_hint}" if library.install_hint and "pip install" not in reason else ""
        raise ValueError(f"device {spec!r} is not available on this machine: {reason}. Available devices: "
                         f"{', '.join(available_devices())}{hint}")
    return library, name


def library_versions() -> dict[str, str]:
    """Versions of anynet's array libraries, "not installed" (or the import error) for the absent ones."""
    versions = {"array_api_compat": array_api_compat.__version__}
    for library in LIBRARIES:
        try:
            versions[library.module_name] = library.version()
        except ImportError:
            versions[library.module_name] = "not installed"
        except Exception as error:  # e.g. CuPy built for another CUDA version
            versions[library.module_name] = f"broken install ({type(error).__name__}: {error})"
    return versions
