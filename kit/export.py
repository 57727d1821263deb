"""Export a run's servable ensemble to TorchScript and ONNX, parity-checked against the eager module."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import kit
from kit import runs
from kit.config import Config
from kit.contract import sha256
from kit.device import resolve
from kit.errors import KitError
from kit.runtime import GPU_FIX
from kit.target import get_target
from kit.tasks import get_task

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max |Δ| allowed between eager, TorchScript and ONNX Runtime (x max |output| when above 1)
PARITY_BATCH = 7  # > 1 and different from the trace batch, so the dynamic batch axis is exercised
TRACE_BATCH = 2
OPSET = 17
CPU = torch.device("cpu")


def export_run(run_dir: Path, out_root: Path = Path("exports"), data: Path | None = None, device: str = "auto") -> Path:
    """Write exports/<comp>/{model.onnx, model.ts, meta.json}; on any failure the previous export stays. Parity is
    checked on the CPU (which every export serves on) and on `device` when that is a GPU."""
    config = runs.run_config(run_dir)
    task = get_task(config)
    where = resolve(device)
    log.info("exporting run %s", runs.describe_run(run_dir))
    ensemble, states = runs.load_ensemble(run_dir, task)  # traced on the CPU: the files then load on any device
    samples = task.load("train", data)
    parity_rows = samples.subset(np.arange(min(PARITY_BATCH, len(samples))))
    x = next(task.batches(parity_rows, states))
    if len(x) < 2:
        raise KitError("the parity check needs at least 2 training samples")
    final = out_root / config.competition
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{config.competition}.", dir=out_root))
    tmp.chmod(0o755)  # mkdtemp makes it private; the export is meant to be shared
    try:
        contract = task.write_contract(states, int(x.shape[1]), tmp)  # also copies the files it names into tmp
        trace_and_save(ensemble, x[:TRACE_BATCH], tmp, contract["name"])
        parity = check_parity(ensemble, tmp, x, contract["name"], where)
        meta = metadata(config, run_dir, states, tmp, parity, contract, task.tta_meta())
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported run %s to %s: parity max |Δprob| torchscript %.2e, onnx %.2e (%s)", run_dir, final,
             parity["torchscript_max_abs_diff"], parity["onnx_max_abs_diff"], ", ".join(parity["devices"]))
    return final


def trace_and_save(module: torch.nn.Module, example: torch.Tensor, folder: Path, input_name: str) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants (H, W are fixed)
        traced = torch.jit.trace(module, example, check_trace=False)
        # The traced input shape rides in the archive: convolutional nets take any size, so only this tells the
        # runtime that meta.json still describes the input the model was traced (and checked) for.
        shape = json.dumps(list(example.shape[1:]))
        torch.jit.save(traced, str(folder / "model.ts"), _extra_files={"input_shape.json": shape})
        # The TorchScript-based exporter, chosen explicitly: torch 2.9 made dynamo the default.
        torch.onnx.export(
            module, (example,), str(folder / "model.onnx"), input_names=[input_name], output_names=["probs"],
            dynamic_axes={input_name: {0: "batch"}, "probs": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    import onnx

    onnx.checker.check_model(onnx.load(str(folder / "model.onnx")), full_check=True)


def check_parity(module: torch.nn.Module, folder: Path, x: torch.Tensor, input_name: str,
                 device: torch.device = CPU) -> dict:
    """Eager vs TorchScript vs ONNX Runtime at batch 1 and batch N, on the CPU and on `device` when it is a GPU;
    raises KitError beyond TOLERANCE."""
    worst = {"torchscript": 0.0, "onnx": 0.0}
    checked = []
    for where in dict.fromkeys([CPU, device]):
        module.to(where)
        # TF32 off on the GPU: the check compares the graphs, not TF32's rounding (which serving may still use).
        with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            backends = _backends(folder, input_name, where)
            for batch in (x[:1], x):
                eager = module(batch.to(where)).cpu().numpy()
                for backend, (run, _) in backends.items():
                    out = run(batch)
                    diff = float(np.abs(out - eager).max())
                    worst[backend] = max(worst[backend], diff)
                    limit = TOLERANCE * max(1.0, float(np.abs(eager).max()))  # relative for values
                    if diff > limit or not np.array_equal(out.argmax(1), eager.argmax(1)):
                        raise KitError(
                            f"export parity failed: {backend} differs from the eager ensemble by {diff:.2e} "
                            f"(limit {limit:.1e}) at batch {len(batch)} on {where.type}; nothing was written"
                        )
        checked += [f"{backend} on {ran_on}" for backend, (_, ran_on) in backends.items()]
    module.to(CPU)
    return {"batch_sizes": [1, len(x)], "tolerance": TOLERANCE, "samples": "training data",
            "devices": list(dict.fromkeys(checked)),
            "torchscript_max_abs_diff": worst["torchscript"], "onnx_max_abs_diff": worst["onnx"]}


def _backends(folder: Path, input_name: str, device: torch.device) -> dict:
    """{backend: (numpy batch -> probabilities, the device it really ran on)} for the saved files on `device` (ONNX on
    a GPU only where onnxruntime's CUDA provider loads: it falls back to the CPU silently, so its session says)."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        scripted = torch.jit.load(str(folder / "model.ts"), map_location=device)
    backends = {"torchscript": (lambda batch: scripted(batch.to(device)).cpu().numpy(), device.type)}
    providers: list = ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            log.warning("ONNX Runtime has no CUDA provider here, so the ONNX export is checked on the CPU only; "
                        "to serve it on the GPU, %s", GPU_FIX)
            return backends
        providers.insert(0, ("CUDAExecutionProvider", {"use_tf32": "0"}))
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # as kit.runtime does: CUDA/cuDNN from the nvidia-* wheels
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=providers)
    if device.type == "cuda" and onnx_device(session) != "cuda":
        log.warning("ONNX Runtime could not start its CUDA provider (see its message above), so the ONNX export is "
                    "checked on the CPU only; to serve it on the GPU, %s", GPU_FIX)
    backends["onnx"] = (lambda batch: session.run(None, {input_name: batch.numpy()})[0], onnx_device(session))
    return backends


def onnx_device(session) -> str:
    """Where an ONNX Runtime session really runs: the provider it kept first, not the one it was asked for."""
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


def metadata(config: Config, run_dir: Path, states: list[dict], folder: Path, parity: dict, contract: dict,
             tta: dict | None) -> dict:
    import onnx
    import onnxruntime

    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    return {
        "competition": config.competition,
        "task": config.task,
        "classes": config.classes,
        "target": metrics["target"],
        "metric": metrics["metric"],
        "threshold": metrics["threshold"],
        "folds": len(states),
        "cv": metrics["cv"],
        "learners": {name: metrics["blend"]["weights"][name] for name in config.learners},
        "run": str(run_dir),  # for people; nothing reads it back
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"kit": kit.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": OPSET},
        "input": contract,
        "output": output_contract(config),
        "files": {name: {"sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size}
                  for name in ("model.onnx", "model.ts")},
        "parity": parity,
        "tta": tta,
    }


def output_contract(config: Config) -> dict:
    """meta.json["output"]: class probabilities, or values in the target's units (kit/target/)."""
    return get_target(config).output_contract(
        config.target.column, "the learners blended with the weights in `learners`, averaged over folds")


def _replace_dir(new: Path, final: Path) -> None:
    """Swap `new` into place as `final`; the old export is removed only after the swap."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
