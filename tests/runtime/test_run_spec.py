"""compile=auto|true|false: what the run compiles, and the reason the log gives."""
import pytest
import torch

from runtime import run_spec
from runtime.run_spec import RunSpec, choose_compile

SETTINGS = dict(epochs=1, log_every=1, max_nonfinite_steps=1, checkpoint_every_min=None, device="cpu", amp=False,
                deterministic=False, channels_last=True, progress=False)


def test_true_and_false_are_obeyed_on_every_device():
    for device in ("cpu", "cuda"):
        assert choose_compile(True, torch.device(device), "detection")[0] is True
        assert choose_compile(False, torch.device(device), "classification")[0] is False


def test_auto_compiles_on_cuda_and_on_the_cpu_only_the_measured_tasks(monkeypatch):
    compiled, why = choose_compile("auto", torch.device("cuda"), "detection")
    assert compiled and "CUDA" in why
    monkeypatch.setattr(run_spec, "CPU_COMPILE_TASKS", ("classification",))
    compiled, why = choose_compile("auto", torch.device("cpu"), "classification")
    assert compiled and "compile=auto" in why
    compiled, why = choose_compile("auto", torch.device("cpu"), "detection")
    assert not compiled and "eager" in why and "compile=true" in why


@pytest.mark.parametrize("value", ["auto", True, False])
def test_run_spec_takes_auto_true_and_false(value):
    assert RunSpec(compile=value, **SETTINGS).compile == value


@pytest.mark.parametrize("value", ["sometimes", 1, None])
def test_run_spec_refuses_anything_else_in_one_line(value):
    with pytest.raises(ValueError, match=f"compile={value} is invalid: use auto, true or false"):
        RunSpec(compile=value, **SETTINGS)
