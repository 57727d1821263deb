"""The learners beside the network: a library's model fitted on a fold's encoded features (float32, as encoded),
then compiled into a torch module (kit/trees.py), so that it is saved, blended and exported exactly like the
network. Each learner names its estimator classes and settings; this base does the fitting around them."""

from __future__ import annotations

import importlib
import logging
import time

import numpy as np
from threadpoolctl import threadpool_limits

from kit.errors import KitError
from kit.learners import Learner

log = logging.getLogger(__name__)

SMALL = 20_000  # rows: below this, one thread fits faster than OpenMP's many (Titanic's fold: 1.7 s vs 31 s on 2
# busy cores, where idle OpenMP threads spin); larger tables use every core
EARLY_STOPPING_ROWS = 10_000  # early_stopping=auto: on from this many training rows (scikit-learn's own rule)


class Compiled(Learner):
    """A learner fitted by a library: `classes` names its (module, classifier, regressor), `pip` its install."""

    classes: tuple[str, str, str]
    pip: str

    def estimator_class(self, target) -> type:
        module, classifier, regressor = self.classes
        cls = regressor if target.predicts_values else classifier
        try:
            return getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise KitError(f"learner {self.name!r} needs {module}.{cls}, which cannot be imported here ({exc}); "
                           f"install it with `pip install {self.pip}`, or drop {self.name} from learners") from None

    def check_available(self, target) -> None:
        self.estimator_class(target)

    def estimator(self, config, target, rows: int, seed: int):
        """The unfitted estimator for a fold of `rows` training rows."""
        raise NotImplementedError

    def fit_estimator(self, config, target, x: np.ndarray, y: np.ndarray, seed: int, deadline=None):
        """The fitted estimator on `x` (float32, as encoded; each estimator converts what it needs) and `y` (class
        indices, or transform(y) values); a learner that fits in rounds stops at `deadline` (kit/budget.py)."""
        return self.fit_model(self.estimator(config, target, len(x), seed), x, y)

    @staticmethod
    def fit_model(model, x: np.ndarray, y: np.ndarray, **fit_args):
        """`model.fit(x, y, **fit_args)`, on one OpenMP thread below SMALL rows."""
        with threadpool_limits(limits=1 if len(x) < SMALL else None):
            return model.fit(x, y, **fit_args)

    def compile(self, model):
        """The fitted estimator as a torch module mapping x to probabilities [N, K] or values [N, 1]."""
        raise NotImplementedError

    def fit_arrays(self, config, target, x: np.ndarray, y: np.ndarray, seed: int, deadline=None):
        return self.compile(self.fit_estimator(config, target, x, y, seed, deadline))

    def fit(self, job):
        x, y = job.features(self.reads), job.target.forward(job.part.y)
        start = time.perf_counter()
        module = self.fit_arrays(job.config, job.target, x, y, job.seed, job.deadline)
        log.info("%s fitted on %d rows in %.1f s", self.name, len(x), time.perf_counter() - start)
        return module, {}, []


def sample_rows(x: np.ndarray, y: np.ndarray, limit: int, seed: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` of the rows (0: all; `key`: the setting, for the log), a sample drawn by `seed`, in their
    order: a learner whose rounds cost time in proportion to the rows fits a large fold in minutes, not an hour."""
    if not 0 < limit < len(x):
        return x, y
    log.info("%s: a random sample of %d of the %d training rows (%s)", key.split(".")[0], limit, len(x), key)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
    return x[rows], y[rows]


def early_stopping(setting: bool | str, rows: int) -> bool:
    """A learner's early_stopping setting for a fold of `rows` training rows (auto: from EARLY_STOPPING_ROWS)."""
    return rows >= EARLY_STOPPING_ROWS if setting == "auto" else bool(setting)
