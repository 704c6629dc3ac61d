"""Facts about a run that go into summary.json: what was trained, with which quantizer, on which software."""
import platform
import sys
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf


def _bit(value) -> str:
    return "32" if value is None or value == 32 else str(value)


def bits_label(w, a, g) -> str:
    """W/A/G label used as a table column: `4/4/4`, or `fp32` when nothing is quantized."""
    if all(b is None or b == 32 for b in (w, a, g)):
        return "fp32"
    return "/".join(_bit(b) for b in (w, a, g))


def quantizer_label(grad_cfg: DictConfig, bits: str) -> str:
    """`lbt`, `mse`, `minmax`, `fixed`, ... from the policy's module (config stem == module name); `fp32`.

    A fixed ratio's gamma stays in the summary's config (the table script labels it `fixed gamma=0.8`).
    """
    return "fp32" if bits == "fp32" else str(grad_cfg._target_).split(".")[-2]


def model_label(node: DictConfig) -> str:
    """`resnet20` (function name) or the timm/torchvision model name: the table row of a run."""
    return str(node.name) if "name" in node else str(node._target_).split(".")[-1]


def data_label(node: DictConfig) -> str:
    """`fashion_mnist`, `cifar100`, ...: the data module a config builds from."""
    return str(node._target_).split(".")[-2]


def versions() -> dict[str, Any]:
    import hydra
    import timm
    import torchvision

    return {
        "python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "timm": timm.__version__, "hydra": hydra.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def resolved(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)
