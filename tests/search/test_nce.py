"""NCE (search/nce.py, models/widths.py; docs/methods.md §2): interpolation, expected cost, expansion, export."""
import json
import math
import uuid
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import yaml
from hydra import compose, initialize_config_dir

import train
from scripts import nce_report
from data.synthetic import build as synthetic_bundle
from models.resnet_cifar import BasicBlock, resnet20
from models.timm_model import create as timm_create
from models.torchvision_model import create as tv_create
from models.width_groups import current_widths, width_groups
from models.widths import apply_widths, count_cost, width_pairs
from runtime.cli import CONFIG_DIR
from runtime.run_folder import write_found
from search.cost import ExpectedCost
from search.nce import NceSearch
from search.supernet import (CandidateMixture, WidthChoice, WidthMixture, architecture_parameters, candidate_ladder,
                             cwi_matrix, to_supernet)

TINY = ["data=synthetic", "data.num_train=128", "data.num_test=32", "data.batch_size=32", "optim.epochs=1",
        "log_every=1", "progress=false", "logger.wandb.mode=disabled"]
EXAMPLE = torch.zeros(1, 1, 28, 28)


def supernet(ratios=(0.25, 0.5, 0.75, 1.0), space="inner"):
    model = resnet20(in_channels=1)
    return model, to_supernet(model, ratios=ratios, expand_step=0.25, max_ratio=2.0, space=space)


def set_one_hot(choice: WidthChoice, index: int) -> None:
    with torch.no_grad():
        choice.logits.fill_(-30.0)
        choice.logits[index] = 30.0


def test_ladder_starts_from_the_ratios_and_holds_the_expansion_widths():
    assert candidate_ladder(16, (0.25, 0.5, 0.75, 1.0), 0.25, 2.0) == ([4, 8, 12, 16, 20, 24, 28, 32], 4)
    assert candidate_ladder(64, (0.5, 1.0), 0.5, 1.0) == ([32, 64], 2)


def test_interpolated_output_is_the_probability_weighted_sum_of_zero_padded_candidates():
    torch.manual_seed(0)
    choice = WidthChoice([2, 4, 6, 8], active=3)
    with torch.no_grad():
        choice.logits.copy_(torch.tensor([0.3, -1.0, 2.0, 5.0]))  # the 4th is inactive: its logit must not count
    bn = nn.BatchNorm2d(8)
    mixture = WidthMixture(bn, choice)
    x = torch.randn(3, 8, 5, 5)
    out = mixture(x)
    assert out.shape == (3, 8, 5, 5)  # the widest candidate's shape
    o = bn(x)
    p = torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0)
    expected = sum(p[j] * nn.functional.pad(o[:, :c], (0, 0, 0, 0, 0, 8 - c)) for j, c in enumerate([2, 4, 6]))
    torch.testing.assert_close(out, expected)
    assert torch.all(out[:, 6:] == 0)  # channels past the widest active candidate are off


def test_supernet_blocks_run_at_the_widest_candidate():
    model, choices = supernet(space="all")
    block = model.layer2.get_submodule("1")
    assert isinstance(block, BasicBlock) and block.conv1.out_channels == 64 and block.conv2.in_channels == 64
    assert block.conv2.out_channels == 64 and model.conv1.out_channels == 32 and model.fc.in_features == 128
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert list(choices)[9:] == ["stage1", "stage2", "stage3"]  # 9 free widths, then the 3 tied residual stages
    assert len(architecture_parameters(model)) == 12  # one logit set per group, however many layers share it


