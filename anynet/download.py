"""Downloading a file from a list of mirrors, checked against its published md5 before it is put in place.

Standard library only (urllib). A download goes to a hidden temporary file in the destination folder and is
renamed into place only after its checksum matched, so an interrupted or corrupt download never leaves a partial
or bad file behind.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ._atomic import atomic_write
from ._progress import progress_bar

__all__ = ["DownloadError", "download"]

_CHUNK = 1 << 16


class DownloadError(OSError):
    """Every mirror failed; ``failures`` lists (url, reason) for each one tried."""

    def __init__(self, message: str, failures: list[tuple[str, str]]):
        super().__init__(message)
        self.failures = failures


def download(
    filename: str,
    md5: str,
    mirrors: Sequence[str],
    folder: str | os.PathLike,
    *,
    timeout: float = 30.0,
    progress: bool | None = None,
) -> Path:
    """Fetch ``filename`` from the first of ``mirrors`` (base URLs) that serves it with checksum ``md5``.

    The file lands in ``folder`` (created if needed) and its path is returned. Each mirror is given ``timeout``
    seconds to answer; any failure (network, HTTP error, short read, wrong checksum) moves on to the next one.
    If all fail, DownloadError lists every URL tried with its reason. ``progress``: a tqdm bar (None: only when
    stderr is a terminal and tqdm is installed).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    failures: list[tuple[str, str]] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        try:
            _fetch_checked(url, md5, target, timeout, progress)
            return target
        except Exception as error:  # noqa: BLE001 - any failure means: try the next mirror
            failures.append((url, _reason(error)))
    tried = "\n".join(f"  {url}: {reason}" for url, reason in failures) or "  (no mirrors given)"
    raise DownloadError(f"could not download {filename}; tried:\n{tried}", failures)


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{type(error.reason).__name__}: {error.reason}"
    return f"{type(error).__name__}: {error}"


def _fetch_checked(url: str, md5: str, target: Path, timeout: float, progress: bool | None) -> None:
    with atomic_write(target) as sink, urllib.request.urlopen(url, timeout=timeout) as response:
        size = response.headers.get("Content-Length")
        size = int(size) if size and size.isdigit() else None
        digest = hashlib.md5()
        received = 0
        with progress_bar(progress, total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                          leave=False) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # raising here, inside atomic_write, deletes the partial file instead of moving it into place
        if size is not None and received != size:
            raise OSError(f"the connection closed after {received} of {size} bytes")
        if digest.hexdigest() != md5:
            raise ValueError(f"checksum mismatch: md5 {digest.hexdigest()}, expected {md5}")
