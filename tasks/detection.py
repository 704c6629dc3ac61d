"""Object detection: torchvision's summed detector losses for training, COCO mAP for evaluation.

Batches follow torchvision's detection convention: (images: list of (3, H, W) float tensors, targets: list of
{"boxes": (N, 4) float xyxy, "labels": (N,) int64}). mAP is COCO's (Lin et al., ECCV 2014): AP averaged over
IoU thresholds 0.50:0.05:0.95 and over classes, computed by torchmetrics with the official pycocotools backend
once over the whole loader (no per-batch host sync in our code).

Under DDP each rank predicts on its shard and the per-image predictions and targets are gathered to every rank
(tasks/reduce.py), which then computes mAP over the whole test set. torchmetrics' own sync is turned off: it
all-gathers its list states one image at a time, so ranks holding different numbers of images (uneven or empty
shards) issue different numbers of collectives, which crashed or hung under gloo (torchmetrics 1.9).
"""
import torch
from torch import nn

from runtime.extras import MissingExtra
from tasks.reduce import all_gather_objects, is_distributed

try:
    import pycocotools  # noqa: F401  MeanAveragePrecision's backend: checked now, not at the first evaluation
    from torchmetrics.detection import MeanAveragePrecision
except ModuleNotFoundError as e:
    raise MissingExtra("task=detection", e.name, "detection") from e

# torchmetrics' keys we report: mAP@[.5:.95], AP@.5, AP@.75, recall with up to 100 detections per image
_REPORTED = ("map", "map_50", "map_75", "mar_100")


class DetectionTask:
    metric = "map"

    def to_device(self, batch, device):
        images, targets = batch
        images = [image.to(device, non_blocking=True) for image in images]
        targets = [{key: value.to(device, non_blocking=True) for key, value in t.items()} for t in targets]
        return images, targets

    def batch_size(self, batch) -> int:
        return len(batch[0])

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        """Sum of the detector's loss dict (FCOS: classification + box regression + centerness), as torchvision's
        reference recipe trains it."""
        images, targets = batch
        losses = model(images, targets)
        return torch.stack(list(losses.values())).sum()

    def evaluate(self, model: nn.Module, loader, device) -> dict[str, float]:
        """COCO mAP of `model` (eval mode) over `loader`. Values are in [0, 1]; -1 where no image has a box.

        Under DDP `loader` is this rank's shard; every rank must call this and gets the mAP of all shards, the
        images taken in rank order (the single-process order, as test shards are contiguous blocks).
        """
        predictions, targets = [], []
        for batch in loader:
            images, batch_targets = self.to_device(batch, device)
            predictions += model(images)  # list of {"boxes", "scores", "labels"}, one per image
            targets += batch_targets
        shards = [(predictions, targets)]
        if is_distributed():  # pickled through the process group: CPU copies
            cpu = [[{k: v.cpu() for k, v in d.items()} for d in dicts] for dicts in (predictions, targets)]
            shards = all_gather_objects(tuple(cpu))
        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools",
                                      sync_on_compute=False)
        for shard_predictions, shard_targets in shards:
            if shard_predictions:
                metric.update(shard_predictions, shard_targets)
        if not any(shard_predictions for shard_predictions, _ in shards):
            raise ValueError("the evaluation loader is empty: check the test split of the dataset")
        result = metric.compute()
        return {key: float(result[key]) for key in _REPORTED}
