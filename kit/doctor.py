"""`make doctor`: what this machine has (torch and its CUDA/cuDNN build, the devices, ONNX Runtime and whether its
CUDA provider really loads), then kit's paths run end to end on the shipped food101-10 sample with tiny settings,
each check under a time limit, all in a temporary folder; one table of check, result and figure at the end."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent  # the checkout: tests/ and PYTHONPATH for the subprocesses
COMP = "food101-10"  # the image competition whose sample ships in the repo, with a GPU recipe
BUDGET_SECONDS = 300.0  # all checks together; a check that would start after it is skipped
# More images than kit has ever passed to the runtime in one call (predict FROM=export: 2,048 on CUDA, 256 on the
# CPU), so the export predicts them in more than one chunk however the chunks are sized.
MANY_IMAGES = {"cuda": 2100, "cpu": 300}


class Skipped(Exception):
    """A check that cannot run here; its message is the reason."""


class CheckTimeout(Exception):
    pass


@dataclass
class Workspace:
    """Where the checks write (a temporary folder) and how they run: the device, the recipe and the overrides."""

    tmp: Path
    device: str  # "cuda" or "cpu"
    recipe: list[str] = field(default_factory=list)  # ["--recipe", "gpu"] on a GPU
    settings: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)  # ["--data", a smaller sample] on the CPU
    logs: dict[str, str] = field(default_factory=dict)  # a failed command's output tail, by check

    @classmethod
    def create(cls, tmp: Path, device: str) -> Workspace:
        """On a GPU the GPU recipe at its own sizes on the whole sample; on the CPU the default recipe at 32 px on
        6 photos per class, which 2 busy cores train in seconds."""
        settings = ["cv.folds=given", "train.epochs=1", "model.pretrained=none", f"image.cache_dir={tmp / 'cache'}"]
        if device == "cuda":  # the recipe's patience floor would outlast the one epoch
            return cls(tmp, device, ["--recipe", "gpu"], settings + ["train.min_epochs=0"])
        return cls(tmp, device, [], settings + ["image.size=32", "image.test_size=0"],
                   ["--data", str(small_sample(tmp / "sample"))])

    def kit(self, *args: str, extra: tuple[str, ...] = ()) -> str:
        """`python -m kit <args> --comp food101-10` with the recipe and overrides; its output (stderr + stdout)."""
        return self.command([sys.executable, "-m", "kit", *args, "--comp", COMP, *self.recipe,
                             "--set", " ".join([*self.settings, *extra])], args[0])

    def command(self, argv: list[str], name: str) -> str:
        """Run `argv` in the temporary folder, kit importable from this checkout; raises with the output's tail."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        result = subprocess.run(argv, cwd=self.tmp, env=env, capture_output=True, text=True)
        output = result.stderr + result.stdout
        if result.returncode != 0:
            self.logs[name] = "\n".join(output.replace("\r", "\n").splitlines()[-20:])
            raise RuntimeError(last_line(output) or f"exit status {result.returncode}")
        return output


def small_sample(root: Path, per_class: tuple[tuple[str, int], ...] = (("train", 4), ("valid", 2))) -> Path:
    """The first photos of each class of the shipped sample's train/ and valid/ (named <label>_<index>.jpg)."""
    sample = ROOT / "competitions" / COMP / "data"
    for split, count in per_class:
        (root / split).mkdir(parents=True)
        for path in sample.joinpath(split).glob("*_*.jpg"):
            if int(path.stem.rsplit("_", 1)[1]) < count:
                shutil.copyfile(path, root / split / path.name)
    return root


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


# The environment ---------------------------------------------------------------------------------------------------

def environment() -> list[tuple[str, str]]:
    """(item, value) rows: python, the torch build, each visible device, ONNX Runtime and its providers."""
    import onnxruntime as ort

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    rows = [("python", f"{platform.python_version()} ({sys.executable})"),
            ("torch", f"{torch.__version__}, CUDA build {torch.version.cuda or 'none (CPU-only build)'}, "
                      f"cuDNN {cudnn or 'none'}")]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(count):
        p = torch.cuda.get_device_properties(i)
        rows.append((f"cuda:{i}", f"{p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}"))
    if not count:
        rows.append(("devices", f"no CUDA device; CPU with {os.cpu_count()} cores"))
    rows += [("onnxruntime", f"{ort.__version__}, providers {', '.join(ort.get_available_providers())}"),
             ("onnxruntime CUDA", onnx_cuda()[1])]
    return rows


