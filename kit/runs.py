"""Run folders: runs/<comp>/<run-id>/ with the fold assignment, fold checkpoints (state_dict + JSON + OOF
probabilities), per-epoch resume checkpoints of unfinished folds, and `latest`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from kit import atomic
from kit.config import Config, config_from_dict, to_dict
from kit.errors import KitError

RUNS_DIR = Path("runs")


def new_run(config: Config, runs_dir: Path = RUNS_DIR) -> Path:
    """Create runs/<comp>/<timestamp>/ holding the resolved config, and point `latest` at it."""
    base = runs_dir / config.competition
    run_id = time.strftime("%Y%m%d-%H%M%S")
    path, n = base / run_id, 1
    while path.exists():
        n += 1
        path = base / f"{run_id}-{n}"
    path.mkdir(parents=True)
    atomic.write_text(path / "config.yaml", yaml.safe_dump(to_dict(config), sort_keys=False))
    latest = base / "latest"
    tmp = base / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(path.name)
    os.replace(tmp, latest)
    return path


def find_run(competition: str, run: str | None = None, runs_dir: Path = RUNS_DIR) -> Path:
    """The folder of run `run` (an id or a path), or of the latest run of `competition`."""
    if run and Path(run).is_dir():
        return Path(run)
    path = runs_dir / competition / (run or "latest")
    if not (path / "config.yaml").is_file():
        what = f"run {run!r}" if run else "no finished training run"
        raise KitError(
            f"{what} found for {competition!r} under {runs_dir / competition}; "
            f"run `make train COMP={competition}` first"
        )
    return path.resolve()


def run_config(run_dir: Path) -> Config:
    return config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), where=str(run_dir / "config.yaml"))


def write_folds(run_dir: Path, ids: list[str], fold_of: np.ndarray) -> None:
    """folds.csv: which fold validates each training row (-1: never, with cv.folds=given)."""
    with atomic.atomic_path(run_dir / "folds.csv") as tmp:
        pd.DataFrame({"id": ids, "fold": fold_of}).to_csv(tmp, index=False)


def check_resumable(run_dir: Path, config: Config, ids: list[str], fold_of: np.ndarray) -> None:
    """Refuse to resume `run_dir` with other settings or other data than it was started with."""
    changed = [
        f"{key}: {old!r} -> {new!r}"
        for key, (old, new) in _diff(to_dict(run_config(run_dir)), to_dict(config)).items()
    ]
    if changed:
        raise KitError(f"cannot resume {run_dir}: it was started with other settings ({'; '.join(changed)}); "
                       "resume with the same COMP, DATA and SET, or start a new run without RESUME")
    folds = pd.read_csv(run_dir / "folds.csv", dtype={"id": str})
    if folds["id"].tolist() != list(ids) or not np.array_equal(folds["fold"].to_numpy(), fold_of):
        raise KitError(f"cannot resume {run_dir}: the training data changed since it started "
                       f"({len(folds)} rows then, {len(ids)} now); start a new run without RESUME")


def _diff(old: dict, new: dict, prefix: str = "") -> dict[str, tuple]:
    out = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def save_fold(run_dir: Path, fold: int, model: torch.nn.Module, meta: dict, oof: np.ndarray) -> None:
    """A finished fold: weights, its validation rows' probabilities, then the JSON that marks it done."""
    with atomic.atomic_path(run_dir / f"fold{fold}.pt") as tmp, open(tmp, "wb") as f:
        torch.save(model.state_dict(), f)  # through a Python file, so a full disk raises OSError
    with atomic.atomic_path(run_dir / f"fold{fold}.oof.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, oof)
    atomic.write_text(run_dir / f"fold{fold}.json", json.dumps(meta, indent=1))
    resume_checkpoint(run_dir, fold).unlink(missing_ok=True)


def resume_checkpoint(run_dir: Path, fold: int) -> Path:
    """The last epoch's training state of an unfinished fold."""
    return run_dir / f"fold{fold}.resume.pt"


def fold_done(run_dir: Path, fold: int) -> bool:
    return all((run_dir / f"fold{fold}{ext}").is_file() for ext in (".pt", ".oof.npy", ".json"))


def fold_result(run_dir: Path, fold: int) -> tuple[dict, np.ndarray]:
    """(metadata, OOF probabilities) of a finished fold."""
    return json.loads((run_dir / f"fold{fold}.json").read_text()), np.load(run_dir / f"fold{fold}.oof.npy")


def load_ensemble(run_dir: Path, task, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, list[dict]]:
    """The run's servable fold ensemble (eval mode, on `device`) and the folds' preprocessing states."""
    models, states = [], []
    for weights, meta in load_folds(run_dir):
        model = task.build_model(meta["preprocessing"])
        model.load_state_dict(weights)
        models.append(model)
        states.append(meta["preprocessing"])
    return task.ensemble(models, states).to(device).eval(), states


def load_folds(run_dir: Path) -> list[tuple[dict, dict]]:
    """(state_dict, metadata) of every fold checkpoint in `run_dir`, in fold order."""
    if not (run_dir / "metrics.json").is_file():
        raise KitError(f"{run_dir} is an unfinished training run; finish it with `make train COMP=... "
                       f"RESUME={run_dir.name}` (same DATA and SET as it was started with)")
    metas = sorted(run_dir.glob("fold[0-9]*.json"), key=lambda p: int(p.stem[4:]))
    folds = []
    for meta_path in metas:
        weights = meta_path.with_suffix(".pt")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            meta = json.loads(meta_path.read_text())
        except (OSError, RuntimeError, json.JSONDecodeError) as exc:
            raise KitError(f"cannot read checkpoint {weights}: {exc}; retrain with `make train`") from None
        folds.append((state, meta))
    return folds
