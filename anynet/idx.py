"""The IDX file format of MNIST and Fashion-MNIST, plain or gzip-compressed, read into host NumPy arrays.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one big-endian
uint32 size per dimension, then the data, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy

__all__ = ["read_idx", "parse_idx", "idx_bytes", "write_idx", "IDX_TYPES"]

# type code -> big-endian NumPy dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> numpy.ndarray:
    """The array stored in IDX file ``path`` (gzip-compressed or not: the content decides, not the name).

    A truncated, corrupt or non-IDX file raises ValueError naming the file and what is wrong with it.
    """
    path = Path(path)
    return parse_idx(idx_bytes(path.read_bytes(), source=str(path)), source=str(path))


def idx_bytes(raw: bytes, source: str = "<bytes>") -> bytes:
    """The uncompressed IDX bytes of a file's content ``raw``, gunzipped if it is gzip data."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(
            f"{source}: the gzip data is damaged or cut short ({error}); delete the file and download it again"
        ) from None


def parse_idx(raw: bytes, source: str = "<bytes>") -> numpy.ndarray:
    """The array encoded by the (uncompressed) IDX bytes ``raw``, in native byte order."""
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{source}: not an IDX file (it starts with bytes {raw[:4].hex() or 'nothing'}; an IDX file starts with "
            "two zero bytes, a type code and a dimension count)"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{source}: unknown IDX type code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{source}: the IDX header is cut short ({len(raw)} bytes for {ndim} dimension sizes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = numpy.dtype(IDX_TYPES[code])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise ValueError(
            f"{source}: {problem}: the header says shape {shape} of {dtype.name} ({expected} bytes of data), "
            f"the file holds {actual} bytes of data; delete it and download it again"
        )
    data = numpy.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: numpy.ndarray) -> None:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends in .gz."""
    array = numpy.asarray(array)
    codes = {numpy.dtype(t).newbyteorder("="): c for c, t in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX has no type for {array.dtype}; use one of {', '.join(str(d) for d in codes)}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX holds 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + numpy.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    Path(path).write_bytes(gzip.compress(payload) if str(path).endswith(".gz") else payload)
