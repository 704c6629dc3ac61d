"""Synthetic data: right shapes, fixed by data_seed only, and learnable (classes separate by their means)."""
import torch

from data import synthetic


def _stack(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_shapes_follow_the_arguments():
    bundle = synthetic.build(num_train=40, num_test=20, num_classes=4, in_channels=1, image_size=12, batch_size=16)
    assert bundle.model_kwargs == {"num_classes": 4, "in_channels": 1}
    x, y = next(iter(bundle.train))
    assert x.shape == (16, 1, 12, 12) and y.max() < 4
    assert len(bundle.train) == 3 and len(bundle.test) == 1


def test_training_seed_reshuffles_but_never_changes_the_data():
    a = synthetic.build(seed=0, augment=False)
    b = synthetic.build(seed=1, augment=False)
    assert torch.equal(_stack(a.test)[0], _stack(b.test)[0])
    assert not torch.equal(_stack(a.train)[1], _stack(b.train)[1])
    c = synthetic.build(seed=0, augment=False, data_seed=1)
    assert not torch.equal(_stack(a.test)[0], _stack(c.test)[0])


def test_classes_are_separable_by_a_nearest_mean_rule_even_after_augmentation():
    bundle = synthetic.build(num_train=1000, num_test=300, seed=0)
    train_x, train_y = _stack(bundle.train)  # augmented (crop + flip) training images
    test_x, test_y = _stack(bundle.test)
    means = torch.stack([train_x[train_y == k].mean(0) for k in range(10)]).flatten(1)  # (10, C*H*W)
    predicted = torch.cdist(test_x.flatten(1), means).argmin(1)
    assert (predicted == test_y).float().mean() > 0.9
