"""Batched crop + flip: keeps shape, is a pure crop/flip of the zero-padded source, and is seeded."""
import pytest
import torch
import torch.nn.functional as F

from data.augment import AugmentSpec, crop_flip, normalize, sample_crop_flip


def _images(b=6, c=3, h=8, w=10):
    # Distinct values everywhere (1..) so a wrong pixel is always visible; 0 only appears in padding.
    return (torch.arange(b * c * h * w) % 250 + 1).to(torch.uint8).reshape(b, c, h, w)


def test_crop_flip_keeps_shape_and_dtype():
    images = _images()
    offsets, flips = sample_crop_flip(6, spec=AugmentSpec(crop_padding=2), generator=torch.Generator().manual_seed(0))
    out = crop_flip(images, offsets, flips, pad=2)
    assert out.shape == images.shape and out.dtype == torch.uint8


def test_every_output_is_the_padded_source_cropped_and_maybe_mirrored():
    images = _images()
    pad = 3
    offsets, flips = sample_crop_flip(6, spec=AugmentSpec(crop_padding=pad), generator=torch.Generator().manual_seed(1))
    out = crop_flip(images, offsets, flips, pad=pad)
    padded = F.pad(images, (pad,) * 4)
    _, _, h, w = images.shape
    for i in range(images.shape[0]):  # per-sample reference, slow on purpose
        top, left = offsets[i].tolist()
        ref = padded[i, :, top : top + h, left : left + w]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)


def test_centre_offsets_without_flip_are_the_identity():
    images = _images()
    offsets = torch.full((6, 2), 4)
    assert torch.equal(crop_flip(images, offsets, torch.zeros(6, dtype=torch.bool), pad=4), images)
    assert torch.equal(crop_flip(images, offsets, torch.ones(6, dtype=torch.bool), pad=4), images.flip(-1))


def test_parameters_lie_in_range_flip_half_the_time_and_follow_the_generator():
    spec = AugmentSpec(crop_padding=4)
    offsets, flips = sample_crop_flip(20000, spec=spec, generator=torch.Generator().manual_seed(2))
    assert offsets.min() == 0 and offsets.max() == 8  # every shift in [-4, 4] is reachable
    assert 0.48 < flips.float().mean().item() < 0.52
    again, _ = sample_crop_flip(20000, spec=spec, generator=torch.Generator().manual_seed(2))
    assert torch.equal(offsets, again)
    _, none = sample_crop_flip(100, spec=AugmentSpec(crop_padding=4, flip=False), generator=torch.Generator())
    assert not none.any()


def test_normalize_maps_uint8_to_standardised_float():
    images = torch.tensor([0, 255], dtype=torch.uint8).reshape(1, 2, 1, 1).expand(1, 2, 2, 2)
    out = normalize(images, torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.25]))
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.full((2, 2), -1.0)) and torch.allclose(out[0, 1], torch.full((2, 2), 2.0))


def test_negative_padding_is_rejected():
    with pytest.raises(ValueError, match="crop_padding"):
        AugmentSpec(crop_padding=-1)
