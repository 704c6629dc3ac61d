"""IDX reader: the real big-endian format (magic 2049 / 2051), gzipped or raw, and clear errors on bad files."""
import gzip

import numpy as np
import pytest

from data.idx import read_idx, write_idx


@pytest.mark.parametrize("compress", [False, True])
def test_images_and_labels_round_trip_with_standard_magic(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(5,), dtype=np.uint8)
    write_idx(tmp_path / "img", images, compress=compress)
    write_idx(tmp_path / "lbl", labels, compress=compress)
    raw_img = (tmp_path / "img").read_bytes()
    raw_lbl = (tmp_path / "lbl").read_bytes()
    if compress:
        raw_img, raw_lbl = gzip.decompress(raw_img), gzip.decompress(raw_lbl)
    # The magic numbers every MNIST-format reader checks: 2051 for images, 2049 for labels, big-endian.
    assert int.from_bytes(raw_img[:4], "big") == 2051
    assert int.from_bytes(raw_lbl[:4], "big") == 2049
    assert int.from_bytes(raw_img[4:8], "big") == 5 and int.from_bytes(raw_img[8:12], "big") == 28
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lbl"), labels)


def test_multibyte_types_are_read_big_endian(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=np.int32)
    write_idx(tmp_path / "ints", values)
    assert (tmp_path / "ints").read_bytes()[12:16] == (1).to_bytes(4, "big")
    out = read_idx(tmp_path / "ints")
    np.testing.assert_array_equal(out, values)
    assert out.dtype == np.int32 and out.dtype.isnative


def test_truncated_file_raises_one_line(tmp_path):
    write_idx(tmp_path / "img", np.zeros((4, 3, 3), np.uint8))
    (tmp_path / "img").write_bytes((tmp_path / "img").read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated") as err:
        read_idx(tmp_path / "img")
    assert "\n" not in str(err.value)


def test_non_idx_file_is_rejected(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


@pytest.mark.parametrize("damage", ["cut short", "garbled"])
def test_damaged_gzip_raises_one_line_naming_the_file(tmp_path, damage):
    # gzip itself raises EOFError / BadGzipFile / zlib.error, which name no file and escape the trainer's one-line
    # handling of bad data (issue 27 case 6).
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.random.default_rng(0).integers(0, 256, size=(20, 28, 28), dtype=np.uint8), compress=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if damage == "cut short" else data[:20] + bytes(b ^ 0x5A for b in data[20:]))
    with pytest.raises(ValueError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_file_shorter_than_its_header_names_the_file(tmp_path):
    (tmp_path / "img").write_bytes(bytes([0, 0, 8, 3, 0, 0]))  # declares 3 sizes, holds half of one
    with pytest.raises(ValueError, match="truncated") as err:
        read_idx(tmp_path / "img")
    assert str(tmp_path / "img") in str(err.value)
