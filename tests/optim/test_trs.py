"""Transition-rate scheduling (docs/methods.md §3): the measured rate is a plain count of changed integer codes,
the controller tracks its target, U_t stays >= 0, and a state_dict round trip resumes exactly."""
import copy
import json

import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir

import train
from optim.trs import TransitionRateScheduler, TRSSpec, drain_transition_stats, transition_distance
from quant import QuantSpec, quantize_
from runtime.cli import CONFIG_DIR


def toy_model(bits=2, features=(8, 8)) -> nn.Module:
    """One quantized linear layer with s_W = 1 (2 bits: codes 0, 1, 2 for -1, 0, +1; thresholds at +-0.5)."""
    model = quantize_(nn.Sequential(nn.Linear(*features, bias=False)), QuantSpec(w_bits=bits, keep_first_last=False))
    wq = model[0].wq
    with torch.no_grad():
        wq.scale.fill_(1.0)
        wq.initialized.fill_(True)
    wq.needs_init = False
    return model


def scheduler_for(model, lr=0.1, *, lambda_=5e-3, eta=0.2, momentum=0.99, steps=10**9, **kw):
    weights = [model[0].weight]
    optimizer = torch.optim.SGD(weights, lr=lr, momentum=0.9, fused=True)
    return optimizer, TransitionRateScheduler(optimizer, model, steps_per_epoch=steps, epochs=1, lambda_=lambda_,
                                              eta=eta, momentum=momentum, **kw)


def test_measured_rate_is_the_hand_count_of_changed_integer_codes():
    model = toy_model()
    w = model[0].weight
    before = torch.tensor([0.1, 0.4, 0.6, -0.7, 2.0, -3.0, 0.45, -0.2])  # codes 1 1 2 0 2 0 1 1
    after = torch.tensor([0.1, 0.6, 0.6, -0.2, 1.5, -0.9, -0.55, -0.3])  # codes 1 2 2 1 2 0 0 1: 3 changed
    with torch.no_grad():
        w.zero_()
        w[0].copy_(before)
    _, trs = scheduler_for(model)
    trs.step()  # records the codes; nothing measured yet
    assert float(trs.rate) == 0.0 and trs.measured == 0
    with torch.no_grad():
        w[0].copy_(after)
    trs.step()
    assert float(trs.rate) == pytest.approx(3 / w.numel())
    stats = drain_transition_stats([trs])
    assert stats["TR/0"] == pytest.approx(3 / w.numel())
    assert stats["trs/rate"] == pytest.approx(3 / w.numel())
    assert set(stats) >= {"trs/target", "trs/rate_ema", "trs/U"}


def test_a_change_of_s_w_alone_counts_as_a_transition():
    model = toy_model()
    with torch.no_grad():
        model[0].weight.fill_(0.6)  # code 2 under s_W = 1 ...
    _, trs = scheduler_for(model)
    trs.step()
    with torch.no_grad():
        model[0].wq.scale.fill_(1.5)  # ... code 1 under s_W = 1.5 (0.6 < 0.75): the integer value changed
    trs.step()
    assert float(trs.rate) == 1.0


def test_codes_are_what_the_weight_quantizer_rounds_to():
    model = toy_model(bits=4, features=(32, 32))
    wq, w = model[0].wq, model[0].weight
    with torch.no_grad():
        wq.scale.fill_(0.3)
    step = 2 * 0.3 / (2**4 - 2)
    assert torch.allclose(wq(w), wq.codes(w) * step - 0.3, atol=1e-6)


def run_toy(model, optimizer, trs, steps, generator, teacher):
    """Noisy regression towards `teacher`: the weights keep jittering, so transitions scale with the step size."""
    history = []
    for _ in range(steps):
        x = torch.randn(64, teacher.shape[1], generator=generator)
        loss = (model(x) - x @ teacher.T).square().mean() + (model[0].weight * torch.randn(
            teacher.shape, generator=generator)).sum() * 0.05
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trs.step()
        history.append((float(trs.running_rate()), float(trs.u)))
    return history


