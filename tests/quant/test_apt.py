"""APT (docs/methods.md §4): the format, the controller's promotion and re-check interval, resume, compile, DDP."""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from quant import (QuantSpec, apply_deferred_updates, drain_grad_stats, quantize_, set_deferred_updates,
                   set_precision_schedule, set_precision_step)
from quant.apt import AptPolicy, ControllerState, apt_shift, controller_step, diff_bit, quantize_apt, recheck_interval
from quant.apt_layers import AptGradQuantizer, AptQuantizer, is_check_step

POLICY = AptPolicy()


def fresh_state() -> ControllerState:
    return AptQuantizer("a", 8, POLICY).controller_state()


@pytest.mark.parametrize("bits", [8, 16, 24])
def test_shift_matches_the_formula_and_values_lie_on_the_grid(bits):
    torch.manual_seed(0)
    x = torch.randn(1000) * 3.7
    shift = apt_shift(x.abs().max(), torch.tensor(float(bits)))
    assert shift.item() == math.ceil(math.log2(x.abs().max().item() / (2 ** (bits - 1) - 1)))
    x_hat = quantize_apt(x, shift, torch.tensor(float(bits)))
    k = x_hat / 2 ** shift.item()
    assert torch.equal(k, k.round()) and k.abs().max() <= 2 ** (bits - 1) - 1
    assert (x_hat - x).abs().max() <= 2 ** shift.item() / 2  # the range covers max|x|: nothing saturates


def test_stochastic_gradient_rounding_is_unbiased():
    x = torch.full((200_000,), 0.3)
    x_hat = quantize_apt(x, torch.tensor(0.0), torch.tensor(8.0), stochastic=True)
    assert x_hat.mean().item() == pytest.approx(0.3, abs=5e-3)


@pytest.mark.parametrize("shift, ema, diff, expected", [
    (0.0, 0.0, 0.01, 8),     # 0.1 / (100 * 0.01^2) - 2
    (3.0, 2.5, 0.01, 3),     # a|s - m_s| = 0.02 wins: 0.1 / 0.02 - 2
    (0.0, 0.0, 0.05, 1),     # 0.1 / 0.25 - 2 < 1: clamped to 1
    (0.0, 0.0, 0.0, 47),     # nothing changes: capped at one epoch
    (-7.0, -4.0, 0.001, 1),  # the shift jumped by 3: 0.1 / 0.12 - 2 < 1
])
def test_recheck_interval_matches_hand_values(shift, ema, diff, expected):
    t = torch.tensor
    assert recheck_interval(t(shift), t(ema), t(diff), POLICY, max_interval=47).item() == expected


def test_checks_happen_at_the_steps_the_interval_says():
    """diff_bit 0.01 and a constant shift give I = 8: checks at steps 0, 8, 16 (after a dense phase of 0)."""
    state, checks = fresh_state(), []
    for step in range(20):
        before = state.countdown.clone()
        state = controller_step(state, torch.tensor(-3.0), torch.tensor(0.01), torch.tensor(True), POLICY,
                                dense_steps=0, max_interval=100)
        if before <= 1:
            checks.append(step)
    assert checks == [0, 8, 16] and state.interval.item() == 8


def test_every_step_is_a_check_during_the_dense_phase():
    state = fresh_state()
    for _ in range(5):  # a diff_bit above the threshold promotes at every check: 8 -> 16 -> 24, then stays
        state = controller_step(state, torch.tensor(0.0), torch.tensor(0.2), torch.tensor(True), POLICY,
                                dense_steps=5, max_interval=100)
    assert state.bits.item() == 24 and state.updates.item() == 5


def _layer_quantizer(policy=POLICY):
    q = AptQuantizer("a", 8, policy)
    q.dense_steps, q.max_interval = 10, 100
    return q.train()


class _Cadence:
    """Calls a quantizer as the trainer does with set_precision_step (check_every > 1), or every step measuring."""

    def __init__(self, q, cadence: bool):
        self.q, self.cadence, self.step = q, cadence, 0

    def __call__(self, x):
        if self.cadence:
            self.q.checking = is_check_step(self.step, dense_steps=self.q.dense_steps,
                                            check_every=self.q.policy.check_every)
        self.step += 1
        return self.q(x)


EVERY_4 = AptPolicy(check_every=4)


@pytest.mark.parametrize("cadence", [False, True])
def test_a_stationary_layer_keeps_its_bits(cadence):
    torch.manual_seed(0)
    q = _layer_quantizer(EVERY_4 if cadence else POLICY)
    step = _Cadence(q, cadence)
    for _ in range(300):
        step(torch.randn(4096))
    assert q.bits.item() == 8 and q.diff_bit.item() < POLICY.threshold
    assert q.interval.item() > 10  # checks grow rare once nothing moves


