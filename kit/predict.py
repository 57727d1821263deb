"""Test-set prediction: the fold ensemble of a run (with its TTA) -> submission.csv."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kit import runs
from kit.config import Config, PredictConfig
from kit.device import describe, resolve
from kit.ensemble import tta_passes
from kit.errors import KitError
from kit.runtime import BUDGET_PIXELS, images_per_pass
from kit.submission import make_submission, read_sample, write_submission
from kit.target import get_target
from kit.tasks import get_task

log = logging.getLogger(__name__)

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AGREEMENT_ROWS = 256  # test rows re-predicted in fp32 to report how far autocast moved the submission


def predict_run(run_dir: Path, test: Path | None = None, out: Path | None = None, device: str = "auto",
                settings: PredictConfig | None = None) -> Path:
    """Average the run's folds over the test set and write a validated submission.csv. `settings` (this command's
    predict section) take the place of the run's: how to predict is not part of what was trained."""
    config = runs.run_config(run_dir)
    config = dataclasses.replace(config, predict=settings or config.predict)
    where = resolve(device)
    log.info("predicting with run %s", runs.describe_run(run_dir))
    # The task reads its batch size from image.batch_size; predict's own (device-dependent) one takes its place.
    task = get_task(dataclasses.replace(config, image=dataclasses.replace(config.image,
                                                                          batch_size=batch_size(config, where))))
    ensemble, states = runs.load_ensemble(run_dir, task, where)
    samples = task.load("test", test)
    amp = config.predict.amp
    probs = ensemble_probs(ensemble, task.batches(samples, states), len(samples), where, amp, unit=task.unit).numpy()
    if amp != "off":
        check_amp(ensemble, task, samples, states, where, amp, probs)
    threshold = json.loads((run_dir / "metrics.json").read_text()).get("threshold")
    sample = read_sample(config)
    frame = make_submission(samples.ids, probs, config, threshold, sample)
    path = write_submission(frame, out or run_dir / "submission.csv", samples.ids, config, sample)
    log.info("wrote %s: %d rows from %d folds; %s", path, len(frame), len(states),
             get_target(config).describe(probs, threshold))
    return path


def batch_size(config: Config, device: torch.device) -> int:
    """predict.batch_size, or for 0 the images whose forward pass (images x TTA passes x pixels) fits the device's
    budget: the same BUDGET_PIXELS that sizes an export's chunks in kit.runtime."""
    if config.predict.batch_size:
        return config.predict.batch_size
    passes = len(tta_passes(config.tta.views, config.tta.blend))
    return images_per_pass(BUDGET_PIXELS[device.type], passes, config.image.test_size or config.image.size)


def ensemble_probs(ensemble: torch.nn.Module, batches: Iterable[torch.Tensor], total: int,
                   device: torch.device, amp: str = "off", desc: str = "predict", unit: str = "images") -> torch.Tensor:
    """Run the servable ensemble (already on `device`, eval mode) over raw input batches (CPU tensors, e.g. uint8
    NHWC); [total, classes] float32 on the CPU. Progress bar with images/s; overlaps host->device copies with
    compute."""
    if amp not in AMP_DTYPES:
        raise KitError(f"amp {amp!r} is not one of {', '.join(AMP_DTYPES)}")
    dtype = AMP_DTYPES[amp]
    outputs = []
    start = time.perf_counter()
    stream = prefetch(batches, device)
    first = next(stream, None)  # the first batch is read before the bar first shows
    unit = f" {unit}"
    quiet = not log.isEnabledFor(logging.INFO)  # make tune silences the per-fold lines of its trials
    with torch.inference_mode(), tqdm(total=total, desc=desc, unit=unit, mininterval=1.0, disable=quiet) as bar:
        for x in itertools.chain([] if first is None else [first], stream):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                outputs.append(ensemble(x).float().cpu())
            bar.update(len(x))
    probs = torch.cat(outputs)
    seconds = time.perf_counter() - start
    log.info("%s: %d%s in %.1f s (%.1f%s/s) on %s, amp %s", desc, len(probs), unit, seconds,
             len(probs) / max(seconds, 1e-9), unit, describe(device), amp)
    return probs


