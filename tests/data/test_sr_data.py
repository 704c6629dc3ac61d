"""SR data read from the real on-disk layouts (DIV2K, Set5) and from scikit-image; patches stay aligned."""
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from data import sr_folders, sr_skimage
from data.bundle import DataBundle
from data.sr_images import SRPairs, bicubic_downsample, load_pair
from data.sr_patches import SRPatchDataset
from sharding import check_resume, check_test_shards, check_train_shards, epoch_samples, unbatch

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "data"


def _write_pair(hr_path: Path, lr_path: Path | None, lr_size: tuple[int, int], scale: int, seed: int, extra=(0, 0)):
    """An HR PNG that is the nearest-neighbour upsampling of a random LR PNG: avg_pool(HR, s) == LR exactly.

    `extra` adds rows/columns to HR beyond scale x LR (DIV2K x3 LR files are the floor of HR / 3).
    """
    rng = np.random.default_rng(seed)
    lr = rng.integers(0, 256, size=(*lr_size, 3), dtype=np.uint8)
    hr = lr.repeat(scale, axis=0).repeat(scale, axis=1)
    hr = np.pad(hr, ((0, extra[0]), (0, extra[1]), (0, 0)), mode="edge")
    hr_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hr).save(hr_path)
    if lr_path is not None:
        lr_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lr).save(lr_path)
    return lr, hr


def write_div2k(root: Path, scale: int, *, with_lr: bool = True, extra=(0, 0)) -> None:
    for split, ids in (("train", range(1, 4)), ("valid", range(801, 803))):
        for i in ids:
            lr_path = root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" / f"{i:04d}x{scale}.png"
            _write_pair(root / f"DIV2K_{split}_HR" / f"{i:04d}.png", lr_path if with_lr else None,
                        (12 + i % 3, 14), scale, seed=i, extra=extra)


def write_set5(root: Path, scale: int) -> dict:
    arrays = {}
    for j, name in enumerate(("baby", "bird")):
        arrays[name] = _write_pair(root / "Set5" / "HR" / f"{name}.png",
                                   root / "Set5" / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png",
                                   (16 + j, 15), scale, seed=100 + j)
    return arrays


def _small_div2k(root, scale=2, **kwargs):
    args = dict(root=root, scale=scale, lr_patch_size=6, batch_size=4, patches_per_epoch=12, seed=0)
    return sr_folders.build(**{**args, **kwargs})


def test_div2k_patches_are_aligned_under_every_flip_and_rotation(tmp_path):
    write_div2k(tmp_path, scale=2)
    bundle = _small_div2k(tmp_path)
    assert isinstance(bundle, DataBundle) and bundle.model_kwargs == {"scale": 2, "in_channels": 3}
    assert len(bundle.train) == 3
    plans = []
    for epoch in range(3):
        bundle.train.set_epoch(epoch)
        plans += [f for _, _, f in bundle.train.dataset.plan]
        for lr, hr in bundle.train:
            assert lr.shape == (4, 3, 6, 6) and hr.shape == (4, 3, 12, 12) and lr.dtype == torch.float32
            assert 0.0 <= float(lr.min()) and float(hr.max()) <= 1.0
            # HR was built as the nearest-neighbour upsampling of LR: any misalignment or a flip applied to
            # only one of the pair breaks this equality.
            assert torch.equal(F.avg_pool2d(hr * 255, 2).round(), (lr * 255).round())
    assert len({tuple(f) for f in plans}) > 4  # flips and transposes actually happen


def test_each_epoch_visits_every_image_equally_often(tmp_path):
    write_div2k(tmp_path, scale=2)
    bundle = _small_div2k(tmp_path)  # 3 images, 12 patches
    for epoch in range(2):
        bundle.train.set_epoch(epoch)
        images = [i for i, _, _ in bundle.train.dataset.plan]
        assert sorted(images) == [0] * 4 + [1] * 4 + [2] * 4


