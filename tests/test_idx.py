import gzip
import struct

import numpy as np
import pytest

from anynet.idx import IDX_TYPES, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("code, dtype", sorted(IDX_TYPES.items()))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_every_idx_type_round_trips(tmp_path, code, dtype, suffix):
    native = np.dtype(dtype).newbyteorder("=")
    values = (np.arange(2 * 3 * 4) - 7).astype(native).reshape(2, 3, 4) if native.kind != "u" else \
        np.arange(24, dtype=native).reshape(2, 3, 4)
    path = tmp_path / f"data-idx3{suffix}"
    write_idx(path, values)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    header = gzip.decompress(raw)[:16] if suffix else raw[:16]
    assert header == bytes([0, 0, code, 3]) + struct.pack(">3I", 2, 3, 4)
    loaded = read_idx(path)
    assert loaded.dtype == native and loaded.dtype.isnative and loaded.shape == (2, 3, 4)
    assert np.array_equal(loaded, values)


def test_the_content_decides_not_the_name(tmp_path):
    values = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "labels.gz", values)
    (tmp_path / "labels.gz").rename(tmp_path / "labels-idx1-ubyte")  # gzip data under a plain name
    assert np.array_equal(read_idx(tmp_path / "labels-idx1-ubyte"), values)


def _idx(code=0x08, shape=(3,), payload=None):
    data = bytes(i % 256 for i in range(int(np.prod(shape)))) if payload is None else payload
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", r"not an IDX file \(it starts with bytes nothing"),
        (b"PK\x03\x04rest", r"not an IDX file \(it starts with bytes 504b0304"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, r"unknown IDX type code 0x07"),
        (b"\x00\x00\x08\x03\x00\x00", r"the IDX header is cut short \(6 bytes for 3 dimension sizes\)"),
        (b"\x00\x00\x08\x00", r"the IDX header is cut short"),
        (_idx(shape=(2, 3))[:-2], r"truncated: the header says shape \(2, 3\) of uint8 \(6 bytes of data\), the file "
                                  r"holds 4 bytes"),
        (_idx(shape=(3,)) + b"\x00", r"longer than its header says"),
        (_idx(code=0x0C, shape=(2,), payload=b"\x00" * 7), r"truncated: .* of int32 \(8 bytes of data\)"),
    ],
)
def test_bad_files_name_the_file_and_the_problem(tmp_path, raw, message):
    for name, content in (("plain-idx", raw), ("packed-idx.gz", gzip.compress(raw))):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as caught:
            read_idx(path)
        assert str(caught.value).startswith(str(path))


def test_a_cut_gzip_stream_is_a_clear_error(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(shape=(100, 28)))[:60])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: the gzip data is damaged or cut short"):
        read_idx(path)


def test_parse_idx_reads_big_endian_values():
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">2h", -2, 513)
    assert parse_idx(raw).tolist() == [-2, 513]


def test_write_idx_refuses_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="IDX has no type for int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="IDX holds 1 to 255 dimensions, got 0"):
        write_idx(tmp_path / "x", np.uint8(3))
