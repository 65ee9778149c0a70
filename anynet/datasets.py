"""MNIST and Fashion-MNIST with the book's ``load_mnist`` semantics: found locally, downloaded once, cached.

Files are looked for in this order: ``root``; ``$ANYNET_DATA/<name>/``; the user cache
(``$XDG_CACHE_HOME`` or ``~/.cache``)``/anynet/<name>/``; ``/usr/share/datasets/<name>/`` (where Debian's
dataset-fashion-mnist installs). Missing files are downloaded into the user cache from the dataset's mirrors
(``$ANYNET_MNIST_MIRROR`` / ``$ANYNET_FASHION_MNIST_MIRROR``, comma-separated base URLs, replace them).
Parsed arrays are kept in the user cache as .npz (never pickle), keyed by the source files' size and time, so a
second load is fast and a changed source file is parsed again.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy

from ._atomic import atomic_write
from .download import DownloadError, download
from .idx import read_idx

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "load_dataset",
    "load_mnist",
    "load_fashion_mnist",
    "search_folders",
    "cache_folder",
]

SPLITS = ("train", "test")
SYSTEM_FOLDER = Path("/usr/share/datasets")  # Debian's dataset-* packages install here
NUM_CLASSES = 10


@dataclass(frozen=True)
class DataFile:
    filename: str  # as published, gzip-compressed
    md5: str  # of the published .gz
    shape: tuple  # what the parsed array must be


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    mirrors: tuple
    mirror_variable: str
    files: dict  # (split, "images" | "labels") -> DataFile
    class_names: tuple = tuple(str(digit) for digit in range(10))

    def split_files(self, split: str) -> dict:
        return {kind: self.files[(split, kind)] for kind in ("images", "labels")}


def _idx_files(md5s: dict) -> dict:
    sizes = {"train": 60000, "test": 10000}
    prefix = {"train": "train", "test": "t10k"}
    files = {}
    for split in SPLITS:
        n = sizes[split]
        files[(split, "images")] = DataFile(f"{prefix[split]}-images-idx3-ubyte.gz", md5s[(split, "images")],
                                            (n, 28, 28))
        files[(split, "labels")] = DataFile(f"{prefix[split]}-labels-idx1-ubyte.gz", md5s[(split, "labels")], (n,))
    return files


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        # the mirrors torchvision uses, in its order
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        "ANYNET_MNIST_MIRROR",
        _idx_files({
            ("train", "images"): "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ("train", "labels"): "d53e105ee54ea40749a09fcbcd1e9432",
            ("test", "images"): "9fb629c4189551a2d022fa330f9573f3",
            ("test", "labels"): "ec29112dd5afa0611ce80d1b7f02629c",
        }),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),  # Zalando's
        "ANYNET_FASHION_MNIST_MIRROR",
        _idx_files({
            ("train", "images"): "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            ("train", "labels"): "25c81989df183df01b3e8a0aad5dffbe",
            ("test", "images"): "bef4ecab320f06d8554ea6380940ec79",
            ("test", "labels"): "bb300cfdad3c16e7a12a480ee83cd310",
        }),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """Files of a dataset are neither on disk nor downloadable; the message says where to put them."""


def cache_folder(name: str) -> Path:
    """The user cache folder for dataset ``name``: $XDG_CACHE_HOME (or ~/.cache)/anynet/<name>."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anynet" / name


