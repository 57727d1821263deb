"""TIME= (config `budget`): spend a time budget on more bags.

Before the first fold, each fold of the first repeat is allotted its share of the budget for its learners' fits
(`allowance`); within a fold every learner gets an equal share of what is left, and the learners that train in
rounds or epochs (gbdt, catboost, xgboost, net) stop at the end of their share with their best rounds so far
(`Deadline`), so a slow learner cannot take the budget from the rest. When learners were stopped there, the time
the plan below leaves over widens the later folds' allowance, and they fit after the learners that were not.

The first fold is timed; then kit plans how many repeats of the k-fold split fit in what is left (cv.repeats, each
with a new fold seed, every repeat's models joining the ensemble: AutoGluon's bag sets), with the test prediction's
time reserved (the OOF pass's rate, times the test rows and the folds), and says so in the log. Before each new
repeat the plan is checked against the clock, so a slow fold shortens it instead of overrunning the budget. The
report (kit/report.py, `bag_evidence`) then keeps the extra repeats only when their bagged OOF predictions beat the
one repeat's alone by more than the noise; otherwise the served ensemble is the first repeat's folds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MAX_REPEATS = 20  # AutoGluon's bag sets at best_quality; past it a bag adds serving cost and little else
RESERVE = 0.02  # of the budget, kept for the report and the prediction's load
REPORT_SECONDS = 10.0  # the report, and this process's start before its clock (measured: 10-20 s in all)
START_SECONDS = 10.0  # a prediction process's own start (imports, reading the run), reserved beside its rows
FIT_SHARE = 0.8  # of a fold's share of the budget, for its learners' fits (the rest: its OOF pass and encoding,
# and the test prediction)
WIDEN = 0.95  # of what the later folds can have, once the first fold's time outside the fits is known


@dataclass
class Deadline:
    """When a learner's share of a fold's time ends (a time.perf_counter() reading): learners that train in rounds
    or epochs check it after each and stop there, keeping their best so far; `hit` records that one did."""

    at: float
    hit: bool = False

    def passed(self, step: float = 0.0) -> bool:
        """Whether the share has ended, or would before a step of `step` seconds started now ends (the learner
        asking stops: `hit`)."""
        self.hit = self.hit or time.perf_counter() + step > self.at
        return self.hit

    @classmethod
    def share(cls, allowance: float, fold_start: float, learners_left: int) -> Deadline:
        """An equal share, among the fold's learners still to fit, of what its `allowance` has left."""
        now = time.perf_counter()
        return cls(now + (allowance - (now - fold_start)) / learners_left)


