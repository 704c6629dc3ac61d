"""quantize_ swaps exactly the intended layers of third-party models and keeps their parameter names."""
import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from quant import QConv2d, QLinear, QuantSpec, quant_parameters, quantize_
from quant.grad.lbt import LBTPolicy

SPEC = QuantSpec(w_bits=4, a_bits=4, g_bits=4, grad=LBTPolicy())


def layer_names(model, types):
    return [name for name, m in model.named_modules() if type(m) in types]


@pytest.mark.parametrize("build, first, last", [
    (lambda: timm.create_model("resnet18", pretrained=False), "conv1", "fc"),
    (lambda: torchvision.models.mobilenet_v2(weights=None), "features.0.0", "classifier.1"),
])
def test_every_conv_and_linear_but_the_first_and_last_is_swapped_and_keys_survive(build, first, last):
    torch.manual_seed(0)
    model = build()
    reference = model.state_dict()
    convs, linears = layer_names(model, {nn.Conv2d}), layer_names(model, {nn.Linear})
    others = [(n, type(m)) for n, m in model.named_modules() if type(m) not in (nn.Conv2d, nn.Linear)]
    parameters = dict(model.named_parameters())

    assert quantize_(model, SPEC) is model
    assert layer_names(model, {QConv2d}) == [n for n in convs if n != first]
    assert layer_names(model, {QLinear}) == [n for n in linears if n != last]
    assert layer_names(model, {nn.Conv2d}) == [first] and layer_names(model, {nn.Linear}) == [last]
    quantizer_parts = (".wq", ".aq", ".gq")
    assert [(n, t) for n, t in ((n, type(m)) for n, m in model.named_modules())
            if t not in (nn.Conv2d, nn.Linear, QConv2d, QLinear) and not n.endswith(quantizer_parts)] == others

    new_parameters = {n: p for n, p in model.named_parameters() if not n.endswith(("wq.scale", "aq.upper"))}
    assert new_parameters.keys() == parameters.keys()
    assert all(new_parameters[n] is p for n, p in parameters.items())  # same objects: optimizers stay valid
    assert len(quant_parameters(model)) == 2 * (len(convs) + len(linears) - 2)

    keys = model.state_dict().keys()
    assert set(reference) <= set(keys)
    assert all(k.split(".")[-2] in ("wq", "aq", "gq") for k in set(keys) - set(reference))
    model.load_state_dict(reference, strict=True)  # a full-precision checkpoint loads strictly
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_keep_fp_patterns_filter_and_switch():
    def fresh():
        return timm.create_model("resnet18", pretrained=False)

    model = quantize_(fresh(), QuantSpec(w_bits=4, a_bits=4, g_bits=4, keep_fp=("layer4.*",)))
    assert not any(n.startswith("layer4") for n in layer_names(model, {QConv2d}))
    assert "layer3.0.conv1" in layer_names(model, {QConv2d})
    model = quantize_(fresh(), QuantSpec(w_bits=4, a_bits=4, g_bits=4, keep_first_last=False))
    assert "conv1" in layer_names(model, {QConv2d}) and "fc" in layer_names(model, {QLinear})
    model = quantize_(fresh(), SPEC, filter_fn=lambda m, name: "downsample" not in name)
    assert not any("downsample" in n for n in layer_names(model, {QConv2d}))
    model = quantize_(fresh(), QuantSpec())  # full precision: untouched
    assert not layer_names(model, {QConv2d, QLinear})


def test_quantized_checkpoint_round_trips_intervals_and_gamma():
    torch.manual_seed(0)
    model = quantize_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 2)), SPEC)
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    model[1].gq.gamma.fill_(0.55)
    clone = quantize_(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(16, 2)), SPEC)
    clone.load_state_dict(model.state_dict())
    assert clone[1].gq.gamma.item() == pytest.approx(0.55)
    assert clone[1].aq.upper.item() == pytest.approx(model[1].aq.upper.item())
    assert not clone[1].aq.needs_init and not clone[1].wq.needs_init
    partial = {k: v for k, v in model.state_dict().items() if k != "1.gq.gamma"}
    with pytest.raises(RuntimeError, match="1.gq.gamma"):
        clone.load_state_dict(partial)  # some quantizer keys but not all: a corrupt checkpoint still fails