def search_folders(name: str, root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where the files of dataset ``name`` are looked for, in order, each with how it was chosen."""
    folders = []
    if root is not None:
        folders.append(("root", Path(root).expanduser()))
    if os.environ.get("ANYNET_DATA"):
        folders.append(("$ANYNET_DATA", Path(os.environ["ANYNET_DATA"]).expanduser() / name))
    folders.append(("user cache", cache_folder(name)))
    folders.append(("system", SYSTEM_FOLDER / name))
    return folders


def _find(info: DatasetInfo, data: DataFile, folders: list) -> Path | None:
    """The first copy of ``data`` in ``folders``, published .gz or uncompressed."""
    for _, folder in folders:
        for candidate in (folder / data.filename, folder / data.filename.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def _mirrors(info: DatasetInfo, mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        mirrors = os.environ.get(info.mirror_variable) or list(info.mirrors)
    if isinstance(mirrors, str):
        mirrors = [m.strip() for m in mirrors.split(",") if m.strip()]
    return list(mirrors)


def _locate_split(info, split, root, download_missing, mirrors, timeout, progress) -> dict:
    """Paths of the split's image and label files, downloading the missing ones if allowed."""
    folders = search_folders(info.name, root)
    found = {kind: _find(info, data, folders) for kind, data in info.split_files(split).items()}
    missing = [kind for kind, path in found.items() if path is None]
    failures = []
    if missing and download_missing:
        urls = _mirrors(info, mirrors)
        for kind in missing:
            data = info.files[(split, kind)]
            print(f"anynet: downloading {info.name}/{data.filename} into {cache_folder(info.name)}", file=sys.stderr)
            try:
                found[kind] = download(data.filename, data.md5, urls, cache_folder(info.name), timeout=timeout,
                                       progress=progress)
            except DownloadError as error:
                failures += error.failures
    still_missing = [info.files[(split, kind)].filename for kind, path in found.items() if path is None]
    if still_missing:
        raise DatasetNotFoundError(_not_found_message(info, split, still_missing, folders, failures,
                                                      download_missing, _mirrors(info, mirrors)))
    return found


def _not_found_message(info, split, filenames, folders, failures, tried_download, mirrors) -> str:
    lines = [f"{info.name} {split} split: missing {', '.join(filenames)}", "looked in:"]
    lines += [f"  {folder} ({how})" for how, folder in folders]
    if failures:
        lines.append("download failed from every mirror:")
        lines += [f"  {url}: {reason}" for url, reason in failures]
    elif not tried_download:
        lines.append("download=False, so nothing was downloaded")
    lines.append(
        f"To fix: download the files by hand (e.g. from {mirrors[0] if mirrors else info.mirrors[0]}) into "
        f"{cache_folder(info.name)} or $ANYNET_DATA/{info.name}/, or pass root=FOLDER (--data-dir FOLDER on the "
        "command line); "
        f"set {info.mirror_variable} to other mirrors (comma-separated base URLs)."
    )
    for other in SPLITS:
        if other != split and all(_find(info, data, folders) for data in info.split_files(other).values()):
            lines.append(f"The {other} split is present: load it alone with split={other!r}"
                         + (" (anynet evaluate reads only the test split)." if other == "test" else "."))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Parsing, validation and the parsed-array cache
# ------------------------------------------------------------------------------------------------------------


def _source_key(paths: Sequence[Path]) -> str:
    """Changes whenever a source file is replaced or rewritten (its path, size or modification time)."""
    digest = hashlib.sha1()
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _parse_checked(path: Path, data: DataFile) -> numpy.ndarray:
    array = read_idx(path)
    if array.shape != data.shape or array.dtype != numpy.uint8:
        raise ValueError(
            f"{path}: holds {array.dtype} of shape {array.shape}, expected uint8 of shape {data.shape} for "
            f"{data.filename}; the file is of another kind or damaged, replace it"
        )
    return array


def _load_split_arrays(info: DatasetInfo, split: str, paths: dict) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Raw uint8 images (N, 28, 28) and labels (N,), from the parsed cache when the sources are unchanged."""
    parsed = cache_folder(info.name) / "parsed"
    key = _source_key([paths["images"], paths["labels"]])
    cached = parsed / f"{split}-{key}.npz"
    if cached.is_file():
        try:
            with numpy.load(cached, allow_pickle=False) as archive:
                return archive["images"], archive["labels"]
        except Exception:  # a damaged cache entry is rebuilt below, never trusted
            pass
    images = _parse_checked(paths["images"], info.files[(split, "images")])
    labels = _parse_checked(paths["labels"], info.files[(split, "labels")])
    if labels.max(initial=0) >= NUM_CLASSES:
        raise ValueError(f"{paths['labels']}: labels up to {int(labels.max())}, expected 0..{NUM_CLASSES - 1}")
    _write_cache(parsed, split, cached, images, labels)
    return images, labels


def _write_cache(folder: Path, split: str, target: Path, images, labels) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as sink:
            numpy.savez(sink, images=images, labels=labels)
        for stale in folder.glob(f"{split}-*.npz"):  # entries of sources that have since changed
            if stale != target:
                stale.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only cache only costs speed


def _present(images, labels, normalize: bool, flatten: bool, one_hot_label: bool):
    n = images.shape[0]
    x = images.reshape(n, -1) if flatten else images.reshape(n, 1, 28, 28)
    if normalize:
        x = x.astype(numpy.float32)
        x /= numpy.float32(255.0)  # the book's arithmetic, in place: one 188 MB buffer for MNIST's train split
    else:
        x = x.copy()  # never hand out the cache's own buffer
    if one_hot_label:
        t = numpy.zeros((n, NUM_CLASSES), dtype=numpy.float32)
        t[numpy.arange(n), labels] = 1.0
    else:
        t = labels.astype(numpy.int64)
    return x, t


def load_dataset(
    name: str,
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    *,
    split: str | None = None,
    root: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | str | None = None,
    timeout: float = 30.0,
    progress: bool | None = None,
):
    """Load MNIST-format dataset ``name`` ("mnist" or "fashion-mnist") as host NumPy arrays.

    Returns ``((x_train, t_train), (x_test, t_test))`` as the book's ``load_mnist`` does, or ``(x, t)`` of one
    split when ``split`` is "train" or "test".

    normalize: images as float32 in [0, 1] (else uint8 0..255). flatten: images (N, 784) (else (N, 1, 28, 28)).
    one_hot_label: labels (N, 10) float32 (else int64 class numbers).
    root: a folder searched first. download: fetch missing files into the user cache. mirrors: base URLs to
    download from instead of the dataset's own (also from $ANYNET_MNIST_MIRROR / $ANYNET_FASHION_MNIST_MIRROR).
    timeout: seconds each mirror has to answer. progress: download progress bar (None: when on a terminal).
    """
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train', 'test' or None for both")
    info = DATASETS[key]
    chosen = SPLITS if split is None else (split,)
    paths = {s: _locate_split(info, s, root, download, mirrors, timeout, progress) for s in chosen}
    loaded = tuple(_present(*_load_split_arrays(info, s, paths[s]), normalize, flatten, one_hot_label) for s in chosen)
    return loaded if split is None else loaded[0]


def _loader(name: str, summary: str):
    """``load_dataset`` for one dataset, with the book's ``load_mnist`` signature."""

    def load(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False, *,
             split: str | None = None, root: str | os.PathLike | None = None, download: bool = True,
             mirrors: Sequence[str] | str | None = None, timeout: float = 30.0, progress: bool | None = None):
        return load_dataset(name, normalize, flatten, one_hot_label, split=split, root=root, download=download,
                            mirrors=mirrors, timeout=timeout, progress=progress)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"{summary}; see :func:`load_dataset` for the options."
    return load


load_mnist = _loader("mnist", "The book's ``load_mnist``: ``((x_train, t_train), (x_test, t_test))``")
load_fashion_mnist = _loader("fashion-mnist", "Fashion-MNIST with the same shapes and options as :func:`load_mnist`")