def onnx_cuda() -> tuple[bool, str]:
    """Whether ONNX Runtime's CUDA provider really runs a graph here (it falls back to the CPU silently), and why."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, "no CUDA provider in this onnxruntime (make setup GPU=1 installs onnxruntime-gpu)"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "doctor", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = min(model.ir_version, 8)  # loadable by older runtimes too
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: a provider that fails to load says why
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # as kit.runtime does: CUDA/cuDNN from the nvidia-* wheels
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any failure to build the session is the answer
        return False, f"the CUDA provider failed: {exc}"[:200]
    used = session.get_providers()
    if "CUDAExecutionProvider" in used:
        return True, f"loads: a session runs on {', '.join(used)}"
    return False, f"does not load: the session fell back to {', '.join(used)}"


# The checks: each returns its figure, raises Skipped with the reason, or fails by raising anything else ---------------

def gpu_tests(ws: Workspace) -> str:
    """The suite's GPU-marked tests (pytest -m gpu)."""
    if not (ROOT / "tests").is_dir():
        raise Skipped(f"no tests/ beside kit in {ROOT}")
    try:
        import pytest  # noqa: F401
    except ImportError as exc:
        raise Skipped("pytest is not installed") from exc
    output = ws.command([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                         str(ROOT / "tests")], "gpu tests")
    return last_line(output).strip("= ")


def bench(ws: Workspace) -> str:
    """`make bench`'s image pipeline at its smallest (three training batches, one round), in this process: its
    efficiency ratios (kit / ceiling)."""
    from kit.bench import image_pipeline
    from kit.config import load_config

    batch = 128 if ws.device == "cuda" else 8  # the GPU recipe's own batch; a small one on the CPU
    config = load_config(COMP, [*ws.settings, f"train.batch_size={batch}"], ws.recipe[-1] if ws.recipe else None)
    _, ratios = image_pipeline(config, Path(ws.data[-1]) if ws.data else None, 3 * batch, ws.device, rounds=1)
    return "efficiency " + " ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items())


def train(ws: Workspace) -> str:
    """One epoch of the recipe on the shipped sample through `python -m kit train`: the epoch's images/s and seconds
    from the finished run's log.csv."""
    from kit import runs

    ws.kit("train", *ws.data, "--runs", str(ws.tmp / "runs"))
    run = runs.find_run(COMP, runs_dir=ws.tmp / "runs", finished=True)
    with (run / "log.csv").open(newline="") as f:
        epochs = [row for row in csv.DictReader(f) if row["epoch"] == "1"]
    if not epochs:
        raise RuntimeError(f"no epoch 1 row in {run / 'log.csv'}")
    return f"{float(epochs[0]['images_per_second']):.0f} img/s, epoch {float(epochs[0]['seconds']):.1f} s"