def test_expected_cost_equals_the_hand_count_at_one_hot_logits_and_is_differentiable():
    model, choices = supernet()
    cost = ExpectedCost(model, EXAMPLE, choices, width_groups(resnet20(in_channels=1), "inner"))
    picks = [0, 3, 5, 1, 2, 3, 7, 4, 0]  # ladder indices; 5, 7 and 4 are expansion widths
    for choice, index in zip(choices.values(), picks):
        choice.active.fill_(8)
        set_one_hot(choice, index)
    widths = [int(c.widths[i]) for c, i in zip(choices.values(), picks)]
    macs, params = cost()
    found = count_cost(apply_widths(resnet20(in_channels=1), widths), EXAMPLE)
    assert macs.item() == pytest.approx(found["macs"], rel=1e-6) and params.item() == pytest.approx(found["params"], rel=1e-6)
    # By hand, ResNet-20 on 28x28: stem 9*1*16*784, the blocks' convs 9*c_in*c_out*HW, fc 64*10 (+10 bias), BNs 2*c.
    hw = {1: 28 * 28, 2: 14 * 14, 3: 7 * 7}
    stage = {1: 16, 2: 32, 3: 64}
    hand_macs, hand_params = 9 * 16 * 784 + 640, 9 * 16 + 650 + 2 * 16
    for k, w in enumerate(widths):
        s = k // 3 + 1
        c_in = stage[s - 1] if k % 3 == 0 and s > 1 else stage[s]
        hand_macs += 9 * c_in * w * hw[s] + 9 * w * stage[s] * hw[s]
        hand_params += 9 * c_in * w + 9 * w * stage[s] + 2 * w + 2 * stage[s]
    assert found == {"macs": hand_macs, "params": hand_params}
    # Differentiable: the expected cost moves every layer's logits.
    for choice in choices.values():
        choice.logits.data.zero_()
    macs, params = cost()
    (macs + params).backward()
    assert all(c.logits.grad is not None and c.logits.grad[:8].abs().sum() > 0 for c in choices.values())


def test_width_pairs_cover_timm_and_torchvision_resnets_and_found_widths_build():
    timm18 = timm_create("resnet18", 10, 1)
    assert [p.name for p in width_pairs(timm18)][:2] == ["layer1.0.conv1", "layer1.1.conv1"] and len(width_pairs(timm18)) == 8
    widths = [24, 40, 48, 72, 96, 160, 200, 300]
    built = timm_create("resnet18", 10, 1, widths=widths)
    assert current_widths(built, "inner") == widths and built(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert current_widths(built) == widths + [64, 128, 256, 512]  # then the residual streams (stage1 with the stem)
    bottleneck = tv_create("resnet50", 10, 1)
    assert len(width_pairs(bottleneck)) == 32  # conv1 -> conv2 and conv2 -> conv3 of 16 blocks
    apply_widths(bottleneck, [8] * 32)
    assert bottleneck(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="model.widths has 3 entries"):
        resnet20(widths=[8, 8, 8])


def test_expansion_adds_a_candidate_only_past_the_threshold():
    search = SimpleNamespace(threshold=0.5, expansions=0)
    model, choices = supernet()
    search.choices = choices
    first, second = list(choices.values())[:2]
    with torch.no_grad():
        first.logits[:4] = torch.tensor([0.0, 0.0, 0.0, 1.0])   # widest p = e/(3+e) = 0.475 < 0.5: stays
        second.logits[:4] = torch.tensor([0.0, 0.0, 0.0, 1.5])  # widest p = 0.60 > 0.5: grows
    grown = NceSearch.expand(search)
    assert grown == [list(choices)[1]] and int(second.active) == 5 and int(first.active) == 4
    assert second.logits[4] == second.logits[3] and second.probs()[3] == second.probs()[4]  # the mass is split
    assert search.expansions == 1
    assert NceSearch.expand(search) == []  # 0.43 + 0.43 now: no layer is past the threshold


def bundle(seed=0):
    return synthetic_bundle(root="", num_train=256, num_test=32, in_channels=1, image_size=28, batch_size=32, seed=seed)


def test_held_out_split_is_disjoint_and_sized():
    b = bundle()
    before = b.train.images.clone()
    heldout = b.train.hold_out(0.25, seed=3)
    assert heldout.images.shape[0] == 64 and b.train.images.shape[0] == 192 and len(b.train) == 6
    rows = {tuple(x.flatten().tolist()) for x in before}
    kept = {tuple(x.flatten().tolist()) for x in b.train.images}
    held = {tuple(x.flatten().tolist()) for x in heldout.images}
    assert not kept & held and kept | held == rows
    with pytest.raises(ValueError, match="fraction=1.5"):
        bundle().train.hold_out(1.5, seed=0)


def test_found_network_is_within_the_budget_and_state_round_trips(tmp_path):
    model = resnet20(in_channels=1)
    search = NceSearch(model, bundle(), model_config={"_target_": "models.resnet_cifar.resnet20"}, budget=0.5,
                       export_name=None)
    for choice in search.choices.values():  # every layer prefers twice its original width: far over budget
        choice.active.fill_(8)
        set_one_hot(choice, 7)
    found = search.found()
    assert found["narrowed_to_budget"] > 0
    assert found["macs"] <= 0.5 * search.original["macs"] and found["params"] <= 0.5 * search.original["params"]
    handed_back = search.finish()  # the search writes nothing itself: the trainer writes what it hands back
    config = handed_back.model_config  # each group's width in the model config's list for it
    assert not (tmp_path / "found_model.yaml").exists() and config["widths"] + config["stage_widths"] == found["widths"]
    report = write_found(tmp_path, handed_back)["nce"]
    text = (tmp_path / "found_model.yaml").read_text()
    assert report["widths"] == found["widths"] and text.startswith(f"# Found by the NCE search {tmp_path}")
    assert yaml.safe_load(text) == {"_target_": "models.resnet_cifar.resnet20", "widths": found["widths"][:9],
                                    "stage_widths": found["widths"][9:]}
    state = search.state_dict()
    state["heldout_batch"] = 3
    search.load_state_dict(state)
    assert search.heldout_batch == 3 and search._batches is None


def test_export_refuses_to_overwrite_a_hand_written_model_config():
    with pytest.raises(ValueError, match="would overwrite .*resnet20.yaml"):
        NceSearch(resnet20(in_channels=1), bundle(), model_config={"_target_": "x"}, export_name="resnet20")


def compose_cfg(tmp_path, overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"results_dir={tmp_path}", "run_id=test", *overrides])


