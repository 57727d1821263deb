"""Cross-validation, the driver: the folds (kit/folds.py) run one by one (or resumed, or under torchrun), each
training every learner on the same fitted preprocessing and saving its out-of-fold predictions; then the report
(kit/report.py)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from kit import atomic, blend, distributed, runs
from kit.budget import Budget, Deadline
from kit.config import Config, parse_duration
from kit.distributed import SINGLE, Dist
from kit.encoding import learner_columns
from kit.errors import KitError, describe_os_error
from kit.folds import folds_of, make_splits
from kit.learners import get_learner
from kit.metrics import metric_of
from kit.predict import ensemble_probs
from kit.report import summarize_run
from kit.submission import check_test_ids
from kit.target import Target, get_target
from kit.tasks import Samples, Task, get_task

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_deterministic() -> None:
    """`train.deterministic: true`: refuse non-deterministic kernels (they matter on GPU; CPU is already)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def cross_validate(config: Config, data: Path | None = None, runs_dir: Path = runs.RUNS_DIR,
                   resume: str | None = None, parallel: str = "data") -> Path:
    """Train every fold, write checkpoints, oof.csv, metrics.json, logs and plots; return the run folder.

    `resume` (a run id, or "latest") continues an interrupted run: finished folds are kept and an unfinished
    fold continues from its last epoch. Under torchrun the ranks train each fold together (`parallel="data"`)
    or different folds (`parallel="folds"`); either way rank 0 writes the run's outputs, once. With a budget
    (TIME=, kit/budget.py) the first fold's time decides how many repeats of the folds follow.
    """
    dist = distributed.setup()
    if not dist.main and parallel == "data":
        logging.getLogger("kit").setLevel(logging.WARNING)  # rank 0 reports for everyone
    started = time.perf_counter()
    config, task, train = load_training(config, data, dist)
    splits = make_splits(config, train)
    fold_of = folds_of(splits, len(train), config.cv.repeats)
    run_dir = Path(dist.from_main(lambda: str(open_run(config, train.ids, fold_of, runs_dir, resume))))
    budget = open_budget(config, task, run_dir, len(splits), started, dist) if config.budget else None
    if budget and budget.resumed:  # a resumed run keeps its plan
        config, splits = apply_plan(config, train, run_dir, budget, len(splits))
    log.info("run %s: %d training %s, %d folds%s", run_dir, len(train), task.unit, len(splits),
             f", {dist.world} processes ({parallel}-parallel)" if dist.world > 1 else "")
    writes = dist.main or parallel == "folds"
    writer = SummaryWriter(str(run_dir / "tensorboard")) if writes else None
    try:
        config, splits = train_folds(task, config, train, splits, run_dir, dist, parallel, writer, budget)
        dist.barrier()
        if dist.main:
            summarize_run(config, train, splits, run_dir, time.perf_counter() - started, task, budget)
    except OSError as exc:  # e.g. the disk filled up: what is finished stays, and the run can go on later
        raise KitError(f"{describe_os_error(exc)}; then continue the run with {resume_hint(config, run_dir, data)}"
                       ) from None
    except KeyboardInterrupt:  # Ctrl-C: the finished folds and the last finished epoch's checkpoint stay
        raise KeyboardInterrupt(f"continue the run with {resume_hint(config, run_dir, data)}") from None
    finally:
        if writer:
            writer.close()
    distributed.teardown()
    return run_dir


