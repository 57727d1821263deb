"""Load an export (ONNX Runtime or TorchScript, CPU or CUDA) and predict; no training code involved.

    model = kit.runtime.load("exports/food101-10", backend="onnx")
    probs = model.predict_proba(["photo.jpg", pil_image, uint8_array])   # [N, classes]
    model = kit.runtime.load("exports/titanic", trust_code=True)         # runs the export's features.py
    probs = model.predict_proba({"Pclass": 3, "Name": "Braund, Mr. Owen Harris", ...})
    values = kit.runtime.load("exports/california-housing").predict(rows)  # a regression export: values [N]
    model = kit.runtime.load("exports/food101-10", budget_pixels=8 * 224 * 224)  # smaller passes than the default

Any number of inputs: they go through the graph in chunks whose size a memory budget sets (images x TTA passes x
pixels per forward pass, BUDGET_PIXELS per device; CHUNK_ROWS table rows), the next chunk decoded in a background
thread while the current one runs, so memory does not grow with the number of inputs.

With the ONNX backend it imports numpy, pandas, Pillow and onnxruntime only; torch only for TorchScript. It reads
nothing outside the export folder, and runs an export's feature code only with `trust_code=True` (kit/contract.py).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kit.contract import chunks, open_input, sha256
from kit.errors import KitError

log = logging.getLogger(__name__)

FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
DEVICES = ("auto", "cpu", "cuda")
# Images x TTA passes x pixels per forward pass. The graph's activations grow with it: ~300-450 bytes per pixel-pass
# for a lite0 ensemble of 3 folds, so ~0.7 GB of host memory on the CPU and a few GB on a GPU (docs/exports.md).
BUDGET_PIXELS = {"cpu": 32 * 224 * 224, "cuda": 256 * 224 * 224}
# Table rows per forward pass. Small enough that a tree walk's per-step tensors (rows x 256 trees) stay in cache: the
# eager walk of the 1M-row table's gbdt and catboost ran 1.9x and 2.4x faster than at 65,536 (docs/exports.md).
CHUNK_ROWS = 4_096
GPU_FIX = ("install ONNX Runtime's GPU build in place of the CPU one: `make setup GPU=1` (the `gpu` extra, "
           "onnxruntime-gpu; docs/exports.md, ONNX on the GPU)")


def images_per_pass(budget_pixels: int, passes: int, side: int) -> int:
    """Images whose TTA passes at side x side fit `budget_pixels` in one forward pass (at least 1)."""
    return max(1, budget_pixels // (passes * side**2))


class Predictor:
    """One loaded export. `predict_proba` takes images (paths, PIL images, uint8 arrays) or table rows."""

    def __init__(self, folder: Path, backend: str, device: str, threads: int | None, trust_code: bool = False,
                 budget_pixels: int | None = None, chunk_rows: int = CHUNK_ROWS):
        self.folder, self.backend, self.device = folder, backend, device
        self.meta = read_meta(folder)
        self.classes: list[str] = self.meta["classes"]
        self.task: str = self.meta["task"]
        self.input = open_input(self.meta, folder, trust_code)
        path = folder / FILES[backend]
        if not path.is_file():
            raise KitError(f"{path} is missing; re-run `make export COMP={self.meta['competition']}`")
        if sha256(path) != self.meta["files"][FILES[backend]]["sha256"]:
            raise KitError(f"{path} does not match the sha256 in meta.json (modified or corrupt); "
                           f"re-run `make export COMP={self.meta['competition']}`")
        self.run = self._load_onnx(path, threads) if backend == "onnx" else self._load_torchscript(path, threads)
        self.budget_pixels = budget_pixels or BUDGET_PIXELS[self.device]  # the device really used, known now
        self.chunk_rows = chunk_rows
        self._check_shapes()

    def _load_onnx(self, path: Path, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        available = ort.get_available_providers()
        if self.device == "cuda" and "CUDAExecutionProvider" not in available:
            raise KitError(f"device 'cuda' with ONNX Runtime needs its CUDA provider, but this onnxruntime "
                           f"{ort.__version__} offers only {', '.join(available)}; {GPU_FIX}, or use device 'cpu'")
        providers = ["CPUExecutionProvider"]
        if self.device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels that onnxruntime-gpu[cuda,cudnn] installs
        try:
            session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise KitError(f"cannot load {path}: {exc}") from None
        on_gpu = session.get_providers()[0] == "CUDAExecutionProvider"
        if self.device == "cuda" and not on_gpu:
            # onnxruntime-gpu without a usable GPU or CUDA libraries: it logs why and falls back to the CPU.
            raise KitError(f"ONNX Runtime could not start its CUDA provider for {path} (see its message above: "
                           "a visible GPU and the CUDA / cuDNN libraries of its build are needed); "
                           f"{GPU_FIX}, or use device 'cpu'")
        self.device = "cuda" if on_gpu else "cpu"
        self.session = session
        self.model_input = list(session.get_inputs()[0].shape[1:])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]

    def _load_torchscript(self, path: Path, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise KitError(f"device 'cuda', but torch {torch.__version__} sees no GPU (check nvidia-smi and "
                           "CUDA_VISIBLE_DEVICES); use device 'auto' or 'cpu'")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        extra = {"input_shape.json": ""}  # written by the export: the shape the model was traced for
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
                module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra).eval()
        except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/ValueError for bad archives
            raise KitError(f"cannot load {path}: {exc}") from None
        self.model_input = json.loads(extra["input_shape.json"] or "null")

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x).to(self.device)).float().cpu().numpy()

        return run

    def _check_shapes(self) -> None:
        """meta.json's input and output against the model file, so an edited or mismatched meta.json is named here
        rather than as a runtime error on the first request."""
        shape = self.meta["input"]["shape"][1:]
        if [int(d) for d in shape] != self.model_input:
            raise KitError(f"meta.json in {self.folder} gives the input shape {shape} but {FILES[self.backend]} takes "
                           f"{self.model_input}; meta.json was edited or belongs to another export; re-run the export")
        dtype = np.uint8 if self.meta["input"]["dtype"] == "uint8" else np.float32
        out = self.run(np.zeros([1, *shape], dtype=dtype))
        width = 1 if self.regression else len(self.classes)
        if out.shape != (1, width):
            what = "1 value (a regression)" if self.regression else f"lists {width}"
            raise KitError(f"the model in {self.folder} returns {out.shape[1]} classes but meta.json {what}; "
                           "re-run the export")

    @property
    def regression(self) -> bool:
        """Whether the export predicts values (a regression target) rather than class probabilities."""
        return predicts_values(self.meta)

    @property
    def ordinal(self) -> bool:
        """Whether the export's value is an ordered class's index, answered as a class by the cut points."""
        return bool(self.meta["output"].get("ordinal", False))

    def class_index(self, values: np.ndarray) -> np.ndarray:
        """An ordinal export's class index of each value: the number of cut points (meta.json threshold) it reaches."""
        threshold = self.meta.get("threshold")
        cuts = np.arange(0.5, len(self.classes) - 1) if threshold is None else np.asarray(threshold)
        return np.searchsorted(cuts, values, side="right")

    @property
    def tags(self) -> bool:
        """Whether the export predicts tags (a multilabel target): independent per-tag probabilities."""
        return predicts_tags(self.meta)

    @property
    def thresholds(self) -> np.ndarray:
        """Per tag, the probability at which it is predicted (chosen on OOF rows when the metric scores tags)."""
        threshold = self.meta.get("threshold")
        return np.full(len(self.classes), 0.5) if threshold is None else np.asarray(threshold, dtype=float)

    @property
    def size(self) -> int:
        return self.meta["input"]["size"][0]

    @property
    def chunk(self) -> int:
        """Inputs per forward pass: `chunk_rows` table rows, or the images whose TTA passes fit `budget_pixels`."""
        if not takes_images(self.meta):
            return max(1, self.chunk_rows)
        tta = self.meta.get("tta") or {}
        # An export from before meta.json recorded its passes: its views, plus the plain view a blend may add.
        passes = tta.get("passes") or len(tta.get("views") or []) + 1
        return images_per_pass(self.budget_pixels, passes, self.size)

    def predict_proba(self, inputs: Any) -> np.ndarray:
        """Class probabilities [N, classes] for images, or for table rows (dicts / a DataFrame)."""
        if self.regression:
            raise KitError(f"{self.folder} predicts values (a regression target), not class probabilities; "
                           "use predict(inputs)")
        return self.outputs(inputs)

    def predict(self, inputs: Any) -> np.ndarray:
        """[N] predicted values (regression); ordered classes (an ordinal target: the class whose cut points the value
        falls between); space-separated tags, each whose probability reaches its threshold
        (multilabel); or class names chosen as the competition's metric scores them (the decision threshold tuned on
        out-of-fold rows for a binary F1/MCC competition, else the likeliest class)."""
        out = self.outputs(inputs)
        if self.ordinal:
            return np.asarray(self.classes, dtype=object)[self.class_index(out[:, 0])]
        if self.regression:
            return out[:, 0]
        if self.tags:
            names = np.asarray(self.classes, dtype=object)
            return np.array([" ".join(names[row]) for row in out >= self.thresholds], dtype=object)
        threshold = self.meta.get("threshold")
        index = (out[:, 1] >= threshold).astype(int) if threshold is not None and out.shape[1] == 2 else out.argmax(1)
        return np.asarray(self.classes, dtype=object)[index]

    def outputs(self, inputs: Any) -> np.ndarray:
        """The exported graph's output for `inputs` (any number): probabilities [N, classes] or values [N, 1]. They
        go through in chunks of `chunk`, the next one prepared in a background thread while the current one runs;
        a progress bar shows when there is more than one (on a terminal)."""
        items = self.input.items(inputs)
        pieces = chunks(items, self.chunk)
        unit = " images" if takes_images(self.meta) else " rows"
        out = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kit-prepare") as pool, \
                tqdm(total=len(items), desc="predict", unit=unit, disable=len(pieces) == 1 or None) as bar:
            pending = pool.submit(self.prepare, pieces[0])
            for following in [*pieces[1:], None]:
                x = pending.result()
                if following is not None:
                    pending = pool.submit(self.prepare, following)
                out.append(self.run(x))
                bar.update(len(x))
        return np.concatenate(out)

    def prepare(self, inputs: Any) -> np.ndarray:
        """The model input for `inputs`, built the way meta.json documents (kit/contract.py)."""
        return self.input.prepare(inputs)