@pytest.fixture
def export_name():
    name = f"nce_test_{uuid.uuid4().hex[:8]}"
    yield name
    (CONFIG_DIR / "model" / f"{name}.yaml").unlink(missing_ok=True)


def test_search_logs_widths_and_cost_writes_a_config_that_trains_two_steps(tmp_path, export_name):
    """The whole path: train.py with search=nce (4 weight + 4 logit steps), then model=<found> trains two steps."""
    cfg = compose_cfg(tmp_path, [*TINY, "bits=2", "quant.bits.g=8", "search=nce", "search.check_every=1",
                                 f"search.export_name={export_name}", "name=search"])
    summary = train.train(cfg)
    assert summary["status"] == "finished" and summary["steps"] == 2  # 128 images, half held out, batch 32
    report = summary["nce"]
    assert report["config"] == f"model={export_name}" and report["macs"] <= report["budget_macs"]
    rows = [json.loads(line) for line in (tmp_path / "search" / "test" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r][-1]
    assert 0 < logged["nce/expected_macs_vs_budget"] and "nce/expected_width/layer3.2.conv1" in logged
    probs = [v for k, v in logged.items() if k.startswith("nce/p/layer1.0.conv1/")]
    assert len(probs) >= 4 and math.isclose(sum(probs), 1.0, rel_tol=1e-5)
    # The logits moved (they start equal) and the weights' optimizer never touched them.
    ckpt = torch.load(tmp_path / "search" / "test" / "checkpoint.pt", weights_only=False)
    logits = ckpt["model"]["layer1.0.bn1.choice.logits"]
    assert logits[:4].std() > 0 and "optimizer" in ckpt["search"]
    # model=<found> retrains from scratch with the normal trainer
    retrain = train.train(compose_cfg(tmp_path, [*TINY, "data.num_train=64", "bits=2", f"model={export_name}", "name=retrain"]),
                          {"model": export_name})
    assert retrain["status"] == "finished" and retrain["steps"] == 2 and retrain["model"] == export_name
    model_config = retrain["config"]["model"]
    assert model_config["widths"] + model_config["stage_widths"] == report["widths"]
    # scripts/nce_report.py: the table's MACs column is the built network's count, and the widths figure is written
    assert nce_report.main(["--root", str(tmp_path), "--search", "search", "--name", "retrain", "--input", "3x16x16"]) == 0
    table = (tmp_path / "retrain" / "nce_table.md").read_text()
    assert f"{report['macs'] / 1e6:.2f}M" in table and (tmp_path / "retrain" / "nce_widths.png").stat().st_size > 0


def test_budget_modes_pay_above_the_budget_or_for_any_distance_from_it():
    """At the start E[width] = 0.625 x the original: under budget. at_most pays nothing, match pays the distance."""
    at_most = NceSearch(resnet20(in_channels=1), bundle(), model_config={"_target_": "x"}, export_name=None,
                        budget_mode="at_most")
    match = NceSearch(resnet20(in_channels=1), bundle(), model_config={"_target_": "x"}, export_name=None,
                      budget_mode="match", params_weight=0.0)
    penalty, macs_ratio, _ = at_most.cost_loss()
    assert penalty.item() == 0.0 and 0.3 < macs_ratio.item() < 0.75  # E[c_in] E[c_out] ~ 0.625^2 .. 0.625
    penalty, macs_ratio, _ = match.cost_loss()
    assert penalty.item() == pytest.approx(2 * (1 - macs_ratio.item()), rel=1e-5)  # flops_weight 2
    penalty.backward()  # pulls every layer's expected width up
    assert all((c.logits.grad[3] < 0) for c in match.choices.values())
    with pytest.raises(ValueError, match="budget_mode=exact"):
        NceSearch(resnet20(in_channels=1), bundle(), model_config={"_target_": "x"}, budget_mode="exact")


@pytest.mark.parametrize("pick,sign", [(0, -1), (3, 0), (7, 1)], ids=["under", "inside", "over"])
def test_two_sided_cost_follows_the_argmax_network_up_or_down(pick, sign):
    """TAS: the argmax network under budget x 0.95 is pushed up (-log E), over the budget down (+log E), at the
    original widths (= the budget) left alone."""
    search = NceSearch(resnet20(in_channels=1), bundle(), model_config={"_target_": "x"}, export_name=None)
    for choice in search.choices.values():
        choice.active.fill_(8)
        with torch.no_grad():
            choice.logits.zero_()
            choice.logits[pick] = 3.0  # the argmax, with the expectation still spread
    penalty, macs_ratio, params_ratio = search.cost_loss()
    expected = sign * 2 * (math.log(macs_ratio.item()) + math.log(params_ratio.item()))
    assert penalty.item() == pytest.approx(expected, abs=1e-5)
    penalty.backward()
    for choice in search.choices.values():  # descent raises the widest candidate's logit under budget, lowers it over
        assert torch.sign(choice.logits.grad[7]).item() == sign  # sign -1 (under): a negative gradient, a rising logit


def test_channel_wise_interpolation_is_average_pooling_over_channels():
    assert torch.equal(cwi_matrix(torch.tensor(2), torch.tensor(4), 4),
                       torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0]]))
    assert torch.equal(cwi_matrix(torch.tensor(3), torch.tensor(2), 4),
                       torch.tensor([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0, 0], [0, 0, 0, 0]]))
    x = torch.randn(2, 5, 3, 3)
    for c_in, c_out in [(5, 8), (5, 3), (4, 7), (2, 2)]:
        pooled = nn.functional.adaptive_avg_pool3d(x[:, None, :c_in], (c_out, 3, 3))[:, 0]  # TAS's ChannelWiseInter
        mixed = torch.einsum("oc,nchw->nohw", cwi_matrix(torch.tensor(c_in), torch.tensor(c_out), 8)[:c_out, :5], x)
        torch.testing.assert_close(mixed, pooled)


