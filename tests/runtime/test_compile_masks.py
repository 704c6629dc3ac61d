"""runtime.compile: a compiled CPU step saves no bool mask for backward (Inductor stores bools slowly on CPU),
eager_fallbacks says when compiled code ran eagerly, compile_report what compiling cost."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from quant import QuantSpec, quantize_
from quant.apt import AptPolicy
from runtime.compile import compile_model, compile_report, compile_tally, eager_fallbacks, fresh_compile_state


def saved_dtypes(fn, x: torch.Tensor) -> tuple[set[torch.dtype], torch.Tensor]:
    """dtypes of the tensors the forward of `fn` saves for backward, and dL/dx of `fn(x).sum()`."""
    x = x.detach().requires_grad_()
    dtypes = set()

    def pack(t):
        dtypes.add(t.dtype)
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    out.sum().backward()
    return dtypes, x.grad


class ReluTimesTwo(nn.Module):  # ReLU whose output the backward never reads: a saved mask is the smallest choice
    def forward(self, x):
        return torch.relu(x) * 2


def test_the_relu_mask_is_recomputed_not_saved_and_the_gradient_is_unchanged(fresh_dynamo):
    x = torch.randn(4, 8, 6, 6)
    plain_dtypes, _ = saved_dtypes(torch.compile(ReluTimesTwo()), x)
    assert torch.bool in plain_dtypes  # the premise: without the pass Inductor's partitioner saves the bool mask
    dtypes, grad = saved_dtypes(compile_model(ReluTimesTwo()), x)
    assert torch.bool not in dtypes
    torch.testing.assert_close(grad, 2.0 * (x > 0).float(), rtol=0, atol=0)


def test_a_compiled_apt_model_saves_no_bool_mask(fresh_dynamo):
    torch.manual_seed(0)  # the full-precision first conv's ReLU feeds an APT activation quantizer (straight-through)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    quantize_(model, QuantSpec(w_bits=8, a_bits=8, g_bits=8, precision=AptPolicy()))
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    plain_dtypes, _ = saved_dtypes(lambda x: F.cross_entropy(torch.compile(model)(x), y), x)
    assert torch.bool in plain_dtypes
    torch._dynamo.reset()
    dtypes, grad = saved_dtypes(lambda x: F.cross_entropy(compile_model(model)(x), y), x)
    assert torch.bool not in dtypes
    assert torch.isfinite(grad).all()


def test_eager_fallbacks_name_graph_breaks_and_backend_failures(fresh_dynamo):
    def breaks(x):
        y = x * 2
        print(end="")  # dynamo cannot trace it: a graph break
        return y + 1

    def fails_in_inductor(r, x):  # Inductor cannot lower take with a tensor index (a host read): eager fallback
        return torch.take(r, (r * x).argmin()) * 2
    before = eager_fallbacks()
    torch.compile(breaks)(torch.randn(8))
    torch.compile(fails_in_inductor)(torch.randn(8), torch.randn(8))
    new = eager_fallbacks() - before
    assert sum(new.values()) >= 2 and any("Backend compiler" in reason for reason in new), new


class DenseThenMatching(nn.Module):
    """A detector in miniature: a dense part, then a data-dependent one (a host read and a nonzero)."""

    compile_targets = ("dense",)

    def __init__(self):
        super().__init__()
        self.dense = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        y = self.dense(x)
        positive = (y > y.mean().item()).nonzero()  # a graph break and an Inductor failure if compiled
        return y[positive[:, 0]].sum() + y.sum()


def test_compile_targets_compiles_only_the_named_submodules_in_place(fresh_dynamo):
    model = DenseThenMatching()
    keys = list(model.state_dict())
    before = eager_fallbacks()
    compiled = compile_model(model)
    compiled(torch.randn(4, 8)).backward()
    assert compiled is model and list(compiled.state_dict()) == keys  # checkpoints and quant.keep_fp names unchanged
    assert model.dense._compiled_call_impl is not None  # the dense part did compile
    assert eager_fallbacks() - before == {}, "the data-dependent forward was compiled"


def test_a_new_run_compiles_afresh_after_earlier_jobs_used_up_the_recompile_limit(fresh_dynamo):
    class Scaled(nn.Module):  # one code object, a new graph per instance (as each multirun job's model)
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x * self.k

    def graphs_compiled(modules):
        graphs = []

        def backend(gm, inputs):
            graphs.append(gm)
            return gm.forward
        for m in modules:
            torch.compile(m, backend=backend)(torch.randn(4))
        return len(graphs)

    assert graphs_compiled([Scaled(k) for k in range(12)]) == 8  # earlier "jobs" use up dynamo's limit of 8 ...
    assert graphs_compiled([Scaled(100)]) == 0  # ... and a later job's model would run eagerly, without a word
    fresh_compile_state()  # what train.train does first
    assert graphs_compiled([Scaled(k) for k in range(200, 205)]) == 5


def test_compile_report_counts_the_forward_and_the_backward_compile_and_nothing_eager(fresh_dynamo):
    """summary.json's compile_s: the backward graph compiles at the first backward, after the forward's frame."""
    x = torch.randn(64, requires_grad=True)
    start = fresh_compile_state()
    torch.sin(x).sum().backward()  # eager: compiles nothing
    assert compile_report(start, compiled=False) == {"eager_fallbacks": None, "compile_s": 0.0}
    f = torch.compile(lambda t: (torch.sin(t) * 3).sum(), backend="aot_eager")
    before_forward = compile_tally().seconds
    loss = f(x)
    after_forward = compile_tally().seconds
    loss.backward()
    after_backward = compile_tally().seconds
    assert before_forward < after_forward < after_backward
    report = compile_report(start, compiled=True)
    assert report == {"eager_fallbacks": {}, "compile_s": round(after_backward - start.seconds, 1)}