@pytest.mark.parametrize("cadence", [False, True])
def test_a_layer_whose_distribution_shifts_sharply_is_promoted(cadence):
    """Gaussian, then the same with a few huge outliers: the power-of-two scale follows max|x|, most values
    round to zero at 8 bits, diff_bit jumps, and the next check (brought forward by the shift change) promotes."""
    torch.manual_seed(0)
    q = _layer_quantizer(EVERY_4 if cadence else POLICY)
    step = _Cadence(q, cadence)
    for _ in range(100):
        step(torch.randn(4096))
    assert q.bits.item() == 8
    for _ in range(30):
        x = torch.randn(4096)
        x[:4] = 5000.0
        step(x)
    assert q.bits.item() == 16
    x = torch.randn(4096)
    x[:4] = 5000.0
    assert (q(x) - x).abs().mean() < 0.1  # at 16 bits the bulk is represented again


def test_quantizers_move_no_state_in_eval_mode():
    q = _layer_quantizer().eval()
    q(torch.randn(100) * 1e4)
    assert q.updates.item() == 0


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


def test_resume_restores_every_layers_bits_and_counters():
    policy = AptPolicy(threshold=0.001)  # low enough that some roles get promoted in a few steps
    model = small_model(policy)
    train_steps(model, 12, seed=1)
    saved = apt_buffers(model)
    assert {k.rsplit(".", 1)[1] for k in saved} >= set(ControllerState._fields)
    assert any(k.endswith(".bits") and v.item() > 8 for k, v in saved.items())  # something moved
    resumed = small_model(policy)
    resumed.load_state_dict(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(v, apt_buffers(resumed)[k]) for k, v in saved.items())
    torch.manual_seed(5)
    train_steps(model, 15, seed=2)
    torch.manual_seed(5)
    train_steps(resumed, 15, seed=2)
    after, after_resumed = apt_buffers(model), apt_buffers(resumed)
    assert all(torch.equal(v, after_resumed[k]) for k, v in after.items())


def test_stats_report_bits_per_role_and_the_cost():
    model = small_model()
    train_steps(model, 2, seed=0)
    stats = drain_grad_stats(model)
    assert {"bits_w/2", "bits_a/2", "bits_g/2", "diff_bit_g/2", "interval_a/2", "apt/bits_g", "apt/cost"} <= set(stats)
    assert stats["apt/cost"] == pytest.approx(3 * 8 * 8 / (3 * 32 * 32))  # everything still at 8 bits


def test_bit_changes_do_not_recompile(fresh_dynamo):
    from torch._dynamo.testing import CompileCounter

    model = small_model()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    for bits in (8.0, 16.0, 24.0, 8.0):
        for m in model.modules():
            if isinstance(m, AptQuantizer):
                m.bits.fill_(bits)
        F.cross_entropy(compiled(x), y).backward()
    assert counter.frame_count == 1


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


def test_deferred_updates_with_identical_ranks_match_the_immediate_ones():
    """Two ranks seeing the same tensors (a fake all-reduce that doubles) give the single-process state."""
    a, b = immediate_and_deferred_buffers(AptPolicy(stochastic_grad=False, threshold=0.001), 6)
    assert all(torch.allclose(v, b[k]) for k, v in a.items())


def test_spec_rejects_starting_bits_outside_the_candidates():
    with pytest.raises(ValueError, match="quant.bits.w=4 is invalid under APT"):
        QuantSpec(w_bits=4, a_bits=8, g_bits=8, precision=POLICY)
    with pytest.raises(ValueError, match="candidates"):
        AptPolicy(candidates=(16, 8))


# -- check steps (AptPolicy.check_every, set_precision_step): diff_bit only where a check may happen -------------

def checking_flags(model, steps):
    seen = []
    for step in range(steps):
        set_precision_step(model, step)
        flags = {q.checking for q in model.modules() if isinstance(q, AptQuantizer)}
        assert len(flags) == 1
        seen.append(flags.pop())
    return [i for i, c in enumerate(seen) if c]


def test_check_steps_are_the_dense_phase_then_every_check_every_th_step():
    # 20 steps per epoch, 3 epochs: a dense phase of ceil(0.6) = 1 step
    assert checking_flags(small_model(EVERY_4), 13) == [0, 4, 8, 12]
    assert checking_flags(small_model(), 5) == [0, 1, 2, 3, 4]  # the default measures every step
    assert [i for i in range(8) if is_check_step(i, dense_steps=3, check_every=4)] == [0, 1, 2, 4]
    with pytest.raises(ValueError, match="check_every"):
        AptPolicy(check_every=0)


def test_a_plain_step_only_counts_down_and_moves_the_shift_ema():
    torch.manual_seed(0)
    q = _layer_quantizer()
    for _ in range(3):
        q(torch.randn(4096))
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.checking = False
    x = torch.randn(4096) * 3
    out = q(x)
    shift = apt_shift(x.abs().max(), before["bits"])
    assert torch.equal(out, quantize_apt(x, shift, before["bits"]))  # the values are those of a check step
    for name in ("bits", "interval", "diff_bit"):
        assert torch.equal(q.state_dict()[name], before[name]), name
    assert q.countdown.item() == before["countdown"].item() - 1 and q.updates.item() == before["updates"].item() + 1
    m = POLICY.shift_momentum
    assert q.shift_ema.item() == pytest.approx(m * before["shift_ema"].item() + (1 - m) * shift.item())


