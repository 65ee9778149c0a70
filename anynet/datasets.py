"""MNIST and Fashion-MNIST with the book's ``load_mnist`` semantics: found locally, downloaded once, cached.

Files are looked for in this order: ``root`` (a folder with the files themselves); ``data_dir/<name>/`` (then
``data_dir`` itself); ``$ANYNET_DATA/<name>/``; the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``)``/anynet/<name>/``;
``/usr/share/datasets/<name>/`` (where Debian's dataset-fashion-mnist installs). Missing files are downloaded into the
user cache from the dataset's mirrors (``$ANYNET_MNIST_MIRROR`` / ``$ANYNET_FASHION_MNIST_MIRROR``, comma-separated
base URLs, replace them). A file found on disk is used only if its data is the published file's (checked by the md5
of its uncompressed content, so a recompressed copy such as Debian's passes); another dataset's file, or a modified
one, is refused with what it is. Parsed arrays are kept in the user cache as .npz (never pickle), keyed by the
source files' size and time, so a second load is fast and a changed source file is parsed and checked again.
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
from .idx import idx_bytes, parse_idx

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
    md5: str  # of the published .gz (what a download is checked against)
    shape: tuple  # what the parsed array must be
    content_md5: str  # of the uncompressed IDX data (what a file on disk is checked against, however compressed)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    mirrors: tuple
    mirror_variable: str
    files: dict  # (split, "images" | "labels") -> DataFile
    class_names: tuple = tuple(str(digit) for digit in range(10))
    system_package: str | None = None  # the Debian/Ubuntu package that installs it into SYSTEM_FOLDER/<name>

    def split_files(self, split: str) -> dict:
        return {kind: self.files[(split, kind)] for kind in ("images", "labels")}


def _idx_files(md5s: dict) -> dict:
    """DataFiles from (split, kind) -> (md5 of the published .gz, md5 of its uncompressed content)."""
    sizes = {"train": 60000, "test": 10000}
    prefix = {"train": "train", "test": "t10k"}
    files = {}
    for split in SPLITS:
        n = sizes[split]
        for kind, dimensions, shape in (("images", 3, (n, 28, 28)), ("labels", 1, (n,))):
            gz_md5, content_md5 = md5s[(split, kind)]
            files[(split, kind)] = DataFile(f"{prefix[split]}-{kind}-idx{dimensions}-ubyte.gz", gz_md5, shape,
                                            content_md5)
    return files


DATASETS = {
    "mnist": DatasetInfo(
        "mnist",
        # the mirrors torchvision uses, in its order
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        "ANYNET_MNIST_MIRROR",
        _idx_files({
            ("train", "images"): ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            ("train", "labels"): ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            ("test", "images"): ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            ("test", "labels"): ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        }),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),  # Zalando's
        "ANYNET_FASHION_MNIST_MIRROR",
        # Debian's dataset-fashion-mnist recompressed the files: other .gz md5s, the same content md5s
        _idx_files({
            ("train", "images"): ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            ("train", "labels"): ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            ("test", "images"): ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            ("test", "labels"): ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        }),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        system_package="dataset-fashion-mnist",
    ),
}


class DatasetNotFoundError(FileNotFoundError):
    """Files of a dataset are neither on disk nor downloadable; the message says where to put them.

    ``cli_message`` says the same in the ``anynet`` command's words (``--data-dir`` instead of ``data_dir=``).
    """

    def __init__(self, message: str, cli_message: str | None = None):
        super().__init__(message)
        self.cli_message = cli_message or message


def cache_folder(name: str) -> Path:
    """The user cache folder for dataset ``name``: $XDG_CACHE_HOME (or ~/.cache)/anynet/<name>."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "anynet" / name


