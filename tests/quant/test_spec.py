"""QuantSpec validates every value before any work starts, with a one-line message."""
import pytest

from quant import QuantSpec
from quant.grad.fixed import FixedPolicy
from quant.grad.lbt import LBTPolicy
from quant.grad.mse import MSEPolicy


@pytest.mark.parametrize("bad", [0, 1, 17, 3.5, "4", True])
def test_bad_bits_fail_with_what_was_wrong_and_what_is_valid(bad):
    with pytest.raises(ValueError) as err:
        QuantSpec(w_bits=4, a_bits=4, g_bits=bad)
    message = str(err.value)
    assert message.startswith(f"quant.bits.g={bad!r} is invalid") and "2..16" in message and "\n" not in message


def test_32_and_none_mean_full_precision():
    spec = QuantSpec(w_bits=32, a_bits=None, g_bits=32)
    assert (spec.w_bits, spec.a_bits, spec.g_bits) == (None, None, None) and spec.is_full_precision
    assert not QuantSpec(w_bits=32, a_bits=32, g_bits=8).is_full_precision


@pytest.mark.parametrize("make", [lambda: QuantSpec(grad="lbt"), lambda: QuantSpec(keep_fp=["fc"]),
                                  lambda: FixedPolicy(gamma=0), lambda: FixedPolicy(gamma=1.5),
                                  lambda: LBTPolicy(alpha=2.0), lambda: MSEPolicy(candidates=1),
                                  lambda: MSEPolicy(sample_size=0)])
def test_bad_policy_and_spec_values_fail(make):
    with pytest.raises(ValueError, match="is invalid"):
        make()


def test_lbt_target_is_alpha_over_2b_minus_1():
    assert LBTPolicy().target(4) == pytest.approx(1e-3 / 15)  # 6.7e-5 (docs/methods.md §1.3)
    assert LBTPolicy().target(8) == pytest.approx(3.9e-6, rel=1e-2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(w_bits=8, a_bits=8, g_bits=16, kernel="int8"),
     "quant.kernel=int8 needs W/A/G <= 8 bits, got quant.bits.g=16: lower it or use quant.kernel=exact"),
    (dict(w_bits=4, a_bits=4, g_bits=4, kernel="int4"),
     "quant.kernel='int4' is invalid: use one of fake, exact, int8"),
    (dict(w_bits=4, a_bits=None, g_bits=4, kernel="exact"),
     "quant.kernel=exact needs W, A and G quantized, got quant.bits.a=32: quantize every role or use "
     "quant.kernel=fake"),
])
def test_a_kernel_the_bits_cannot_run_fails_in_one_line(kwargs, message):
    with pytest.raises(ValueError) as err:
        QuantSpec(**kwargs)
    assert str(err.value) == message


def test_exact_takes_any_bits_and_int8_up_to_8():
    assert QuantSpec(w_bits=16, a_bits=16, g_bits=16, kernel="exact").kernel == "exact"
    assert QuantSpec(w_bits=8, a_bits=2, g_bits=8, kernel="int8").kernel == "int8"
