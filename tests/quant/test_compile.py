"""A compiled quantized model traces the gradient quantizer and its buffer updates without graph breaks."""
import copy

import pytest
import torch
import torch.nn as nn

from quant import QuantSpec, drain_grad_stats, quantize_, set_recording, warmup_grad_intervals
from quant.grad.lbt import LBTPolicy
from quant.grad.bhq import BHQPolicy
from quant.grad.hindsight import HindsightPolicy
from quant.grad.mse import MSEPolicy
from quant.grad.psq import PSQPolicy
from quant.grad.unified_int8 import UnifiedInt8Policy


def small_model(policy):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    return quantize_(model, QuantSpec(w_bits=4, a_bits=4, g_bits=4, grad=policy))


# Inductor for LBT (generated kernels, hashed noise); MSE's search and the field's baselines (docs/methods.md §1.10)
# only need to trace without graph breaks.
@pytest.mark.parametrize("policy, backend", [(LBTPolicy(), "inductor"), (MSEPolicy(), "aot_eager"),
                                             (HindsightPolicy(), "aot_eager"), (PSQPolicy(), "aot_eager"),
                                             (BHQPolicy(), "aot_eager"), (UnifiedInt8Policy(), "aot_eager")],
                         ids=lambda p: getattr(type(p), "__name__", p))
def test_compiled_quantized_model_trains_with_the_same_gamma_updates_as_eager(policy, backend, fresh_dynamo):
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    eager = small_model(policy)
    loss = lambda m: nn.functional.cross_entropy(m(x), y)  # noqa: E731
    warmup_grad_intervals(eager, lambda: loss(eager))
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True, backend=backend)  # a graph break is an error
    optimizer = torch.optim.SGD(compiled_model.parameters(), lr=0.1)
    for recording in (True, False):
        set_recording(compiled_model, recording)
        set_recording(eager, recording)
        loss(compiled).backward()
        loss(eager).backward()
        optimizer.step()
        optimizer.zero_grad()
        for m in (eager, compiled_model):  # keep both on the same weights
            m.zero_grad()
        eager.load_state_dict(compiled_model.state_dict())
    stats = drain_grad_stats(compiled_model)
    assert {"E_G/2", "E_GL/2", "clip_frac/2", "gamma/2", "g_max/2"} <= set(stats)
    # The only quantized layer's output gradient comes from full-precision layers: no noise upstream, so
    # LBT's on-device gamma update must agree exactly; MSE's search sees a random subsample (exact for
    # small tensors) and must agree too.
    loss(compiled).backward()
    loss(eager).backward()
    assert compiled_model[2].gq.gamma.item() == pytest.approx(eager[2].gq.gamma.item())
    assert all(torch.isfinite(p.grad).all() for p in compiled_model.parameters() if p.grad is not None)


def test_a_compiled_runs_logging_steps_run_eagerly_and_still_record(fresh_dynamo):
    """Recording the statistics is a python flag: compiled, a logging step would be a second graph of the whole step
    (it doubled detection's compile time). Run.train_step runs it eagerly; one graph serves the other steps."""
    from dataclasses import replace

    from scripts.bench_common import build_run
    run, batch = build_run(["model=resnet20", "bits=4"], batch_size=4, image_size=8)
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    run = replace(run, step_model=torch.compile(run.model, backend=counting_backend), compiled=True)
    for step, logging in enumerate((True, False, True, False)):
        run.quant.before_step(step, logging)
        loss, _ = run.train_step(batch)
        stats = run.quant.drain() if logging else stats
        assert torch.isfinite(loss)
    assert len(graphs) == 1, "a logging step compiled a graph of its own"
    assert any(key.startswith("E_G/") for key in stats) and all(v == v for v in stats.values())
