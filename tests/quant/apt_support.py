"""Shared by test_apt.py and test_apt_schedule.py: small APT models, training steps, buffers, a trainer-like driver."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from quant import CheckSchedule, QuantSpec, apply_deferred_updates, quantize_, set_deferred_updates, \
    set_precision_schedule
from quant.apt import AptPolicy, ControllerState, Schedule
from quant.apt_layers import AptQuantizer

POLICY = AptPolicy()


def fresh_state() -> ControllerState:
    return AptQuantizer("a", 8, POLICY).controller_state()


def layer_quantizer(policy=POLICY, schedule=Schedule(dense_steps=10, epoch_steps=100)):
    q = AptQuantizer("a", 8, policy)
    q.schedule = schedule
    return q.train()


class Driver:
    """Calls one quantizer as the trainer does: its `checking` flag from a CheckSchedule, step by step."""

    def __init__(self, q):
        self.q, self.step, self.cadence = q, 0, CheckSchedule(nn.Sequential(q))
        self.check_steps = []

    def __call__(self, x):
        self.cadence(self.step)
        if self.q.checking:
            self.check_steps.append(self.step)
        self.step += 1
        return self.q(x)


def small_model(policy=POLICY, steps_per_epoch=20):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, precision=policy))
    set_precision_schedule(model, steps_per_epoch=steps_per_epoch, epochs=3)
    return model


def train_steps(model, n, seed, cadence=None):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(n):
        if cadence is not None:
            cadence(step)
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def apt_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if ".wq." in k or ".aq." in k or ".gq." in k}


def immediate_and_deferred_buffers(policy, steps: int, *, steps_per_epoch=20):
    """APT buffers of one model updating at once and of one deferring to a fake all-reduce that doubles (two
    identical ranks), after the same `steps` batches, each driven by its own CheckSchedule."""
    immediate, deferred = small_model(policy, steps_per_epoch), small_model(policy, steps_per_epoch)
    set_deferred_updates(deferred, True)
    cadences = CheckSchedule(immediate), CheckSchedule(deferred)
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        for cadence in cadences:
            cadence(step)
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(immediate(x), y).backward()
        F.cross_entropy(deferred(x), y).backward()
        apply_deferred_updates(deferred, lambda t: t.mul_(2))
    return apt_buffers(immediate), apt_buffers(deferred)
