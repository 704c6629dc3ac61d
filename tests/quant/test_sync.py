"""Deferred gamma updates and the rank reduction: every rank ends with the same quantizer state (docs/methods.md §1.7).

Ranks are simulated by model replicas whose `all_reduce` meets in threads like a real collective; one test runs two
real gloo processes under DistributedDataParallel.
"""
import copy
import os
import socket
import threading

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from quant import (QuantSpec, apply_deferred_updates, quantize_, set_deferred_updates, set_recording,
                   sync_quant_state, warmup_grad_intervals)
from quant.forward import ActQuantizer
from quant.grad.hindsight import HindsightPolicy
from quant.grad.lbt import LBTPolicy
from quant.grad.minmax import MinMaxPolicy
from quant.grad.mse import MSEPolicy
from quant.gradient import GradQuantizer, named_grad_quantizers


def small_model(policy):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.Linear(16, 4))
    return quantize_(model, QuantSpec(w_bits=4, a_bits=4, g_bits=4, grad=policy))


def loss_of(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def gammas(model):
    return torch.stack([q.gamma for _, q in named_grad_quantizers(model)])


def uppers(model):
    return torch.stack([m.upper for m in model.modules() if isinstance(m, ActQuantizer)]).detach()


def simulate_ranks(models, fn):
    """Run fn(model, all_reduce) for every replica in its own thread; all_reduce sums over them in place, in rank
    order on every rank (as a collective does), so the replicas see identical results."""
    barrier = threading.Barrier(len(models), timeout=60)
    slots, errors = [None] * len(models), []

    def run(rank):
        def all_reduce(t):
            slots[rank] = t.clone()
            barrier.wait()
            total = sum(slots[1:], slots[0].clone())
            barrier.wait()
            t.copy_(total)
        try:
            fn(models[rank], all_reduce)
        except BaseException as e:  # re-raised below, in the test's thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("policy", [LBTPolicy(), MinMaxPolicy(), MSEPolicy()])
def test_deferred_updates_on_one_process_give_the_same_gamma_bit_for_bit(policy):
    torch.manual_seed(0)
    batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))) for _ in range(4)]
    runs = []
    for deferred in (False, True):
        model = small_model(policy)
        set_deferred_updates(model, deferred)
        torch.manual_seed(1)  # the same rounding noise in both runs
        warmup_grad_intervals(model, lambda: loss_of(model, *batches[0]))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        history = []
        for step, (x, y) in enumerate(batches):
            set_recording(model, step == 1)
            loss_of(model, x, y).backward()
            if deferred:
                apply_deferred_updates(model)
            optimizer.step()
            optimizer.zero_grad()
            history.append(gammas(model).clone())
        runs.append((torch.stack(history), model.state_dict()))
    (plain, plain_state), (deferred, deferred_state) = runs
    assert torch.equal(plain, deferred)
    assert all(torch.equal(plain_state[k], deferred_state[k]) for k in plain_state)  # weights, skipped, ...
    if isinstance(policy, LBTPolicy):
        assert not torch.equal(plain[0], plain[-1])  # gamma moved, so the comparison could notice a wrong update


# LBT moves gamma by the SIGN of r - r*, so the ranks only diverge when their clipped fractions fall on either side
# of r*: alpha = 0.3 (r* = 2%), a fast warm-up EMA and a large eta keep them there on these tiny layers. MSE's
# stored gamma is the chosen one, which differs on every rank without the reduction.
SYNCED_POLICIES = [LBTPolicy(alpha=0.3, eta=0.02, warmup_momentum=0.5), MSEPolicy()]


