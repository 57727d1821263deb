"""The learner registry: one class per learner, each in its own module here, found by name. A fold's learners all
train on the same split and fitted preprocessing (kit/cv.py), then are blended on their out-of-fold predictions.

Adding a learner: a module here with a `Learner` subclass decorated `@register` (its settings dataclass beside it),
and its import in the last line of this file. Under `TIME=` its fit is given `job.deadline` (kit/budget.py): a
learner that trains in rounds stops there; one that cannot sets `stops = False` and fits before the others.
"""

from __future__ import annotations

from typing import ClassVar

from kit.errors import KitError

LEARNERS: dict[str, type[Learner]] = {}


class Learner:
    """A learner: what it reads, how it fits on a fold (FoldJob, kit/fold.py) into a torch module, and how that
    module is rebuilt from its saved state_dict."""

    name: ClassVar[str]
    reads: ClassVar[str] = "onehot"  # encoded categories: "onehot" columns or "ordinal" codes (kit/encoding.py)
    compiled: ClassVar[bool] = True  # fitted by a library, then compiled into torch (kit/trees.py)
    settings: ClassVar[type | None] = None  # its config section's dataclass (config key: the learner's name)
    images: ClassVar[bool] = False  # trains on images too (else tables only)
    stops: ClassVar[bool] = True  # fits in rounds or epochs and stops at a budget's deadline (job.deadline)

    def check_available(self, target) -> None:
        """Refuse, before any run folder is written, a learner whose package cannot be imported."""

    def fit(self, job):
        """(module mapping the fold's encoded rows to probabilities or values, summary row, epoch history)."""
        raise NotImplementedError

    def served(self, module, state: dict, target):
        """The fitted module as the blend takes it (probabilities, or values in transform(y) units)."""
        return module

    def rebuild(self, weights: dict, task, state: dict):
        """The fitted module from its saved state_dict (no fitting library needed)."""
        from kit import trees

        return trees.from_state_dict(weights)


def register(cls: type[Learner]) -> type[Learner]:
    LEARNERS[cls.name] = cls
    return cls


def get_learner(name: str) -> Learner:
    if name not in LEARNERS:
        raise KitError(f"unknown learner {name!r}; known learners: {', '.join(LEARNERS)}")
    return LEARNERS[name]()


from kit.learners import catboost, gbdt, linear, net, xgboost  # noqa: E402, F401  (each registers itself)