def train_folds(task, config: Config, train: Samples, splits: list, run_dir: Path, dist: Dist, parallel: str,
                writer: SummaryWriter | None, budget: Budget | None) -> tuple[Config, list]:
    """Every fold not finished earlier, in order (this rank's share with parallel="folds"); a budget may change the
    number of repeats after any fold, which changes the splits that follow."""
    bar = tqdm(total=len(splits), desc="folds", unit="fold", disable=None)
    clock = tqdm(total=round(budget.seconds), desc="budget", unit="s", disable=None) if budget else None
    fold = 0
    while fold < len(splits):
        if parallel == "data" or fold % dist.world == dist.rank:
            if runs.fold_done(run_dir, fold):
                log.info("fold %d: finished earlier, kept", fold)
                row = runs.fold_result(run_dir, fold)[0]["summary"]
            else:
                row = train_fold(task, config, train, splits[fold], fold, run_dir,
                                 dist if parallel == "data" else SINGLE, writer, budget)
                if budget and fold == 0 and row.get("time_limited") and config.blend != "mean":
                    row = row | {"weights": first_fold_weights(config, train, splits[0], run_dir)}
            if budget and budget.after_fold(fold, row):  # the plan changed
                config, splits = apply_plan(config, train, run_dir, budget, fold + 1)
                bar.total = len(splits)
            if budget:
                atomic.write_text(run_dir / "plan.json", json.dumps(budget.state_dict(), indent=1))
        fold += 1
        bar.update()
        if clock:
            clock.update(min(round(budget.elapsed()), clock.total) - clock.n)
    for done in (bar, clock):
        if done:
            done.close()
    return config, splits


def first_fold_weights(config: Config, train: Samples, split: tuple[np.ndarray, np.ndarray],
                       run_dir: Path) -> dict[str, float]:
    """The blend weights (kit/blend.py fit_weights) fitted on the first fold's OOF predictions: a budget leaves out
    a learner stopped at its share that these give no weight, so that its share goes to the others."""
    target = get_target(config)
    preds = runs.fold_result(run_dir, 0)[1]
    weights = blend.fit_weights(preds, target.forward(train.subset(split[1]).y), target.predicts_values)
    return dict(zip(config.learners, weights.tolist(), strict=True))


def open_budget(config: Config, task, run_dir: Path, folds: int, started: float, dist: Dist) -> Budget:
    """The run's budget: the plan saved in a resumed run folder (plan.json), else a new one from the clock of this
    process's start."""
    if dist.world > 1:
        raise KitError("TIME= plans folds in one process; leave NPROC or TIME out")
    saved = run_dir / "plan.json"
    if saved.is_file():
        log.info("budget: resuming with the plan this run was given (%s)", run_dir / "plan.json")
        return Budget.from_state_dict(json.loads(saved.read_text()) | {"resumed": True})
    test = task.test_ids()
    budget = Budget(parse_duration(config.budget), folds, len(test) if test else 0, started)
    budget.allot()
    return budget


def apply_plan(config: Config, train: Samples, run_dir: Path, budget: Budget, finished: int) -> tuple[Config, list]:
    """The config and splits for the budget's plan: its repeats (repeat 0 unchanged: its seed is cv.seed), written to
    the run folder (folds.csv) so that the report and a resumed run see them; and its learners, those it left out
    taken out of the folds finished so far."""
    learners = [name for name in config.learners if name not in budget.dropped]
    config = dataclasses.replace(config, learners=learners,
                                 cv=dataclasses.replace(config.cv, repeats=budget.repeats))
    splits = make_splits(config, train)
    runs.write_folds(run_dir, train.ids, folds_of(splits, len(train), budget.repeats))
    for fold in range(min(finished, len(splits))):
        if runs.fold_done(run_dir, fold):
            runs.keep_learners(run_dir, fold, learners)
    return config, splits


def load_training(config: Config, data: Path | None, dist: Dist) -> tuple[Config, Task, Samples]:
    """Set the backends, resolve the config against the data and load the training samples (rank 0 first: it
    decodes the images into the cache, then the other ranks read it)."""
    if config.train.deterministic:
        make_deterministic()
    else:
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: let cuDNN time its kernels once
    config = get_task(config).resolve(data)
    task = get_task(config)
    check_test_ids(config, task.test_ids())  # a wrong sample submission is refused now, not after the training
    if not dist.main:
        dist.barrier()
    train = task.load("train", data)
    if dist.main:
        dist.barrier()
    if data is not None:  # the run's config.yaml records where its training data came from
        config.data.train = str(Path(data).resolve())
    for name in config.learners:
        get_learner(name).check_available(get_target(config))
    return config, task, train


def resume_hint(config: Config, run_dir: Path, data: Path | None) -> str:
    """The command that continues `run_dir` (resume refuses other settings, so it names DATA when one was given)."""
    where = f" DATA={data}" if data is not None else ""
    return f"`make train COMP={runs.comp_arg(config)}{where} RESUME={run_dir.name}` (with the same SET, if any)"


