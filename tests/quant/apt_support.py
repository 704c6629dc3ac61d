"""Shared by test_apt.py and test_apt_cadence.py: small APT models, training steps, buffers, a cadence driver."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from quant import QuantSpec, apply_deferred_updates, quantize_, set_deferred_updates, set_precision_schedule
from quant.apt import AptPolicy, ControllerState
from quant.apt_layers import AptQuantizer, is_check_step

POLICY = AptPolicy()
EVERY_4 = AptPolicy(check_every=4)


def fresh_state() -> ControllerState:
    return AptQuantizer("a", 8, POLICY).controller_state()


def layer_quantizer(policy=POLICY):
    q = AptQuantizer("a", 8, policy)
    q.dense_steps, q.max_interval = 10, 100
    return q.train()


class Cadence:
    """Calls a quantizer as the trainer does with set_precision_step (check_every > 1), or every step measuring."""

    def __init__(self, q, cadence: bool):
        self.q, self.cadence, self.step = q, cadence, 0

    def __call__(self, x):
        if self.cadence:
            self.q.checking = is_check_step(self.step, dense_steps=self.q.dense_steps,
                                            check_every=self.q.policy.check_every)
        self.step += 1
        return self.q(x)


def small_model(policy=POLICY):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 2 * 2, 10))
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, precision=policy))
    set_precision_schedule(model, steps_per_epoch=20, epochs=3)
    return model


def train_steps(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(n):
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def apt_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if ".wq." in k or ".aq." in k or ".gq." in k}


def immediate_and_deferred_buffers(policy, steps: int, *, prepare=lambda model: None, before_step=None):
    """APT buffers of one model updating at once and of one deferring to a fake all-reduce that doubles (two
    identical ranks), after the same `steps` batches."""
    immediate, deferred = small_model(policy), small_model(policy)
    for model in (immediate, deferred):
        prepare(model)
    set_deferred_updates(deferred, True)
    g = torch.Generator().manual_seed(3)
    for step in range(steps):
        if before_step is not None:
            before_step(immediate, step)
            before_step(deferred, step)
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(immediate(x), y).backward()
        F.cross_entropy(deferred(x), y).backward()
        apply_deferred_updates(deferred, lambda t: t.mul_(2))
    return apt_buffers(immediate), apt_buffers(deferred)