def mixture(ladder=(2, 4, 6, 8), active=3, seed=0):
    torch.manual_seed(seed)
    choice = WidthChoice(list(ladder), active=active, init_std=0.01, generator=torch.Generator().manual_seed(seed))
    bn = nn.BatchNorm2d(ladder[-1])
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    return CandidateMixture(bn, choice), choice


def test_candidate_mixture_is_tas_two_batchnorms_interpolated_and_weighted(monkeypatch):
    mix, choice = mixture()
    with torch.no_grad():
        mix.weight.uniform_(0.5, 1.5), mix.bias.uniform_(-0.5, 0.5)  # each candidate's BN its own affine
    picked, weights = torch.tensor([2, 0]), torch.tensor([0.7, 0.3])
    monkeypatch.setattr(choice, "sample", lambda: (picked, weights))
    x = torch.randn(4, 8, 3, 3)
    out = mix.train()(x)
    expected = torch.zeros_like(x)
    for j, w in zip(picked.tolist(), weights.tolist()):
        c = int(choice.widths[j])
        normed = nn.functional.batch_norm(x[:, :c], None, None, mix.weight[j, :c], mix.bias[j, :c], training=True)
        expected[:, :6] += w * nn.functional.adaptive_avg_pool3d(normed[:, None], (6, 3, 3))[:, 0]  # to the wider: 6
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert torch.all(out[:, 6:] == 0)