def toy_setup(seed=0, **kw):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = toy_model(bits=3, features=(32, 32))
    teacher = torch.randn(32, 32, generator=generator) * 0.5
    optimizer, trs = scheduler_for(model, **kw)
    return model, optimizer, trs, generator, teacher


def test_with_a_constant_target_the_running_rate_settles_within_20_percent():
    target = 0.02
    model, optimizer, trs, generator, teacher = toy_setup(lr=0.01, lambda_=target, eta=0.05, momentum=0.9,
                                                          scale_by_bits=False)
    history = run_toy(model, optimizer, trs, 1500, generator, teacher)
    assert trs.target() == pytest.approx(target, rel=1e-6)  # cosine over 1e9 steps: constant here
    settled = [k for k, _ in history[-500:]]
    mean = sum(settled) / len(settled)
    assert abs(mean - target) / target < 0.2, mean


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_the_target_starts_at_lambda_times_sqrt_of_the_weight_bits_and_decays_to_zero_by_a_cosine(bits):
    _, trs = scheduler_for(toy_model(bits=bits), lambda_=5e-3, steps=100)
    assert trs.target(0) == pytest.approx(5e-3 * bits ** 0.5)
    assert trs.target(50) == pytest.approx(5e-3 * bits ** 0.5 / 2)
    assert trs.target(100) == pytest.approx(0.0, abs=1e-12)
    assert scheduler_for(toy_model(bits=bits), lambda_=5e-3, scale_by_bits=False)[1].target(0) == pytest.approx(5e-3)


def test_the_running_rate_is_the_papers_plain_ema_by_default():
    model = toy_model()
    _, trs = scheduler_for(model, momentum=0.9)
    trs.step()
    with torch.no_grad():
        model[0].weight.fill_(0.6)  # every code moves from 1 to 2
    trs.step()
    assert float(trs.running_rate()) == pytest.approx(0.1)  # (1 - m) * 1, not bias-corrected to 1


@pytest.mark.parametrize("grid", ["symmetric", "signed"])
def test_distance_to_the_nearest_transition_point_is_in_grid_steps(grid):
    model = toy_model(bits=2)
    model[0].wq.grid = grid  # s_W = 1: step 1 (symmetric, points at +-0.5) or 0.5 (signed, at -0.75, -0.25, 0.25)
    w = torch.tensor([0.0, 0.45, -2.0, 0.25])
    q = model[0].wq
    expected = {"symmetric": [0.5, 0.05, 1.5, 0.25], "signed": [0.5, 0.4, 2.5, 0.0]}[grid]
    assert float(transition_distance(w, q)) == pytest.approx(sum(expected) / 4)


def test_u_never_goes_negative():
    model, optimizer, trs, generator, teacher = toy_setup(lr=0.05, lambda_=1e-6, eta=50.0, momentum=0.5)
    history = run_toy(model, optimizer, trs, 60, generator, teacher)
    us = [u for _, u in history]
    assert min(us) >= 0.0 and 0.0 in us  # a rate far above a tiny target drives U to the floor, not below


def test_state_dict_round_trip_mid_training_resumes_exactly():
    model, optimizer, trs, generator, teacher = toy_setup(lr=0.01, lambda_=0.02, eta=0.05, momentum=0.9, steps=200)
    run_toy(model, optimizer, trs, 50, generator, teacher)
    saved = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(optimizer.state_dict()),
             "trs": copy.deepcopy(trs.state_dict()), "rng": generator.get_state()}
    straight = run_toy(model, optimizer, trs, 50, generator, teacher)

    model2, optimizer2, trs2, generator2, _ = toy_setup(lr=0.01, lambda_=0.02, eta=0.05, momentum=0.9, steps=200)
    model2.load_state_dict(saved["model"])
    optimizer2.load_state_dict(saved["opt"])  # the order train.py loads in: optimizers, then schedulers
    trs2.load_state_dict(saved["trs"])
    generator2.set_state(saved["rng"])
    resumed = run_toy(model2, optimizer2, trs2, 50, generator2, teacher)
    assert resumed == straight
    assert optimizer2.param_groups[0]["lr"] is trs2.u  # U_t is the optimizer's lr again after loading
    for a, b in zip(trs.state_dict().values(), trs2.state_dict().values()):
        if isinstance(a, list):
            assert all(torch.equal(x, y) for x, y in zip(a, b))
        else:
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b
    assert torch.equal(model[0].weight, model2[0].weight)


