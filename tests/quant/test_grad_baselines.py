"""The field's gradient baselines (docs/methods.md §1.10), each against the invariant its paper states."""
import pytest
import torch

from quant import QuantSpec, apply_deferred_updates, quantize_
from quant.float_format import FP8_E4M3, FP8_E5M2
from quant.grad.bhq import BHQPolicy, householder_vector, reflect
from quant.grad.hindsight import HindsightPolicy
from quant.grad.minmax import MinMaxPolicy
from quant.grad.psq import PSQPolicy
from quant.grad.unified_int8 import UnifiedInt8Policy, expected_cosine_distance
from quant.gradient import GradQuantizer
from quant.primitives import quantize_symmetric

TORCH_DTYPES = {"fp8_e5m2": torch.float8_e5m2, "fp8_e4m3": torch.float8_e4m3fn}


def all_finite_values(fmt):
    """Every finite value of the format, sorted, from torch's own float8 decoding of the 256 codes."""
    values = torch.arange(256, dtype=torch.uint8).view(TORCH_DTYPES[fmt.name]).float()
    return values[torch.isfinite(values)].unique()


def quantize_backward(quantizer, g, seed=0):
    x = torch.zeros_like(g, requires_grad=True)
    torch.manual_seed(seed)
    quantizer(x).backward(g)
    return x.grad


@pytest.mark.parametrize("fmt", [FP8_E5M2, FP8_E4M3], ids=lambda f: f.name)
def test_float_format_rounds_to_nearest_even_exactly_as_torch_casts(fmt):
    values = all_finite_values(fmt)
    assert values.abs().max().item() == fmt.max_value
    midpoints = (values[1:] + values[:-1]) / 2  # ties: round half to even must match
    torch.manual_seed(0)
    inside = (torch.rand(100_000) * 2 - 1) * fmt.max_value * torch.logspace(-12, 0, 100_000)
    x = torch.cat([values, midpoints, inside, torch.tensor([1e-30, -1e-30])])  # and far below the smallest subnormal
    assert torch.equal(fmt.quantize(x), x.to(TORCH_DTYPES[fmt.name]).float())


