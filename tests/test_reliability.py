"""Long runs: killed and resumed, repeated with the same seed, and spread over processes with torchrun."""

import json
import signal
import subprocess
import sys

import pandas as pd
import pytest
from conftest import CPU_ENV, ROOT, run_kit, write_food_dir

TITANIC_SLOW = "cv.folds=2 train.epochs=8 train.patience=100 train.batch_size=16"


def test_a_run_killed_mid_fold_resumes_to_the_same_predictions(tmp_path):
    """SIGKILL during fold 1, `--resume`, and the OOF predictions and submission equal an uninterrupted run's.
    The trainer kills itself once fold 1's epoch 3 checkpoint is on disk (KIT_TEST_KILL_AFTER_EPOCH, a test-only
    hook), so the kill lands at the same point on a loaded machine as on an idle one."""
    args = ["train", "--comp", "titanic", "--set", TITANIC_SLOW]
    killed = run_kit(*args, "--runs", str(tmp_path / "a"), env={"KIT_TEST_KILL_AFTER_EPOCH": "fold 1:3"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = tmp_path / "a" / "titanic" / "latest"
    assert (run / "fold0.json").is_file() and not (run / "fold1.json").is_file(), "killed mid-fold 1"
    assert (run / "fold1.resume.pt").is_file() and not (run / "metrics.json").exists()
    unfinished = run_kit("predict", "--comp", "titanic", "--runs", str(tmp_path / "a"))
    assert unfinished.returncode == 2 and "unfinished training run" in unfinished.stderr

    resumed = run_kit(*args, "--runs", str(tmp_path / "a"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "fold 0: finished earlier, kept" in resumed.stderr and "fold 1: resuming after epoch 3 " in resumed.stderr
    straight = run_kit(*args, "--runs", str(tmp_path / "b"))
    assert straight.returncode == 0, straight.stderr
    outputs = []
    for runs in ("a", "b"):
        assert run_kit("predict", "--comp", "titanic", "--runs", str(tmp_path / runs)).returncode == 0
        done = tmp_path / runs / "titanic" / "latest"
        outputs.append([(done / name).read_text() for name in ("oof.csv", "submission.csv")])
        assert not list(done.glob("*.resume.pt")) and not list(done.glob(".*.tmp"))
    assert outputs[0] == outputs[1]


def test_resume_refuses_other_settings(tmp_path):
    assert run_kit("train", "--comp", "titanic", "--runs", str(tmp_path), "--set", "cv.folds=2 train.epochs=1"
                   ).returncode == 0
    result = run_kit("train", "--comp", "titanic", "--runs", str(tmp_path), "--set", "cv.folds=3 train.epochs=1",
                     "--resume")
    assert result.returncode == 2
    assert "cv.folds: 2 -> 3" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("variants", [("train.num_workers=0", "train.num_workers=2"),
                                      ("augment.backend=tensor", "augment.backend=tensor")])
def test_image_training_repeats_exactly_with_loader_workers_and_mixing(tmp_path, food_dir, variants):
    """Augmentation draws per sample from (seed, epoch, index) and mixing per (seed, epoch, step), so loader
    workers change nothing, on either augmentation backend (no deterministic-algorithms crutch)."""
    settings = (f"image.cache_dir={tmp_path / 'cache'} image.size=32 image.test_size=40 model.pretrained=none "
                "train.epochs=2 cv.folds=2 train.cutmix=1.0 train.mixup=0.4 train.deterministic=false")
    oofs = []
    for name, variant in zip("ab", variants, strict=True):
        result = run_kit("train", "--comp", "food11", "--runs", str(tmp_path / name), "--data", str(food_dir),
                         "--set", f"{settings} {variant}")
        assert result.returncode == 0, result.stderr
        oofs.append((tmp_path / name / "food11" / "latest" / "oof.csv").read_text())
    assert oofs[0] == oofs[1]


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return root, write_food_dir(root / "food", train=12, valid=4)  # 176 images: 8 per rank and step


def _ddp_settings(root):
    return (f"image.cache_dir={root / 'cache'} image.size=32 image.test_size=0 model.pretrained=none "
            "model.name=test_resnet model.freeze=[] train.epochs=8 train.lr=0.01 train.batch_size=16 cv.folds=2")


# One thread per process everywhere: torchrun gives each of its processes one (OMP_NUM_THREADS=1), and float sums
# over another number of threads round differently, so the single-process baseline runs with one as well.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _train_ddp(root, food, runs, *extra):
    return run_kit("train", "--comp", "food11", "--runs", str(runs), "--data", str(food), "--set",
                   _ddp_settings(root), *extra, env=ONE_THREAD)


@pytest.fixture(scope="module")
def single_process_run(ddp_data):
    root, food = ddp_data
    result = _train_ddp(root, food, root / "single")
    assert result.returncode == 0, result.stderr
    return root / "single" / "food11" / "latest"


# Two launchers: kit's own (what `make train NPROC=2` runs, checking NPROC against the GPUs first) and torchrun
# by hand. Both as CPU processes: the GPUs are hidden, as a user of a GPU machine would for this.
@pytest.mark.parametrize(("parallel", "launcher"), [("data", "kit"), ("folds", "torchrun")])
def test_torchrun_on_two_processes_writes_one_run(ddp_data, single_process_run, parallel, launcher):
    """Fold-parallel: each process trains whole folds exactly as one process would, so oof.csv is byte-equal to
    the single-process run's. Data-parallel: gradients are averaged over two half batches and each process's
    BatchNorm sees its own half, which rounds differently, so there the CV score must only agree closely."""
    root, food = ddp_data
    runs = root / parallel
    launch = (["-m", "kit", "train", "--nproc_per_node", "2"] if launcher == "kit" else
              ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "kit", "train"])
    command = [sys.executable, *launch, "--comp", "food11", "--runs", str(runs), "--data", str(food),
               "--set", _ddp_settings(root), "--parallel", parallel]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**CPU_ENV, **ONE_THREAD})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("CV accuracy") == 1  # rank 0 reports, once
    assert "2 processes" in result.stderr
    folders = [p for p in (runs / "food11").iterdir() if p.name != "latest"]
    assert len(folders) == 1
    run = folders[0]
    assert sorted(p.name for p in run.glob("fold[0-9]*")) == [
        "fold0.json", "fold0.oof.npy", "fold0.pt", "fold1.json", "fold1.oof.npy", "fold1.pt"]
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 176 and sorted(oof["fold"].unique()) == [0, 1]
    if parallel == "folds":
        assert (run / "oof.csv").read_bytes() == (single_process_run / "oof.csv").read_bytes()
    else:
        cv = json.loads((run / "metrics.json").read_text())["cv"]["oof"]
        single = json.loads((single_process_run / "metrics.json").read_text())["cv"]["oof"]
        assert abs(cv - single) <= 0.1, (cv, single)
        # images/s counts every image once: the epoch's images (summed over ranks) over its training seconds
        for fold in (0, 1):
            rows = json.loads((run / f"fold{fold}.json").read_text())["history"]
            alone = json.loads((single_process_run / f"fold{fold}.json").read_text())["history"]
            assert {r["train_images"] for r in rows + alone} == {80}  # early stopping may end them apart
            assert all(r["images_per_second"] * r["train_seconds"] == pytest.approx(80) for r in rows + alone)