def test_a_check_step_updates_the_controller_exactly_as_the_formula_says():
    torch.manual_seed(0)
    q = _layer_quantizer()
    for _ in range(3):
        q(torch.randn(4096))
    state = ControllerState(*(t.clone() for t in q.controller_state()))
    x = torch.randn(4096) * 3
    out = q(x)  # checking: True
    shift = apt_shift(x.abs().max(), state.bits)
    expected = controller_step(state, shift, diff_bit(x, out), torch.tensor(True), POLICY, dense_steps=10,
                               max_interval=100)
    for name, value in zip(ControllerState._fields, expected):
        assert torch.equal(getattr(q, name), value), name
    assert q.diff_bit.item() > 0


def test_an_overdue_check_waits_for_the_next_check_step():
    """diff_bit sqrt(2e-4) gives I = 3; measured only every 4th step, the checks land at 0, 4, 8, 12."""
    state, checks = fresh_state(), []
    diff = torch.tensor(2e-4).sqrt()
    for step in range(14):
        before = state.interval.clone(), state.countdown.clone()
        measured = is_check_step(step, dense_steps=0, check_every=4)
        state = controller_step(state, torch.tensor(-3.0), diff if measured else None, torch.tensor(True), POLICY,
                                dense_steps=0, max_interval=100)
        if state.countdown.item() == 3 and (step == 0 or before[1].item() <= 1):
            checks.append(step)
        if not measured:
            assert torch.equal(state.interval, before[0]) and state.countdown.item() == before[1].item() - 1
    assert checks == [0, 4, 8, 12] and state.interval.item() == 3


def test_a_nan_diff_is_no_measurement():
    """What a deferred pending row carries on a plain step: the same state as `diff=None`."""
    state = fresh_state()._replace(countdown=torch.tensor(0.0), updates=torch.tensor(5.0), diff_bit=torch.tensor(0.5))
    args = (torch.tensor(-2.0),)
    kw = dict(dense_steps=0, max_interval=100)
    a = controller_step(state, *args, None, torch.tensor(True), POLICY, **kw)
    b = controller_step(state, *args, torch.tensor(math.nan), torch.tensor(True), POLICY, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and a.diff_bit.item() == 0.5 and a.bits.item() == 8


def test_the_gradient_is_rounded_alike_on_check_and_plain_steps():
    torch.manual_seed(0)
    y = torch.randn(64, 32)
    grads = []
    for checking in (True, False):
        q = AptGradQuantizer(8, POLICY).train()
        q.checking = checking
        leaf = y.clone().requires_grad_()
        torch.manual_seed(1)
        (q(leaf) * torch.linspace(-1, 1, 32)).sum().backward()
        grads.append(leaf.grad)
        assert (q.diff_bit.item() > 0) == checking and q.updates.item() == 1
    assert torch.equal(grads[0], grads[1])
    g = torch.linspace(-1, 1, 32).expand(64, 32)
    k = grads[0] / 2 ** apt_shift(g.abs().max(), torch.tensor(8.0))
    assert torch.equal(k, k.round()) and not torch.equal(grads[0], quantize_apt(g, apt_shift(g.abs().max(),
                                                                                              torch.tensor(8.0)),
                                                                                  torch.tensor(8.0)))


def test_deferred_updates_on_a_check_cadence_match_the_immediate_ones():
    policy = AptPolicy(stochastic_grad=False, threshold=0.001, check_every=3)
    # intervals of at most 2 steps: checks fall due between check steps
    a, b = immediate_and_deferred_buffers(
        policy, 9, prepare=lambda model: set_precision_schedule(model, steps_per_epoch=2, epochs=3),
        before_step=set_precision_step)
    assert all(torch.allclose(v, b[k]) for k, v in a.items())
    # steps 7 and 8 were plain: every check that fell due since step 6's waits for step 9
    assert all(v.item() < 1 for k, v in a.items() if k.endswith(".countdown"))
    assert all(v.item() == 9 for k, v in a.items() if k.endswith(".updates"))


def test_check_and_plain_steps_compile_two_graphs_and_bit_changes_none(fresh_dynamo):
    from torch._dynamo.testing import CompileCounter

    model = small_model(EVERY_4)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    for step, bits in enumerate((8.0, 16.0, 24.0, 8.0, 16.0, 8.0)):
        set_precision_step(model, step)
        for m in model.modules():
            if isinstance(m, AptQuantizer):
                m.bits.fill_(bits)
        F.cross_entropy(compiled(x), y).backward()
    assert counter.frame_count == 2