@pytest.mark.parametrize("fmt", [FP8_E5M2, FP8_E4M3], ids=lambda f: f.name)
def test_float_format_stochastic_rounding_is_unbiased_between_the_two_neighbours(fmt):
    values = all_finite_values(fmt)
    positive = values[values > 0]
    lo, hi = positive[:-1], positive[1:]
    x = lo + (hi - lo) * torch.rand(lo.shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    draws = torch.stack([fmt.quantize(x, stochastic=True) for _ in range(4000)])  # (draws, values)
    assert ((draws == lo) | (draws == hi)).all()
    mean = draws.mean(dim=0)
    spread = (hi - lo) / 2 / 4000 ** 0.5  # std of the mean of a two-point draw is at most (hi - lo) / 2 / sqrt(n)
    assert ((mean - x).abs() <= 5 * spread).all()


def test_a_float_gradient_format_scales_the_clip_onto_the_largest_value():
    g = torch.randn(4, 300) * torch.logspace(-3, 0, 4)[:, None]
    spec = QuantSpec(g_bits=8, grad=MinMaxPolicy(), grad_format="fp8_e5m2")
    quantizer = GradQuantizer(8, MinMaxPolicy(), fmt=spec.grad_float_format)
    scale = g.abs().max() / FP8_E5M2.max_value
    expected = (g / scale).to(torch.float8_e5m2).float() * scale
    assert torch.equal(quantize_backward(quantizer, g), expected)


def test_in_hindsight_clips_at_the_range_of_earlier_steps_and_then_updates_it():
    policy = HindsightPolicy(momentum=0.9)
    quantizer = GradQuantizer(4, policy)
    first = torch.randn(1000)
    out = quantize_backward(quantizer, first)
    assert out.abs().max() <= first.abs().max()  # no history yet: its own maximum
    assert quantizer.gamma.item() == pytest.approx(first.abs().max().item())  # the stored range

    c = quantizer.gamma.item()
    large = 100 * torch.randn(1000)  # ten times beyond the range: the current max must not widen this step's grid
    out = quantize_backward(quantizer, large, seed=1)
    assert out.abs().max().item() == pytest.approx(c)  # saturated at the previous range
    assert quantizer.gamma.item() == pytest.approx(0.9 * c + 0.1 * large.abs().max().item())

    c = quantizer.gamma.clone()
    quantizer.recording = True
    assert torch.equal(quantize_backward(quantizer, torch.zeros(1000)), torch.zeros(1000))  # passed through
    assert torch.equal(quantizer.gamma, c) and quantizer.skipped.item() == 1  # the range is kept, the skip counted
    assert torch.isfinite(quantizer.stats).all()


@pytest.mark.parametrize("policy", [HindsightPolicy(), PSQPolicy(), BHQPolicy(), UnifiedInt8Policy()],
                         ids=lambda p: type(p).__name__)
def test_deferred_updates_end_where_immediate_ones_do(policy):
    immediate, deferred = GradQuantizer(4, policy), GradQuantizer(4, policy)
    deferred.deferred = True
    for step in range(4):
        g = torch.randn(16, 50) * (1 + step)
        a = quantize_backward(immediate, g, seed=step)
        b = quantize_backward(deferred, g, seed=step)
        apply_deferred_updates(deferred)
        assert torch.equal(a, b)
        torch.testing.assert_close(deferred.gamma, immediate.gamma)


def test_psq_bounds_each_row_by_its_own_maximum_and_keeps_small_rows():
    torch.manual_seed(0)
    g = torch.randn(8, 64) * torch.logspace(-6, 0, 8)[:, None]  # rows six orders of magnitude apart
    g[3] = 0.0
    out = quantize_backward(GradQuantizer(4, PSQPolicy()), g)
    assert (out.abs().amax(dim=1) <= g.abs().amax(dim=1)).all()
    assert torch.equal(out[3], torch.zeros(64))
    per_tensor = quantize_backward(GradQuantizer(4, MinMaxPolicy()), g)
    row_error = (out - g).norm(dim=1) / g.norm(dim=1).clamp_min(1e-30)
    assert row_error[0] < 0.5  # the smallest row keeps its shape on its own grid ...
    assert (per_tensor[0] == 0).float().mean() > 0.9  # ... where one grid for the tensor rounds it to ~zero


def test_bhq_transform_is_orthogonal_and_spreads_the_leading_row():
    for k in (2, 5, 8):
        u = householder_vector(k)
        h = torch.eye(k) - 2 * torch.outer(u, u)
        torch.testing.assert_close(h @ h.T, torch.eye(k))
        torch.testing.assert_close(h[:, 0], torch.full((k,), k ** -0.5))  # e_1 -> the uniform unit vector
        x = torch.randn(3, k, 7)
        torch.testing.assert_close(reflect(x, u), torch.einsum("ij,gjm->gim", h, x))


def test_bhq_restore_undoes_prepare_and_beats_per_tensor_on_one_large_row():
    policy = BHQPolicy(block=8)
    torch.manual_seed(0)
    g = torch.randn(20, 3, 4, 4)  # 20 rows: padded to 24, three blocks
    g[7] *= 10
    transformed, aux = policy.prepare(g)
    torch.testing.assert_close(policy.restore(transformed, aux), g)

    def mean_error(policy):
        errors = [(quantize_backward(GradQuantizer(4, policy), g, seed=s) - g).square().sum() for s in range(20)]
        return torch.stack(errors).mean()

    bhq = mean_error(BHQPolicy(block=8))
    assert bhq < 0.2 * mean_error(MinMaxPolicy())  # the small rows no longer share the large row's grid
    assert bhq < mean_error(PSQPolicy())  # and the large row's grid is spread over its block


def test_dsgc_expected_cosine_matches_monte_carlo_and_the_search_finds_its_minimum():
    torch.manual_seed(0)
    g = torch.distributions.StudentT(3.0).sample((4000,))
    g_max = g.abs().max()
    clips = torch.tensor([0.05, 0.2, 1.0])[:, None] * g_max
    predicted = expected_cosine_distance(g[None], torch.full((1, 4000), 1 / 4000), clips, 4)
    for clip, d in zip(clips[:, 0], predicted):
        draws = torch.stack([quantize_symmetric(g, clip, 4, stochastic=True) for _ in range(200)])
        cosine = torch.nn.functional.cosine_similarity(draws, g[None], dim=1)
        assert (1 - cosine).mean().item() == pytest.approx(d.item(), rel=0.05)

    policy = UnifiedInt8Policy(sample_size=None)
    gamma = policy.choose_gamma(g, g_max, torch.tensor(1.0), 4)
    dense = torch.logspace(-3, 0, 2000)
    scores = expected_cosine_distance(g[None], torch.full((1, 4000), 1 / 4000), dense[:, None] * g_max, 4)
    chosen = expected_cosine_distance(g[None], torch.full((1, 4000), 1 / 4000), (gamma * g_max).reshape(1, 1), 4)
    assert chosen.item() <= scores.min().item() * 1.01
    assert gamma.item() < 0.5  # a heavy tail: the direction is kept best by clipping its few largest values


@pytest.mark.parametrize("kwargs, match", [
    (dict(g_bits=4, grad_format="fp8_e5m2"), "quant.bits.g=4 is invalid"),
    (dict(g_bits=8, grad_format="fp16"), "quant.grad_format='fp16' is invalid"),
    (dict(g_bits=8, grad_format="fp8_e5m2", grad_rounding="up"), "quant.grad_rounding='up' is invalid"),
    (dict(g_bits=8, grad=PSQPolicy(), kernel="int8"), "quant.kernel=int8 needs one gradient scale per tensor"),
    (dict(g_bits=8, grad=BHQPolicy(), kernel="exact"), "quant.kernel=exact needs one gradient scale per tensor"),
])
def test_bad_gradient_format_or_kernel_is_refused_in_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantSpec(**{"w_bits": 8, "a_bits": 8, **kwargs})


@pytest.mark.parametrize("field, value", [("block", 1), ("block", 2.5)])
def test_bhq_block_must_be_an_integer_of_at_least_two(field, value):
    with pytest.raises(ValueError, match=f"quant.grad.{field}={value!r} is invalid"):
        BHQPolicy(**{field: value})


def test_hindsight_momentum_must_be_below_one():
    with pytest.raises(ValueError, match="quant.grad.momentum=1.0 is invalid"):
        HindsightPolicy(momentum=1.0)


def test_a_float_gradient_format_compiles_whole_and_rounds_as_eager(fresh_dynamo):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    quantize_(model, QuantSpec(g_bits=8, grad=MinMaxPolicy(), keep_first_last=False, grad_format="fp8_e5m2"))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # a graph break is an error
    grads = []
    for m in (model, compiled):
        model.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        grads.append(model[0].weight.grad.clone())
    assert torch.equal(*grads)  # round-to-nearest-even has no noise: compiled and eager agree bit for bit
    assert "format=fp8_e5m2" in repr(model)
