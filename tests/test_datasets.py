"""Finding, downloading, parsing and caching MNIST-format datasets, on a small synthetic one."""

import gzip
import hashlib
import itertools
import os

import numpy as np
import pytest

from anynet import datasets
from anynet.datasets import DataFile, DatasetInfo, DatasetNotFoundError, load_dataset
from anynet.idx import write_idx
from tests.helpers import serve_files

SIZES = {"train": 60, "test": 10}
PREFIX = {"train": "train", "test": "t10k"}


class Tiny:
    """A 60 + 10 image dataset in MNIST's format, registered as "tiny" for the length of a test."""

    def __init__(self, tmp_path, seed=0):
        rng = np.random.default_rng(seed)
        self.arrays, self.gz, files = {}, {}, {}
        source = tmp_path / "source"
        source.mkdir()
        for split, n in SIZES.items():
            for kind, shape in (("images", (n, 28, 28)), ("labels", (n,))):
                values = rng.integers(0, 256 if kind == "images" else 10, size=shape, dtype=np.uint8)
                filename = f"{PREFIX[split]}-{kind}-idx{len(shape)}-ubyte.gz"
                write_idx(source / filename, values)
                self.arrays[(split, kind)] = values
                self.gz[filename] = (source / filename).read_bytes()
                files[(split, kind)] = DataFile(filename, hashlib.md5(self.gz[filename]).hexdigest(), shape,
                                                hashlib.md5(gzip.decompress(self.gz[filename])).hexdigest())
        self.info = DatasetInfo("tiny", ("http://127.0.0.1:9/unreachable/",), "ANYNET_TINY_MIRROR", files)

    def filename(self, split, kind):
        return self.info.files[(split, kind)].filename

    def place(self, folder, splits=("train", "test"), raw=False):
        folder.mkdir(parents=True, exist_ok=True)
        for split, kind in itertools.product(splits, ("images", "labels")):
            name = self.filename(split, kind)
            if raw:
                (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(self.gz[name]))
            else:
                (folder / name).write_bytes(self.gz[name])
        return folder


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    dataset = Tiny(tmp_path)
    monkeypatch.setitem(datasets.DATASETS, "tiny", dataset.info)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("ANYNET_DATA", raising=False)
    monkeypatch.delenv("ANYNET_TINY_MIRROR", raising=False)
    monkeypatch.setattr(datasets, "SYSTEM_FOLDER", tmp_path / "system")
    return dataset


@pytest.mark.parametrize("normalize, flatten, one_hot", list(itertools.product([True, False], repeat=3)))
def test_the_books_options_give_the_books_shapes_and_values(tiny, tmp_path, normalize, flatten, one_hot):
    root = tiny.place(tmp_path / "root")
    (x_train, t_train), (x_test, t_test) = load_dataset("tiny", normalize, flatten, one_hot, root=root)
    for x, t, split in ((x_train, t_train, "train"), (x_test, t_test, "test")):
        n = SIZES[split]
        images, labels = tiny.arrays[(split, "images")], tiny.arrays[(split, "labels")]
        assert x.shape == ((n, 784) if flatten else (n, 1, 28, 28))
        if normalize:
            assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
            expected = images.astype(np.float32) / np.float32(255.0)  # the book's arithmetic, bit for bit
            assert np.array_equal(x.reshape(n, 28, 28), expected)
        else:
            assert x.dtype == np.uint8 and np.array_equal(x.reshape(n, 28, 28), images)
        if one_hot:
            assert t.shape == (n, 10) and t.dtype == np.float32
            assert np.array_equal(t.argmax(axis=1), labels) and np.array_equal(t.sum(axis=1), np.ones(n))
        else:
            assert t.shape == (n,) and t.dtype == np.int64 and np.array_equal(t, labels)


def test_one_split_and_raw_files(tiny, tmp_path):
    root = tiny.place(tmp_path / "root", splits=("test",), raw=True)
    x, t = load_dataset("tiny", split="test", root=root, download=False)
    assert x.shape == (10, 784) and np.array_equal(t, tiny.arrays[("test", "labels")])


