"""The MSE-optimal interval finds the optimum of the expected whole-tensor error on heavy-tailed gradients."""
import pytest
import torch

from quant.grad.mse import _top_indices, MSEPolicy
from quant.primitives import expected_squared_error, quantize_symmetric


def expected_error(g, ratios, bits):
    """Mean expected squared error of the whole tensor for each clip ratio, in chunks of ratios (brute force)."""
    g_max = g.abs().max()
    return torch.cat([expected_squared_error(g.unsqueeze(0), (chunk * g_max).unsqueeze(1), bits).mean(dim=1)
                      for chunk in ratios.split(max(1, 2**21 // g.numel()))])


def heavy_tailed_samples(n=50_000):
    """Gradient-like samples whose few largest values sit far above the bulk."""
    torch.manual_seed(0)
    t3_outlier = torch.distributions.StudentT(3.0).sample((n,))
    t3_outlier[123] = 1000.0  # one huge entry, as in a gradient with a single hot spot
    laplace_spikes = torch.distributions.Laplace(0.0, 1.0).sample((n,))
    laplace_spikes[:3] *= 1000
    return {
        "cauchy": torch.distributions.Cauchy(0.0, 1.0).sample((n,)),
        "student_t_1.5": torch.distributions.StudentT(1.5).sample((n,)),
        "student_t_2": torch.distributions.StudentT(2.0).sample((n,)),
        "lognormal_product": torch.randn(n) * torch.exp(torch.randn(n, 3).sum(dim=1)),
        "student_t_3_outlier": t3_outlier,
        "laplace_spikes": laplace_spikes,
    }


SAMPLES = heavy_tailed_samples()
DENSE = torch.logspace(-3, 0, 1000)  # brute force over LBT's range [gamma_min, 1], 0.7% apart


@pytest.mark.parametrize("bits", [4, 8])
def test_chosen_gamma_is_within_1_percent_of_the_brute_force_optimum_where_the_old_grid_was_not(bits):
    old_grid = torch.arange(1, 33) / 32  # the previous search: k/32, k = 1..32
    old_excess = {}
    for name, g in SAMPLES.items():
        best = expected_error(g, DENSE, bits).min()
        gamma = MSEPolicy(sample_size=None).choose_gamma(g, g.abs().max(), torch.tensor(1.0), bits)
        assert expected_error(g, gamma.reshape(1), bits)[0] <= 1.01 * best, name
        torch.manual_seed(1)
        sampled = MSEPolicy(sample_size=8192).choose_gamma(g, g.abs().max(), torch.tensor(1.0), bits)
        assert expected_error(g, sampled.reshape(1), bits)[0] <= 1.01 * best, f"{name}, subsample"
        old_excess[name] = (expected_error(g, old_grid, bits).min() / best - 1).item()
    if bits == 4:  # the test means something: the old grid missed by more than the bound here
        assert max(old_excess.values()) > 0.05 and old_excess["student_t_3_outlier"] > 0.01


def test_a_uniform_subsample_alone_would_miss_the_tail():
    # What the largest-values stratum is for: without it the subsample clips the unseen extremes hard.
    g = SAMPLES["cauchy"]
    best = expected_error(g, DENSE, 4).min()
    torch.manual_seed(1)
    uniform = g[torch.randint(g.numel(), (8192,))]
    gamma = MSEPolicy(sample_size=None).choose_gamma(uniform, g.abs().max(), torch.tensor(1.0), 4)
    assert expected_error(g, gamma.reshape(1), 4)[0] > 1.5 * best


def test_mse_interval_has_lower_whole_tensor_error_than_minmax():
    torch.manual_seed(0)
    g = torch.distributions.StudentT(2.0).sample((100_000,))
    g_max = g.abs().max()
    for policy in (MSEPolicy(), MSEPolicy(sample_size=None)):
        gamma = policy.choose_gamma(g, g_max, torch.tensor(1.0), 4)
        assert gamma < 0.5
        mse = ((quantize_symmetric(g, gamma * g_max, 4, stochastic=True) - g) ** 2).mean()
        minmax = ((quantize_symmetric(g, g_max, 4, stochastic=True) - g) ** 2).mean()
        assert mse < 0.5 * minmax


def test_search_reaches_both_ends_of_its_range():
    g = SAMPLES["student_t_3_outlier"]  # optimum near 0.009, below this policy's range
    policy = MSEPolicy(gamma_min=0.1, sample_size=None)
    assert policy.choose_gamma(g, g.abs().max(), torch.tensor(1.0), 4).item() == pytest.approx(0.1)
    flat = torch.ones(10_000)  # every value at the maximum: clipping anything only adds error
    assert policy.choose_gamma(flat, flat.abs().max(), torch.tensor(1.0), 4).item() == pytest.approx(1.0)


def test_subsampled_search_traces_without_graph_breaks():
    g = SAMPLES["laplace_spikes"]
    policy = MSEPolicy(sample_size=8192)
    compiled = torch.compile(policy.choose_gamma, fullgraph=True, backend="aot_eager")  # a graph break is an error
    torch.manual_seed(2)
    eager = policy.choose_gamma(g, g.abs().max(), torch.tensor(1.0), 4)
    torch.manual_seed(2)
    assert compiled(g, g.abs().max(), torch.tensor(1.0), 4).item() == pytest.approx(eager.item())


@pytest.mark.parametrize("sample_size", [None, 8192])
def test_search_compiles_with_inductor(sample_size, fresh_dynamo):
    """Inductor itself, not only tracing: a lowering it lacked (torch.take, read on the host) made dynamo fall back
    to eager for the whole model under compile=true. Subsampled, Inductor draws its own random sample."""
    g = SAMPLES["laplace_spikes"]
    policy = MSEPolicy(sample_size=sample_size)
    compiled = torch.compile(policy.choose_gamma, fullgraph=True)  # a graph break or a backend failure is an error
    eager = policy.choose_gamma(g, g.abs().max(), torch.tensor(1.0), 4).item()
    rel = 1e-6 if sample_size is None else 0.05
    assert compiled(g, g.abs().max(), torch.tensor(1.0), 4).item() == pytest.approx(eager, rel=rel)


@pytest.mark.parametrize("n, k", [(100_003, 1000), (2 * 4096 + 5, 4096), (5000, 4096), (64, 8)])
def test_top_indices_pick_the_same_values_as_topk(n, k):
    torch.manual_seed(0)
    a = torch.randn(n).abs()
    a[:50] = a.max()  # ties at the top
    mine = _top_indices(a, k)
    assert mine.numel() == k and mine.unique().numel() == k  # k distinct elements
    assert torch.equal(a[mine].sort().values, a.topk(k).values.sort().values)
