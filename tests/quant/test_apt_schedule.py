"""APT's held shift and check steps (docs/methods.md §4.2): between checks the format stays, a value that would
saturate re-derives the shift, only due steps measure, gradients round to nearest, and the earlier behaviour stays
reachable (hold_shift=false, stochastic_grad=true)."""
import pytest
import torch
import torch.nn.functional as F

from apt_support import POLICY, Driver, immediate_and_deferred_buffers, layer_quantizer, small_model
from quant import CheckSchedule
from quant.apt import AptPolicy, apt_shift, quantize_apt
from quant.apt_layers import AptGradQuantizer, AptQuantizer


def held_after_a_check(policy=POLICY):
    """A quantizer that checked once (dense phase 0) on N(0, 1) and has a long countdown ahead."""
    torch.manual_seed(0)
    q = layer_quantizer(policy)
    q.schedule = type(q.schedule)(dense_steps=0, epoch_steps=100)
    step = Driver(q)
    step(torch.randn(4096))
    return q, step


def test_between_checks_the_shift_holds_even_when_max_x_changes():
    q, step = held_after_a_check()
    shift, countdown = q.shift.clone(), q.countdown.item()
    assert countdown > 5
    for scale in (0.5, 0.1, 0.9):  # max|x| drops: a fresh shift would be smaller, the held one stays
        x = torch.randn(4096) * scale
        out = step(x)
        assert not q.checking and torch.equal(q.shift, shift)
        assert torch.equal(out, quantize_apt(x, shift, q.bits))  # rounded on the held grid
        assert apt_shift(x.abs().max(), q.bits) < shift
    assert q.countdown.item() == countdown - 3 and step.check_steps == [0]


def test_a_value_beyond_the_held_range_re_derives_the_shift_and_makes_the_layer_due():
    q, step = held_after_a_check()
    shift = q.shift.clone()
    x = torch.randn(4096)
    x[0] = 1000.0
    out = step(x)  # a plain step: this step saturates, the next one uses the new shift
    limit = (2 ** 7 - 1) * 2 ** shift.item()
    assert out[0].item() == limit and q.shift.item() == apt_shift(torch.tensor(1000.0), q.bits).item()
    assert q.countdown.item() <= 1  # due: the next check step checks it
    out = step(x)  # a plain step again (the host reads countdowns after check steps only), on the new grid
    assert step.check_steps == [0] and out[0].item() == 1000.0


