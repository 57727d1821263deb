"""Learner `net`: the network (the `model` section: an MLP for tables, a timm model for images), trained by the
shared loop (kit/trainer.py) with the fold's target loss and early stopping on the competition's metric."""

from __future__ import annotations

from dataclasses import dataclass

from kit.learners import Learner, register


@dataclass
class NetFit:
    """What the shared loop takes for one fold: the fresh network, its batches and its objective."""

    model: object
    train: object
    valid: object
    objective: object


def prepare_fit(task, config, part, valid, state: dict, dist=None, device=None, pretrained: bool = False,
                encoded=None) -> NetFit:
    """The network, its training and validation batches on `device` (default: `dist`'s) and its objective for a
    fold's training part `part`: the one wiring that kit.cv, kit.bench and kit.doctor train through. `encoded`:
    a table's training rows already encoded with the network's columns (the fold's, shared with its learners)."""
    from kit.distributed import SINGLE

    dist = dist or SINGLE
    device = device or dist.device
    model = task.build_model(state, pretrained=pretrained).to(device)
    given = {} if encoded is None else {"encoded": encoded}
    return NetFit(model, task.loader(part, state, train=True, dist=dist, device=device, **given),
                  None if valid is None else task.loader(valid, state, train=False, dist=dist, device=device),
                  objective(config, part, state))


def objective(config, part, state: dict):
    """The fold network's loss and validation metric (kit/objective.py), with the target's class weights when
    train.class_weights asks for them."""
    from kit.metrics import metric_of
    from kit.objective import Objective

    metric = metric_of(config)
    weights = metric.target.class_weights(part.y) if config.train.class_weights else None
    return Objective(metric, state, class_weights=weights, label_smoothing=config.train.label_smoothing)


@register
class Net(Learner):
    name = "net"
    compiled = False
    images = True

    def fit(self, job):
        """The fold's network with the best epoch's weights, its summary row and epoch history."""
        from kit import runs
        from kit.trainer import fit

        encoded = job.features(self.reads) if job.config.task == "tabular" else None  # encoded once for the fold
        parts = prepare_fit(job.task, job.config, job.part, job.valid, job.state, job.dist, pretrained=True,
                            encoded=encoded)

        def on_epoch(row: dict) -> None:
            for key, value in row.items():
                if job.writer and key not in ("epoch", "best", "finite"):
                    job.writer.add_scalar(f"fold{job.fold}/{key}", value, row["epoch"])

        result = fit(parts.model, parts.train, parts.valid, job.config.train, seed=job.seed,
                     objective=parts.objective, on_epoch=on_epoch, desc=f"fold {job.fold}",
                     checkpoint=runs.resume_checkpoint(job.run_dir, job.fold), dist=job.dist,
                     valid_name=job.task.score_names()[0], deadline=job.deadline)
        best = next(r for r in result.history if r["epoch"] == result.best_epoch)
        row = {"best_epoch_valid_score": best["valid_score"], "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run}
        return parts.model, row, result.history

    def served(self, module, state: dict, target):
        return target.link(module, state)

    def rebuild(self, weights: dict, task, state: dict):
        model = task.build_model(state)
        model.load_state_dict(weights)
        return model