def open_run(config: Config, ids: list[str], fold_of: np.ndarray, runs_dir: Path, resume: str | None) -> Path:
    if resume is None:
        run_dir = runs.new_run(config, runs_dir)
        runs.write_folds(run_dir, ids, fold_of)
        return run_dir
    run_dir = runs.find_run(config.competition, None if resume == "latest" else resume, runs_dir)
    runs.check_resumable(run_dir, config, ids, fold_of)
    for stale in run_dir.glob(".*.tmp"):  # a write that the interruption cut short
        stale.unlink()
    log.info("resuming %s", run_dir)
    return run_dir


@dataclass
class FoldJob:
    """One fold's fit: what each learner trains from (kit/learners/)."""

    task: Task
    config: Config
    part: Samples  # the fold's training rows
    valid: Samples  # its validation rows
    state: dict  # the preprocessing fitted on `part`
    fold: int
    seed: int
    run_dir: Path
    dist: Dist = SINGLE
    writer: SummaryWriter | None = None
    selected: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # `features` by what learners read
    needed: set[str] | None = None  # what the learners still to fit read: the rest is freed (None: keep all)
    deadline: Deadline | None = None  # when the learner now fitting should stop (a budget's share; None: no limit)

    @property
    def target(self) -> Target:
        return get_target(self.config)

    @functools.cached_property
    def encoded(self) -> np.ndarray:
        return self.task.features(self.part, self.state, train=True)

    def features(self, reads: str) -> np.ndarray:
        """The training rows encoded once for the fold, with the columns a learner `reads` (kit/encoding.py),
        selected once for all the learners that read them (linear and net share the one-hot columns)."""
        if reads not in self.selected:
            columns = learner_columns(self.state, reads)
            self.selected[reads] = self.encoded if columns is None else self.encoded[:, columns]
            self.forget()
        return self.selected[reads]

    def keep(self, reads: set[str]) -> None:
        """Only learners reading `reads` fit from now on: the rest is freed."""
        self.needed = reads
        self.forget()

    def forget(self) -> None:
        """Free the selections no learner still to fit reads, and the full encoding once every selection still
        needed is made (the million-row table's fold: 0.9 GB less while the network trains)."""
        if self.needed is None:
            return
        self.selected = {r: self.selected[r] for r in self.needed if r in self.selected}
        full = self.__dict__.get("encoded")
        if self.needed <= set(self.selected) and all(x is not full for x in self.selected.values()):
            self.__dict__.pop("encoded", None)


def train_fold(task, config: Config, train: Samples, split: tuple[np.ndarray, np.ndarray], fold: int,
               run_dir: Path, dist: Dist, writer: SummaryWriter | None, budget: Budget | None = None) -> dict | None:
    """Train one fold's learners (the network from its resume checkpoint when there is one) on the same fitted
    preprocessing, and save them with each learner's OOF predictions; the fold's summary row (None off rank 0).
    With a `budget` (kit/budget.py) each learner fits within its share of the fold's allowance."""
    fold_start = time.perf_counter()
    job = fold_job(task, config, train, split, fold, run_dir, dist, writer)
    part, valid = job.part, job.valid
    fitted, row, history = fit_learners(job, budget, fold_start)
    job.keep(set())  # the OOF pass encodes the validation rows itself
    if not dist.main:
        return None
    oof_start, spent = time.perf_counter(), {}
    preds = oof_predictions(job, fitted, spent)
    row["oof_seconds"] = round(time.perf_counter() - oof_start, 3)
    row["predict_seconds"] = {name: round(s, 3) for name, s in spent.items()}
    metric, target = metric_of(config), job.target
    scores = {name: metric.score(valid.y, target.inverse(preds[:, i])) for i, name in enumerate(fitted)}
    row |= {"score": metric.score(valid.y, target.inverse(preds.mean(1))), "learners": scores,
            "train_rows": len(part), "valid_rows": len(valid), "seconds": round(time.perf_counter() - fold_start, 2)}
    meta = {"fold": fold, "score": row["score"], "preprocessing": job.state, "summary": row, "history": history}
    runs.save_fold(run_dir, fold, {name: m.cpu().state_dict() for name, m in fitted.items()}, meta, preds)
    log_fold(row, scores, metric.name, task.score_names())
    return row


