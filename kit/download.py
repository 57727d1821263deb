"""`make data`: fetch a competition's data with the Kaggle API, or say exactly how to get it by hand."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from kit.config import Config
from kit.errors import KitError

log = logging.getLogger(__name__)


def manual_steps(config: Config, target: Path) -> str:
    slug = config.data.kaggle
    return (
        f"To get the {config.competition} data by hand:\n"
        f"  1. On Kaggle, open the competition '{slug}', join it and accept its rules.\n"
        f"  2. Download the data (Data tab -> Download All), or: pip install kaggle, save your API token as\n"
        f"     ~/.kaggle/kaggle.json (Account -> Create New Token) and run `make data COMP={config.competition}`.\n"
        f"  3. Unzip it so that {target}/ holds training/ (or train/), validation/ (or valid/) and test/.\n"
        f"  4. Train: make train COMP={config.competition}   (or DATA=/other/folder if you put it elsewhere)"
    )


def has_kaggle_credentials() -> bool:
    token = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    return token.is_file() or bool(os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))


def fetch(config: Config, target: Path | None = None) -> Path:
    """Download and unzip the competition data into `target` (default: the config's training folder)."""
    target = Path(target) if target else config.path(config.data.train)
    if config.data.kaggle is None:
        raise KitError(f"{config.competition} has no download source: its data ships in {config.root / 'data'}")
    if not has_kaggle_credentials() or shutil.which("kaggle") is None:
        raise KitError("no Kaggle credentials or kaggle CLI found.\n" + manual_steps(config, target))
    target.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", config.data.kaggle, target)
    result = subprocess.run(["kaggle", "competitions", "download", "-c", config.data.kaggle, "-p", str(target)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise KitError(f"kaggle download failed: {result.stderr.strip() or result.stdout.strip()}\n"
                       + manual_steps(config, target))
    for archive in target.glob("*.zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(target)
        archive.unlink()
    # The HW3 archive nests everything in one folder (food11/); lift it so target/ holds the splits.
    nested = [p for p in target.iterdir() if p.is_dir() and (p / "training").is_dir()]
    for child in (nested[0].iterdir() if nested else []):
        child.rename(target / child.name)
    log.info("data ready in %s", target)
    return target
