"""Run folders: runs/<comp>/<run-id>/ with fold checkpoints (state_dict + JSON), and `latest`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

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


def save_fold(run_dir: Path, fold: int, model: torch.nn.Module, meta: dict) -> None:
    with atomic.atomic_path(run_dir / f"fold{fold}.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    atomic.write_text(run_dir / f"fold{fold}.json", json.dumps(meta, indent=1))


def load_ensemble(run_dir: Path, task) -> tuple[torch.nn.Module, list[dict]]:
    """The run's servable fold ensemble (eval mode, CPU) and the folds' preprocessing states."""
    models, states = [], []
    for weights, meta in load_folds(run_dir):
        model = task.build_model(meta["preprocessing"])
        model.load_state_dict(weights)
        models.append(model)
        states.append(meta["preprocessing"])
    return task.ensemble(models, states).eval(), states


def load_folds(run_dir: Path) -> list[tuple[dict, dict]]:
    """(state_dict, metadata) of every fold checkpoint in `run_dir`, in fold order."""
    metas = sorted(run_dir.glob("fold*.json"), key=lambda p: int(p.stem[4:]))
    if not metas:
        raise KitError(f"{run_dir} holds no fold checkpoints; the training run did not finish a fold")
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
