"""APT (docs/methods.md §4): the format, the controller's promotion loop and re-check interval, resume, compile, DDP.
Held shifts and the check schedule: test_apt_schedule.py; shared helpers: apt_support.py."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from apt_support import (POLICY, Driver, apt_buffers, fresh_state, immediate_and_deferred_buffers, layer_quantizer,
                         small_model, train_steps)
from quant import CheckSchedule, QuantSpec, drain_grad_stats
from quant.apt import (AptPolicy, ControllerState, Measurement, Schedule, apt_shift, controller_step, promoted_bits,
                       quantize_apt, recheck_interval)
from quant.apt_layers import AptQuantizer


def seen(shift, diff, *, overflow=False, valid=True):
    """A measurement whose shift at 8 bits is `shift` (8 fewer per 8 bits more) and whose diff_bit is `diff` at
    every candidate (None: a plain step)."""
    t = torch.tensor
    shifts = t([shift, shift - 8.0, shift - 16.0])
    diffs = torch.full((3,), math.nan) if diff is None else t([float(diff)] * 3) if not isinstance(diff, list) \
        else t(diff)
    return Measurement(t(valid), shifts, diffs, t(overflow))


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
    """diff_bit 0.01 and a constant shift give I = 8: checks at steps 0, 8, 16 (no dense phase)."""
    state, checks = fresh_state(), []
    for step in range(20):
        before = state.countdown.clone()
        state = controller_step(state, seen(-3.0, 0.01), POLICY, Schedule(epoch_steps=100))
        if before <= 1:
            checks.append(step)
    assert checks == [0, 8, 16] and state.interval.item() == 8


def test_every_step_is_a_check_during_the_dense_phase_and_the_next_one_follows_it():
    state = fresh_state()
    schedule = Schedule(dense_steps=3, epoch_steps=100)
    for _ in range(3):
        state = controller_step(state, seen(-3.0, 0.0), POLICY, schedule)
        assert state.countdown.item() == 1  # in the dense phase the next check is the next step
    state = controller_step(state, seen(-3.0, 0.0), POLICY, schedule)  # step 3: due, the first adaptive interval
    assert state.countdown.item() == 100 and state.updates.item() == 4


def test_after_the_adaptive_epochs_a_check_comes_once_per_epoch():
    schedule = Schedule(dense_steps=0, adaptive_steps=5, epoch_steps=40)
    state = fresh_state()
    state = controller_step(state, seen(-3.0, 0.01), POLICY, schedule)
    assert state.interval.item() == 8  # adaptive in the first epoch
    state = state._replace(updates=torch.tensor(5.0), countdown=torch.tensor(1.0))
    state = controller_step(state, seen(-3.0, 0.01), POLICY, schedule)
    assert state.interval.item() == 40 and state.countdown.item() == 40


def test_one_check_promotes_from_8_to_24_when_diff_bit_demands_it_and_lowers_the_shift_ema():
    """The loop: diff_bit 0.2 at 8 and 0.05 at 16 bits (both above 0.03), 0.001 at 24: 8 -> 24 in one check;
    the shift is max|x|'s at 24 bits, and m_s drops by the 16 bits gained before it moves towards it."""
    state = fresh_state()._replace(updates=torch.tensor(10.0), shift_ema=torch.tensor(-3.0), shift=torch.tensor(-3.0))
    state = controller_step(state, seen(-3.0, [0.2, 0.05, 0.001]), POLICY, Schedule(epoch_steps=100))
    assert state.bits.item() == 24 and state.shift.item() == -19.0 and state.diff_bit.item() == pytest.approx(0.001)
    a = POLICY.a
    assert state.shift_ema.item() == pytest.approx((1 - a) * (-3.0 - 16) + a * -19.0)
    assert promoted_bits(torch.tensor(8.0), torch.tensor([0.2, 0.01, 0.0]), POLICY).item() == 16  # stops at 16
    assert promoted_bits(torch.tensor(16.0), torch.tensor([0.0, 0.0, 0.0]), POLICY).item() == 16  # never demoted


def test_a_stationary_layer_keeps_its_bits():
    torch.manual_seed(0)
    q = layer_quantizer()
    step = Driver(q)
    for _ in range(300):
        x = torch.randn(4096).clamp(-3, 3)
        x[0] = 3.0  # the same max|x| every step: the shift has no reason to move
        step(x)
    assert q.bits.item() == 8 and q.diff_bit.item() < POLICY.threshold
    assert q.interval.item() > 10  # checks grow rare once nothing moves
    assert len(step.check_steps) < 60  # and only those steps measure


def test_a_layer_whose_distribution_shifts_sharply_is_promoted():
    """Gaussian, then the same with a few huge outliers: they overflow the held format, the shift is re-derived
    from max|x|, most values now round to zero at 8 bits, the shift jump brings the next check forward and it
    promotes."""
    torch.manual_seed(0)
    q = layer_quantizer()
    step = Driver(q)
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
    q = layer_quantizer().eval()
    q(torch.randn(100) * 1e4)
    assert q.updates.item() == 0


def test_resume_restores_every_layers_bits_and_counters():
    policy = AptPolicy(threshold=0.001)  # low enough that some roles get promoted in a few steps
    model = small_model(policy)
    train_steps(model, 12, seed=1, cadence=CheckSchedule(model))
    saved = apt_buffers(model)
    assert {k.rsplit(".", 1)[1] for k in saved} >= set(ControllerState._fields)
    assert any(k.endswith(".bits") and v.item() > 8 for k, v in saved.items())  # something moved
    resumed = small_model(policy)
    resumed.load_state_dict(copy.deepcopy(model.state_dict()))
    assert all(torch.equal(v, apt_buffers(resumed)[k]) for k, v in saved.items())
    torch.manual_seed(5)
    train_steps(model, 15, seed=2, cadence=lambda step, c=CheckSchedule(model): c(12 + step))
    torch.manual_seed(5)
    train_steps(resumed, 15, seed=2, cadence=lambda step, c=CheckSchedule(resumed): c(12 + step))
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


def test_deferred_updates_with_identical_ranks_match_the_immediate_ones():
    """Two ranks seeing the same tensors (a fake all-reduce that doubles) give the single-process state, over
    dense, adaptive and plain steps (intervals of at most 4 steps)."""
    a, b = immediate_and_deferred_buffers(AptPolicy(threshold=0.001), 12, steps_per_epoch=4)
    assert all(torch.allclose(v, b[k]) for k, v in a.items())
    assert any(k.endswith(".bits") and v.item() > 8 for k, v in a.items())


def test_spec_rejects_starting_bits_outside_the_candidates():
    with pytest.raises(ValueError, match="quant.bits.w=4 is invalid under APT"):
        QuantSpec(w_bits=4, a_bits=8, g_bits=8, precision=POLICY)
    with pytest.raises(ValueError, match="candidates"):
        AptPolicy(candidates=(16, 8))
