"""RunSpec: the run's own settings (not the model's, data's or quantizer's), checked in one line each, and what
`compile=auto` chooses."""
from __future__ import annotations

from dataclasses import dataclass

import torch

# Tasks whose README command compiles on a 2-core CPU in well under 2 minutes and then steps faster than eager
# (results/bench/compile_cpu.md, made by scripts/bench_compile.py); the others run eager under compile=auto.
CPU_COMPILE_TASKS: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    epochs: int
    log_every: int
    max_nonfinite_steps: int
    checkpoint_every_min: float | None
    device: str
    amp: bool
    compile: bool | str  # True, False or "auto" (choose_compile)
    deterministic: bool
    channels_last: bool
    progress: bool
    eval_at_start: bool = False  # model.init_from: evaluate the loaded network before the first step

    def __post_init__(self):
        for key, value in (("optim.epochs", self.epochs), ("log_every", self.log_every),
                           ("max_nonfinite_steps", self.max_nonfinite_steps)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}={value} is invalid: use an integer >= 1")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device={self.device} is invalid: use auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device} but no CUDA GPU is visible: use device=cpu or device=auto")
        minutes = self.checkpoint_every_min
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes < 0):
            raise ValueError(f"checkpoint_every_min={minutes} is invalid: use minutes > 0, or null for epoch ends only")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):
            raise ValueError(f"compile={self.compile} is invalid: use auto, true or false")


def choose_compile(setting: bool | str, device: torch.device, task: str) -> tuple[bool, str]:
    """(whether to torch.compile the step, why): `compile=true|false` as given; `auto` compiles on CUDA and, on
    the CPU, the tasks of CPU_COMPILE_TASKS."""
    if isinstance(setting, bool):
        return setting, f"compile={str(setting).lower()}"
    if device.type == "cuda":
        return True, "compile=auto: CUDA (Inductor's GPU kernels; 12-123 s to compile on an H200, results/bench/gpu.md)"
    if task in CPU_COMPILE_TASKS:
        return True, (f"compile=auto: {task} on the CPU compiles in under 2 minutes and then steps faster "
                      f"(results/bench/compile_cpu.md)")
    return False, (f"compile=auto: {task} on the CPU runs eager, its quantizers fused (quant/fused.py); compiling "
                   f"would not pay back its compile time here (results/bench/compile_cpu.md); compile=true forces it")