def predicts_values(meta: dict) -> bool:
    """Whether an export's output is values rather than class probabilities (meta.json["output"]["values"]; an
    export from before it was recorded: values have no classes)."""
    return bool(meta["output"].get("values", not meta["classes"]))


def predicts_tags(meta: dict) -> bool:
    """Whether an export's output is per-tag probabilities (a multilabel target: meta.json["output"]["tags"])."""
    return bool(meta["output"].get("tags", False))


def takes_images(meta: dict) -> bool:
    """Whether an export's input is images (else table rows)."""
    return meta["input"]["kind"] == "image"


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    path = folder / "meta.json"
    if not path.is_file():
        raise KitError(f"no export at {folder} (meta.json missing); run `make export COMP={folder.name}` first")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KitError(f"{path} is not valid JSON ({exc}); re-run the export") from None
    needed = ["competition", "task", "classes", "input", "output", "files"]
    lacking = [k for k in needed if k not in meta]
    if lacking:
        raise KitError(f"{path} lacks {lacking}; it was not written by `make export`; re-run the export")
    return meta


def load(path: str | os.PathLike, backend: str = "onnx", device: str = "auto", threads: int | None = None,
         trust_code: bool = False, budget_pixels: int | None = None, chunk_rows: int = CHUNK_ROWS) -> Predictor:
    """Load the export in folder `path` for `backend` ('onnx' or 'torchscript') on 'auto' (the GPU when the backend
    can use one here), 'cpu' or 'cuda'. `trust_code=True` lets a tabular export run the feature code it carries.
    Predictions run in chunks: images x TTA passes x pixels up to `budget_pixels` per forward pass (default
    BUDGET_PIXELS of the device), or `chunk_rows` table rows."""
    if backend not in FILES:
        raise KitError(f"backend {backend!r} is not one of {sorted(FILES)}")
    if device not in DEVICES:
        raise KitError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    return Predictor(Path(path), backend, device, threads, trust_code, budget_pixels, chunk_rows)