def test_per_candidate_batchnorm_statistics_are_kept_apart(monkeypatch):
    mix, choice = mixture()
    monkeypatch.setattr(choice, "sample", lambda: (torch.tensor([0, 2]), torch.tensor([0.5, 0.5])))
    before = mix.running_mean.clone(), mix.running_var.clone()
    x = torch.randn(16, 8, 4, 4) * 3 + 2
    mix.train()(x)
    for stats, old in zip((mix.running_mean, mix.running_var), before):
        assert not torch.equal(stats[0], old[0]) and not torch.equal(stats[2], old[2])  # the sampled two moved
        assert torch.equal(stats[1], old[1]) and torch.equal(stats[3], old[3])  # the others did not
    torch.testing.assert_close(mix.running_mean[0], 0.9 * before[0][0] + 0.1 * x.mean((0, 2, 3)))
    # Evaluation: the most probable candidate alone, with its own running statistics
    with torch.no_grad():
        choice.logits.copy_(torch.tensor([0.0, 5.0, 0.0, 9.0]))  # index 3 is inactive: candidate 1 (4 wide) wins
    out = mix.eval()(x)
    bn = nn.functional.batch_norm(x[:, :4], mix.running_mean[1, :4], mix.running_var[1, :4], mix.weight[1, :4],
                                  mix.bias[1, :4], training=False)
    torch.testing.assert_close(out[:, :4], bn, rtol=1e-4, atol=1e-5)
    assert torch.all(out[:, 4:] == 0)


def test_two_active_candidates_are_sampled_per_step_in_proportion_to_their_probability():
    _, choice = mixture(ladder=(2, 4, 6, 8, 10), active=4)
    with torch.no_grad():
        choice.logits.copy_(torch.tensor([0.0, 0.0, 0.0, 2.0, 50.0]))  # the 5th is inactive
    choice.tau.fill_(1.0)
    counts = torch.zeros(5)
    for _ in range(400):
        choice.refresh()
        picked, weights = choice.sample()
        assert picked.shape == (2,) and picked[0] != picked[1] and int(picked.max()) < 4
        assert weights.sum().item() == pytest.approx(1.0) and weights.requires_grad
        counts[picked] += 1
    assert counts[4] == 0 and counts[3] > counts[:3].max()  # never the inactive one; the preferred one most often
    assert counts[:3].min() > 0  # but every active candidate is sampled