@dataclass
class Budget:
    """The budget's plan and what the clock said; `state_dict()` goes into the run folder (plan.json), so that a
    resumed run keeps the plan it was given."""

    seconds: float  # the whole budget: training, the report and the test prediction
    folds: int  # folds per repeat
    test_rows: int  # rows (or images) the prediction will run through every fold's models
    started: float = field(default_factory=time.perf_counter)
    repeats: int = 1  # the plan: repeats of the k-fold split
    fold_seconds: list[float] = field(default_factory=list)  # every finished fold's time
    predict_per_row: float = 0.0  # seconds per test row through one fold's models (the OOF pass's rate)
    dropped: list[str] = field(default_factory=list)  # learners left out: with them the first repeat did not fit
    allowance: float = 0.0  # seconds each fold's learners may fit for (set before the first fold; 0: no limit)
    time_limited: dict[str, int] = field(default_factory=dict)  # per learner, the folds that ended it at its share
    recorded: int = 0  # folds whose rows are in fold_seconds and time_limited (a resumed run's kept folds are)
    first_weights: dict[str, float] = field(default_factory=dict)  # the blend's, fitted on the first fold's OOF
    idle: list[str] = field(default_factory=list)  # left out: stopped at its share, and weight 0 in first_weights
    note: str = ""  # why the plan is what it is
    resumed: bool = False  # a resumed run keeps the plan it was given, unchecked against this process's clock

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def reserve(self) -> float:
        """Seconds kept free of folds: the report, the processes' starts and a margin."""
        return RESERVE * self.seconds + REPORT_SECONDS

    def allot(self) -> float:
        """Before the first fold: each fold's time for its learners' fits, FIT_SHARE of an equal share of the budget
        left for the first repeat's folds and the prediction. Said in the log."""
        left = self.seconds - self.reserve() - self.elapsed() - START_SECONDS  # less the prediction's start
        self.allowance = max(left, 1.0) * FIT_SHARE / self.folds
        log.info("budget: TIME=%s; each fold's learners may fit for %s (a learner that trains in rounds or epochs "
                 "stops at its share of that)", _minutes(self.seconds), _minutes(self.allowance))
        return self.allowance

    def predict_seconds(self, repeats: int) -> float:
        """The test prediction's estimated time through `repeats` repeats' folds."""
        return START_SECONDS + repeats * self.folds * self.test_rows * self.predict_per_row

    def after_fold(self, fold: int, row: dict) -> bool:
        """Whether the plan changed, after fold `fold` finished (`row`: its summary): it is made after the first
        fold, and checked against the clock before each later repeat starts. A fold recorded before (a resumed
        run's) changes nothing."""
        if fold < self.recorded:
            return False
        self.recorded = fold + 1
        for name in row.get("time_limited", []):
            self.time_limited[name] = self.time_limited.get(name, 0) + 1
        if fold == 0 and not self.resumed:
            return self.plan(row)
        self.fold_seconds.append(row["seconds"])
        if not self.resumed and (fold + 1) % self.folds == 0 and fold + 1 < self.repeats * self.folds:
            return not self.may_start((fold + 1) // self.folds)
        return False

    def plan(self, row: dict) -> bool:
        """After the first fold (`row`: its summary): the most repeats (up to MAX_REPEATS) whose folds and
        prediction end within the budget, from this fold's time and its OOF pass's rate. When even the first
        repeat does not fit, the slowest learners are left out (one learner at least stays) until it does; first,
        the learners stopped at their share that the first fold's blend gives weight 0 (row["weights"]) are, so
        that their share goes to the others. Whether the plan differs from one repeat of every learner."""
        self.first_weights = row.get("weights", {})
        self.idle = [n for n, w in self.first_weights.items() if w == 0 and n in self.time_limited]
        self.dropped += self.idle
        timed = [(name, s) for name, s in row["learner_seconds"].items() if name not in self.idle]
        learners = dict(sorted(timed, key=lambda item: item[1]))
        left = self.seconds - self.reserve() - self.elapsed()
        overhead = row["seconds"] - sum(row["learner_seconds"].values())  # a fold's time outside the fits
        while True:
            predicting = sum(row.get("predict_seconds", {}).get(name, 0.0) for name in self.dropped)
            fold = row["seconds"] - sum(row["learner_seconds"][name] for name in self.dropped) - predicting
            if self.time_limited:  # learners stopped at their share: later folds use the whole allowance
                fold = max(fold, overhead - predicting + self.allowance)
            oof = row["oof_seconds"] - predicting
            self.predict_per_row = oof / max(row["valid_rows"], 1)
            fits = [r for r in range(1, MAX_REPEATS + 1) if (r * self.folds - 1) * fold + self.predict_seconds(r)
                    <= left]
            if fits or len(learners) == 1:
                break
            slowest = list(learners)[-1]
            self.dropped.append(slowest)
            learners.pop(slowest)
        self.fold_seconds.append(fold)
        self.repeats = max(fits, default=1)
        self.note = self._describe(fold, bool(fits), (self.folds - 1) * fold + self.predict_seconds(1))
        if fits and self.time_limited:
            self._widen(left - self.predict_seconds(self.repeats), overhead - predicting)
        (log.info if fits else log.warning)("budget: %s", self.note)
        return self.repeats > 1 or bool(self.dropped)

    def _widen(self, left: float, overhead: float) -> None:
        """Learners stopped at their share in the first fold: the allowance grows to what the later folds can have of
        `left` seconds (the prediction's time already taken off), less each fold's `overhead`, WIDEN of it."""
        allowance = WIDEN * (left / (self.repeats * self.folds - 1) - overhead)
        if allowance <= self.allowance:
            return
        self.note += (f"; {', '.join(self.time_limited)} stopped at their share, so each later fold's fits may take "
                      f"{_minutes(allowance)} instead of {_minutes(self.allowance)}")
        self.allowance = allowance

    def _describe(self, fold: float, fits: bool, first: float) -> str:
        if not fits:
            return (f"the first repeat alone needs about {_minutes(first + self.elapsed())} with its prediction, "
                    f"more than TIME={_minutes(self.seconds)} (even with only one learner): it is finished anyway, "
                    "with nothing added (fewer folds or a longer TIME would fit)")
        slow = [name for name in self.dropped if name not in self.idle]
        left_out = (f"{', '.join(self.idle)} left out (stopped at its share, and weight 0 in the first fold's blend: "
                    "its share goes to the others); " if self.idle else "")
        left_out += f"{', '.join(slow)} left out (the first repeat would not fit with it); " if slow else ""
        capped = f"; capped at {MAX_REPEATS} repeats" if self.repeats == MAX_REPEATS else ""
        return (f"{left_out}a fold takes about {fold:.1f} s, so {self.repeats} repeat(s) of {self.folds} folds fit "
                f"({self.repeats * self.folds} folds, about {_minutes(self.repeats * self.folds * fold)}) with the "
                f"test prediction (about {_minutes(self.predict_seconds(self.repeats))}) in "
                f"TIME={_minutes(self.seconds)}{capped}; the extra repeats are kept only if their bag beats one "
                "repeat alone by more than the noise")

    def may_start(self, repeat: int) -> bool:
        """Whether repeat `repeat` (from 1) still fits, judged by the folds' mean time so far; if not, the plan
        ends at the repeats already finished and the log says so."""
        fold = float(np.mean(self.fold_seconds))
        end = self.elapsed() + self.folds * fold + self.predict_seconds(repeat + 1) + self.reserve()
        if end <= self.seconds:
            return True
        log.info("budget: repeat %d would end at about %s of TIME=%s; stopping at %d repeat(s)", repeat,
                 _minutes(end), _minutes(self.seconds), repeat)
        self.note += f"; stopped at {repeat} repeat(s): the next would have ended at about {_minutes(end)}"
        self.repeats = repeat
        return False

    def state_dict(self) -> dict:
        state = asdict(self)
        state.pop("started")
        return state | {"elapsed": round(self.elapsed(), 2)}

    @classmethod
    def from_state_dict(cls, state: dict) -> Budget:
        return cls(**{k: v for k, v in state.items() if k != "elapsed"})


def bag_evidence(served: np.ndarray, fold_of: np.ndarray, gain) -> dict:
    """Whether the repeats' bag beats one repeat alone: per fold of repeat 0, the signed metric of the OOF
    predictions averaged over every repeat (each row's average comes from models that never saw it) minus the mean
    over repeats of each repeat's own, on the fold's rows; kept when the mean gain exceeds two standard errors.
    `served`: [R, N, ...] the blend as served, `gain(pred, rows)`: the metric signed so that more is better;
    signed_scores: the bag's, per fold of repeat 0; signed_curve: the OOF score of the first 1, 2, ... repeats'
    bag."""
    bagged = served.mean(0)
    bag, gains = [], []
    for f in np.unique(fold_of[0][fold_of[0] >= 0]):
        rows = fold_of[0] == f
        bag.append(gain(bagged[rows], rows))
        gains.append(bag[-1] - np.mean([gain(one[rows], rows) for one in served]))
    gains = np.array(gains)
    two_se = float(2 * gains.std(ddof=1) / math.sqrt(len(gains))) if len(gains) > 1 else math.inf
    seen = fold_of[0] >= 0
    curve = [gain(served[:r].mean(0)[seen], seen) for r in range(1, len(served) + 1)]
    return {"repeats": int(served.shape[0]), "gain": float(gains.mean()), "two_se": two_se,
            "kept": bool(gains.mean() > two_se), "folds": len(gains), "signed_scores": bag, "signed_curve": curve}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