def test_search_order_root_then_data_dir_then_anynet_data_then_cache_then_system(tiny, tmp_path, monkeypatch):
    folders = [how for how, _ in datasets.search_folders("tiny", root=tmp_path / "root")]
    assert folders == ["root", "user cache", "system"]
    monkeypatch.setenv("ANYNET_DATA", str(tmp_path / "data"))
    listed = datasets.search_folders("tiny", root=tmp_path / "root", data_dir=tmp_path / "dir")
    assert [(how, str(folder)) for how, folder in listed] == [
        ("root", str(tmp_path / "root")), ("data_dir", str(tmp_path / "dir" / "tiny")),
        ("data_dir itself", str(tmp_path / "dir")), ("$ANYNET_DATA", str(tmp_path / "data" / "tiny")),
        ("user cache", str(tmp_path / "cache" / "anynet" / "tiny")), ("system", str(tmp_path / "system" / "tiny")),
    ]
    (tmp_path / "root").mkdir()
    (tmp_path / "dir").mkdir()
    # a different copy in each place (each the published one while it is read): the first in the order wins
    for seed, (_, folder) in enumerate(reversed(listed)):
        (tmp_path / f"copy{seed}").mkdir()
        copy = Tiny(tmp_path / f"copy{seed}", seed=seed + 1)
        copy.place(folder)
        monkeypatch.setitem(datasets.DATASETS, "tiny", copy.info)
        x, t = load_dataset("tiny", split="test", root=tmp_path / "root", data_dir=tmp_path / "dir", download=False,
                            normalize=False)
        assert np.array_equal(t, copy.arrays[("test", "labels")]), f"{folder} was not preferred"


def test_a_missing_split_names_the_files_the_folders_and_the_way_out(tiny, tmp_path):
    root = tiny.place(tmp_path / "root", splits=("test",))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("tiny", root=root, download=False)
    message = str(caught.value)
    assert "tiny train split: missing train-images-idx1-ubyte.gz".replace("idx1", "idx3") in message
    assert "train-labels-idx1-ubyte.gz" in message
    for folder in (root, tmp_path / "cache" / "anynet" / "tiny", tmp_path / "system" / "tiny"):
        assert str(folder) in message
    assert "download=False" in message and "ANYNET_TINY_MIRROR" in message
    assert "pass data_dir=FOLDER (a folder holding tiny/) or root=FOLDER (a folder holding the files)" in message
    assert message.endswith("The test split is present: load it alone with split='test'.")
    assert "--data-dir" not in message and "apt-get" not in message  # no Debian package installs "tiny"
    # the same for the anynet command, in its words
    cli = caught.value.cli_message
    assert f"into {tmp_path / 'cache' / 'anynet' / 'tiny'}, or into FOLDER/tiny/ and pass --data-dir FOLDER (or set " \
           "ANYNET_DATA=FOLDER)" in cli
    assert cli.endswith("The test split is present: anynet evaluate needs only that one.")
    assert "root=" not in cli and "data_dir=" not in cli and "split=" not in cli


def test_the_debian_package_is_named_only_for_the_dataset_it_installs(tiny, tmp_path):
    # dpkg -c dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb: ./usr/share/datasets/fashion-mnist/*.gz
    assert datasets.DATASETS["fashion-mnist"].system_package == "dataset-fashion-mnist"
    assert datasets.DATASETS["mnist"].system_package is None
    hint = (f"On Debian or Ubuntu, sudo apt-get install dataset-fashion-mnist puts the files in "
            f"{tmp_path / 'system' / 'fashion-mnist'}, where anynet finds them with no download.")
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("fashion-mnist", split="test", download=False)
    assert hint in str(caught.value).splitlines() and hint in caught.value.cli_message.splitlines()
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", split="test", download=False)
    assert "apt-get" not in str(caught.value) and "apt-get" not in caught.value.cli_message