@pytest.mark.parametrize("kwargs, named", [({"lambda_": 0.0}, "lambda_"), ({"eta": -1.0}, "eta"),
                                           ({"momentum": 1.0}, "momentum")])
def test_bad_hyper_parameters_fail_in_one_line_naming_the_key(kwargs, named):
    with pytest.raises(ValueError, match=f"optim.trs.{named}="):
        TRSSpec(**{"lambda_": 5e-3, "eta": 0.2, **kwargs})


def test_a_model_without_quantized_weights_is_refused():
    model = nn.Sequential(nn.Linear(4, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no layer has quantized weights"):
        TransitionRateScheduler(optimizer, model, steps_per_epoch=1, epochs=1, lambda_=5e-3, eta=0.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs are only observable on CUDA")
@pytest.mark.parametrize("optimizer_class", [torch.optim.SGD, torch.optim.AdamW])
def test_a_trs_step_has_no_host_sync(optimizer_class):
    model = toy_model(bits=2, features=(64, 64)).cuda()
    optimizer = optimizer_class([model[0].weight], lr=0.1, fused=True)
    trs = TransitionRateScheduler(optimizer, model, steps_per_epoch=100, epochs=1, lambda_=5e-3, eta=0.2)
    x = torch.randn(16, 64, device="cuda")
    for step in range(3):
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")  # any device-to-host wait raises
        try:
            model(x).square().mean().backward()
            optimizer.step()
            optimizer.zero_grad()
            trs.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert float(trs.u) >= 0


def test_a_short_sgdt_run_logs_target_measured_rate_and_u(tmp_path):
    overrides = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
                 "log_every=1", "progress=false", "logger.wandb.mode=disabled", "optim=sgdt", "quant.bits.w=2",
                 "quant.bits.a=2", "quant.bits.g=32", f"results_dir={tmp_path}", "run_id=test"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = train.train(cfg, {"optim": "sgdt"})
    assert summary["status"] == "finished" and summary["optim"] == "sgdt"
    rows = [json.loads(line) for line in (tmp_path / "default" / "test" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert all({"trs/target", "trs/rate", "trs/rate_ema", "trs/U"} <= set(r) for r in logged)
    assert any(k.startswith("TR/") for k in logged[-1])
    assert logged[-1]["train/lr"] == pytest.approx(logged[-1]["trs/U"])  # U_t is the weights' lr
    assert 0 < logged[-1]["trs/distance"] and any(k.startswith("TD/") for k in logged[-1])
    # s_W frozen (the paper's footnote 2), u_A trained: the intervals' Adam holds the activations' u_A only
    ckpt = torch.load(tmp_path / "default" / "test" / "checkpoint.pt", weights_only=False)
    scales = [k for k in ckpt["model"] if k.endswith(("wq.scale", "aq.upper"))]
    assert len(ckpt["optimizers"][1]["param_groups"][0]["params"]) == len(scales) // 2


def test_a_plain_sgd_run_with_log_transitions_logs_the_rate_and_distance_and_still_learns_s_w(tmp_path):
    overrides = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
                 "log_every=1", "progress=false", "logger.wandb.mode=disabled", "log_transitions=true", "quant.bits.w=2",
                 "quant.bits.a=2", "quant.bits.g=32", f"results_dir={tmp_path}", "run_id=test"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        summary = train.train(compose("config", overrides=overrides))
    assert summary["status"] == "finished"
    rows = [json.loads(line) for line in (tmp_path / "default" / "test" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r][-1]
    assert {"trs/rate", "trs/rate_ema", "trs/distance"} <= set(logged) and "trs/U" not in logged
    ckpt = torch.load(tmp_path / "default" / "test" / "checkpoint.pt", weights_only=False)
    scales = [k for k in ckpt["model"] if k.endswith(("wq.scale", "aq.upper"))]
    assert len(ckpt["optimizers"][1]["param_groups"][0]["params"]) == len(scales)  # s_W and u_A both trained