@pytest.mark.parametrize("seed", [0, 1])
def test_a_short_search_at_budget_one_lands_in_budget_and_widens_the_layer_its_task_prefers(seed):
    """The bar: a search at budget 1.0 ends with the found network's MACs within [0.9, 1.0] x the original's, and
    the expansion ladder lets a layer grow past its original width. On random data the task says little, so its
    loss here also rewards layer3.0.conv1's expected width (a sensitive layer): expansion must add candidates past
    the original width, and the two-sided cost must pay for them with the other layers."""
    torch.manual_seed(seed)
    b = synthetic_bundle(root="", num_train=64, num_test=8, in_channels=1, image_size=12, batch_size=8, seed=seed)
    model = resnet20(in_channels=1)
    search = NceSearch(model, b, model_config={"_target_": "models.resnet_cifar.resnet20"}, export_name=None,
                       lr=0.05, check_every=5, epochs=1, seed=seed)
    sensitive = search.choices["layer3.0.conv1"]
    task = SimpleNamespace(to_device=lambda batch, device: batch,
                           loss=lambda m, batch: nn.functional.cross_entropy(m(batch[0]), batch[1])
                           - sensitive.expected_width() / 64)
    model.train()
    for step in range(1, 201):
        search.step(model, task, step)
    found = search.found()
    assert 0.9 <= found["macs"] / search.original["macs"] <= 1.0, found
    assert found["widths"][6] > 64 and search.expansions > 0, found  # layer3.0.conv1, originally 64 wide


def copy_at(supernet_model: nn.Module, found: nn.Module, choices: dict, picks: dict) -> None:
    """The found network's weights sliced out of the supernet's at the picked candidates (TAS's weight sharing)."""
    sup = dict(supernet_model.named_modules())
    with torch.no_grad():
        for name, m in found.named_modules():
            s = sup[name]
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(s.weight[:m.weight.shape[0], :m.weight.shape[1]])
                if m.bias is not None:
                    m.bias.copy_(s.bias[:m.bias.shape[0]])
            elif isinstance(m, nn.BatchNorm2d) and isinstance(s, CandidateMixture):
                j, c = picks[next(g for g, ch in choices.items() if ch is s.choice)], m.num_features
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(m, attr).copy_(getattr(s, attr)[j, :c])
            elif isinstance(m, nn.BatchNorm2d):
                m.load_state_dict(s.state_dict())


def test_a_tied_group_keeps_one_width_and_the_supernet_at_one_hot_logits_is_the_found_network():
    """Every layer of a residual stage reads one WidthChoice (one width for the stem, each block's output and the
    shortcuts); in evaluation at one-hot logits the supernet computes exactly what the found network does, the
    option-A shortcuts padding (or cropping) at the found widths."""
    torch.manual_seed(0)
    model, choices = supernet(space="all")
    stage2 = choices["stage2"]
    assert all(m.choice is stage2 for m in (model.layer2[0].bn2, model.layer2[1].bn2, model.layer2[2].bn2))
    assert model.layer2[0].shortcut.target is stage2 and model.layer3[0].shortcut.source is stage2
    model.train()(torch.randn(8, 1, 28, 28))  # let every candidate's BN statistics move a little
    picks = {name: k % 4 + (4 if name == "stage2" else 0) for k, name in enumerate(choices)}  # stage2 widened
    for name, choice in choices.items():
        choice.active.fill_(8)
        set_one_hot(choice, picks[name])
    widths = {name: int(choices[name].widths[picks[name]]) for name in choices}
    assert widths["stage2"] > 32 and widths["stage1"] < 16  # a wider middle stage, a narrower first one
    found = resnet20(in_channels=1, widths=[widths[n] for n in list(choices)[:9]],
                     stage_widths=[widths[f"stage{s}"] for s in (1, 2, 3)])
    copy_at(model, found, choices, picks)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(model.eval()(x), found.eval()(x), rtol=1e-4, atol=1e-4)
    # training: the stage's layers all output the same sampled width (zero past it), block after block
    model.train()
    outputs = []
    hooks = [b.bn2.register_forward_hook(lambda m, i, o: outputs.append(o)) for b in model.layer2]
    model(x)
    for h in hooks:
        h.remove()
    live = [int((o.abs().sum((0, 2, 3)) > 0).sum()) for o in outputs]
    assert len(set(live)) == 1 and live[0] == int(stage2.current_width())