def fit_learners(job: FoldJob, budget: Budget | None, fold_start: float) -> tuple[dict, dict, list]:
    """Every learner of the fold fitted (in config order), its summary row and the epoch history. With a budget,
    the learners that cannot stop early fit first, then those no earlier fold stopped at their share; each gets an
    equal share of what is left of the fold's allowance, and the row lists those that stopped there
    (time_limited)."""
    learners = job.config.learners
    allowance = budget.allowance if budget else 0.0
    order = sorted(learners, key=lambda n: (get_learner(n).stops, n in budget.time_limited)) if budget else learners
    fitted, row, history, seconds, limited = {}, {"fold": job.fold}, [], {}, []
    for i, name in enumerate(order):
        start = time.perf_counter()
        job.keep({get_learner(later).reads for later in order[i:]})
        job.deadline = Deadline.share(allowance, fold_start, len(order) - i) if allowance else None
        fitted[name], own_row, own_history = get_learner(name).fit(job)
        row, history = row | own_row, history + own_history
        seconds[name] = round(time.perf_counter() - start, 3)
        if job.deadline and job.deadline.hit:
            limited.append(name)
            log.info("fold %d: %s stopped at the end of its share of the budget (%.1f s)", job.fold, name,
                     job.deadline.at - start)
    row["learner_seconds"] = seconds
    if allowance:
        row["time_limited"] = limited
    return {name: fitted[name] for name in learners}, row, history


def fold_job(task, config: Config, train: Samples, split: tuple[np.ndarray, np.ndarray], fold: int, run_dir: Path,
             dist: Dist = SINGLE, writer: SummaryWriter | None = None) -> FoldJob:
    """A fold's rows and the preprocessing fitted on its training part, with the RNGs seeded for the fold."""
    seed = config.train.seed + fold
    seed_everything(seed)
    part, valid = train.subset(split[0]), train.subset(split[1])
    return FoldJob(task, config, part, valid, task.fit(part), fold, seed, run_dir, dist, writer)


def oof_predictions(job: FoldJob, fitted: dict[str, torch.nn.Module], spent: dict | None = None) -> np.ndarray:
    """Each fitted learner's predictions for the fold's validation rows: [rows, learners, classes (or 1 value)].
    `spent` (if given) gets each learner's seconds of the pass (the rest is reading and encoding the rows): what
    serving a subset of the learners costs."""
    model = job.task.ensemble([fitted], [job.state], None).to(job.dist.device).eval()  # the CPU-fitted learners too
    hooks = [] if spent is None else [h for name, m in fitted.items() for h in _clocked(m, name, spent)]
    try:
        return ensemble_probs(model, job.task.batches(job.valid, [job.state]), len(job.valid), job.dist.device,
                              desc=f"fold {job.fold} OOF", unit=job.task.unit).numpy()
    finally:
        for hook in hooks:
            hook.remove()


def _clocked(module: torch.nn.Module, name: str, spent: dict) -> list:
    """Forward hooks adding `module`'s forward time to spent[name] (the device synchronised, so that a GPU's
    queued work counts where it belongs)."""
    spent[name], started = 0.0, []

    def sync() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def before(*_):
        started.append(sync())

    def after(*_):
        spent[name] += sync() - started.pop()

    return [module.register_forward_pre_hook(before), module.register_forward_hook(after)]


def log_fold(row: dict, scores: dict, metric: str, names: tuple[str, str]) -> None:
    notes = [f"best epoch {row['best_epoch']} of {row['epochs_run']}, {names[0]} {metric} "
             f"{row['best_epoch_valid_score']:.4f}"] if "best_epoch" in row else []
    if len(scores) > 1:
        notes.append("learners " + ", ".join(f"{n} {v:.4f}" for n, v in scores.items()) + "; scored: their mean")
    log.info("fold %d: %s %s %.4f%s", row["fold"], names[1], metric, row["score"],
             f" ({'; '.join(notes)})" if notes else "")