def prefetch(batches: Iterable[torch.Tensor], device: torch.device) -> Iterator[torch.Tensor]:
    """`batches` moved to `device`; a background thread reads (and, for a GPU, pins) the next batch while the
    current one computes, so reading the cache and the host->device copy overlap with the model."""
    pin = device.type == "cuda"
    source = iter(batches)

    def read() -> torch.Tensor | None:
        x = next(source, None)
        return x.pin_memory() if pin and x is not None else x

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-prefetch") as pool:
        pending = pool.submit(read)
        while (x := pending.result()) is not None:
            pending = pool.submit(read)
            yield x.to(device, non_blocking=pin)


def check_amp(ensemble: torch.nn.Module, task, samples, states: list[dict], device: torch.device, amp: str,
              probs: np.ndarray) -> None:
    """Log how far autocast moved the submission: fp32 again on up to AGREEMENT_ROWS evenly spread test rows."""
    rows = np.unique(np.linspace(0, len(samples) - 1, min(len(samples), AGREEMENT_ROWS)).astype(int))
    fp32 = ensemble_probs(ensemble, task.batches(samples.subset(rows), states), len(rows), device, "off",
                          desc="fp32 check", unit=task.unit).numpy()
    same = int((fp32.argmax(1) == probs[rows].argmax(1)).sum())
    log.info("%s vs fp32 on %d test rows: same class for %d (%.1f%%), max |Δprob| %.2e", amp, len(rows), same,
             100 * same / len(rows), float(np.abs(fp32 - probs[rows]).max()))


def predict_export(export_dir: Path, config: Config, backend: str = "onnx", test: Path | None = None,
                   out: Path | None = None, device: str = "auto", trust_code: bool = False) -> Path:
    """submission.csv from the exported model through kit.runtime's raw-input path (raw test rows or image files
    into `predict_proba`, as a serving program does), on the same test data as predict_run. It goes where `make
    predict` puts it, the folder of the run that was exported, so the export folder stays exactly what `make export`
    wrote (and checksummed); the working directory when that run is not on this machine."""
    from kit import runtime

    if not (export_dir / "meta.json").is_file():
        raise KitError(f"no export at {export_dir}; run `make export COMP={runs.comp_arg(config)}` first "
                       "(or predict from the run: leave FROM out)")
    predictor = runtime.load(export_dir, backend=backend, device=device,
                             trust_code=trust_code or own_code(export_dir, config))
    # The export knows what was trained (the target type settled from the data, the classes): submit in its terms.
    target = dataclasses.replace(config.target, **{k: v for k, v in predictor.meta.get("target", {}).items()
                                                   if k in ("type", "transform")})
    config = dataclasses.replace(config, target=target, classes=predictor.classes)
    ids, raw = get_task(config).raw_test(test)
    probs = predictor.outputs(raw)  # in chunks the runtime's memory budget sizes
    sample = read_sample(config)
    frame = make_submission(ids, probs, config, predictor.meta.get("threshold"), sample)
    run_dir = Path(predictor.meta.get("run", "."))
    path = write_submission(frame, out or (run_dir if run_dir.is_dir() else Path()) / "submission.csv", ids, config,
                            sample)
    log.info("wrote %s from the %s export in %s (%s), exported from run %s", path, backend, export_dir,
             predictor.device, predictor.meta.get("run", "?"))
    return path


def own_code(export_dir: Path, config: Config) -> bool:
    """Whether the export's feature code is byte for byte this competition's own features.py, which `make train`
    runs anyway: then predicting from the export needs no separate consent."""
    from kit.contract import sha256

    code = json.loads((export_dir / "meta.json").read_text()).get("input", {}).get("code")
    mine = config.path(config.features.code) if config.features.code else None
    return bool(code and mine and mine.is_file() and code.get("sha256") == sha256(mine))
