"""`make doctor`: the environment report on this machine's real torch and onnxruntime, the table, and honesty: a
check that raises is FAILED with a non-zero exit, one that cannot run is skipped with its reason, never ok."""

import time

import onnxruntime as ort
import pytest
import torch

from kit import doctor
from kit.cli import parser
from kit.doctor import Check, Outcome, Skipped, Workspace, exit_code, run_checks, table


@pytest.fixture
def cpu(tmp_path) -> Workspace:
    return Workspace.create(tmp_path, "cpu")


def test_the_environment_names_the_torch_build_the_devices_and_onnxruntime():
    rows = dict(doctor.environment())
    assert torch.__version__ in rows["torch"] and "cuDNN" in rows["torch"]
    assert ort.__version__ in rows["onnxruntime"] and "CPUExecutionProvider" in rows["onnxruntime"]
    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in rows["cuda:0"] and "capability" in rows["cuda:0"]
    else:
        assert rows["devices"].startswith("no CUDA device")
    loads, how = doctor.onnx_cuda()  # a real session on a tiny graph where the provider exists
    assert rows["onnxruntime CUDA"] == how
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert not loads and "make setup GPU=1" in how


def test_a_check_that_raises_is_failed_and_the_exit_is_non_zero(cpu):
    def broken(ws):
        raise ValueError("the parity was off")

    outcomes = run_checks([Check("ok one", lambda ws: "42 img/s", 10), Check("broken", broken, 10)], cpu)
    assert [(o.result, o.figure.split(" [")[0]) for o in outcomes] == [
        ("ok", "42 img/s"), ("FAILED", "ValueError: the parity was off")]
    assert exit_code(outcomes) == 1


def test_a_check_that_cannot_run_is_skipped_with_its_reason_never_ok(cpu):
    def cannot(ws):
        raise Skipped("pytest is not installed")

    checks = [Check("gpu only", lambda ws: "fine", 10, gpu=True), Check("cannot", cannot, 10),
              Check("after cannot", lambda ws: "fine", 10, needs="cannot")]
    outcomes = run_checks(checks, cpu)
    assert [o.result for o in outcomes] == ["skipped: no CUDA device", "skipped: pytest is not installed",
                                            "skipped: needs cannot"]
    assert exit_code(outcomes) == 0


def test_a_check_past_its_limit_fails_and_the_spent_budget_skips_the_rest(cpu):
    start = time.perf_counter()
    outcomes = run_checks([Check("slow", lambda ws: time.sleep(30), 1.2), Check("next", lambda ws: "", 10)], cpu,
                          budget=1.8)
    assert time.perf_counter() - start < 5
    assert (outcomes[0].result, outcomes[0].figure) == ("FAILED", "timed out after 1 s")
    assert outcomes[1].result == "skipped: the 2 s budget is spent"


def test_the_table_has_one_row_per_check_under_its_header():
    text = table([Outcome("bench", "ok", "efficiency train 0.91 infer 0.88"),
                  Outcome("gpu tests", "skipped: no CUDA device")])
    lines = text.splitlines()
    assert lines[0].split(" | ") == ["check    ", "result                 ", "figure"]
    assert lines[2] == "bench     | ok                      | efficiency train 0.91 infer 0.88"
    assert lines[3] == "gpu tests | skipped: no CUDA device |"


def test_the_onnxruntime_cuda_check_runs_for_real(tmp_path):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    (outcome,) = run_checks([c for c in doctor.CHECKS if c.name == "onnxruntime on CUDA"],
                            Workspace.create(tmp_path, device))
    if device == "cpu":
        assert outcome.result == "skipped: no CUDA device"
    elif "CUDAExecutionProvider" not in ort.get_available_providers():
        assert outcome.result.startswith("skipped: no CUDA provider")
    else:
        assert outcome.result in ("ok", "FAILED") and outcome.figure


def test_doctor_is_a_command_without_a_competition():
    assert parser().parse_args(["doctor"]).command == "doctor"


def test_train_reads_the_epoch_from_the_run_files_not_the_log_text(cpu, monkeypatch):
    def kit(*args, extra=()):  # a finished run whose printed output has no epoch line to parse
        run = cpu.tmp / "runs" / doctor.COMP / "20250101-000000"
        run.mkdir(parents=True)
        (run / "config.yaml").write_text("competition: food101-10\n")
        (run / "metrics.json").write_text("{}")
        (run / "log.csv").write_text("fold,epoch,train_loss,images_per_second,train_seconds,seconds,best\n"
                                     "0,1,2.3,1234.56,3.2,3.46,True\n")
        return "training done\n"

    monkeypatch.setattr(cpu, "kit", kit)
    assert doctor.train(cpu) == "1235 img/s, epoch 3.5 s"


def test_bench_reports_the_pipelines_ratios(cpu, monkeypatch):
    calls = []

    def image_pipeline(config, data, limit, device_name, rounds):
        calls.append((config.competition, config.train.batch_size, data, limit, device_name, rounds))
        return [("device", "CPU")], {"train": 0.914, "infer": 0.876}

    monkeypatch.setattr("kit.bench.image_pipeline", image_pipeline)
    assert doctor.bench(cpu) == "efficiency train 0.91 infer 0.88"
    assert calls == [(doctor.COMP, 8, cpu.tmp / "sample", 24, "cpu", 1)]
