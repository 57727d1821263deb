from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
TITANIC = ROOT / "competitions" / "titanic" / "data"


# Subprocesses of the tests mean the CPU path: GPUs hidden, so the suite tests the same thing on a GPU machine.
# Subprocesses of the tests: GPUs hidden (they test the CPU path), and, when the suite runs under `make test`,
# none of the outer make's variables, so a make started by a test behaves as one typed in a shell.
CPU_ENV = {**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
           "CUDA_VISIBLE_DEVICES": ""}


def run_kit(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would (GPUs hidden; `env` adds variables)."""
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=600, env={**CPU_ENV, **(env or {})})


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_BROWSER = "Chromium is not installed (apt-get install chromium; .ci/run does)"


def browser_drop(url: str, image: Path, shot: Path | None = None) -> str:
    """The app's page text after headless Chromium sets `image` on the first drop zone (no click) and the app says
    it classified it; a full-page screenshot to `shot` when given."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(image))
        page.get_by_text("1 image(s) classified").wait_for(timeout=60_000)
        text = page.locator("body").inner_text()
        if shot is not None:
            page.screenshot(path=str(shot), full_page=True)
        browser.close()
    return text


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked gpu (`pytest -m gpu` runs them alone, as `make doctor` does) are skipped without a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture
def titanic_train() -> pd.DataFrame:
    return pd.read_csv(TITANIC / "train.csv", dtype=str, keep_default_na=False)


@pytest.fixture
def titanic_test() -> pd.DataFrame:
    return pd.read_csv(TITANIC / "test.csv", dtype=str, keep_default_na=False)


def make_image(label: int, seed: int, size: int = 40):
    """A small real JPEG-able picture whose colour and stripes depend on its class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    hue = np.array([(label * 37) % 256, (label * 91) % 256, (label * 151) % 256], dtype=np.float32)
    image = np.tile(hue, (size, size, 1)) + rng.normal(0, 12, (size, size, 3))
    image[:, :: 2 + label % 4] *= 0.6  # class-dependent stripes
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


@pytest.fixture
def food_dir(tmp_path) -> Path:
    return write_food_dir(tmp_path / "food")


def write_food_dir(root: Path, train: int = 4, valid: int = 2) -> Path:
    """A tiny HW3-layout data set: 11 classes, train/ (4 each), valid/ (2 each), test/ (6 unlabeled)."""
    for split, per_class in (("train", train), ("valid", valid)):
        (root / split).mkdir(parents=True)
        for label in range(11):
            for idx in range(per_class):
                make_image(label, seed=label * 100 + idx + (50 if split == "valid" else 0)).save(
                    root / split / f"{label}_{idx}.jpg")
    (root / "test").mkdir()
    for i in range(6):
        make_image(i * 2 % 11, seed=999 + i).save(root / "test" / f"{i:04d}.jpg")
    return root


@pytest.fixture(scope="session")
def image_export(tmp_path_factory):
    """A tiny trained lite0 ensemble (2 folds, 2 TTA views) on generated HW3 images, exported."""
    food_dir = write_food_dir(tmp_path_factory.mktemp("data") / "food")
    tmp = tmp_path_factory.mktemp("image-export")
    settings = (f"image.cache_dir={tmp / 'cache'} image.size=32 image.test_size=0 model.pretrained=none "
                "train.epochs=1 cv.folds=2 tta.views=[identity,hflip]")
    train = run_kit("train", "--comp", "food11", "--runs", str(tmp / "runs"), "--data", str(food_dir),
                    "--set", settings)
    assert train.returncode == 0, train.stderr
    export = run_kit("export", "--comp", "food11", "--runs", str(tmp / "runs"), "--exports", str(tmp / "exports"),
                     "--set", settings)
    assert export.returncode == 0, export.stderr
    return tmp, food_dir, settings


@pytest.fixture(scope="session")
def titanic_export(tmp_path_factory):
    """A small Titanic run (2 folds), exported."""
    tmp = tmp_path_factory.mktemp("titanic-export")
    assert run_kit("train", "--comp", "titanic", "--runs", str(tmp / "runs"), "--set",
                   "cv.folds=2 train.epochs=3").returncode == 0
    result = run_kit("export", "--comp", "titanic", "--runs", str(tmp / "runs"), "--exports", str(tmp / "exports"))
    assert result.returncode == 0, result.stderr
    return tmp