def test_the_system_folder_is_where_debian_installs_the_files():
    from pathlib import Path

    searched = datasets.SYSTEM_FOLDER
    assert searched == Path("/usr/share/datasets")


def test_unknown_names_are_clear(tiny):
    with pytest.raises(ValueError, match="unknown dataset 'cifar': expected one of mnist, fashion-mnist"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_dataset("tiny", split="valid")


def test_a_file_of_the_wrong_kind_is_named(tiny, tmp_path):
    root = tiny.place(tmp_path / "root", splits=("test",))
    (root / tiny.filename("test", "images")).write_bytes(tiny.gz[tiny.filename("test", "labels")])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: holds uint8 of shape \(10,\), expected uint8 "
                                         r"of shape \(10, 28, 28\)"):
        load_dataset("tiny", split="test", root=root, download=False)


def test_a_file_of_another_dataset_is_refused_with_what_it_is(tiny, tmp_path, monkeypatch):
    (tmp_path / "other").mkdir()
    other = Tiny(tmp_path / "other", seed=5)
    monkeypatch.setitem(datasets.DATASETS, "other", DatasetInfo("other", (), "ANYNET_OTHER_MIRROR", other.info.files))
    root = tiny.place(tmp_path / "root", splits=("test",))
    images = root / tiny.filename("test", "images")
    images.write_bytes(other.gz[other.filename("test", "images")])
    expected = tiny.info.files[("test", "images")].content_md5
    with pytest.raises(ValueError) as caught:
        load_dataset("tiny", split="test", root=root, download=False)
    assert str(caught.value) == (
        f"{images}: expected tiny's t10k-images-idx3-ubyte.gz, but it is other's t10k-images-idx3-ubyte.gz (md5 of "
        f"the uncompressed data {other.info.files[('test', 'images')].content_md5}, expected {expected}); put the "
        "published file there (and keep this one in a folder of its own dataset)")
    assert not (tmp_path / "cache" / "anynet" / "tiny" / "parsed").exists()  # nothing cached for it


def test_a_modified_file_is_refused(tiny, tmp_path):
    root = tiny.place(tmp_path / "root", splits=("test",))
    modified = tiny.arrays[("test", "images")].copy()
    modified[3, 14, 14] ^= 1  # one pixel, one bit
    write_idx(root / tiny.filename("test", "images"), modified)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: expected tiny's t10k-images-idx3-ubyte.gz, but "
                                         r"its data is not the published file's \(modified, or another dataset in the "
                                         r"same format\)"):
        load_dataset("tiny", split="test", root=root, download=False)


def test_a_recompressed_copy_of_the_published_data_passes(tiny, tmp_path):
    """Debian's dataset-fashion-mnist recompressed Zalando's files: another .gz checksum, the same data."""
    root = tiny.place(tmp_path / "root", splits=("test",))
    for kind in ("images", "labels"):
        path = root / tiny.filename("test", kind)
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1, mtime=12345))
        assert hashlib.md5(path.read_bytes()).hexdigest() != tiny.info.files[("test", kind)].md5
    x, t = load_dataset("tiny", split="test", root=root, download=False, normalize=False)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])
    assert np.array_equal(x.reshape(10, 28, 28), tiny.arrays[("test", "images")])


def test_an_unchanged_checked_file_is_not_hashed_again(tiny, tmp_path, monkeypatch):
    root = tiny.place(tmp_path / "root", splits=("test",))
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))  # no parsed cache: parsed every time
    load_dataset("tiny", split="test", root=root, download=False)

    def no_hashing(*args):
        raise AssertionError("hashed an unchanged file again")

    with monkeypatch.context() as patched:
        patched.setattr(datasets.hashlib, "md5", no_hashing)
        _, t = load_dataset("tiny", split="test", root=root, download=False)
        assert np.array_equal(t, tiny.arrays[("test", "labels")])
        os.utime(root / tiny.filename("test", "labels"), ns=(1, 1))  # rewritten (the same bytes): checked again
        with pytest.raises(AssertionError, match="hashed an unchanged file again"):
            load_dataset("tiny", split="test", root=root, download=False)


