"""CIFAR-10/100 read from tiny fakes written in torchvision's exact pickle layout."""
import pickle

import numpy as np
import pytest
import torch

from data import cifar


def _image_rows(labels, rng):
    # One row per image: 1024 R, then 1024 G, then 1024 B values (row-major 32x32 planes), as in the real files.
    rows = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    rows[:, :1024] = np.asarray(labels, dtype=np.uint8)[:, None]  # red plane = label, to check channel order
    rows[:, 1024:2048] = 200
    return rows


def _dump(path, entry):
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_fake_cifar10(root, per_batch=4, n_test=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        labels = [(i + k) % 10 for k in range(per_batch)]
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"x", b"labels": labels, b"data": _image_rows(labels, rng),
                                          b"filenames": [b"f"] * per_batch})
    labels = [k % 10 for k in range(n_test)]
    _dump(folder / "test_batch", {b"labels": labels, b"data": _image_rows(labels, rng)})
    _dump(folder / "batches.meta", {b"label_names": [b"c%d" % k for k in range(10)]})


def write_fake_cifar100(root, n_train=12, n_test=5):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [(7 * k + 50) % 100 for k in range(n)]
        _dump(folder / name, {b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine], b"data": _image_rows(fine, rng)})
    _dump(folder / "meta", {b"fine_label_names": [b"c"] * 100, b"coarse_label_names": [b"c"] * 20})


def _unnormalise(x, mean, std):
    return (x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]) * 255


def test_cifar10_reads_all_five_batches_with_channel_planes_in_order(tmp_path):
    write_fake_cifar10(tmp_path)
    bundle = cifar.build(root=tmp_path, num_classes=10, batch_size=8, eval_batch_size=100)
    assert bundle.name == "cifar10" and bundle.model_kwargs == {"num_classes": 10, "in_channels": 3}
    assert len(bundle.train) == 3  # 20 images in batches of 8
    (x, y), = list(bundle.test)
    assert x.shape == (6, 3, 32, 32) and y.tolist() == [0, 1, 2, 3, 4, 5]
    pixels = _unnormalise(x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD)
    assert torch.allclose(pixels[:, 0], y[:, None, None].float().expand(6, 32, 32), atol=1e-3)  # red plane
    assert torch.allclose(pixels[:, 1], torch.full((6, 32, 32), 200.0), atol=1e-3)  # green plane
    train_labels = sorted(torch.cat([y for _, y in bundle.train]).tolist())
    assert train_labels == sorted((i + k) % 10 for i in range(1, 6) for k in range(4))


def test_cifar100_uses_fine_labels(tmp_path):
    write_fake_cifar100(tmp_path)
    bundle = cifar.build(root=tmp_path, num_classes=100, batch_size=5, eval_batch_size=5, train_subset=10)
    assert bundle.name == "cifar100" and bundle.model_kwargs["num_classes"] == 100
    assert len(bundle.train) == 2
    (_, y), = list(bundle.test)
    assert y.tolist() == [(7 * k + 50) % 100 for k in range(5)]


def test_training_batches_are_augmented_copies_of_the_stored_images(tmp_path):
    write_fake_cifar10(tmp_path)
    bundle = cifar.build(root=tmp_path, num_classes=10, batch_size=20, augment=True, seed=0)
    x, y = next(iter(bundle.train))
    pixels = _unnormalise(x, cifar.CIFAR10_MEAN, cifar.CIFAR10_STD).round()
    # The green plane is 200 everywhere except the zero padding a crop may bring in.
    green = pixels[:, 1]
    assert ((green - 200).abs() < 1e-3).logical_or(green.abs() < 1e-3).all()
    assert (green.abs() < 1e-3).any()  # some crops did shift into the padding


def test_missing_cifar_and_bad_variant_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as err:
        cifar.build(root=tmp_path, num_classes=10)
    assert "\n" not in str(err.value) and "DATA_ROOT" in str(err.value)
    with pytest.raises(ValueError, match="use 10 or 100"):
        cifar.build(root=tmp_path, num_classes=20)
