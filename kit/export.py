"""Export a run's servable ensemble to TorchScript and ONNX, parity-checked against the eager module."""

from __future__ import annotations

import dataclasses
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
from kit.errors import KitError
from kit.runtime import sha256
from kit.tasks import get_task

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max |Δprob| allowed between eager, TorchScript and ONNX Runtime
PARITY_BATCH = 7  # > 1 and different from the trace batch, so the dynamic batch axis is exercised
TRACE_BATCH = 2
OPSET = 17


def export_run(run_dir: Path, out_root: Path = Path("exports"), data: Path | None = None) -> Path:
    """Write exports/<comp>/{model.onnx, model.ts, meta.json}; on any failure the previous export stays."""
    config = runs.run_config(run_dir)
    task = get_task(config)
    ensemble, states = runs.load_ensemble(run_dir, task)
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
        input_name = "images" if config.task == "image" else "features"
        trace_and_save(ensemble, x[:TRACE_BATCH], tmp, input_name)
        parity = check_parity(ensemble, tmp, x, input_name)
        meta = metadata(config, run_dir, states, tmp, parity, input_name, x)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s: parity max |Δprob| torchscript %.2e, onnx %.2e", final,
             parity["torchscript_max_abs_diff"], parity["onnx_max_abs_diff"])
    return final


def trace_and_save(module: torch.nn.Module, example: torch.Tensor, folder: Path, input_name: str) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes taken as constants (H, W are fixed)
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(folder / "model.ts"))
        # The TorchScript-based exporter, chosen explicitly: torch 2.9 made dynamo the default.
        torch.onnx.export(
            module, (example,), str(folder / "model.onnx"), input_names=[input_name], output_names=["probs"],
            dynamic_axes={input_name: {0: "batch"}, "probs": {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    import onnx

    onnx.checker.check_model(onnx.load(str(folder / "model.onnx")), full_check=True)


def check_parity(module: torch.nn.Module, folder: Path, x: torch.Tensor, input_name: str) -> dict:
    """Eager vs TorchScript vs ONNX Runtime at batch 1 and batch N; raises KitError beyond TOLERANCE."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        scripted = torch.jit.load(str(folder / "model.ts"))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    worst = {"torchscript": 0.0, "onnx": 0.0}
    for batch in (x[:1], x):
        with torch.no_grad():
            eager = module(batch).numpy()
            outputs = {"torchscript": scripted(batch).numpy(),
                       "onnx": session.run(None, {input_name: batch.numpy()})[0]}
        for backend, out in outputs.items():
            diff = float(np.abs(out - eager).max())
            worst[backend] = max(worst[backend], diff)
            if diff > TOLERANCE or not np.array_equal(out.argmax(1), eager.argmax(1)):
                raise KitError(
                    f"export parity failed: {backend} differs from the eager ensemble by {diff:.2e} "
                    f"(limit {TOLERANCE:.0e}) at batch {len(batch)}; nothing was written"
                )
    return {"batch_sizes": [1, len(x)], "tolerance": TOLERANCE, "samples": "training data",
            "torchscript_max_abs_diff": worst["torchscript"], "onnx_max_abs_diff": worst["onnx"]}


def metadata(config: Config, run_dir: Path, states: list[dict], folder: Path, parity: dict, input_name: str,
             x: torch.Tensor) -> dict:
    import onnx
    import onnxruntime

    metrics_path = run_dir / "metrics.json"
    cv = json.loads(metrics_path.read_text())["cv"] if metrics_path.is_file() else None
    meta = {
        "competition": config.competition,
        "task": config.task,
        "classes": config.classes,
        "folds": len(states),
        "cv": cv,
        "run": str(run_dir),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {"kit": kit.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "opset": OPSET},
        "output": {"name": "probs", "dtype": "float32", "shape": ["N", len(config.classes)],
                   "meaning": "class probabilities, rows sum to 1, averaged over folds (and TTA views)"},
        "files": {name: {"sha256": sha256(folder / name), "bytes": (folder / name).stat().st_size}
                  for name in ("model.onnx", "model.ts")},
        "parity": parity,
    }
    if config.task == "image":
        size = states[0]["size"]
        meta["input"] = {
            "name": input_name, "dtype": "uint8", "layout": "NHWC", "shape": ["N", size, size, 3],
            "size": [size, size], "color": "RGB",
            "resize": f"convert to RGB (alpha on white), resize to {size}x{size} ignoring aspect ratio, "
                      "bilinear (PIL Image.resize(..., BILINEAR)); the graph does scaling, normalisation, TTA",
            "normalization": {"mean": states[0]["mean"], "std": states[0]["std"], "applied_in_graph": True},
        }
        meta["tta"] = dataclasses.asdict(config.tta)
    else:
        meta["input"] = {"name": input_name, "dtype": "float32", "layout": "NF", "shape": ["N", int(x.shape[1])],
                         "encoding": "concatenation of each fold's feature encoding, see features"}
        meta["features"] = {"spec": dataclasses.asdict(config.features), "id": config.data.id,
                            "code": str(config.path(config.features.code)) if config.features.code else None,
                            "folds": states}
        meta["tta"] = None
    return meta


def _replace_dir(new: Path, final: Path) -> None:
    """Swap `new` into place as `final`; the old export is removed only after the swap."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