def test_parsed_entries_of_files_never_checked_are_not_trusted(tiny, tmp_path):
    """A parsed-array cache written before local files were checked may hold another dataset's images."""
    root = tiny.place(tmp_path / "root", splits=("test",))
    paths = [root / tiny.filename("test", kind) for kind in ("images", "labels")]
    digest = hashlib.sha1()  # how such an entry was named: the sources' path, size and time only
    for path in paths:
        digest.update(f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns};".encode())
    parsed = tmp_path / "cache" / "anynet" / "tiny" / "parsed"
    parsed.mkdir(parents=True)
    np.savez(parsed / f"test-{digest.hexdigest()[:16]}.npz", images=np.zeros((10, 28, 28), np.uint8),
             labels=np.zeros(10, np.uint8))
    _, t = load_dataset("tiny", split="test", root=root, download=False)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])
    assert len(list(parsed.glob("test-*.npz"))) == 1  # the unchecked entry is replaced


def test_data_dir_is_the_folder_that_holds_the_datasets_folders_or_the_files_themselves(tiny, tmp_path):
    tiny.place(tmp_path / "data" / "tiny", splits=("test",))
    _, t = load_dataset("tiny", split="test", data_dir=tmp_path / "data", download=False)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])
    tiny.place(tmp_path / "flat", splits=("test",))  # what --data-dir used to take
    _, t = load_dataset("tiny", split="test", data_dir=tmp_path / "flat", download=False)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])


@pytest.mark.parametrize("option", ["root", "data_dir"])
def test_a_folder_that_does_not_exist_is_an_error(tiny, tmp_path, option):
    missing = tmp_path / "typo"
    with pytest.raises(FileNotFoundError) as caught:
        load_dataset("tiny", split="test", download=False, **{option: missing})
    assert str(caught.value) == f"{option}={str(missing)!r}: no such folder"


def test_parsed_arrays_are_cached_and_rebuilt_when_a_source_changes(tiny, tmp_path, monkeypatch):
    root = tiny.place(tmp_path / "root", splits=("test",))
    first = load_dataset("tiny", split="test", root=root, normalize=False)
    parsed = tmp_path / "cache" / "anynet" / "tiny" / "parsed"
    entries = sorted(parsed.glob("test-*.npz"))
    assert len(entries) == 1

    def no_parsing(path):
        raise AssertionError(f"parsed {path} again although it had not changed")

    with monkeypatch.context() as patched:
        patched.setattr(datasets, "parse_idx", no_parsing)
        again = load_dataset("tiny", split="test", root=root, normalize=False)
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])

    changed = tiny.arrays[("test", "labels")][::-1].copy()
    labels = root / tiny.filename("test", "labels")
    write_idx(labels, changed)
    os.utime(labels, ns=(1, 1))  # a different time even on coarse clocks
    # the changed file is checked again: refused as it is, read once it is the published one
    with pytest.raises(ValueError, match="not the published file's"):
        load_dataset("tiny", split="test", root=root, normalize=False)
    published = datasets.DataFile(labels.name, "unused", (10,), hashlib.md5(gzip.decompress(labels.read_bytes()))
                                  .hexdigest())
    monkeypatch.setitem(tiny.info.files, ("test", "labels"), published)
    _, t = load_dataset("tiny", split="test", root=root, normalize=False)
    assert np.array_equal(t, changed)
    assert sorted(parsed.glob("test-*.npz")) != entries and len(list(parsed.glob("test-*.npz"))) == 1


def test_a_damaged_cache_entry_is_rebuilt(tiny, tmp_path):
    root = tiny.place(tmp_path / "root", splits=("test",))
    load_dataset("tiny", split="test", root=root)
    (entry,) = (tmp_path / "cache" / "anynet" / "tiny" / "parsed").glob("test-*.npz")
    entry.write_bytes(b"PK\x03\x04 not really a zip")
    _, t = load_dataset("tiny", split="test", root=root)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])


