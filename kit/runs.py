"""Run folders: runs/<comp>/<run-id>/ with the fold assignment, fold checkpoints (state_dict + JSON + OOF
probabilities), per-epoch resume checkpoints of unfinished folds, and `latest`."""

from __future__ import annotations

import json
import logging
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
from kit.learners import get_learner

RUNS_DIR = Path("runs")

log = logging.getLogger(__name__)


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


def find_run(competition: str, run: str | None = None, runs_dir: Path = RUNS_DIR, finished: bool = False,
             comp: str | None = None) -> Path:
    """The folder of run `run` (an id or a path), or else of the latest run of `competition`; with `finished`, the
    latest finished one (an interrupted run started later does not hide it). `comp`: COMP= for the messages."""
    comp = comp or competition
    if run and Path(run).is_dir():
        return Path(run)
    base = runs_dir / competition
    if run:
        if not (base / run / "config.yaml").is_file():
            ids = run_ids(base)
            listed = f"runs there: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}" if ids else "no runs there"
            raise KitError(f"run {run!r} not found for {competition!r} under {base}; {listed} "
                           f"(RUN=<run-id>, or leave RUN out for the latest finished run)")
        return (base / run).resolve()
    latest = base / "latest"
    if not finished or (latest / "metrics.json").is_file():
        if (latest / "config.yaml").is_file():
            return latest.resolve()
        raise KitError(f"no training run found for {competition!r} under {base}; run `make train COMP={comp}` first")
    done = [base / r for r in run_ids(base) if (base / r / "metrics.json").is_file()]
    if not done:
        unfinished = f" (the latest, {latest.resolve().name}, is an unfinished training run; finish it with " \
                     f"`make train COMP={comp} RESUME=1`)" if latest.is_dir() else ""
        raise KitError(f"no finished training run for {competition!r} under {base}{unfinished}; "
                       f"run `make train COMP={comp}` first")
    log.warning("the latest run, %s, is unfinished (`make train COMP=%s RESUME=1` continues it); using the latest "
                "finished run, %s", latest.resolve().name, comp, done[0].name)
    return done[0].resolve()


def run_ids(base: Path) -> list[str]:
    """The run ids under runs/<comp>/, newest first (ids are start times, with -2, -3 ... for the same second)."""
    runs = [p for p in base.glob("*") if p.is_dir() and not p.is_symlink() and (p / "config.yaml").is_file()]
    return [p.name for p in sorted(runs, key=lambda p: (p.name[:15], int(p.name[16:]) if p.name[16:].isdigit() else 1),
                                   reverse=True)]


def describe_run(run_dir: Path) -> str:
    """'runs/titanic/20260101-120000 (CV accuracy 0.8361, finished 2026-01-01T12:00:15+0000)' for log lines."""
    if not (run_dir / "metrics.json").is_file():
        return f"{run_dir} (unfinished)"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return f"{run_dir} (CV {metrics['metric']['name']} {metrics['cv']['mean']:.4f}, finished {metrics['created']})"


def comp_arg(config: Config) -> str:
    """What COMP= names the competition on the command line: its name, or the folder path it was given as."""
    return config.folder or config.competition


def run_config(run_dir: Path) -> Config:
    return config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), where=str(run_dir / "config.yaml"))


def write_folds(run_dir: Path, ids: list[str], fold_of: np.ndarray) -> None:
    """folds.csv: which fold validates each training row (-1: never, with cv.folds=given); with cv.repeats, a
    column per repeat (fold, fold_r1, fold_r2, ...; fold numbers run on across repeats)."""
    with atomic.atomic_path(run_dir / "folds.csv") as tmp:
        pd.DataFrame({"id": ids, **{fold_column(r): f for r, f in enumerate(fold_of)}}).to_csv(tmp, index=False)