@pytest.mark.parametrize("policy", SYNCED_POLICIES)
def test_two_simulated_ranks_on_half_batches_end_with_identical_gamma_and_intervals(policy):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    replicas = [small_model(policy) for _ in range(2)]
    alone = [small_model(policy) for _ in range(2)]  # the same ranks without the reduction
    for rank, models in enumerate(zip(replicas, alone)):
        for model in models:
            set_deferred_updates(model, True)
            torch.manual_seed(10 + rank)
            warmup_grad_intervals(model, lambda: loss_of(model, *halves[rank]))
    assert not torch.equal(uppers(replicas[0]), uppers(replicas[1]))  # each rank initialised from its own half
    before = [uppers(m) for m in replicas]
    simulate_ranks(replicas, sync_quant_state)
    assert torch.equal(uppers(replicas[0]), uppers(replicas[1]))
    torch.testing.assert_close(uppers(replicas[0]), (before[0] + before[1]) / 2)
    assert torch.equal(gammas(replicas[0]), gammas(replicas[1]))

    for step in range(3):
        pending = []
        for rank, model in enumerate(replicas + alone):
            torch.manual_seed(100 * step + rank % 2)  # each rank its own rounding noise
            loss_of(model, *halves[rank % 2]).backward()
            pending.append(torch.stack([q.pending for _, q in named_grad_quantizers(model)]))
        simulate_ranks(replicas, apply_deferred_updates)
        for model in alone:
            apply_deferred_updates(model)
        assert torch.equal(gammas(replicas[0]), gammas(replicas[1]))
        assert (pending[0][:, 1] == 1).all() and (pending[1][:, 1] == 1).all()  # usable gradients only
        mean_gamma, mean_clip = (pending[0][:, 2:4] + pending[1][:, 2:4]).div(2).unbind(1)
        expected = policy.update_gamma(mean_gamma, mean_clip, 4) if policy.needs_clip_fraction else mean_gamma
        torch.testing.assert_close(gammas(replicas[0]), expected, rtol=0, atol=1e-6)
    assert not torch.equal(gammas(alone[0]), gammas(alone[1]))  # without the reduction the ranks diverge


def test_a_rank_with_an_unusable_gradient_does_not_move_gamma_and_skips_are_summed():
    quantizers = [GradQuantizer(4, LBTPolicy()) for _ in range(2)]
    for q, g in zip(quantizers, (torch.zeros(1000), torch.randn(1000))):
        q.deferred = True
        x = torch.zeros(1000, requires_grad=True)
        q(x).backward(g)
    clip = quantizers[1].pending[3].clone()
    simulate_ranks(quantizers, apply_deferred_updates)
    expected = LBTPolicy().update_gamma(torch.tensor(1.0), clip, 4)  # rank 1's statistics alone
    assert all(q.gamma == expected and q.skipped == 1 for q in quantizers)
    assert all(not q.pending.any() for q in quantizers)  # cleared


def test_in_hindsight_ranks_move_one_shared_range_by_the_mean_of_their_maxima():
    policy = HindsightPolicy(momentum=0.9)
    quantizers = [GradQuantizer(4, policy) for _ in range(2)]
    maxima = []
    for step in range(3):
        for rank, q in enumerate(quantizers):
            q.deferred = True
            g = torch.randn(1000) * (1 + rank) * (step + 1)  # each rank its own range
            maxima.append(g.abs().max())
            q(torch.zeros(1000, requires_grad=True)).backward(g)
        before = quantizers[0].gamma.clone()
        simulate_ranks(quantizers, apply_deferred_updates)
        mean_max = (maxima[-1] + maxima[-2]) / 2
        expected = mean_max if step == 0 else 0.9 * before + 0.1 * mean_max
        assert all(torch.allclose(q.gamma, expected) for q in quantizers)


def test_a_layer_applied_twice_accumulates_both_passes_into_one_update():
    quantizer = GradQuantizer(4, LBTPolicy(alpha=0.5))  # r* = 1/30: first steps move gamma down
    quantizer.deferred = True
    x = torch.zeros(1000, requires_grad=True)
    (quantizer(x) * 2 + quantizer(x)).backward(torch.randn(1000))
    assert quantizer.pending[1] == 2 and quantizer.gamma == 1.0  # two passes pending, gamma untouched
    apply_deferred_updates(quantizer)
    assert quantizer.gamma.item() == pytest.approx(1.0 - 1e-3)  # one step of eta
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_apply_without_deferred_mode_says_what_to_call():
    model = small_model(LBTPolicy())
    with pytest.raises(RuntimeError, match="set_deferred_updates"):
        apply_deferred_updates(model)


