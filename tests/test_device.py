"""Where things run: DEVICE=auto|cpu|cuda, the runtime's device choice, and torchrun's processes vs GPUs."""

import json
import subprocess
import sys

import onnxruntime as ort
import pytest
import torch
from conftest import CPU_ENV, ROOT, run_kit

from kit import runs, runtime
from kit.distributed import check_nproc
from kit.errors import KitError
from kit.export import export_run
from kit.predict import ensemble_probs
from kit.tasks import get_task

NO_ONNX_CUDA = "CUDAExecutionProvider" not in ort.get_available_providers()


def test_device_names_resolve_as_documented_with_the_gpus_hidden():
    code = ("from kit.device import resolve\n"
            "print(resolve('auto'), resolve('cpu'))\n"
            "try:\n    resolve('cuda')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
            "try:\n    resolve('gpu')\nexcept Exception as exc:\n    print(type(exc).__name__, exc)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=CPU_ENV,
                         timeout=120)
    lines = out.stdout.splitlines()
    assert lines[0] == "cpu cpu", out.stderr
    assert lines[1].startswith("KitError DEVICE=cuda, but torch") and "use DEVICE=auto or DEVICE=cpu" in lines[1]
    assert lines[2] == "KitError device 'gpu' is not one of auto, cpu, cuda"


def test_predict_and_export_with_device_cuda_and_no_gpu_is_one_error_line(titanic_export):
    for command in ("predict", "export"):
        result = run_kit(command, "--comp", "titanic", "--runs", str(titanic_export / "runs"), "--exports",
                         str(titanic_export / "other-exports"), "--device", "cuda")
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: DEVICE=cuda, but torch") and "Traceback" not in result.stderr
    assert not (titanic_export / "other-exports" / "titanic").exists()


def test_nproc_beyond_the_visible_gpus_is_refused_before_torchrun_starts(tmp_path):
    result = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path), "--nproc_per_node", "3",
                     env={"KIT_GPU_COUNT": "2"})
    assert result.returncode == 2
    assert result.stderr == ("error: NPROC=3 processes per machine, but only 2 GPU(s) are visible and each process "
                             "needs its own GPU; use NPROC=2 or fewer, or hide the GPUs (CUDA_VISIBLE_DEVICES=\"\") "
                             "to train in 3 CPU processes\n")
    assert not (tmp_path / "titanic").exists()  # no run folder: nothing was started


def test_nproc_check_lets_gpu_and_cpu_process_counts_through():
    check_nproc(2, 2)
    check_nproc(1, 8)
    check_nproc(4, 0)  # no GPUs: CPU processes, as many as asked
    with pytest.raises(KitError, match="NPROC=2 processes per machine, but only 1 GPU"):
        check_nproc(2, 1)


@pytest.mark.skipif(not NO_ONNX_CUDA, reason="this onnxruntime has the CUDA provider")
def test_onnx_on_cuda_without_the_provider_names_the_gpu_extra(titanic_export):
    with pytest.raises(KitError) as caught:
        runtime.load(titanic_export / "exports" / "titanic", backend="onnx", device="cuda", trust_code=True)
    message = str(caught.value)
    assert "needs its CUDA provider" in message and "CPUExecutionProvider" in message
    assert "make setup GPU=1" in message and "onnxruntime-gpu" in message


@pytest.mark.skipif(not NO_ONNX_CUDA, reason="this onnxruntime has the CUDA provider")
def test_runtime_auto_picks_what_the_backend_can_use(titanic_export):
    folder = titanic_export / "exports" / "titanic"
    assert runtime.load(folder, backend="onnx", trust_code=True).device == "cpu"
    with pytest.raises(KitError, match="device 'gpu' is not one of auto, cpu, cuda"):
        runtime.load(folder, backend="onnx", device="gpu")


@pytest.mark.gpu
def test_predict_and_export_on_the_gpu_agree_with_the_cpu(image_export, tmp_path):
    tmp, food_dir, _ = image_export
    run_dir = runs.find_run("food11", None, tmp / "runs")
    task = get_task(runs.run_config(run_dir))
    samples = task.load("test", food_dir / "test")
    probs = {}
    for name in ("cpu", "cuda"):
        device = torch.device(name)
        ensemble, states = runs.load_ensemble(run_dir, task, device)
        probs[name] = ensemble_probs(ensemble, task.batches(samples, states), len(samples), device)
    assert probs["cuda"].device.type == "cpu" and float((probs["cuda"] - probs["cpu"]).abs().max()) <= 2e-3
    folder = export_run(run_dir, tmp_path / "exports", food_dir, device="cuda")
    parity = json.loads((folder / "meta.json").read_text())["parity"]
    assert {"torchscript on cpu", "onnx on cpu", "torchscript on cuda"} <= set(parity["devices"])
    assert runtime.load(folder, backend="torchscript", device="auto").device == "cuda"
