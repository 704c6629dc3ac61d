"""Reader for the IDX file format of MNIST / Fashion-MNIST (LeCun et al., http://yann.lecun.com/exdb/mnist/).

Layout: a big-endian 4-byte magic `0x00 0x00 <dtype> <ndim>` (labels 2049 = ubyte x1, images 2051 = ubyte x3),
then `ndim` big-endian uint32 sizes, then the data, row-major. Files may be gzipped; we look at the gzip magic
bytes rather than the file name, so a renamed file still reads.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

_GZIP_MAGIC = b"\x1f\x8b"
# IDX type byte -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a native-endian numpy array of its declared shape.

    A damaged file raises a one-line ValueError naming it (the trainer reports those as bad data, exit 2): gzip's
    own errors for a cut-short or corrupt stream name no file and would surface as a crash.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path} is cut short or not gzip ({type(e).__name__}: {e}): re-download or reinstall "
                             f"it") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()}; expected 00000801/00000803-style)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path} holds {len(raw)} bytes, fewer than its {ndim} sizes need; file is truncated")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}; file is truncated")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)  # own, writable, native-endian memory


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = False) -> None:
    """Write `array` (uint8/int8/int16/int32/float32/float64) as IDX; used to make test fixtures."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = np.dtype(array.dtype).newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX code; use one of uint8, int8, int16, int32, float32, float64")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(payload) if compress else payload)
