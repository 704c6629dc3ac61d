"""FCOS detector (Tian et al., ICCV 2019) on a small ResNet + FPN, built from torchvision parts.

Why FCOS: anchor-free (no anchor-shape hyperparameters to retune per dataset), one-stage (no RoI pooling, so
every learnable layer is an ordinary nn.Conv2d the quantizer can swap), and it trains from scratch on small
canvases in a few hundred CPU steps. Deviations from the paper's ResNet-50 setting, all for CPU-sized runs:
a torchvision ResNet-18/34 backbone (given as a module, e.g. `torchvision.models.resnet18(weights=None)`) with
plain trainable BatchNorm (torchvision freezes BN only for pretrained backbones; ours are trained from scratch),
`fpn_channels` (default 128, paper 256) and `head_convs` (default 2, paper 4) convolutions per head branch.

Layers a quantizer should usually keep in full precision, mirroring "first conv and last layer" for
classification (configs/task/detection.yaml lists them in quant.keep_fp): the stem `backbone.body.conv1` and
the three prediction convs in PREDICTION_LAYERS.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.resnet import ResNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

#: the per-location output convs (class logits, box distances, centerness): the detector's "last layers"
PREDICTION_LAYERS = (
    "head.classification_head.cls_logits",
    "head.regression_head.bbox_reg",
    "head.regression_head.bbox_ctrness",
)
#: what compile=true compiles (runtime.compile.compile_model): the backbone + FPN, the dense fixed-shape part that
#: holds 24 of the 31 quantized layers and most of the FLOPs; anchors, target matching, losses and NMS (`.item()`,
#: `nonzero`) stay eager, and so does the head: it runs its shared convs once per FPN level, five static shapes, so
#: it compiled 67 kernels for a step 3% faster on the CPU (cold-cache compile 147 s with it, 80 s without: docs/speed.md)
COMPILE_TARGETS = ("backbone",)
_RETURNED = ("layer2", "layer3", "layer4")  # C3-C5 (strides 8, 16, 32) -> P3-P5, then P6-P7 from P5
# One point per location and level. FCOS assigns an object to the level whose regression range (4x..8x this
# size) holds its largest center-to-edge distance, so the size only sets that range; as in fcos_resnet50_fpn.
_ANCHOR_SIZES = ((8,), (16,), (32,), (64,), (128,))


def _out_channels(stage: nn.Module) -> int:
    """Channels a ResNet stage emits: its last conv's out_channels (conv2 / conv3 or the downsample conv)."""
    return [m for m in stage.modules() if isinstance(m, nn.Conv2d)][-1].out_channels


def fcos(
    *,
    backbone: ResNet,
    num_classes: int,
    in_channels: int = 3,
    image_size: int,
    fpn_channels: int = 128,
    head_convs: int = 2,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> FCOS:
    """FCOS for `num_classes` labels (background included) on square `image_size` inputs in [0, 1].

    Train mode: model(images, targets) -> {"classification", "bbox_regression", "bbox_ctrness"} losses.
    Eval mode: model(images) -> [{"boxes", "scores", "labels"}] per image, in input pixel coordinates.
    `score_thresh` 0.05 (torchvision's 0.2 is for display) keeps the low-score detections mAP needs.
    """
    if not isinstance(backbone, ResNet):
        raise TypeError(f"backbone is a {type(backbone).__name__}; pass a torchvision ResNet such as "
                        f"torchvision.models.resnet18(weights=None)")
    if in_channels != 3:
        raise ValueError(f"in_channels={in_channels}: the FCOS detector takes RGB images; give the data 3 channels")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} is invalid: count background too (>= 2)")
    if fpn_channels < 32 or fpn_channels % 32:
        raise ValueError(f"fpn_channels={fpn_channels} is invalid: use a multiple of 32 (the head's GroupNorm)")
    if head_convs < 1:
        raise ValueError(f"head_convs={head_convs} is invalid: use a positive int")
    if image_size < 32:
        raise ValueError(f"image_size={image_size} is invalid: use at least 32 px (the coarsest FPN stride)")
    fpn = BackboneWithFPN(
        backbone,
        return_layers={name: str(i) for i, name in enumerate(_RETURNED)},
        in_channels_list=[_out_channels(getattr(backbone, name)) for name in _RETURNED],
        out_channels=fpn_channels,
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )
    model = FCOS(
        fpn,
        num_classes,
        # min = max = the data's square canvas: the detector's internal resize is then the identity
        min_size=image_size,
        max_size=image_size,
        anchor_generator=AnchorGenerator(_ANCHOR_SIZES, ((1.0,),) * len(_ANCHOR_SIZES)),
        head=FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs),
        score_thresh=score_thresh,
        nms_thresh=nms_thresh,
        detections_per_img=detections_per_img,
    )
    model.compile_targets = COMPILE_TARGETS
    return model