def fold_column(repeat: int) -> str:
    return "fold" if repeat == 0 else f"fold_r{repeat}"


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
    then = folds[[fold_column(r) for r in range(len(fold_of)) if fold_column(r) in folds]].to_numpy().T
    if folds["id"].tolist() != list(ids) or not np.array_equal(then, fold_of):
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


def save_fold(run_dir: Path, fold: int, weights: dict[str, dict], meta: dict, oof: np.ndarray) -> None:
    """A finished fold: each learner's weights (state_dict), its validation rows' probabilities per learner, then
    the JSON that marks it done."""
    atomic.save_torch(weights, run_dir / f"fold{fold}.pt")
    with atomic.atomic_path(run_dir / f"fold{fold}.oof.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, oof)
    atomic.write_text(run_dir / f"fold{fold}.json", json.dumps(meta, indent=1))
    resume_checkpoint(run_dir, fold).unlink(missing_ok=True)


def keep_learners(run_dir: Path, fold: int, learners: list[str]) -> None:
    """Take every learner but `learners` out of a finished fold (its weights, OOF predictions and scores), as a
    budget that leaves a slow learner out does (kit/budget.py); a fold holding just those is left as it is."""
    meta, oof = fold_result(run_dir, fold)
    names = list(meta["summary"]["learners"])
    if names == learners:
        return
    weights = torch.load(run_dir / f"fold{fold}.pt", map_location="cpu", weights_only=True)
    meta["summary"]["learners"] = {name: meta["summary"]["learners"][name] for name in learners}
    meta["history"] = [row for row in meta["history"] if "net" in learners]  # the epochs are the network's
    save_fold(run_dir, fold, {name: weights[name] for name in learners}, meta,
              oof[:, [names.index(name) for name in learners]])


def resume_checkpoint(run_dir: Path, fold: int) -> Path:
    """The last epoch's training state of an unfinished fold."""
    return run_dir / f"fold{fold}.resume.pt"


def fold_done(run_dir: Path, fold: int) -> bool:
    return all((run_dir / f"fold{fold}{ext}").is_file() for ext in (".pt", ".oof.npy", ".json"))


def fold_result(run_dir: Path, fold: int) -> tuple[dict, np.ndarray]:
    """(metadata, OOF probabilities) of a finished fold."""
    return json.loads((run_dir / f"fold{fold}.json").read_text()), np.load(run_dir / f"fold{fold}.oof.npy")


def load_ensemble(run_dir: Path, task, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, list[dict]]:
    """The run's servable fold ensemble (eval mode, on `device`): every served fold's learners, blended with the
    weights in metrics.json; and the folds' preprocessing states."""
    folds, states = [], []
    for saved, meta in load_folds(run_dir):
        state = meta["preprocessing"]
        folds.append({name: get_learner(name).rebuild(weights, task, state) for name, weights in saved.items()})
        states.append(state)
    weights = list(json.loads((run_dir / "metrics.json").read_text())["blend"]["weights"].values())
    return task.ensemble(folds, states, weights).to(device).eval(), states


def load_folds(run_dir: Path) -> list[tuple[dict, dict]]:
    """(state_dict, metadata) of every served fold checkpoint in `run_dir`, in fold order (a budget's repeats that
    were not kept are not read)."""
    if not (run_dir / "metrics.json").is_file():
        raise KitError(f"{run_dir} is an unfinished training run; finish it with `make train "
                       f"COMP={comp_arg(run_config(run_dir))} RESUME={run_dir.name}` (same DATA and SET as it "
                       "was started with), or choose a finished run with RUN=<run-id>")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if not isinstance(metrics.get("metric"), dict):
        raise KitError(f"{run_dir} was trained by an older kit, before runs were scored by the competition's metric; "
                       f"train it again with `make train COMP={comp_arg(run_config(run_dir))}`")
    metas = sorted(run_dir.glob("fold[0-9]*.json"), key=lambda p: int(p.stem[4:]))[: metrics.get("served_folds")]
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
