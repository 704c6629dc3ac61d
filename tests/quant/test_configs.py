"""Every configs/quant file composes through Hydra and builds a valid QuantSpec the way train.py does."""
import pathlib

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from quant import QuantSpec
from quant.grad.base import GradPolicy

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
GRADS = sorted(p.stem for p in (CONFIGS / "quant" / "grad").glob("*.yaml"))


@pytest.mark.parametrize("grad", GRADS)
@pytest.mark.parametrize("quant", ["fixed_point", "fp32"])
def test_quant_config_composes_into_a_valid_spec(quant, grad):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=[f"+quant={quant}", f"quant/grad={grad}"]).quant
    policy = instantiate(cfg.grad)
    assert isinstance(policy, GradPolicy) and type(policy).__module__ == f"quant.grad.{grad}"
    spec = QuantSpec(w_bits=cfg.bits.w, a_bits=cfg.bits.a, g_bits=cfg.bits.g, grad=policy,
                     keep_first_last=cfg.keep_first_last, keep_fp=tuple(cfg.keep_fp), kernel=cfg.kernel)
    assert spec.is_full_precision == (quant == "fp32") and spec.kernel == "fake"  # today's numerics by default
    assert isinstance(cfg.interval_lr, float) and cfg.interval_lr > 0


def test_every_grad_policy_has_a_config():
    assert GRADS == ["bhq", "fixed", "hindsight", "lbt", "minmax", "mse", "psq", "unified_int8"]