def sync_free_epoch(ws: Workspace) -> str:
    """A training epoch of the GPU recipe with CUDA's sync-debug mode on "error": any host sync in it raises."""
    from kit.config import load_config
    from kit.learners.net import prepare_fit
    from kit.tasks import get_task
    from kit.trainer import TrainState, train_epoch

    config = get_task(load_config(COMP, ws.settings, "gpu")).resolve(None)  # the target type settled, as kit.cv does
    task, device = get_task(config), torch.device("cuda")
    samples = task.load("train")
    state = task.fit(samples)
    parts = prepare_fit(task, config, samples, None, state, device=device)
    batches = parts.train
    train_state = TrainState(parts.model, config.train, len(batches))
    criterion = parts.objective.criterion(device)
    for epoch, mode in ((1, 0), (2, "error")):  # a warm-up epoch first: lazy CUDA initialisation may synchronise
        batches.set_epoch(config.train.seed, epoch)
        torch.cuda.set_sync_debug_mode(mode)
        try:
            _, seen = train_epoch(train_state, batches, criterion, config.train, config.train.seed, epoch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    torch.cuda.empty_cache()
    return f"{seen} images, no host sync"


def predict(ws: Workspace) -> str:
    """`python -m kit predict` from the run, on the device: the submission's rows."""
    ws.kit("predict", "--runs", str(ws.tmp / "runs"), "--out", str(ws.tmp / "run.csv"), "--device", ws.device)
    return f"{rows(ws.tmp / 'run.csv')} rows"


def export(ws: Workspace) -> str:
    """`python -m kit export` with its parity check on the device: the largest |Δ| and where it was checked."""
    ws.kit("export", "--runs", str(ws.tmp / "runs"), "--exports", str(ws.tmp / "exports"), "--device", ws.device)
    parity = json.loads((ws.tmp / "exports" / COMP / "meta.json").read_text())["parity"]
    return (f"max |Δ| onnx {parity['onnx_max_abs_diff']:.1e}, torchscript {parity['torchscript_max_abs_diff']:.1e} "
            f"({', '.join(parity['devices'])})")


def predict_export(ws: Workspace) -> str:
    """`predict FROM=export` on more images than one chunk (the shipped test photos repeated): one row each."""
    photos = sorted(p for p in (ROOT / "competitions" / COMP / "data" / "test").iterdir() if p.is_file())
    folder, count = ws.tmp / "many", MANY_IMAGES[ws.device]
    folder.mkdir()
    for i in range(count):
        shutil.copyfile(photos[i % len(photos)], folder / f"{i:05d}{photos[i % len(photos)].suffix}")
    start = time.perf_counter()
    ws.kit("predict", "--from", "export", "--exports", str(ws.tmp / "exports"), "--test", str(folder),
           "--out", str(ws.tmp / "many.csv"), "--device", ws.device)
    seconds = time.perf_counter() - start
    if rows(ws.tmp / "many.csv") != count:
        raise RuntimeError(f"the submission has {rows(ws.tmp / 'many.csv')} rows for {count} images")
    return f"{count} images, {count / seconds:.0f} images/s"


def rows(csv: Path) -> int:
    return len(csv.read_text().splitlines()) - 1


# Running them --------------------------------------------------------------------------------------------------------

@dataclass
class Check:
    name: str
    run: Callable[[Workspace], str]
    limit: float  # seconds
    gpu: bool = False  # needs a CUDA device
    needs: str = ""  # a check whose output this one uses


CHECKS = [
    Check("gpu tests", gpu_tests, 120, gpu=True),
    Check("onnxruntime on CUDA", lambda ws: cuda_provider(), 30, gpu=True),
    Check("bench", bench, 120),
    Check("train 1 epoch", train, 120),
    Check("train epoch, sync-debug", sync_free_epoch, 120, gpu=True),
    Check("predict", predict, 60, needs="train 1 epoch"),
    Check("export + parity", export, 90, needs="train 1 epoch"),
    Check("predict FROM=export", predict_export, 90, needs="export + parity"),
]


def cuda_provider() -> str:
    loads, how = onnx_cuda()
    if not loads and how.startswith("no CUDA provider"):
        raise Skipped(how)
    if not loads:
        raise RuntimeError(how)
    return how


@dataclass
class Outcome:
    name: str
    result: str  # ok, FAILED or skipped: <reason>
    figure: str = ""


def run_checks(checks: list[Check], ws: Workspace, budget: float = BUDGET_SECONDS) -> list[Outcome]:
    """Each check in order under min(its limit, what is left of the budget); a check is ok only when it returned."""
    outcomes: dict[str, Outcome] = {}
    deadline = time.monotonic() + budget
    for check in checks:
        left = deadline - time.monotonic()
        if check.gpu and ws.device != "cuda":
            outcome = Outcome(check.name, "skipped: no CUDA device")
        elif check.needs and outcomes.get(check.needs, Outcome("", "")).result != "ok":
            outcome = Outcome(check.name, f"skipped: needs {check.needs}")
        elif left < 1:
            outcome = Outcome(check.name, f"skipped: the {budget:.0f} s budget is spent")
        else:
            print(f"doctor: {check.name} (limit {min(check.limit, left):.0f} s)", file=sys.stderr, flush=True)
            outcome = run_one(check, ws, min(check.limit, left))
        outcomes[check.name] = outcome
    return list(outcomes.values())


def run_one(check: Check, ws: Workspace, limit: float) -> Outcome:
    start = time.perf_counter()
    try:
        with time_limit(limit):
            figure = check.run(ws)
    except Skipped as exc:
        return Outcome(check.name, f"skipped: {exc}")
    except CheckTimeout:
        return Outcome(check.name, "FAILED", f"timed out after {limit:.0f} s")
    except Exception as exc:  # noqa: BLE001 - a check that raises failed, whatever it raised
        return Outcome(check.name, "FAILED", f"{type(exc).__name__}: {exc}"[:160])
    return Outcome(check.name, "ok", f"{figure} [{time.perf_counter() - start:.0f} s]")


@contextmanager
def time_limit(seconds: float):
    """Raise CheckTimeout in this (main) thread after `seconds`; a subprocess running then is killed by
    subprocess.run on the way out."""
    def expire(signum, frame):
        raise CheckTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def table(outcomes: list[Outcome]) -> str:
    head = ("check", "result", "figure")
    cells = [head, *((o.name, o.result, o.figure) for o in outcomes)]
    widths = [max(len(row[i]) for row in cells) for i in range(2)]
    lines = [f"{a:<{widths[0]}} | {b:<{widths[1]}} | {c}".rstrip() for a, b, c in cells]
    lines.insert(1, f"{'-' * widths[0]}-+-{'-' * widths[1]}-+-{'-' * 6}")
    return "\n".join(lines)


def exit_code(outcomes: list[Outcome]) -> int:
    return 1 if any(o.result == "FAILED" for o in outcomes) else 0


def main() -> int:
    """The environment, the checks in a temporary folder, the table; non-zero when a check FAILED."""
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        print("no CUDA device: the GPU checks are skipped and the rest run on the CPU")
    rows_ = environment()
    width = max(len(k) for k, _ in rows_)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows_), flush=True)
    with tempfile.TemporaryDirectory(prefix="kit-doctor-") as tmp:
        ws = Workspace.create(Path(tmp), device)
        outcomes = run_checks(CHECKS, ws)
    for name, log in ws.logs.items():
        print(f"\n{name} failed; the end of its output:\n{log}")
    print(f"\n{table(outcomes)}\n\n{time.perf_counter() - start:.0f} s in all")
    return exit_code(outcomes)
