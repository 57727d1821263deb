from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
TITANIC = ROOT / "competitions" / "titanic" / "data"


def run_kit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "kit", *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def titanic_train() -> pd.DataFrame:
    return pd.read_csv(TITANIC / "train.csv", dtype=str, keep_default_na=False)


@pytest.fixture
def titanic_test() -> pd.DataFrame:
    return pd.read_csv(TITANIC / "test.csv", dtype=str, keep_default_na=False)
