"""Export a trained fixed-point run: integer weight codes and scales (safetensors + manifest) and a Q/DQ ONNX model,
checked in onnxruntime against the framework's own evaluation of the same checkpoint.

    python scripts/export.py run=results/demo/default                 # last checkpoint -> results/demo/default/export/
    python scripts/export.py run=results/demo/default ckpt=best out=/tmp/demo_int   # best.pt, elsewhere
    python scripts/export.py run=... onnx=false                        # the integer tensors only

Writes (atomically) `model.safetensors` (per quantized layer `<layer>.weight_codes` int8, `<layer>.weight_step`,
`<layer>.act_step`, `<layer>.bias`; every other tensor in float32 under its state_dict name), `manifest.json` (what
each layer's codes mean: quant/export.py) and `model.onnx` (input: the tensor the run's test loader yields; output:
the model's). The check evaluates the ONNX model in onnxruntime on the run's test data with the run's own task code
and writes both metrics and the largest output difference into the manifest (on the `make demo` run: 88.63 against
88.64 top-1, one image of 10,000; docs/usage.md; tests/test_export.py states the tolerance). Dotted overrides change
the stored config as in eval.py.
"""
from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python scripts/export.py` from the checkout

import eval as eval_run  # noqa: E402
from assemble import ConfigError  # noqa: E402
from quant.export import ExportError, int8_weights, integer_tensors, not_qdq, qdq_model  # noqa: E402
from runtime import atomic  # noqa: E402

OPSET = 17


class OnnxModel(torch.nn.Module):
    """An onnxruntime session as a module: the task's own evaluate() runs it like the framework's model."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (out,) = self.session.run(None, {self.input: x.detach().float().contiguous().cpu().numpy()})
        return torch.from_numpy(out)


def write_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict:
    """Export the Q/DQ copy of `model` (TorchScript exporter: it writes torch.fake_quantize_per_tensor_affine as a
    QuantizeLinear/DequantizeLinear pair), weights as int8 codes (quant.export.int8_weights), checked by
    onnx.checker; atomically. Returns what the manifest says about it."""
    import onnx

    buffer, export = io.BytesIO(), qdq_model(model)
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's advice on constant folding (about models in training mode; ours is in eval mode)
        # and on strided slices it leaves unfolded: nothing for the user to act on
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        # PRESERVE (the model is in eval mode): EVAL would fold BatchNorm into the conv weights, off their grid
        torch.onnx.export(export, (example.float().cpu(),), buffer, dynamo=False, opset_version=OPSET,
                          training=torch.onnx.TrainingMode.PRESERVE,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    int8 = int8_weights(proto, export)
    onnx.checker.check_model(proto)
    atomic.write_bytes(path, proto.SerializeToString())
    ops = [node.op_type for node in proto.graph.node]
    return {"file": path.name, "opset": OPSET, "quantize_linear": ops.count("QuantizeLinear"),
            "dequantize_linear": ops.count("DequantizeLinear"), "int8_weights": int8, "not_qdq": not_qdq(model)}


class Compared(torch.nn.Module):
    """Runs the ONNX model (its output is what evaluate() scores) and the framework's on each batch, keeping the
    largest absolute difference of their outputs: one pass gives the ONNX metrics and the comparison."""

    def __init__(self, onnx_model: OnnxModel, model: torch.nn.Module) -> None:
        super().__init__()
        self.onnx_model, self.model, self.worst = onnx_model, model, torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theirs = self.onnx_model(x)
        self.worst = torch.maximum(self.worst, (self.model(x).float() - theirs).abs().max())
        return theirs


def export_run(run_dir: str | Path, ckpt: str = "last", overrides: list[str] | None = None, *,
               out: Path | None = None, onnx: bool = True) -> dict:
    """Write the export of `run_dir`'s checkpoint `ckpt` into `out` (default `<run_dir>/export`); returns the
    manifest (also written as manifest.json)."""
    from safetensors.torch import save

    run_dir = Path(run_dir)
    run, state, file = eval_run.load_run(run_dir, ckpt, list(overrides or []))
    model = run.model.cpu().eval()
    try:
        tensors, manifest = integer_tensors(model)
    except ExportError as e:
        raise ConfigError(f"{run_dir}: {e}") from None
    out = Path(out) if out is not None else run_dir / "export"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(out / "model.safetensors", save(tensors))
    manifest = {"run": str(run_dir), "checkpoint": file.name, "epoch": state.get("epoch"),
                "tensors": "model.safetensors", **manifest}
    if onnx:
        loader = run.bundle.test
        example, _ = run.task.to_device(next(iter(loader)), torch.device("cpu"))
        manifest["onnx"] = write_onnx(model, example, out / "model.onnx")
        compared = Compared(OnnxModel(out / "model.onnx"), model)
        with torch.no_grad():
            framework, exported = ({f"test/{k}": v for k, v in run.task.evaluate(m, loader, torch.device("cpu")).items()}
                                   for m in (model, compared))  # named as in summary.json and eval.py
        manifest["check"] = {"data": "the run's test split", "framework": framework, "onnxruntime": exported,
                             "max_abs_output_difference": float(compared.worst)}
    atomic.write_json(out / "manifest.json", manifest)
    return manifest


def cli_main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    options = {"out": None, "onnx": "true"}
    rest = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        else:
            rest.append(arg)
    try:
        if options["onnx"] not in ("true", "false"):
            raise ConfigError(f"onnx={options['onnx']} is invalid: use onnx=true or onnx=false")
        run_dir, ckpt, overrides = eval_run._arguments(rest)
        manifest = export_run(run_dir, ckpt, overrides, out=options["out"] and Path(options["out"]),
                              onnx=options["onnx"] == "true")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    where = Path(options["out"]) if options["out"] else Path(run_dir) / "export"
    print(f"{len(manifest['layers'])} quantized layers -> {where}/model.safetensors, manifest.json"
          + (", model.onnx" if "onnx" in manifest else ""))
    if "check" in manifest:
        check = manifest["check"]
        print(f"check on the test split: framework {json.dumps(check['framework'])}, onnxruntime "
              f"{json.dumps(check['onnxruntime'])}, largest output difference {check['max_abs_output_difference']:.2e}")


if __name__ == "__main__":
    cli_main()