# ------------------------------------------------------------------------------------------------------------
# Download from mirrors (a loopback server)
# ------------------------------------------------------------------------------------------------------------


def _routes(tiny, prefix, behaviour="ok", corrupt=False):
    routes = {}
    for name, body in tiny.gz.items():
        if corrupt:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
        routes[f"/{prefix}/{name}"] = (body, behaviour)
    return routes


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith("."))


def test_download_skips_corrupt_truncated_and_missing_mirrors(tiny, tmp_path):
    routes = {**_routes(tiny, "corrupt", corrupt=True), **_routes(tiny, "truncated", "truncated"),
              **_routes(tiny, "good")}
    with serve_files(routes) as base:
        mirrors = [f"{base}/absent/", f"{base}/corrupt/", f"{base}/truncated", f"{base}/good/"]
        (x_train, t_train), (x_test, t_test) = load_dataset("tiny", mirrors=mirrors, normalize=False)
    assert np.array_equal(t_train, tiny.arrays[("train", "labels")])
    assert np.array_equal(x_test.reshape(10, 28, 28), tiny.arrays[("test", "images")])
    cache = tmp_path / "cache" / "anynet" / "tiny"
    for name, body in tiny.gz.items():
        assert (cache / name).read_bytes() == body
    assert _leftovers(cache) == []


def test_all_mirrors_failing_is_one_clear_error_and_leaves_nothing(tiny, tmp_path):
    routes = {**_routes(tiny, "corrupt", corrupt=True), **_routes(tiny, "truncated", "truncated")}
    with serve_files(routes) as base:
        mirrors = f"{base}/corrupt/,{base}/truncated/,{base}/absent/"
        with pytest.raises(DatasetNotFoundError) as caught:
            load_dataset("tiny", split="test", mirrors=mirrors)
    message = str(caught.value)
    images = tiny.filename("test", "images")
    assert f"{base}/corrupt/{images}: ValueError: checksum mismatch" in message
    assert f"{base}/truncated/{images}: " in message
    assert f"{base}/absent/{images}: HTTP 404" in message
    assert "download the files by hand" in message and str(tmp_path / "cache" / "anynet" / "tiny") in message
    cache = tmp_path / "cache" / "anynet" / "tiny"
    assert not any(cache.glob("*.gz")) and _leftovers(cache) == []


def test_mirror_variable_and_timeout(tiny, tmp_path, monkeypatch):
    with serve_files({**_routes(tiny, "slow", "slow"), **_routes(tiny, "good")}) as base:
        monkeypatch.setenv("ANYNET_TINY_MIRROR", f"{base}/slow/,{base}/good/")
        x, t = load_dataset("tiny", split="test", timeout=0.5)
    assert np.array_equal(t, tiny.arrays[("test", "labels")])
    assert _leftovers(tmp_path / "cache" / "anynet" / "tiny") == []


def test_an_interrupted_download_leaves_no_partial_file(tiny, tmp_path, monkeypatch):
    from anynet import download

    real_bar = download.progress_bar

    class Interrupting:
        def __init__(self, *args, **options):
            self.seen = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(download, "progress_bar", Interrupting)
    with serve_files(_routes(tiny, "good")) as base, pytest.raises(KeyboardInterrupt):
        load_dataset("tiny", split="test", mirrors=[f"{base}/good/"])
    cache = tmp_path / "cache" / "anynet" / "tiny"
    assert list(cache.iterdir()) == [] and real_bar is not Interrupting


def test_progress_bar_on_request(tiny, tmp_path, capsys):
    pytest.importorskip("tqdm")
    with serve_files(_routes(tiny, "good")) as base:
        load_dataset("tiny", split="test", mirrors=[f"{base}/good/"], progress=True)
    err = capsys.readouterr().err
    assert f"anynet: downloading tiny/{tiny.filename('test', 'images')}" in err
    assert tiny.filename("test", "labels") in err and "B/s" in err  # tqdm's byte-rate bar