def test_only_steps_where_a_check_is_due_measure():
    """A model driven as the trainer drives it: after the dense phase, a check step comes exactly when some
    quantizer's countdown from its last check runs out (a layer made due by an overflow waits for it); a plain step
    leaves bits, interval and diff_bit alone."""
    model = small_model(AptPolicy(), steps_per_epoch=40)
    quantizers = [m for m in model.modules() if isinstance(m, AptQuantizer)]
    cadence = CheckSchedule(model)
    g = torch.Generator().manual_seed(0)
    natural = [0.0] * len(quantizers)  # each countdown as it runs from the last check, without overflows
    checked, expected = [], []
    for step in range(40):
        dense = step < quantizers[0].schedule.dense_steps
        was_due = [dense or q.countdown.item() <= 1 for q in quantizers]
        before = [(q.bits.clone(), q.interval.clone(), q.diff_bit.clone()) for q in quantizers]
        cadence(step)
        flags = {q.checking for q in quantizers}
        assert len(flags) == 1
        checked.append(flags.pop())
        expected.append(dense or any(n <= 1 for n in natural))
        x, y = torch.randn(16, 3, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        F.cross_entropy(model(x), y).backward()
        natural = [q.countdown.item() if checked[-1] and due else n - 1
                   for q, due, n in zip(quantizers, was_due, natural)]
        if not checked[-1]:
            assert all(torch.equal(q.bits, b) and torch.equal(q.interval, i) and torch.equal(q.diff_bit, d)
                       for q, (b, i, d) in zip(quantizers, before))
    assert checked == expected and 0 < sum(checked) < 30


def test_gradients_round_to_nearest_by_default_and_stochastically_on_request():
    torch.manual_seed(0)
    y = torch.randn(64, 32)
    g = torch.linspace(-1, 1, 32).expand(64, 32) * 0.37
    grads = {}
    for stochastic in (False, True):
        q = AptGradQuantizer(8, AptPolicy(stochastic_grad=stochastic)).train()
        leaf = y.clone().requires_grad_()
        (q(leaf) * g).sum().backward()
        grads[stochastic] = leaf.grad
    shift = apt_shift(g.abs().max(), torch.tensor(8.0))
    assert torch.equal(grads[False], quantize_apt(g, shift, torch.tensor(8.0)))
    assert not torch.equal(grads[True], grads[False])
    k = grads[True] / 2 ** shift
    assert torch.equal(k, k.round())  # still on the grid


def test_hold_shift_false_follows_max_x_every_step():
    q, step = held_after_a_check(AptPolicy(hold_shift=False))
    x = torch.randn(4096) * 0.1
    out = step(x)
    fresh = apt_shift(x.abs().max(), q.bits)
    assert not q.checking and q.shift.item() == fresh.item()
    assert torch.equal(out, quantize_apt(x, fresh, q.bits))


def test_deferred_updates_with_overflow_and_plain_steps_match_the_immediate_ones():
    """Weights that grow fast (lr 0.1 on a tiny model) overflow their held format on plain steps."""
    a, b = immediate_and_deferred_buffers(AptPolicy(), 30, steps_per_epoch=10)
    assert all(torch.allclose(v, b[k]) for k, v in a.items())


def test_check_and_plain_steps_compile_two_graphs_and_bit_changes_none(fresh_dynamo):
    from torch._dynamo.testing import CompileCounter

    model = small_model(steps_per_epoch=4)
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    cadence = CheckSchedule(model)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    kinds = set()
    for step, bits in enumerate((8.0, 16.0, 24.0, 8.0, 16.0, 8.0, 16.0, 8.0)):
        cadence(step)
        kinds.add(next(m for m in model.modules() if isinstance(m, AptQuantizer)).checking)
        for m in model.modules():
            if isinstance(m, AptQuantizer):
                m.bits.fill_(bits)
        F.cross_entropy(compiled(x), y).backward()
    assert kinds == {True, False} and counter.frame_count == 2


def test_eval_mode_rounds_on_the_held_grid_and_moves_nothing():
    q, _ = held_after_a_check()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    x = torch.randn(4096) * 0.2  # max|x| far below the held range: a fresh shift would be finer
    out = q.eval()(x)
    assert torch.equal(out, quantize_apt(x, q.shift, q.bits))
    assert all(torch.equal(v, q.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("field, value, message", [
    ("adaptive_epochs", -1, "quant.precision.adaptive_epochs=-1 is invalid"),
    ("hold_shift", "yes", "quant.precision.hold_shift='yes' is invalid: use true or false"),
    ("stochastic_grad", 1, "quant.precision.stochastic_grad=1 is invalid"),
])
def test_policy_rejects_bad_schedule_values_in_one_line(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        AptPolicy(**{field: value})


def test_a_quantizer_check_promotes_8_to_24_at_once_and_rounds_this_step_at_24_bits():
    """2^18 values of +-1 and one of 2^17: at 8 and 16 bits the steps are 2^11 and 2^3, so every 1 rounds to zero
    and diff_bit = log2(1.5 / 0.5) -> far above the threshold at both; at 24 bits the step is 2^-5 and nothing is
    lost, so the first check takes 24 (the loop), and this step is already rounded at 24 bits."""
    q = layer_quantizer()
    x = torch.ones(2 ** 18)
    x[1::2] = -1.0
    x[0] = 2.0 ** 17
    out = q(x)  # the first step is a check
    assert q.bits.item() == 24 and q.shift.item() == -5.0 and q.diff_bit.item() == 0.0
    assert torch.equal(out, x)  # exact at 24 bits