def test_pending_moves_with_the_module_and_is_not_in_the_state_dict():
    quantizer = GradQuantizer(4, LBTPolicy()).to(torch.float64)
    assert quantizer.pending.dtype == torch.float64
    assert "pending" not in quantizer.state_dict()


def test_deferred_updates_work_with_a_compiled_backward():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    eager = small_model(LBTPolicy())
    set_deferred_updates(eager, True)
    warmup_grad_intervals(eager, lambda: loss_of(eager, x, y))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend="aot_eager")  # a graph break is an error
    for _ in range(2):
        for model, module in ((eager, eager), (compiled, compiled_model)):
            torch.manual_seed(3)
            loss_of(model, x, y).backward()
            apply_deferred_updates(module)
    assert torch.equal(gammas(eager), gammas(compiled_model))
    assert (gammas(eager) < 1).all()  # warmed up and updated, so a missing update would show


def _gloo_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: warm-up on its own data, sync, then DDP steps with deferred updates; saves its state to `out`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        all_reduce = lambda t: dist.all_reduce(t)  # noqa: E731 (SUM)
        torch.manual_seed(1 + rank)  # each rank its own batches
        batches = [(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,))) for _ in range(4)]
        for i, policy in enumerate(SYNCED_POLICIES):
            model, alone = small_model(policy), small_model(policy)
            set_deferred_updates(model, True)
            torch.manual_seed(1 + rank)  # each rank its own rounding noise
            for m in (model, alone):
                warmup_grad_intervals(m, lambda: loss_of(m, *batches[0]))
            before = uppers(model)
            sync_quant_state(model, all_reduce)
            after = uppers(model)
            ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)  # our buffers stay equal
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
            for x, y in batches:
                loss_of(ddp, x, y).backward()
                apply_deferred_updates(model, all_reduce)
                optimizer.step()
                optimizer.zero_grad()
                loss_of(alone, x, y).backward()
            torch.save({"gamma": gammas(model), "alone": gammas(alone), "before": before, "after": after,
                        "skipped": torch.stack([q.skipped for _, q in named_grad_quantizers(model)]),
                        "weights": torch.cat([p.detach().reshape(-1) for p in model.parameters()])},
                       os.path.join(out, f"policy{i}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_keep_bit_identical_gamma(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gloo_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for i, policy in enumerate(SYNCED_POLICIES):
        r0, r1 = (torch.load(tmp_path / f"policy{i}-rank{r}.pt") for r in range(2))
        assert not torch.equal(r0["alone"], r1["alone"]), policy  # the ranks would diverge without the reduction
        assert not torch.equal(r0["before"], r1["before"])
        torch.testing.assert_close(r0["after"], (r0["before"] + r1["before"]) / 2)
        for key in ("gamma", "after", "skipped", "weights"):
            assert torch.equal(r0[key], r1[key]), (policy, key)
        assert (r0["gamma"] < 1).all()  # warmed up or chosen, and moving


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are only observable on CUDA")
@pytest.mark.parametrize("policy", SYNCED_POLICIES)
def test_a_deferred_step_has_no_host_sync(policy):
    model = small_model(policy).cuda()
    set_deferred_updates(model, True)
    x, y = torch.randn(8, 3, 8, 8, device="cuda"), torch.randint(0, 4, (8,), device="cuda")
    warmup_grad_intervals(model, lambda: loss_of(model, x, y))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host wait raises
    try:
        loss_of(model, x, y).backward()
        apply_deferred_updates(model, lambda t: t.mul_(1))  # stands in for the collective
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert (gammas(model) <= 1).all()
