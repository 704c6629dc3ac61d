"""APT's check cadence (AptPolicy.check_every, set_precision_step; docs/methods.md §4.2): diff_bit only where a
check may happen, plain steps only count down and move the shift's EMA, compiled steps keep two graphs."""
import math

import pytest
import torch
import torch.nn.functional as F

from apt_support import EVERY_4, POLICY, fresh_state, immediate_and_deferred_buffers, layer_quantizer, small_model
from quant import set_precision_schedule, set_precision_step
from quant.apt import AptPolicy, ControllerState, apt_shift, controller_step, diff_bit, quantize_apt
from quant.apt_layers import AptGradQuantizer, AptQuantizer, is_check_step


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
    q = layer_quantizer()
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
    q = layer_quantizer()
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
