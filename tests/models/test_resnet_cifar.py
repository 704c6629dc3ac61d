"""CIFAR ResNets: paper-sized, quantizer-friendly layout (conv1 first, fc last, plain Conv2d/Linear), shapes."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.resnet_cifar import PadShortcut, ResNetCifar, resnet20, resnet32, resnet56


def _count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_he_et_al():
    # He et al. 2016, Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M (CIFAR-10 head).
    assert abs(_count(resnet20()) / 1e6 - 0.27) < 0.005
    assert abs(_count(resnet32()) / 1e6 - 0.46) < 0.01
    assert abs(_count(resnet56()) / 1e6 - 0.85) < 0.01


def test_depth_is_6n_plus_2_weighted_layers():
    for fn, depth in ((resnet20, 20), (resnet32, 32), (resnet56, 56)):
        layers = [m for m in fn().modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == depth  # option-A shortcuts add no layers


def test_first_module_is_conv1_and_last_is_fc():
    model = resnet20(num_classes=100, in_channels=1)
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted[0][0] == "conv1" and type(weighted[0][1]) is nn.Conv2d and weighted[0][1].in_channels == 1
    assert weighted[-1][0] == "fc" and type(weighted[-1][1]) is nn.Linear and weighted[-1][1].out_features == 100
    # Only plain layers hold weights, so an in-place module swap can reach every one of them.
    allowed = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)
    for module in model.modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert type(module) in allowed


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32])
def test_forward_shape_and_backward(in_channels, size):
    model = resnet20(num_classes=7, in_channels=in_channels)
    out = model(torch.randn(4, in_channels, size, size))
    assert out.shape == (4, 7)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


def test_pad_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 16, 8, 8)
    out = PadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("channels_last", [False, True])
def test_pad_shortcut_equals_slicing_in_values_gradients_and_dtype(channels_last):
    # It subsamples with a unit depthwise convolution (a channels-last backward under torch.compile): the values
    # and gradients must be those of x[:, :, ::2, ::2], odd sizes included, and float32 under bf16 autocast.
    x = torch.randn(3, 16, 9, 10, requires_grad=True)
    shortcut = PadShortcut(16, 32, stride=2)
    out = shortcut(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    ref = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    assert torch.equal(out, ref)
    g = torch.randn_like(ref)
    assert torch.equal(torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = shortcut(x.detach())
    assert out.dtype == torch.float32 and torch.equal(out, ref.detach())


def test_head_bn_option_adds_the_official_codes_batchnorm1d():
    model = resnet20(head_bn=True)
    assert isinstance(model.head_bn, nn.BatchNorm1d)
    assert _count(model) == _count(resnet20()) + 2 * 64
    names = [n for n, _ in model.named_modules()]
    assert names[-1] == "fc"


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_classes=0"):
        ResNetCifar(blocks=3, num_classes=0)