def test_expected_cost_over_every_group_equals_the_built_network():
    model, choices = supernet(space="all")
    cost = ExpectedCost(model, EXAMPLE, choices, width_groups(resnet20(in_channels=1)))
    picks = [0, 3, 5, 1, 2, 3, 7, 4, 0, 6, 1, 5]
    for choice, index in zip(choices.values(), picks):
        choice.active.fill_(8)
        set_one_hot(choice, index)
    widths = [int(c.widths[i]) for c, i in zip(choices.values(), picks)]
    macs, params = cost()
    built = count_cost(resnet20(in_channels=1, widths=widths[:9], stage_widths=widths[9:]), EXAMPLE)
    assert (round(macs.item()), round(params.item())) == (built["macs"], built["params"])


def one_hot_supernet(model: nn.Module) -> tuple[dict, dict]:
    """`model` as a supernet (candidates 0.5x, 1x, 1.5x), its BN statistics moved by one step, each group's
    logits one-hot at candidate k % 3: (choices, {group: picked index})."""
    choices = to_supernet(model, ratios=(0.5, 1.0), expand_step=0.5, max_ratio=1.5)
    model.train()(torch.randn(4, 1, 32, 32))
    picks = {name: k % 3 for k, name in enumerate(choices)}
    for name, choice in choices.items():
        choice.active.fill_(3)
        set_one_hot(choice, picks[name])
    return choices, picks


@pytest.mark.parametrize("build", [lambda **kw: timm_create("resnet18", 10, 1, **kw),
                                   lambda **kw: tv_create("resnet50", 10, 1, **kw)], ids=["timm_resnet18", "tv_resnet50"])
def test_imagenet_resnets_search_their_stages_too_and_the_supernet_is_the_found_network(build):
    """timm's and torchvision's ResNets: the stem (on its own when layer1 starts with a projection), each stage's
    blocks and projection shortcut as tied groups; at one-hot logits the supernet computes the found network and
    the expected cost is its count."""
    torch.manual_seed(0)
    model = build()
    groups = width_groups(model)
    stages = [g.name for g in groups if g.config_key == "stage_widths"]
    assert stages == (["stem"] if "Bottleneck" in type(model.layer1[0]).__name__ else []) + [f"stage{s}" for s in range(1, 5)]
    choices, picks = one_hot_supernet(model)
    widths = [int(choices[n].widths[picks[n]]) for n in choices]
    inner = len(width_pairs(build()))
    found = build(widths=widths[:inner], stage_widths=widths[inner:])
    copy_at(model, found, choices, picks)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x), found.eval()(x), rtol=1e-4, atol=1e-4)
    macs, params = ExpectedCost(model, torch.zeros(1, 1, 32, 32), choices, groups)()
    assert (round(macs.item()), round(params.item())) == tuple(count_cost(found, torch.zeros(1, 1, 32, 32)).values())


def test_mobilenet_v2_searches_each_expansion_width_through_its_depthwise_conv():
    """MobileNetV2's inverted residuals: the expansion width sizes the 1x1 expansion, the depthwise conv (its groups
    too) and the projection's input; at one-hot logits the supernet is the found network, and the expected cost
    (linear in the width for the depthwise conv) is its count."""
    torch.manual_seed(0)
    model = tv_create("mobilenet_v2", 10, 1)
    groups = width_groups(model)
    assert len(groups) == 16 and {g.config_key for g in groups} == {"expand_widths"}  # 17 blocks, the first unexpanded
    choices, picks = one_hot_supernet(model)
    found = tv_create("mobilenet_v2", 10, 1, expand_widths=[int(choices[n].widths[picks[n]]) for n in choices])
    assert found.features[2].conv[1][0].groups == int(choices["features.2.expand"].widths[picks["features.2.expand"]])
    copy_at(model, found, choices, picks)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x), found.eval()(x), rtol=1e-4, atol=1e-4)
    macs, params = ExpectedCost(model, torch.zeros(1, 1, 32, 32), choices, groups)()
    assert (round(macs.item()), round(params.item())) == tuple(count_cost(found, torch.zeros(1, 1, 32, 32)).values())
