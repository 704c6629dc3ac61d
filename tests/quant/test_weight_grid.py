"""quant.weight_grid (docs/methods.md §1.4): "symmetric" gives 2^b - 1 weight values (LBT's, W2 ternary), "signed"
gives 2^b values in [-2^(b-1), 2^(b-1) - 1] steps (LSQ's and the TRS paper's Eq. 13), in every quantizer path."""
import pytest
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir

import train
from quant import QuantSpec, quantize_
from quant.apt import quantize_apt
from quant.forward import WeightQuantizer
from runtime.cli import CONFIG_DIR


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("grid, values", [("symmetric", lambda b: 2**b - 1), ("signed", lambda b: 2**b)])
def test_level_count_per_bits_per_grid(grid, values, bits):
    q = WeightQuantizer(bits, grid=grid)
    w = torch.randn(100_000)
    w_hat = q(w)
    assert w_hat.unique().numel() == values(bits)
    assert q.codes(w).unique().numel() == values(bits)
    assert (w_hat == 0).any()  # zero is a value of both grids


def fixed_scale(bits, grid, s):
    q = WeightQuantizer(bits, grid=grid)
    with torch.no_grad():
        q.scale.fill_(s)
        q.initialized.fill_(True)
    q.needs_init = False
    return q


def test_signed_2_bit_weights_are_minus_2_to_1_half_steps_of_s():
    q = fixed_scale(2, "signed", 0.8)
    w = torch.linspace(-3, 3, 1001)
    assert sorted((q(w) / 0.4).round().unique().tolist()) == [-2, -1, 0, 1]
    assert torch.allclose(q(w), q.codes(w) * 0.4 - 0.8)  # codes index the grid from -s
    assert fixed_scale(2, "symmetric", 0.8)(w).unique().tolist() == pytest.approx([-0.8, 0.0, 0.8])


def test_the_signed_grid_learns_s_w_with_the_lsq_gradient():
    """dL/ds = (round(w/step) - w/step) / zero in range, clipped code / zero outside (every value is prop. to s)."""
    q = fixed_scale(2, "signed", 1.0)
    w = torch.tensor([0.3, -0.8, 0.9, -1.6])  # step 0.5: codes 1, -2, 1 (0.9 > top 0.5: clipped), -2 (clipped)
    q(w).sum().backward()
    expected = (0.5 - 0.3) + (-1.0 + 0.8) + 0.5 + (-1.0)  # (x_hat - x) in range, x_hat outside; over s = 1
    assert float(q.scale.grad) == pytest.approx(expected)


def test_apt_weights_on_the_signed_grid_reach_minus_2_to_the_n_minus_1():
    x = torch.tensor([-200.0, -128.4, 127.0, 200.0])
    shift, bits = torch.tensor(0.0), torch.tensor(8.0)
    assert quantize_apt(x, shift, bits).tolist() == [-127, -127, 127, 127]
    assert quantize_apt(x, shift, bits, grid="signed").tolist() == [-128, -128, 127, 127]


def test_a_bad_grid_is_one_line_naming_the_key():
    with pytest.raises(ValueError, match=r"quant.weight_grid='ternary' is invalid: use one of symmetric, signed"):
        QuantSpec(w_bits=2, weight_grid="ternary")


@pytest.mark.parametrize("grid, values", [("symmetric", 3), ("signed", 4)])
def test_a_training_run_on_each_grid_has_that_many_weight_values_per_layer(tmp_path, grid, values):
    overrides = ["data=synthetic", "data.num_train=64", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
                 "progress=false", "logger.wandb.mode=disabled", "quant.bits.w=2", "quant.bits.a=4", "quant.bits.g=32",
                 f"quant.weight_grid={grid}", f"results_dir={tmp_path}", "run_id=test"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = train.train(cfg)
    assert summary["weight_grid"] == grid
    state = torch.load(tmp_path / "default" / "test" / "checkpoint.pt", weights_only=False)["model"]
    layers = [k[:-len(".wq.scale")] for k in state if k.endswith(".wq.scale")]
    assert layers
    for name in layers:
        q = WeightQuantizer(2, grid=grid)
        q.load_state_dict({k.split("wq.")[1]: v for k, v in state.items() if k.startswith(f"{name}.wq.")})
        assert q(state[f"{name}.weight"]).unique().numel() == values, name


@pytest.mark.parametrize("experiment", ["trs_fmnist", "nce_fmnist"])
def test_the_trs_and_nce_experiments_train_on_the_papers_grid(experiment):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"])
    assert cfg.quant.weight_grid == "signed"


def test_symmetric_stays_the_default_and_quantize_builds_it():
    model = quantize_(nn.Sequential(nn.Linear(4, 4)), QuantSpec(w_bits=2, keep_first_last=False))
    assert model[0].wq.grid == "symmetric"