def test_batches_depend_only_on_seed_and_epoch_not_on_workers(tmp_path):
    write_div2k(tmp_path, scale=2)

    def epoch_batches(epoch, seed=0, num_workers=0):
        bundle = _small_div2k(tmp_path, seed=seed, num_workers=num_workers)
        bundle.train.set_epoch(epoch)
        return torch.cat([hr for _, hr in bundle.train])

    first = epoch_batches(1)
    assert torch.equal(first, epoch_batches(1))
    assert torch.equal(first, epoch_batches(1, num_workers=2))
    assert not torch.equal(first, epoch_batches(2))
    assert not torch.equal(first, epoch_batches(1, seed=1))


def test_div2k_test_images_are_whole_and_match_the_files(tmp_path):
    write_div2k(tmp_path, scale=2)
    bundle = _small_div2k(tmp_path, test_limit=1)
    pairs = list(bundle.test)
    assert len(pairs) == 1
    lr, hr = pairs[0]
    expected = np.array(Image.open(tmp_path / "DIV2K_valid_HR" / "0801.png"))
    assert hr.shape == (1, 3, *expected.shape[:2]) and lr.shape == (1, 3, expected.shape[0] // 2, expected.shape[1] // 2)
    assert torch.equal((hr[0] * 255).round().to(torch.uint8), torch.from_numpy(expected).permute(2, 0, 1))


def test_x3_hr_is_cropped_to_three_times_the_lr_file(tmp_path):
    write_div2k(tmp_path, scale=3, extra=(2, 1))  # HR one or two pixels larger than 3 x LR
    bundle = _small_div2k(tmp_path, scale=3, lr_patch_size=5)
    for lr, hr in bundle.test:
        assert hr.shape[-2:] == (3 * lr.shape[-2], 3 * lr.shape[-1])


def test_missing_lr_folder_means_bicubic_lr(tmp_path):
    write_div2k(tmp_path, scale=2, with_lr=False)
    sources = sr_folders.div2k_sources(tmp_path, split="valid", scale=2)
    assert all(lr is None for _, lr in sources)
    lr, hr = load_pair(sources[0], 2)
    assert torch.equal(lr, bicubic_downsample(hr, 2)) and hr.shape[-2:] == (2 * lr.shape[-2], 2 * lr.shape[-1])


def test_bicubic_downsample_keeps_a_flat_image_flat():
    hr = torch.full((3, 20, 30), 77, dtype=torch.uint8)
    lr = bicubic_downsample(hr, 2)
    assert lr.shape == (3, 10, 15) and bool((lr == 77).all())


def test_missing_data_is_a_one_line_error_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="DIV2K_train_HR") as err:
        _small_div2k(tmp_path / "nowhere")
    assert "\n" not in str(err.value) and "download" in str(err.value)
    write_div2k(tmp_path, scale=2)
    (tmp_path / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png").unlink()
    with pytest.raises(FileNotFoundError, match="0002x2.png"):
        _small_div2k(tmp_path)
    with pytest.raises(FileNotFoundError, match="Set14"):
        sr_folders.benchmark_sources(tmp_path, name="Set14", scale=2)


def test_set5_layout_reads_hr_and_lr_files(tmp_path):
    arrays = write_set5(tmp_path / "benchmark", scale=2)
    write_div2k(tmp_path / "DIV2K", scale=2)
    bundle = _small_div2k(tmp_path / "DIV2K", test_set="Set5", benchmark_root=tmp_path / "benchmark")
    got = [(lr[0], hr[0]) for lr, hr in bundle.test]
    assert len(got) == 2
    for (lr, hr), name in zip(got, ("baby", "bird")):  # sorted by file name
        lr_file, hr_file = arrays[name]
        assert torch.equal((lr * 255).round().to(torch.uint8), torch.from_numpy(lr_file).permute(2, 0, 1))
        assert torch.equal((hr * 255).round().to(torch.uint8), torch.from_numpy(hr_file).permute(2, 0, 1))


def test_patches_larger_than_an_image_are_rejected_before_training():
    pairs = SRPairs([(torch.zeros(3, 20, 20, dtype=torch.uint8), None)], scale=2, preload=True, names=["tiny"])
    with pytest.raises(ValueError, match=r"\['tiny'\].*lr_patch_size=11"):
        SRPatchDataset(pairs, lr_patch_size=11, patches_per_epoch=4, augment=True, seed=0)


def test_skimage_bundle_trains_and_tests_on_disjoint_images():
    bundle = sr_skimage.build(scale=3, lr_patch_size=8, batch_size=2, patches_per_epoch=4,
                              train_images=["moon", "text"], test_images=["coins"])
    lr, hr = next(iter(bundle.train))
    assert lr.shape == (2, 3, 8, 8) and hr.shape == (2, 3, 24, 24)
    (lr, hr), = list(bundle.test)
    assert hr.shape == (1, 3, 303 // 3 * 3, 384 // 3 * 3) and lr.shape == (1, 3, 101, 128)
    assert torch.equal(hr[0, 0], hr[0, 1])  # grayscale replicated to RGB
    with pytest.raises(ValueError, match="both"):
        sr_skimage.build(train_images=["moon", "coins"], test_images=["coins"])
    with pytest.raises(ValueError, match="not offline photographs"):
        sr_skimage.build(train_images=["eagle"], test_images=["coins"])


@pytest.mark.parametrize("name", ["skimage_sr", "div2k", "sr_benchmark"])
def test_data_configs_instantiate(name, tmp_path):
    write_div2k(tmp_path / "DIV2K", scale=2)
    write_set5(tmp_path / "benchmark", scale=2)
    small = ["lr_patch_size=6", "batch_size=2", "patches_per_epoch=4"]
    if name == "skimage_sr":
        small += ["train_images=[moon]", "test_images=[coins]"]
    if name == "div2k":
        small += ["test_limit=2"]  # the fake DIV2K_valid has 2 images
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        data = compose(config_name=name, overrides=small)  # applies sr_benchmark's `defaults: [div2k]`
    cfg = OmegaConf.create({"data_root": str(tmp_path), "seed": 5, "data": data})  # the lead's top-level keys
    bundle = hydra.utils.instantiate(cfg.data)
    assert bundle.model_kwargs["scale"] == 2 and bundle.train.dataset.seed == 5
    assert bundle.source.startswith({"skimage_sr": "scikit-image", "div2k": str(tmp_path / "DIV2K"),
                                     "sr_benchmark": f"{tmp_path / 'DIV2K'} (test: {tmp_path / 'benchmark' / 'Set5'})"}[name])
    assert len(list(bundle.test)) == {"skimage_sr": 1, "div2k": 2, "sr_benchmark": 2}[name]
    lr, hr = next(iter(bundle.train))
    assert hr.shape[-1] == 2 * lr.shape[-1] == 12


def _shard(loader, rank, world):
    loader.set_shard(rank, world)
    return loader


def test_two_train_shards_together_are_the_one_process_double_batch(tmp_path):
    write_div2k(tmp_path, scale=2)
    # 14 patches: 3 global batches of 2 x 2, the partial 4th dropped (drop_last), on one process as on two
    single = epoch_samples(_small_div2k(tmp_path, batch_size=4, patches_per_epoch=14).train, epoch=2)
    ranks = [epoch_samples(_shard(_small_div2k(tmp_path, batch_size=2, patches_per_epoch=14).train, r, 2), epoch=2)
             for r in range(2)]
    assert len(single) == 3
    check_train_shards(single, ranks, world=2)


def test_test_shards_are_disjoint_and_complete_even_with_an_empty_rank(tmp_path):
    write_div2k(tmp_path, scale=2)
    bundle = _small_div2k(tmp_path)
    single = [unbatch(batch) for batch in bundle.test]
    for world in (2, 3):  # 2 images on 3 ranks: one rank gets none
        ranks = [[unbatch(batch) for batch in _shard(_small_div2k(tmp_path).test, r, world)] for r in range(world)]
        check_test_shards(single, ranks)


def test_resume_mid_epoch_yields_the_uninterrupted_patches(tmp_path):
    write_div2k(tmp_path, scale=2)
    check_resume(lambda: _shard(_small_div2k(tmp_path).train, 0, 1), epoch=4, start_batch=2)
    check_resume(lambda: _shard(_small_div2k(tmp_path, batch_size=2).train, 1, 2), epoch=4, start_batch=1)
