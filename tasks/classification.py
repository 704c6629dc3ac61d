"""Image classification: cross-entropy loss, top-1 / top-5 accuracy and test loss."""
import torch
import torch.nn.functional as F
from torch import nn

from tasks.reduce import all_reduce_sum


class ClassificationTask:
    metric = "top1"

    def __init__(self, *, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"task.label_smoothing={label_smoothing} is invalid: use a value in [0, 1)")
        self.label_smoothing = label_smoothing

    def to_device(self, batch, device):
        x, y = batch
        return x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def batch_size(self, batch) -> int:
        return batch[0].shape[0]

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y, label_smoothing=self.label_smoothing)

    def evaluate(self, model: nn.Module, loader, device) -> dict[str, float]:
        """Metrics over the whole test set: under DDP `loader` is this rank's shard and the sums are all-reduced.

        Every rank must call it (one collective) and gets the same result; a rank with an empty shard is fine.
        """
        # Accumulate on device and sync once at the end: no per-batch .item().
        correct1 = torch.zeros((), device=device)
        correct5 = torch.zeros((), device=device)
        loss_sum = torch.zeros((), device=device)
        count = 0
        for batch in loader:
            x, y = self.to_device(batch, device)
            logits = model(x).float()  # (B, num_classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
            hits = top5 == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            count += y.shape[0]
        sums = all_reduce_sum(torch.stack([correct1, correct5, loss_sum, torch.tensor(float(count), device=device)]))
        *means, total = torch.cat([sums[:3] / sums[3], sums[3:]]).tolist()  # the one host sync
        if total == 0:
            raise ValueError("the evaluation loader is empty: check the test split of the dataset")
        top1, top5, loss = means
        return {"top1": 100.0 * top1, "top5": 100.0 * top5, "loss": loss}
