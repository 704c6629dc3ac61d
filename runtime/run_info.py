"""Facts about a run that go into summary.json: what was trained, with which quantizer, on which software.

Labels name what the user chose: the config files Hydra composed (`hydra.runtime.choices`), not strings cut out
of `_target_` (which gave `cifar` for both cifar10 and cifar100, `EDSR` for both edsr_tiny and edsr_baseline).
Tables group runs by these labels, so two runs share a row only if they were built from the same config files.
"""
import platform
import sys
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from reports.results import FULL_PRECISION


def _bit(value) -> str:
    return "32" if value is None or value == 32 else str(value)


def bits_label(w, a, g, adaptive=None) -> str:
    """W/A/G label used as a table column: `4/4/4`, or `fp32` when nothing is quantized; a run whose bits adapt
    (`adaptive`: the QuantSpec's APT policy) is labelled by the policy, e.g. `apt8-24` (docs/methods.md §4)."""
    if all(b is None or b == 32 for b in (w, a, g)):
        return FULL_PRECISION
    if adaptive is not None:
        return adaptive.label
    return "/".join(_bit(b) for b in (w, a, g))


def _target_module(node: DictConfig) -> str:
    """`data.cifar.build` -> `cifar`: the fallback label when no Hydra choice is known (config stem == module
    holds for quant/grad and task, not for data)."""
    return str(node._target_).split(".")[-2]


def run_labels(cfg: DictConfig, choices: Mapping[str, Any], *, bits: str) -> dict[str, str]:
    """Table labels of a run: {"task", "model", "data", "quantizer", "bits", "optim"}.

    `choices` is Hydra's `hydra.runtime.choices` (config group -> chosen file stem), e.g. {"model": "resnet20",
    "data": "cifar100", "quant/grad": "lbt", "task": "classification"}; `bits` is `bits_label(...)` of the
    built QuantSpec. The model label is the choice, plus the built model's name when it differs from the
    choice: `model=timm model.name=resnet50` -> `timm:resnet50` (a generic config names its network only
    through `name`). The quantizer is the `quant/grad` choice, with `+<format>` for a float gradient format
    (`minmax+fp8_e5m2`, `+sr` with stochastic rounding) (the `quant` choice, `apt`, for an adaptive-precision
    config), or `fp32` when nothing is quantized (a fixed ratio's gamma stays in the summary's config:
    `reports.results.quantizer_label` shows it). `optim` is the `optim` choice (sgd, sgd_multistep, adamw, sgdt,
    adamt, ...), or the optimizer class name in lower case.

    A group missing from `choices` (a config composed without Hydra's runtime, as in unit tests that call
    `train.train(cfg)`) falls back to the model's name or builder function, and for the other groups to the
    `_target_` module name, which does not tell cifar10 from cifar100: pass the choices for real runs.
    """
    chosen, name = choices.get("model"), OmegaConf.select(cfg, "model.name")
    if chosen is None:  # no Hydra runtime: the built object's name, or its builder function's
        model = str(name) if name is not None else str(cfg.model._target_).split(".")[-1]
    else:
        model = str(chosen) if name is None or str(name) == chosen else f"{chosen}:{name}"
    if bits == FULL_PRECISION:
        quantizer = FULL_PRECISION
    elif OmegaConf.select(cfg, "quant.precision") is not None:  # APT: the quant choice (`apt`), not the unused grad
        quantizer = str(choices.get("quant") or _target_module(cfg.quant.precision))
    else:
        quantizer = str(choices.get("quant/grad") or _target_module(cfg.quant.grad))
        grad_format = OmegaConf.select(cfg, "quant.grad_format", default="int")
        if grad_format != "int":  # a float format replaces the grid: `minmax+fp8_e5m2`, `+sr` when stochastic
            rounding = "+sr" if OmegaConf.select(cfg, "quant.grad_rounding") == "stochastic" else ""
            quantizer = f"{quantizer}+{grad_format}{rounding}"
    optimizer = str(choices.get("optim") or str(cfg.optim.optimizer._target_).split(".")[-1].lower())
    return {"task": str(choices.get("task") or _target_module(cfg.task)), "model": model,
            "data": str(choices.get("data") or _target_module(cfg.data)), "quantizer": quantizer, "bits": bits,
            "optim": optimizer}


def versions() -> dict[str, Any]:
    import hydra
    import timm
    import torch
    import torchvision

    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "hydra": hydra.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