def search_folders(name: str, root: str | os.PathLike | None = None,
                   data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """Where the files of dataset ``name`` are looked for, in order, each with how it was chosen."""
    folders = []
    if root is not None:
        folders.append(("root", Path(root).expanduser()))
    if data_dir is not None:
        folders.append(("data_dir", Path(data_dir).expanduser() / name))
        # the files straight in data_dir: what --data-dir meant before it took the folder that holds <name>/
        folders.append(("data_dir itself", Path(data_dir).expanduser()))
    if os.environ.get("ANYNET_DATA"):
        folders.append(("$ANYNET_DATA", Path(os.environ["ANYNET_DATA"]).expanduser() / name))
    folders.append(("user cache", cache_folder(name)))
    folders.append(("system", SYSTEM_FOLDER / name))
    return folders


def _find(info: DatasetInfo, data: DataFile, folders: list) -> Path | None:
    """The first copy of ``data`` in ``folders``, published .gz or uncompressed."""
    for how, folder in folders:
        for candidate in (folder / data.filename, folder / data.filename.removesuffix(".gz")):
            if candidate.is_file() and not (how == "data_dir itself" and _of_another_dataset(candidate, info)):
                return candidate
    return None


def _of_another_dataset(path: Path, info: DatasetInfo) -> bool:
    """Whether ``path`` is the published file of a dataset other than ``info``'s. MNIST and Fashion-MNIST share
    file names, so a folder holding one's files directly (the older meaning of --data-dir) may be the other's:
    the search goes on past them instead of refusing them."""
    try:
        known = _identify(hashlib.md5(idx_bytes(path.read_bytes(), source=str(path))).hexdigest())
    except (OSError, ValueError):
        return False  # unreadable or not IDX: _parse_checked names the problem
    return known is not None and not known.startswith(f"{info.name}'s ")


def _mirrors(info: DatasetInfo, mirrors: Sequence[str] | str | None) -> list[str]:
    if mirrors is None:
        mirrors = os.environ.get(info.mirror_variable) or list(info.mirrors)
    if isinstance(mirrors, str):
        mirrors = [m.strip() for m in mirrors.split(",") if m.strip()]
    return list(mirrors)


def _locate_split(info, split, folders, download_missing, mirrors, timeout, progress) -> dict:
    """Paths of the split's image and label files, downloading the missing ones if allowed."""
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
        report = (info, split, still_missing, folders, failures, download_missing, _mirrors(info, mirrors))
        raise DatasetNotFoundError(_not_found_message(*report, cli=False), _not_found_message(*report, cli=True))
    return found


# How each search folder is named in messages: the Python API's words, and the anynet command's.
_FOLDER_NAMES = {False: {}, True: {"data_dir": "--data-dir", "data_dir itself": "--data-dir itself"}}


def _not_found_message(info, split, filenames, folders, failures, tried_download, mirrors, cli: bool) -> str:
    lines = [f"{info.name} {split} split: missing {', '.join(filenames)}", "looked in:"]
    lines += [f"  {folder} ({_FOLDER_NAMES[cli].get(how, how)})" for how, folder in folders]
    if failures:
        lines.append("download failed from every mirror:")
        lines += [f"  {url}: {reason}" for url, reason in failures]
    elif not tried_download:
        lines.append("download=False, so nothing was downloaded")
    source = mirrors[0] if mirrors else info.mirrors[0]
    if cli:
        where = (f"into {cache_folder(info.name)}, or into FOLDER/{info.name}/ and pass --data-dir FOLDER "
                 "(or set ANYNET_DATA=FOLDER)")
    else:
        where = (f"into {cache_folder(info.name)} or $ANYNET_DATA/{info.name}/, or pass data_dir=FOLDER (a folder "
                 f"holding {info.name}/) or root=FOLDER (a folder holding the files)")
    lines.append(f"To fix: download the files by hand (e.g. from {source}) {where}; "
                 f"set {info.mirror_variable} to other mirrors (comma-separated base URLs).")
    if info.system_package:
        lines.append(f"On Debian or Ubuntu, sudo apt-get install {info.system_package} puts the files in "
                     f"{SYSTEM_FOLDER / info.name}, where anynet finds them with no download.")
    for other in SPLITS:
        if other != split and all(_find(info, data, folders) for data in info.split_files(other).values()):
            if cli:
                lines.append(f"The {other} split is present"
                             + (": anynet evaluate needs only that one." if other == "test" else "."))
            else:
                lines.append(f"The {other} split is present: load it alone with split={other!r}.")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Parsing, validation and the parsed-array cache
# ------------------------------------------------------------------------------------------------------------

# Bumped when what a parsed-cache entry vouches for changes: entries written before local files were checked
# against the published content must not vouch for files that were never checked.
_CACHE_FORMAT = "content-checked-1"


def _source_key(paths: Sequence[Path]) -> str:
    """Changes whenever a source file is replaced or rewritten (its path, size or modification time)."""
    digest = hashlib.sha1(_CACHE_FORMAT.encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


# (path, size, modification time) of files whose content this process found to be the published one: loading
# such a file again (with a parsed cache that cannot be written) skips hashing it again.
_CHECKED: set[tuple[str, int, int]] = set()


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def _identify(content_md5: str) -> str | None:
    """Which known dataset file has this content, as "fashion-mnist's t10k-images-idx3-ubyte.gz", or None."""
    for info in DATASETS.values():
        for data in info.files.values():
            if data.content_md5 == content_md5:
                return f"{info.name}'s {data.filename}"
    return None


def _parse_checked(path: Path, info: DatasetInfo, data: DataFile) -> numpy.ndarray:
    key = _file_key(path)
    content = idx_bytes(path.read_bytes(), source=str(path))
    array = parse_idx(content, source=str(path))
    if array.shape != data.shape or array.dtype != numpy.uint8:
        raise ValueError(
            f"{path}: holds {array.dtype} of shape {array.shape}, expected uint8 of shape {data.shape} for "
            f"{data.filename}; the file is of another kind or damaged, replace it"
        )
    if key not in _CHECKED:
        digest = hashlib.md5(content).hexdigest()
        if digest != data.content_md5:
            known = _identify(digest)
            what = f"it is {known}" if known else "its data is not the published file's (modified, or another " \
                                                  "dataset in the same format)"
            raise ValueError(
                f"{path}: expected {info.name}'s {data.filename}, but {what} (md5 of the uncompressed data "
                f"{digest}, expected {data.content_md5}); put the published file there"
                + (" (and keep this one in a folder of its own dataset)" if known else
                   ", or delete this one and anynet downloads it")
            )
        _CHECKED.add(key)
    return array


def _load_split_arrays(info: DatasetInfo, split: str, paths: dict) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Raw uint8 images (N, 28, 28) and labels (N,), from the parsed cache when the sources are unchanged (an entry
    is written only for sources whose content was checked)."""
    parsed = cache_folder(info.name) / "parsed"
    key = _source_key([paths["images"], paths["labels"]])
    cached = parsed / f"{split}-{key}.npz"
    if cached.is_file():
        try:
            with numpy.load(cached, allow_pickle=False) as archive:
                return archive["images"], archive["labels"]
        except Exception:  # a damaged cache entry is rebuilt below, never trusted
            pass
    images = _parse_checked(paths["images"], info, info.files[(split, "images")])
    labels = _parse_checked(paths["labels"], info, info.files[(split, "labels")])
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
    data_dir: str | os.PathLike | None = None,
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
    root: a folder holding the files themselves, searched first. data_dir: a folder holding ``<name>/`` (as
    $ANYNET_DATA does; the ``anynet`` command's --data-dir), searched next. download: fetch missing files into the
    user cache. mirrors: base URLs to download from instead of the dataset's own (also from $ANYNET_MNIST_MIRROR /
    $ANYNET_FASHION_MNIST_MIRROR). timeout: seconds each mirror has to answer. progress: download progress bar
    (None: when on a terminal).

    A file found on disk must hold the published data (its uncompressed content's md5 is checked once, then the
    parsed arrays are cached); another dataset's file or a modified one raises ValueError saying which it is.
    """
    key = name.lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected 'train', 'test' or None for both")
    for option, folder in (("root", root), ("data_dir", data_dir)):
        if folder is not None and not Path(folder).expanduser().is_dir():
            raise FileNotFoundError(f"{option}={str(folder)!r}: no such folder")
    info = DATASETS[key]
    chosen = SPLITS if split is None else (split,)
    folders = search_folders(info.name, root, data_dir)
    paths = {s: _locate_split(info, s, folders, download, mirrors, timeout, progress) for s in chosen}
    loaded = tuple(_present(*_load_split_arrays(info, s, paths[s]), normalize, flatten, one_hot_label) for s in chosen)
    return loaded if split is None else loaded[0]


def _loader(name: str, summary: str):
    """``load_dataset`` for one dataset, with the book's ``load_mnist`` signature."""

    def load(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False, *,
             split: str | None = None, root: str | os.PathLike | None = None,
             data_dir: str | os.PathLike | None = None, download: bool = True,
             mirrors: Sequence[str] | str | None = None, timeout: float = 30.0, progress: bool | None = None):
        return load_dataset(name, normalize, flatten, one_hot_label, split=split, root=root, data_dir=data_dir,
                            download=download, mirrors=mirrors, timeout=timeout, progress=progress)

    load.__name__ = load.__qualname__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"{summary}; see :func:`load_dataset` for the options."
    return load


load_mnist = _loader("mnist", "The book's ``load_mnist``: ``((x_train, t_train), (x_test, t_test))``")
load_fashion_mnist = _loader("fashion-mnist", "Fashion-MNIST with the same shapes and options as :func:`load_mnist`")
